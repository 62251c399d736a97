"""The offline demo model: a deterministic stand-in for a chat model. It is not AI.

It lets the whole app run with no model endpoint and no key, and it exercises the
same machinery a real model does: it is a real agent-framework chat client, it
asks for the travel tools through the framework's function-calling loop, and it
streams its answer in small chunks at a steady pace. What it writes is assembled
from templates, the tool results and a small table of city highlights:

1. A new request ("Plan a 3-day trip to Tokyo") is parsed for the destination,
   the number of days and a start date (see `parse_trip`). The reply is one
   `get_weather_forecast` and one `get_local_events` call per day.
2. The framework runs the tools and calls the model again with their results.
   The model then writes a markdown itinerary, one `## Day N — ...` section per
   day, arranged around each day's weather and events.
3. A later message in the same conversation ("Make day 2 more relaxed", "What
   should I pack?") gets a shorter answer about the trip already planned; when
   it needs a day's weather or events again it asks for the tools first.

The agent's instructions (`options["instructions"]`) are deliberately ignored:
only a language model can follow them.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Literal

from agent_framework import (
    BaseChatClient,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
    ResponseStream,
)
from agent_framework.observability import ChatTelemetryLayer

from tools import KNOWN_PLACE_NAMES, canonical_city
from travelplanner.city_guides import CityGuide, guide_for

OFFLINE_MODEL_NAME = "offline-demo"
WEATHER_TOOL = "get_weather_forecast"
EVENTS_TOOL = "get_local_events"

DEFAULT_DAYS = 3
MAX_DAYS = 14
DEFAULT_LEAD_DAYS = 7  # with no date in the request, the trip starts a week from today
FALLBACK_DESTINATION = "your destination"

# --- Reading the request -------------------------------------------------------------------------

_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
}
_NUMBER = r"(\d{1,3}|" + "|".join(_NUMBER_WORDS) + r")"
_DAYS = re.compile(r"\b" + _NUMBER + r"[\s-]*(day|night)s?\b(?![\s-]+by\b)", re.IGNORECASE)
_WEEKS = re.compile(r"\b" + _NUMBER + r"[\s-]*weeks?\b", re.IGNORECASE)
# A follow-up that states a new length ("make it 5 days", "a 4-day trip instead") re-plans.
_NEW_LENGTH = re.compile(
    r"\b" + _NUMBER + r"[\s-]*(?:days|nights|weeks|(?:day|night|week)[\s-]+(?:trip|itinerary|plan|stay|holiday))\b",
    re.IGNORECASE)
_ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_DAY_REFERENCE = re.compile(r"\bday\s*(\d{1,2})\b", re.IGNORECASE)
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
             "last": -1, "final": -1}
_ORDINAL_DAY = re.compile(r"\b(" + "|".join(_ORDINALS) + r")\s+day\b", re.IGNORECASE)
_KNOWN_PLACE = re.compile(
    r"\b(" + "|".join(re.escape(name) for name in KNOWN_PLACE_NAMES) + r")\b", re.IGNORECASE
)
_PLACE_WORDS = r"([A-Z][\w'’.-]*(?:\s+(?:[A-Z][\w'’.-]*|de|del|da|do|la|le|el|of|upon|am|sur))*)"
# "to"/"in" name the destination more surely than "for"/"at" ("for Canada Day in Ottawa").
_AFTER_STRONG_PREPOSITION = re.compile(r"\b(?:to|in|visit|visiting|around|explore|exploring)\s+" + _PLACE_WORDS)
_AFTER_WEAK_PREPOSITION = re.compile(r"\b(?:for|at)\s+" + _PLACE_WORDS)
_CAPITALISED_RUN = re.compile(r"\b" + _PLACE_WORDS)
# Capitalised words that start requests or name times, never places.
_NOT_PLACES = frozenset(re.findall(r"\S+", """
    i i'm i'd a an the plan please make can could would help give create build suggest show what how
    where when which is are my our we day days trip weekend week next this tomorrow today itinerary
    monday tuesday wednesday thursday friday saturday sunday january february march april may june
    july august september october november december hi hello thanks thank also and but then
"""))


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS[word.lower()]


def parse_days(text: str) -> int:
    """Trip length in days: "3-day", "5 days", "4 nights" (= 5 days), "a week", "weekend" (= 2)."""
    lowered = text.lower()
    if match := _DAYS.search(text):
        days = _number(match.group(1)) + (1 if match.group(2).lower() == "night" else 0)
    elif match := _WEEKS.search(text):
        days = 7 * _number(match.group(1))
    elif "fortnight" in lowered:
        days = 14
    elif "long weekend" in lowered:
        days = 3
    elif "weekend" in lowered:
        days = 2
    elif "day trip" in lowered:
        days = 1
    else:
        days = DEFAULT_DAYS
    return max(1, min(MAX_DAYS, days))


def parse_destination(text: str) -> str:
    """A known city if one is named, else the capitalised words after "to"/"in"/..., else any
    capitalised words that are not request words, else "your destination"."""
    if match := _KNOWN_PLACE.search(text):
        return canonical_city(match.group(1)) or match.group(1)
    candidates = [m.group(1) for pattern in (_AFTER_STRONG_PREPOSITION, _AFTER_WEAK_PREPOSITION, _CAPITALISED_RUN)
                  for m in pattern.finditer(text)]
    for candidate in candidates:
        words = [w for w in candidate.split() if w.lower().strip(".'’") not in _NOT_PLACES]
        # Request words are gone; now drop connectors left dangling at either end ("of Man" -> "Man")
        # while inner ones stay ("Isle of Man").
        while words and not words[0][0].isupper():
            words.pop(0)
        while words and not words[-1][0].isupper():
            words.pop()
        if words:
            return " ".join(words).rstrip(".")
    return FALLBACK_DESTINATION


def parse_start(text: str, today: date) -> date:
    """An ISO date in the text, else "tomorrow", "next week" (Monday), "weekend" (Saturday),
    "next month" (the 1st), else a week from today."""
    lowered = text.lower()
    if match := _ISO_DATE.search(text):
        try:
            return date.fromisoformat(match.group(1))
        except ValueError:
            pass
    if "tomorrow" in lowered:
        return today + timedelta(days=1)
    if "today" in lowered:
        return today
    if "next week" in lowered:
        return today + timedelta(days=7 - today.weekday())
    if "weekend" in lowered:
        return today + timedelta(days=(5 - today.weekday()) % 7 or 7)
    if "next month" in lowered:
        return (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    return today + timedelta(days=DEFAULT_LEAD_DAYS)


@dataclass(frozen=True)
class Trip:
    destination: str
    dates: tuple[date, ...]

    @property
    def days(self) -> int:
        return len(self.dates)


def parse_trip(text: str, today: date) -> Trip:
    start = parse_start(text, today)
    days = parse_days(text)
    return Trip(parse_destination(text), tuple(start + timedelta(days=i) for i in range(days)))


# --- Reading the tool results --------------------------------------------------------------------

Sky = Literal["wet", "storm", "snow", "windy", "fog", "fair"]
_SKY_WORDS: tuple[tuple[tuple[str, ...], Sky], ...] = (
    (("thunder", "storm"), "storm"), (("snow",), "snow"), (("rain", "shower"), "wet"),
    (("wind", "breez"), "windy"), (("fog", "haz"), "fog"),
)
_FORECAST = re.compile(r":\s*(?P<condition>[^:,]+), high of (?P<f>-?\d+)°F \((?P<c>-?\d+)°C\)")
_RECOMMENDATION = re.compile(r"Recommendation:\s*(?P<text>.+)", re.DOTALL)
_EVENT_LINE = re.compile(r"^-\s*(?P<when>Morning|Afternoon|Evening):\s*(?P<what>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Forecast:
    condition: str = "Weather not available"
    high_c: int | None = None
    high_f: int | None = None
    advice: str = "Check the forecast the evening before and keep an indoor option in mind."

    @property
    def sky(self) -> Sky:
        lowered = self.condition.lower()
        return next((sky for words, sky in _SKY_WORDS if any(w in lowered for w in words)), "fair")

    @property
    def hot(self) -> bool:
        return self.high_c is not None and self.high_c >= 28

    @property
    def cold(self) -> bool:
        return self.high_c is not None and self.high_c <= 5

    @property
    def cool(self) -> bool:
        return self.high_c is not None and self.high_c <= 13

    @property
    def summary(self) -> str:
        if self.high_c is None:
            return self.condition
        return f"{self.condition}, {self.high_f}°F ({self.high_c}°C)"


def parse_forecast(text: str) -> Forecast:
    match = _FORECAST.search(text)
    advice = _RECOMMENDATION.search(text)
    if not match:
        return Forecast(condition=text.strip()[:120] or Forecast.condition)
    return Forecast(
        condition=match.group("condition").strip(),
        high_c=int(match.group("c")),
        high_f=int(match.group("f")),
        advice=advice.group("text").strip() if advice else Forecast.advice,
    )


def parse_events(text: str) -> dict[str, list[str]]:
    """Event lines by time of day ("Morning" -> ["Tsukiji Outer Market food stalls at Tsukiji"])."""
    events: dict[str, list[str]] = {}
    for match in _EVENT_LINE.finditer(text):
        events.setdefault(match.group("when"), []).append(match.group("what").strip())
    return events


@dataclass(frozen=True)
class DayFacts:
    """What the tools said about one day of the trip."""

    day: date
    forecast: Forecast = field(default_factory=Forecast)
    events: Mapping[str, list[str]] = field(default_factory=dict)
    events_note: str = ""  # set when the tool had no curated listings for the place


# --- Writing ---------------------------------------------------------------------------------------

Pace = Literal["standard", "relaxed", "busier"]
_SLOTS = ("Morning", "Afternoon", "Evening")


@dataclass(frozen=True)
class Theme:
    title: str
    places: tuple[str, str, str]  # CityGuide fields in the preferred morning/afternoon/evening order


THEMES: tuple[Theme, ...] = (
    Theme("First impressions", ("old_quarter", "museum", "viewpoint")),
    Theme("Icons and big sights", ("landmark", "market", "park")),
    Theme("Markets and neighbourhoods", ("market", "park", "old_quarter")),
    Theme("A day out of town", ("day_trip", "museum", "viewpoint")),
    Theme("Gardens, views and a slower pace", ("park", "museum", "viewpoint")),
)

# How to spend time at each kind of place, and whether it keeps you out of the weather.
_ACTIVITY: dict[str, tuple[str, bool]] = {
    "old_quarter": ("Wander {place}: side streets, small shops and a coffee stop to get your bearings", False),
    "landmark": ("Visit {place}; arriving at opening time beats the queues and the tour groups", False),
    "museum": ("Spend two to three hours in {place}; choose a few galleries rather than rushing all of it", True),
    "market": ("Graze your way through {place}: small plates from several stalls instead of one big meal", True),
    "viewpoint": ("Head up to {place} for the view over the city as the light changes", False),
    "park": ("Slow down in {place}: a walk, a bench and some people-watching", False),
    "day_trip": ("Take a trip to {place}; leave by 8:30 to be back for dinner", False),
}

_DAILY_TIPS: tuple[str, ...] = (
    "Buy the transport card on arrival and top it up once; it saves queuing at every ride.",
    "Book timed tickets for the big sights the day before: same-day slots sell out.",
    "Carry a little cash for small cafés and market stalls.",
    "Keep a photo of your passport on your phone and the original in the hotel safe.",
    "Lunch menus are often half the price of dinner from the same kitchen.",
    "Download an offline map of the city before you set out.",
    "Ask at the hotel desk for their favourite local restaurant: it is rarely in the guidebooks.",
)


@dataclass(frozen=True)
class Activity:
    place: str
    text: str
    indoor: bool


def theme_for(number: int) -> Theme:
    """Day 1 gets first impressions; later days cycle through the others, marked as a second round."""
    if number == 1:
        return THEMES[0]
    others = THEMES[1:]
    theme = others[(number - 2) % len(others)]
    round_ = (number - 2) // len(others) + 1
    return Theme(f"{theme.title} (round {round_})", theme.places) if round_ > 1 else theme


def _long_date(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B}"


def _activities(theme: Theme, guide: CityGuide) -> list[Activity]:
    acts = []
    for name in theme.places:
        template, indoor = _ACTIVITY[name]
        place = getattr(guide, name)
        acts.append(Activity(place, template.format(place=place), indoor))
    return acts


def _arrange(acts: list[Activity], forecast: Forecast) -> list[Activity]:
    """Order the day's three activities around the weather: indoors for rain, storms and heat."""
    indoor = [a for a in acts if a.indoor]
    outdoor = [a for a in acts if not a.indoor]
    if not indoor:
        return acts
    if forecast.sky in ("wet", "snow"):
        return indoor + outdoor  # the covered sight first, outdoor plans once it may have eased
    if forecast.sky == "storm" or forecast.hot:
        # Outdoors while it is cool and dry, indoors through the stormy or hottest afternoon.
        return outdoor[:1] + indoor + outdoor[1:]
    return acts


def _slot_times(forecast: Forecast, pace: Pace) -> tuple[str, str, str]:
    if forecast.hot:
        return ("8:00–11:00", "15:30–18:30, after a midday rest out of the sun", "20:00 onwards")
    if pace == "relaxed":
        return ("10:00–12:30", "14:30–17:00", "19:00 onwards")
    return ("9:00–12:00", "13:30–17:30", "19:00 onwards")


def _weather_note(act: Activity, forecast: Forecast) -> str:
    if act.indoor:
        return ""
    if forecast.sky in ("wet", "storm"):
        return " Take the umbrella, and duck into a café if the showers get heavy."
    if forecast.sky == "snow":
        return " Paths may be icy: good boots and short stretches between warm stops."
    if forecast.sky == "windy":
        return " Expect it to be gusty up high; a windproof layer helps."
    if forecast.hot:
        return " Bring water and keep to the shady side of the street."
    if forecast.cold:
        return " Plan a warm-up stop halfway: hot chocolate counts as culture."
    return ""


def _slot_text(slot: str, act: Activity, facts: DayFacts, pace: Pace) -> str:
    evening_event = facts.events.get("Evening", [])
    if slot == "Evening" and evening_event:
        return f"Today's pick: {evening_event[0]}. Have dinner nearby beforehand (see Food)."
    if pace == "relaxed" and slot == "Morning":
        note = _weather_note(act, facts.forecast)
        return f"No alarm today: a slow breakfast, then {act.place} at your own pace.{note}"
    if pace == "relaxed" and slot == "Afternoon":
        return ("Keep the afternoon free: a long lunch, a rest at the hotel or a café with a book. "
                f"If you want one short outing, make it {act.place} and stay only as long as it is fun.")
    if pace == "relaxed" and slot == "Evening":
        return f"An early, unhurried dinner close to the hotel, with a short stroll to {act.place} if you feel like it."
    return act.text + "." + _weather_note(act, facts.forecast)


def _same_place(act: Activity, event: str) -> bool:
    # "Tsukiji Outer Market food stalls" is not news on a morning already spent at Tsukiji Outer Market.
    name = act.place.split(" (")[0].removeprefix("the ")
    return name.lower() in event.lower()


def _extra_stop(theme: Theme, guide: CityGuide, slot: str) -> str:
    spare = [p for p in ("viewpoint", "park", "market", "old_quarter", "museum") if p not in theme.places]
    return getattr(guide, spare[0 if slot == "Morning" else -1])


def day_section(number: int, facts: DayFacts, guide: CityGuide, *, pace: Pace = "standard",
                last: bool = False, title_note: str = "") -> str:
    """One `## Day N — ...` section: weather, morning/afternoon/evening, food, logistics, a tip."""
    theme = theme_for(number)
    acts = _arrange(_activities(theme, guide), facts.forecast)
    times = _slot_times(facts.forecast, pace)
    lunch, dinner, snack = guide.dishes
    if number % 2 == 0:
        lunch = f"small plates at {guide.market}"  # every other day, so the days do not all eat alike
    title = theme.title + (f" ({title_note})" if title_note else "")

    lines = [f"## Day {number} — {_long_date(facts.day)}: {title}", "",
             f"**Weather:** {facts.forecast.summary}. {facts.forecast.advice}", ""]
    if facts.events_note:
        lines += [f"**Events:** {facts.events_note}", ""]
    for slot, time, act in zip(_SLOTS, times, acts, strict=True):
        lines.append(f"**{slot} ({time}).** {_slot_text(slot, act, facts, pace)}")
        also = [e for e in facts.events.get(slot, [])[1 if slot == "Evening" else 0:] if not _same_place(act, e)]
        if also and pace != "relaxed":
            lines.append(f"- Also on today: {'; '.join(also)}.")
        if pace == "busier" and slot != "Evening":
            lines.append(f"- Extra stop if you have the energy: {_extra_stop(theme, guide, slot)}.")
        lines.append("")
    lines += [f"**Food:** lunch around 12:30: {lunch}. Dinner from 19:30: {dinner}. "
              f"Between sights: {snack}.", ""]
    logistics = (f"**Getting around:** {guide.transit}. Allow 20–30 minutes between sights and keep the "
                 "evening plan within one ride of your hotel.")
    if number == 1:
        logistics += " Arrival day: drop your bags at the hotel first and keep the first hours close by."
    if last and number > 1:
        logistics += (" Departure day: check out early, leave your luggage at the hotel and allow plenty of "
                      "time to get to the airport.")
    lines += [logistics, "", f"**Tip:** {_DAILY_TIPS[(number - 1) % len(_DAILY_TIPS)]}", ""]
    return "\n".join(lines)


def _packing_list(forecasts: Sequence[Forecast]) -> list[str]:
    items = ["Comfortable walking shoes you have already broken in",
             "A power adapter and a small power bank for maps and tickets",
             "A reusable water bottle and a light day bag"]
    skies = {f.sky for f in forecasts}
    if skies & {"wet", "storm"}:
        items.append("A compact umbrella and a waterproof jacket")
    if "snow" in skies or any(f.cold for f in forecasts):
        items.append("Warm layers: thermal top, sweater, hat, gloves and a warm coat")
    elif any(f.cool for f in forecasts):
        items.append("A warm jacket and a sweater for cool mornings and evenings")
    if any(f.hot for f in forecasts):
        items.append("Sunscreen, sunglasses, a hat and breathable clothes")
    if "windy" in skies:
        items.append("A windproof outer layer")
    if not skies & {"wet", "storm", "snow"} and not any(f.hot or f.cool for f in forecasts):
        items.append("A light sweater or jacket for the evenings")
    return items


def compose_itinerary(trip: Trip, facts: Sequence[DayFacts]) -> str:
    """The full markdown itinerary: a title, a summary table, one section per day, tips and packing."""
    guide = guide_for(trip.destination)
    first, last = trip.dates[0], trip.dates[-1]
    span = _long_date(first) + (f" – {_long_date(last)}" if trip.days > 1 else "") + f" {last.year}"
    plural = "s" if trip.days > 1 else ""
    parts = [
        f"# {trip.days}-day itinerary for {trip.destination}", "",
        f"*{span}: {trip.days} day{plural} planned around the forecast and what is on each day.*", "",
        "## At a glance", "",
        "| Day | Date | Weather | Theme |",
        "| --- | --- | --- | --- |",
        *[f"| {n} | {d.day:%a %d %b} | {d.forecast.summary} | {theme_for(n).title} |"
          for n, d in enumerate(facts, start=1)],
        "",
        *[day_section(n, d, guide, last=n == len(facts)) for n, d in enumerate(facts, start=1)],
        "## Practical tips", "",
        f"- **Transport:** {guide.transit}.",
        f"- **Bookings:** check opening days and book timed entry where it is offered: {guide.landmark}; "
        f"{guide.museum}.",
        "- **Timing:** the big sights are quietest in the first hour after opening and the last hour before closing.",
        "- **Money:** cards work almost everywhere; keep a little cash for markets and tips.",
        "- **Safety:** watch your bag in crowded squares and on busy trains.", "",
        "## Packing list", "",
        *[f"- {item}" for item in _packing_list([d.forecast for d in facts])], "",
        "_Written by the offline demo model, not AI: assembled from the weather and events tools and a small "
        "table of city highlights._", "",
    ]
    return "\n".join(parts)


# --- Follow-up turns -----------------------------------------------------------------------------

Intent = Literal["plan", "revise", "packing", "food", "budget", "other"]
_RELAXED = re.compile(r"\b(relax\w*|slow(er)?|easier|lighter|less busy|rest(ful)?|chill\w*|lazy|gentle)\b", re.I)
_BUSIER = re.compile(r"\b(busier|more packed|more (activities|things|sights)|fuller|intense|action)\b", re.I)
_FOOD = re.compile(r"\b(eat\w*|food|restaurants?|dinner|lunch|breakfast|vegetarian|vegan|gluten|dish\w*)\b", re.I)
_DIET = re.compile(r"\b(vegetarian|vegan|gluten|allerg\w*|halal|kosher)\b", re.I)
_BUDGET = re.compile(r"\b(budget|cheap\w*|costs?|prices?|money|afford\w*|expensive|save)\b", re.I)
_PACKING = re.compile(r"\b(pack\w*|wear|bring|clothes|weather|rain\w*|umbrella)\b", re.I)
_PLAN_WORDS = re.compile(r"\b(plan|itinerary|trip)\b", re.I)


def day_references(text: str, days: int) -> list[int]:
    """Day numbers a message refers to ("day 2", "the last day"), clamped to the trip."""
    numbers = [int(m.group(1)) for m in _DAY_REFERENCE.finditer(text)]
    numbers += [_ORDINALS[m.group(1).lower()] for m in _ORDINAL_DAY.finditer(text)]
    return sorted({days if n == -1 else max(1, min(days, n)) for n in numbers})


def classify(text: str, trip: Trip | None) -> Intent:
    """What a message asks for, given the trip already planned (None: nothing planned yet)."""
    if trip is None:
        return "plan"
    named = parse_destination(text)
    if named not in (FALLBACK_DESTINATION, trip.destination) and (
            _KNOWN_PLACE.search(text) or _PLAN_WORDS.search(text)):
        return "plan"  # another place: a new trip
    if _NEW_LENGTH.search(text) and not _DAY_REFERENCE.search(text):
        return "plan"  # "make it 5 days": the same place, re-planned
    if day_references(text, trip.days) or _RELAXED.search(text) or _BUSIER.search(text):
        return "revise"
    for intent, pattern in (("food", _FOOD), ("budget", _BUDGET), ("packing", _PACKING)):
        if pattern.search(text):
            return intent  # type: ignore[return-value]
    return "other"


def _quote(request: str) -> str:
    return f"You asked: “{request}”"


def compose_revision(request: str, trip: Trip, facts: Sequence[tuple[int, DayFacts]]) -> str:
    guide = guide_for(trip.destination)
    pace: Pace = "relaxed" if _RELAXED.search(request) else "busier" if _BUSIER.search(request) else "standard"
    which = ", ".join(f"day {n}" for n, _ in facts)
    intro, note = {
        "relaxed": (f"Here is {which} of your {trip.destination} trip at a gentler pace: a later start, "
                    "a free afternoon and an unhurried evening.", "revised: a gentler pace"),
        "busier": (f"Here is {which} of your {trip.destination} trip with more packed in: an extra stop in the "
                   "morning and the afternoon, in the same weather-aware order.", "revised: more to see"),
        "standard": (f"Here is {which} of your {trip.destination} trip again, rechecked against the forecast "
                     "and the day's listings.", "revised"),
    }[pace]
    sections = [day_section(n, d, guide, pace=pace, last=n == trip.days, title_note=note) for n, d in facts]
    closing = ("The rest of the itinerary stays as it was. Ask me to change another day, "
               "or tell me what you would like more or less of.")
    return "\n".join([_quote(request), "", intro, "", *sections, closing, ""])


def compose_packing(request: str, trip: Trip, facts: Sequence[DayFacts]) -> str:
    lines = [_quote(request), "", f"## What to pack for {trip.destination}", ""]
    lines += [f"- **Day {n}, {_long_date(d.day)}:** {d.forecast.summary}. {d.forecast.advice}"
              for n, d in enumerate(facts, start=1)]
    lines += ["", "**Bring:**", "", *[f"- {item}" for item in _packing_list([d.forecast for d in facts])], ""]
    return "\n".join(lines)


def compose_food(request: str, trip: Trip) -> str:
    guide = guide_for(trip.destination)
    lines = [_quote(request), "", f"## Eating well in {trip.destination}", ""]
    lines += [f"- **Try:** {dish}." for dish in guide.dishes]
    lines += [f"- **Market:** {guide.market} is the easiest place to sample several things at once.",
              "- **Timing:** book dinner at popular places a day ahead; lunch rarely needs a booking."]
    if _DIET.search(request):
        lines.append("- **Dietary needs:** learn the local words for your requirement and carry them written "
                     "down; markets and larger restaurants are the most flexible.")
    return "\n".join([*lines, ""])


def compose_budget(request: str, trip: Trip) -> str:
    guide = guide_for(trip.destination)
    return "\n".join([
        _quote(request), "", f"## Keeping {trip.destination} affordable", "",
        f"- **Transport:** {guide.transit}; walking between neighbouring sights is free and often quicker.",
        f"- **Food:** make lunch the main meal and graze at {guide.market} instead of sit-down dinners.",
        f"- **Sights:** choose one paid highlight a day ({guide.landmark} or {guide.museum}) and fill the rest "
        f"with free ones such as {guide.park} and {guide.old_quarter}.",
        "- **Stay:** a hotel one or two stops outside the centre costs noticeably less.", "",
    ])


def compose_other(request: str, trip: Trip) -> str:
    days = ", ".join(f"day {n} ({_long_date(d)})" for n, d in enumerate(trip.dates, start=1))
    return "\n".join([
        _quote(request), "",
        f"Your {trip.days}-day {trip.destination} plan covers {days}.",
        "As an offline demo model I can make a day more relaxed or busier (\"make day 2 more relaxed\"), "
        "suggest what to pack, where to eat or how to save money, change the trip length "
        "(\"make it 5 days\") or plan another city.", "",
    ])


# --- Reading the conversation --------------------------------------------------------------------


def _iso_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _result_text(content: Content) -> str:
    if isinstance(content.result, str):
        return content.result
    return " ".join(item.text or "" for item in content.items or [] if item.type == "text")


def _arguments(content: Content) -> dict[str, Any]:
    args = content.arguments
    if isinstance(args, str):
        try:
            args = json.loads(args or "{}")
        except json.JSONDecodeError:
            return {}
    return dict(args) if isinstance(args, Mapping) else {}


def _answered_days(messages: Sequence[Message]) -> tuple[str | None, dict[date, DayFacts]] | None:
    """The tool calls answered in `messages` (those since the latest user message): the
    destination they asked about and what they said per day. None if nothing was answered."""
    calls = {c.call_id: c for m in messages for c in m.contents if c.type == "function_call"}
    results = [c for m in messages for c in m.contents if c.type == "function_result"]
    if not results:
        return None
    destination: str | None = None
    forecasts: dict[date, Forecast] = {}
    events: dict[date, tuple[dict[str, list[str]], str]] = {}
    for result in results:
        call = calls.get(result.call_id)
        args = _arguments(call) if call else {}
        day = _iso_date(args.get("date"))
        if call is None or day is None:
            continue
        destination = destination or args.get("destination")
        text = _result_text(result)
        if call.name == WEATHER_TOOL:
            forecasts[day] = parse_forecast(text)
        elif call.name == EVENTS_TOOL:
            events[day] = (parse_events(text), _uncurated_note(text))
    days = sorted(set(forecasts) | set(events))
    return destination, {d: DayFacts(d, forecasts.get(d, Forecast()), *events.get(d, ({}, ""))) for d in days}


def _uncurated_note(events_text: str) -> str:
    """For a place without curated listings, say so: its events are typical suggestions."""
    if not events_text.startswith("No curated"):
        return ""
    first_line = events_text.splitlines()[0]  # "No curated event listings for X on D (Day). Good bets...:"
    first_sentence = first_line.rsplit(". ", 1)[0].rstrip(".")
    return f"{first_sentence}. The events below are typical for most places, not confirmed: check local listings."


_PLAN_CALL_MARK = "_plan_"  # in the call ids of a planning round, so revisions never redefine the trip


def _trip_from_history(history: Sequence[Message], today: date) -> Trip | None:
    """The trip under discussion: the latest planning round's weather calls, else the latest
    user message that names a place."""
    for message in reversed(history):
        calls = [c for c in message.contents if c.type == "function_call" and c.name == WEATHER_TOOL
                 and _PLAN_CALL_MARK in (c.call_id or "")]
        args = [_arguments(c) for c in calls]
        dates = sorted({d for a in args if (d := _iso_date(a.get("date"))) is not None})
        destination = next((str(a["destination"]) for a in args if a.get("destination")), "")
        if dates and destination:
            return Trip(destination, tuple(dates))
    for message in reversed(history):
        if message.role == "user" and parse_destination(message.text) != FALLBACK_DESTINATION:
            return parse_trip(message.text, today)
    return None


def _latest_user_index(messages: Sequence[Message]) -> int:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), -1)


# --- The chat client -----------------------------------------------------------------------------


def chunk_text(text: str, words_per_chunk: int = 3) -> list[str]:
    """Split text into chunks of a few words; joined back together they are exactly `text`."""
    pieces = re.findall(r"\s*\S+\s*", text) or [text]
    return ["".join(pieces[i:i + words_per_chunk]) for i in range(0, len(pieces), words_per_chunk)]


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class _Reply:
    """What the model says next: tool calls to make, or text to stream."""

    calls: list[Content] = field(default_factory=list)
    text: str = ""


class OfflineTravelModel(FunctionInvocationLayer[Any], ChatTelemetryLayer[Any], BaseChatClient[Any]):
    """Offline demo model, not AI: deterministic templates that drive the real tool loop.

    Use it to run the app without a model endpoint or key. With telemetry on, its calls are traced like a
    real model's (agent-framework's telemetry layer: a `chat offline-demo` span each). For a fixed `today`, the
    same conversation always gets the same text. `chunks_per_second` paces the
    stream, tool calls included (0 streams at full speed with no sleep at all).
    """

    DISCLOSURE: ClassVar[str] = (
        "offline demo model, not AI: deterministic templates that call the travel tools "
        "and stream a templated itinerary"
    )
    OTEL_PROVIDER_NAME: ClassVar[str] = "offline-demo"

    def __init__(self, *, chunks_per_second: float = 40.0, words_per_chunk: int = 3,
                 today: date | None = None) -> None:
        if chunks_per_second < 0:
            raise ValueError("chunks_per_second must be 0 (no pacing) or more")
        if words_per_chunk < 1:
            raise ValueError("words_per_chunk must be at least 1")
        super().__init__()
        self.chunks_per_second = chunks_per_second
        self.words_per_chunk = words_per_chunk
        self.today = today  # None: the real date of each request
        self.model = OFFLINE_MODEL_NAME

    def service_url(self) -> str:
        return "offline://demo"

    def _inner_get_response(
        self,
        *,
        messages: Sequence[Message],
        stream: bool,
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        reply = self._reply(messages, options)
        if stream:
            return self._build_response_stream(self._stream(reply))
        return self._respond(reply)

    def _reply(self, messages: Sequence[Message], options: Mapping[str, Any]) -> _Reply:
        """Decide: ask for the tools this request needs, or write the answer from their results."""
        today = self.today or date.today()
        latest = _latest_user_index(messages)
        request = messages[latest].text.strip() if latest >= 0 else ""
        trip = _trip_from_history(messages[:max(latest, 0)], today)
        answered = _answered_days(messages[latest + 1:])
        offered = {getattr(t, "name", None) for t in options.get("tools") or []}
        usable = [] if options.get("tool_choice") == "none" else [
            t for t in (WEATHER_TOOL, EVENTS_TOOL) if t in offered]

        intent = classify(request, trip)
        if intent == "plan" or trip is None:
            if answered and answered[1]:
                # Write about exactly what the tools were asked, not a re-parse of the request.
                trip = Trip(canonical_city(answered[0] or "") or answered[0] or FALLBACK_DESTINATION,
                            tuple(answered[1]))
            else:
                trip = self._plan_trip(request, trip, today)
            days = list(range(1, trip.days + 1))
        elif intent == "revise":
            days = day_references(request, trip.days) or list(range(1, trip.days + 1))
        elif intent == "packing":
            days, usable = list(range(1, trip.days + 1)), [t for t in usable if t == WEATHER_TOOL]
        else:
            days, usable = [], []

        if usable and days and answered is None:
            turn = sum(1 for m in messages if m.role == "user")
            return _Reply(calls=[
                Content.from_function_call(
                    f"call_t{turn}_{intent}_{name.removeprefix('get_')}_d{n}", name,
                    arguments=json.dumps({"destination": trip.destination, "date": trip.dates[n - 1].isoformat()}))
                for n in days for name in usable
            ])

        facts = answered[1] if answered else {}
        by_day = [(n, facts.get(trip.dates[n - 1]) or DayFacts(trip.dates[n - 1])) for n in days]
        match intent:
            case "plan":
                return _Reply(text=compose_itinerary(trip, [f for _, f in by_day]))
            case "revise":
                return _Reply(text=compose_revision(request, trip, by_day))
            case "packing":
                return _Reply(text=compose_packing(request, trip, [f for _, f in by_day]))
            case "food":
                return _Reply(text=compose_food(request, trip))
            case "budget":
                return _Reply(text=compose_budget(request, trip))
            case _:
                return _Reply(text=compose_other(request, trip))

    @staticmethod
    def _plan_trip(request: str, previous: Trip | None, today: date) -> Trip:
        trip = parse_trip(request, today)
        if previous and trip.destination == FALLBACK_DESTINATION:
            # "Make it 5 days" keeps the place and the start of the trip under discussion.
            return Trip(previous.destination,
                        tuple(previous.dates[0] + timedelta(days=i) for i in range(trip.days)))
        return trip

    async def _stream(self, reply: _Reply) -> AsyncIterator[ChatResponseUpdate]:
        common: dict[str, Any] = {"role": "assistant", "model": OFFLINE_MODEL_NAME,
                                  "response_id": f"offline-{uuid.uuid4().hex}", "message_id": f"msg-{uuid.uuid4().hex}"}
        # Each tool call is sent as a chunk of its own, at the same pace as the text, as a model streams
        # its calls one after another: readers see the calls being asked for.
        if reply.calls:
            pieces, finish = [[call] for call in reply.calls], "tool_calls"
        else:
            chunks = chunk_text(reply.text, self.words_per_chunk)
            pieces, finish = [[Content.from_text(chunk)] for chunk in chunks], "stop"
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index, contents in enumerate(pieces):
            if self.chunks_per_second > 0 and index:
                # Sleep to a schedule set at the start, so the average rate holds however long a
                # consumer takes with each chunk.
                delay = started + index / self.chunks_per_second - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield ChatResponseUpdate(contents=contents, created_at=_now(),
                                     finish_reason=finish if index == len(pieces) - 1 else None, **common)

    async def _respond(self, reply: _Reply) -> ChatResponse:
        return ChatResponse(
            messages=[Message("assistant", reply.calls or [Content.from_text(reply.text)],
                              message_id=f"msg-{uuid.uuid4().hex}")],
            response_id=f"offline-{uuid.uuid4().hex}",
            model=OFFLINE_MODEL_NAME,
            created_at=_now(),
            finish_reason="tool_calls" if reply.calls else "stop",
        )


__all__ = [
    "OFFLINE_MODEL_NAME",
    "OfflineTravelModel",
    "Trip",
    "chunk_text",
    "classify",
    "compose_itinerary",
    "parse_days",
    "parse_destination",
    "parse_start",
    "parse_trip",
]
