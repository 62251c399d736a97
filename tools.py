"""The TravelPlanner's tools: a weather forecast and local events for a place and a date.

Both are pure functions over the small tables below (no network, no clock), so
the agent, the offline demo model and the tests all see the same answers. The
same destination and date always give the same result; a different date picks
another of the city's typical conditions, so a trip's days differ.

`travel_tools()` wraps them as agent-framework `FunctionTool`s: the framework
builds each tool's JSON schema from the `Annotated[..., Field(description=...)]`
parameters and the docstring, which is what a model sees when it decides to call.
"""

from __future__ import annotations

import inspect
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date as Date
from typing import Annotated, Literal

from agent_framework import FunctionTool, tool
from pydantic import Field

# --- Weather -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Climate:
    name: str
    coldest_high_c: int  # typical daytime high in the coldest month
    warmest_high_c: int  # ... and in the warmest month
    skies: tuple[str, ...]  # typical conditions; repeat an entry to make it more likely
    southern: bool = False  # seasons are flipped south of the equator


CLIMATES: tuple[Climate, ...] = (
    Climate("Tokyo", 10, 31, ("Sunny", "Partly cloudy", "Light rain", "Overcast", "Sunny", "Humid")),
    Climate("Paris", 7, 25, ("Partly cloudy", "Light rain", "Overcast", "Sunny", "Showers")),
    Climate("London", 8, 23, ("Overcast", "Light rain", "Partly cloudy", "Showers", "Sunny")),
    Climate("New York", 4, 29, ("Sunny", "Partly cloudy", "Windy", "Thunderstorms", "Light rain")),
    Climate("Rome", 12, 31, ("Sunny", "Sunny", "Partly cloudy", "Showers", "Clear")),
    Climate("Barcelona", 14, 28, ("Sunny", "Sunny", "Partly cloudy", "Breezy", "Showers")),
    Climate("Sydney", 17, 26, ("Sunny", "Partly cloudy", "Showers", "Breezy", "Sunny"), southern=True),
    Climate("Kyoto", 9, 33, ("Sunny", "Humid", "Light rain", "Partly cloudy", "Overcast")),
    Climate("Lisbon", 15, 28, ("Sunny", "Sunny", "Breezy", "Partly cloudy", "Showers")),
    Climate("Amsterdam", 6, 22, ("Overcast", "Light rain", "Windy", "Partly cloudy", "Showers")),
    Climate("Berlin", 3, 25, ("Overcast", "Partly cloudy", "Light rain", "Sunny", "Windy")),
    Climate("Singapore", 30, 32, ("Humid", "Thunderstorms", "Partly cloudy", "Heavy rain", "Humid")),
    Climate("Istanbul", 9, 29, ("Sunny", "Partly cloudy", "Windy", "Light rain", "Clear")),
    Climate("Cape Town", 18, 27, ("Sunny", "Windy", "Clear", "Partly cloudy", "Showers"), southern=True),
    Climate("Reykjavik", 2, 14, ("Overcast", "Windy", "Light rain", "Fog", "Partly cloudy")),
    Climate("Dubai", 24, 41, ("Sunny", "Sunny", "Hazy", "Clear", "Humid")),
    Climate("San Francisco", 14, 22, ("Fog", "Sunny", "Partly cloudy", "Breezy", "Fog")),
    Climate("Bangkok", 32, 35, ("Humid", "Thunderstorms", "Sunny", "Heavy rain", "Partly cloudy")),
    Climate("Vienna", 3, 26, ("Partly cloudy", "Sunny", "Overcast", "Light rain", "Clear")),
    Climate("Prague", 2, 25, ("Overcast", "Partly cloudy", "Light rain", "Sunny", "Fog")),
)

# Used for places that are not in the table: clearly labelled as an estimate.
GENERIC_CLIMATE = Climate("", 8, 26, ("Sunny", "Partly cloudy", "Overcast", "Light rain", "Breezy"))

# Other names people type for the same places.
ALIASES: dict[str, str] = {
    "nyc": "New York",
    "new york city": "New York",
    "manhattan": "New York",
    "capetown": "Cape Town",
    "reykjavík": "Reykjavik",
    "sf": "San Francisco",
    "wien": "Vienna",
    "praha": "Prague",
    "roma": "Rome",
    "lisboa": "Lisbon",
}

_CLIMATE_BY_KEY: dict[str, Climate] = {c.name.casefold(): c for c in CLIMATES}

# Every name a destination can be recognised by, longest first so "New York City" wins over "York".
KNOWN_PLACE_NAMES: tuple[str, ...] = tuple(
    sorted([c.name for c in CLIMATES] + list(ALIASES), key=len, reverse=True)
)

Sky = Literal["wet", "snow", "storm", "windy", "fog", "fair"]


def canonical_city(destination: str) -> str | None:
    """The table's name for a destination ("tokyo, japan" -> "Tokyo"), or None if unknown."""
    key = destination.split(",")[0].strip().casefold()
    key = ALIASES.get(key, key).casefold()
    climate = _CLIMATE_BY_KEY.get(key)
    return climate.name if climate else None


def _stable_hash(*parts: str) -> int:
    # Python's hash() is salted per process; crc32 keeps answers identical across runs and hosts.
    return zlib.crc32("|".join(p.casefold() for p in parts).encode())


def _parse_date(text: str) -> Date | None:
    try:
        return Date.fromisoformat(text.strip()[:10])
    except ValueError:
        return None


def _seasonal_high_c(climate: Climate, month: int) -> float:
    # A cosine between the coldest month (January, or July down south) and the warmest.
    coldest_month = 7 if climate.southern else 1
    phase = 2 * math.pi * ((month - coldest_month) % 12) / 12
    warmth = (1 - math.cos(phase)) / 2
    return climate.coldest_high_c + (climate.warmest_high_c - climate.coldest_high_c) * warmth


def _sky_kind(condition: str) -> Sky:
    lowered = condition.casefold()
    if "snow" in lowered:
        return "snow"
    if "thunder" in lowered:
        return "storm"
    if "rain" in lowered or "shower" in lowered:
        return "wet"
    if "wind" in lowered or "breez" in lowered:
        return "windy"
    if "fog" in lowered or "haz" in lowered:
        return "fog"
    return "fair"


def _recommendation(condition: str, high_c: int) -> str:
    """Practical advice that follows from the sky first, then the temperature."""
    advice: list[str] = []
    match _sky_kind(condition):
        case "storm":
            advice.append("Keep outdoor plans flexible: storms tend to build in the afternoon, "
                          "so see the outdoor sights in the morning and keep an indoor backup.")
        case "wet":
            advice.append("Pack an umbrella and a waterproof layer, and plan indoor highlights "
                          "(museums, galleries, covered markets) for the wettest hours.")
        case "snow":
            advice.append("Wear waterproof, insulated boots and allow extra time between sights.")
        case "windy":
            advice.append("Bring a windproof jacket; viewpoints and waterfronts will be gusty.")
        case "fog":
            advice.append("Save viewpoints for later in the day, when the haze usually lifts.")
        case "fair":
            pass
    if high_c >= 30:
        advice.append("It will be hot: hydrate often, wear sun protection and rest in the shade "
                      "around midday; walk in the morning and evening.")
    elif high_c >= 24:
        advice.append("Sunscreen, a hat and a refillable water bottle will be welcome.")
    elif high_c <= 5:
        advice.append("Dress in warm layers: a thermal base layer, a warm coat, hat and gloves.")
    elif high_c <= 13:
        advice.append("Bring layers and a warm jacket for the cooler morning and evening.")
    if not advice:
        advice.append("Ideal for exploring on foot: comfortable shoes and a light layer are enough.")
    return " ".join(advice)


def _fahrenheit(celsius: int) -> int:
    return round(celsius * 9 / 5 + 32)


def get_weather_forecast(
    destination: Annotated[str, Field(description="City to forecast, for example 'Tokyo' or 'Paris, France'.")],
    date: Annotated[str, Field(description="Day of the forecast as YYYY-MM-DD.")],
) -> str:
    """Get the weather forecast for a destination on a given date: conditions, the day's high
    in Fahrenheit and Celsius, and a practical recommendation that follows from them."""
    city = canonical_city(destination)
    climate = _CLIMATE_BY_KEY[city.casefold()] if city else GENERIC_CLIMATE
    place = city or destination.strip() or "the destination"
    seed = _stable_hash(place, date)
    day = _parse_date(date)
    month = day.month if day else seed % 12 + 1

    condition = climate.skies[seed % len(climate.skies)]
    high_c = round(_seasonal_high_c(climate, month)) + (seed >> 8) % 5 - 2  # +/- 2 °C day to day
    # Keep the picked sky plausible for the season's temperature.
    if high_c <= 1 and _sky_kind(condition) == "wet":
        condition = "Light snow"
    elif condition == "Humid" and high_c < 22:
        condition = "Overcast"

    estimate = "" if city else " (no station data for this place: a typical-conditions estimate)"
    return (
        f"Weather for {place} on {date}{estimate}: {condition}, high of "
        f"{_fahrenheit(high_c)}°F ({high_c}°C). "
        f"Recommendation: {_recommendation(condition, high_c)}"
    )


# --- Events --------------------------------------------------------------------------------------

TimeOfDay = Literal["Morning", "Afternoon", "Evening"]
WEEKENDS = frozenset({5, 6})  # Monday is 0
EVERY_DAY = frozenset(range(7))


@dataclass(frozen=True)
class LocalEvent:
    when: TimeOfDay
    name: str
    venue: str
    days: frozenset[int] = EVERY_DAY


EVENTS: dict[str, tuple[LocalEvent, ...]] = {
    "Tokyo": (
        LocalEvent("Morning", "Tsukiji Outer Market food stalls", "Tsukiji"),
        LocalEvent("Afternoon", "Harajuku street-fashion walk", "Takeshita Street"),
        LocalEvent("Evening", "Kabuki performance (single-act tickets available)", "Kabuki-za, Ginza"),
        LocalEvent("Evening", "Jazz night in an izakaya bar", "Golden Gai, Shinjuku"),
        LocalEvent("Morning", "Antique and flea market", "Oedo Antique Market, Tokyo International Forum",
              WEEKENDS),
    ),
    "Paris": (
        LocalEvent("Evening", "Seine river cruise at sunset", "Pont de l'Alma"),
        LocalEvent("Morning", "Marché d'Aligre food market", "12th arrondissement", frozenset({1, 2, 3, 4, 5, 6})),
        LocalEvent("Afternoon", "Late-afternoon organ recital", "Église Saint-Eustache", WEEKENDS),
        LocalEvent("Evening", "Jazz club session", "Le Caveau de la Huchette, Latin Quarter"),
        LocalEvent("Evening", "Late opening at the Musée d'Orsay", "Musée d'Orsay", frozenset({3})),
    ),
    "London": (
        LocalEvent("Morning", "Borough Market tasting walk", "Borough Market, Southwark"),
        LocalEvent("Evening", "West End musical", "Covent Garden theatres"),
        LocalEvent("Afternoon", "Columbia Road Flower Market", "Bethnal Green", frozenset({6})),
        LocalEvent("Evening", "Friday Late at the V&A", "Victoria and Albert Museum", frozenset({4})),
        LocalEvent("Afternoon", "Free lunchtime concert", "St Martin-in-the-Fields, Trafalgar Square"),
    ),
    "New York": (
        LocalEvent("Evening", "Broadway show (same-day discount tickets at TKTS)", "Times Square"),
        LocalEvent("Morning", "Union Square Greenmarket", "Union Square", frozenset({0, 2, 4, 5})),
        LocalEvent("Afternoon", "High Line walk with public art", "Chelsea"),
        LocalEvent("Evening", "Jazz at a Village club", "Greenwich Village"),
        LocalEvent("Afternoon", "Smorgasburg open-air food market", "Williamsburg, Brooklyn", WEEKENDS),
    ),
    "Rome": (
        LocalEvent("Morning", "Campo de' Fiori market", "Campo de' Fiori", frozenset({0, 1, 2, 3, 4, 5})),
        LocalEvent("Evening", "Opera arias in a historic church", "Centro Storico"),
        LocalEvent("Afternoon", "Porta Portese flea market", "Trastevere", frozenset({6})),
        LocalEvent("Evening", "Aperitivo and live music", "Trastevere"),
        LocalEvent("Morning", "Papal Angelus blessing at noon", "St Peter's Square", frozenset({6})),
    ),
    "Barcelona": (
        LocalEvent("Morning", "La Boqueria market", "La Rambla", frozenset({0, 1, 2, 3, 4, 5})),
        LocalEvent("Evening", "Flamenco show", "Palau Dalmases, El Born"),
        LocalEvent("Evening", "Guitar concert", "Palau de la Música Catalana"),
        LocalEvent("Afternoon", "Sardana dancing in the square", "Plaça de la Catedral", WEEKENDS),
        LocalEvent("Evening", "Sunset at the bunkers viewpoint", "Turó de la Rovira"),
    ),
    "Sydney": (
        LocalEvent("Evening", "Performance at the Opera House", "Sydney Opera House"),
        LocalEvent("Morning", "The Rocks weekend market", "The Rocks", WEEKENDS),
        LocalEvent("Afternoon", "Bondi to Coogee coastal walk", "Bondi Beach"),
        LocalEvent("Evening", "Night noodle markets and street food", "Haymarket"),
    ),
    "Kyoto": (
        LocalEvent("Morning", "Nishiki Market tasting stroll", "Nishiki Market"),
        LocalEvent("Evening", "Maiko dance performance", "Gion Corner, Gion"),
        LocalEvent("Morning", "Tea ceremony", "Camellia tea house, Higashiyama"),
        LocalEvent("Afternoon", "Philosopher's Path stroll past small temples", "Higashiyama"),
    ),
    "Lisbon": (
        LocalEvent("Evening", "Fado night", "Alfama"),
        LocalEvent("Morning", "Feira da Ladra flea market", "Campo de Santa Clara", frozenset({1, 5})),
        LocalEvent("Afternoon", "Time Out Market tasting", "Cais do Sodré"),
        LocalEvent("Evening", "Sunset at the miradouro", "Miradouro da Senhora do Monte"),
    ),
    "Amsterdam": (
        LocalEvent("Morning", "Albert Cuyp Market", "De Pijp", frozenset({0, 1, 2, 3, 4, 5})),
        LocalEvent("Evening", "Canal cruise with city lights", "Central canal ring"),
        LocalEvent("Afternoon", "Free lunchtime concert", "Concertgebouw", frozenset({2})),
        LocalEvent("Evening", "Comedy or live music", "Leidseplein"),
    ),
}

GENERIC_EVENTS: tuple[LocalEvent, ...] = (
    LocalEvent("Morning", "Local farmers' or flea market (most towns hold one at weekends)", "the main square"),
    LocalEvent("Afternoon", "Free walking tour of the historic centre", "the tourist information office"),
    LocalEvent("Evening", "Live music or a performance", "the city's main concert hall or theatre"),
)

_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ORDER: dict[str, int] = {"Morning": 0, "Afternoon": 1, "Evening": 2}


def _format_event(event: LocalEvent) -> str:
    return f"- {event.when}: {event.name} at {event.venue}"


def get_local_events(
    destination: Annotated[str, Field(description="City to look up, for example 'Lisbon'.")],
    date: Annotated[str, Field(description="Day of the visit as YYYY-MM-DD.")],
) -> str:
    """Get local events, markets and performances worth planning around in a destination on a
    given date, one per line with the time of day and the venue."""
    city = canonical_city(destination)
    place = city or destination.strip() or "the destination"
    day = _parse_date(date)
    weekday = day.weekday() if day else _stable_hash(place, date) % 7
    label = f"{date} ({_WEEKDAY_NAMES[weekday]})"

    if city not in EVENTS:
        lines = "\n".join(_format_event(e) for e in GENERIC_EVENTS)
        return (
            f"No curated event listings for {place} on {label}. Good bets in most places:\n{lines}\n"
            "Check the local tourist office or listings for exact times."
        )

    on_the_day = [e for e in EVENTS[city] if weekday in e.days]
    # Rotate by the date so consecutive days highlight different events, then show them in day order.
    start = _stable_hash(place, date) % len(on_the_day)
    picked = (on_the_day[start:] + on_the_day[:start])[:3]
    picked.sort(key=lambda e: _ORDER[e.when])
    lines = "\n".join(_format_event(e) for e in picked)
    return f"Events in {place} on {label}:\n{lines}"


# --- For the agent -------------------------------------------------------------------------------

def _description(func: Callable[..., str]) -> str:
    # The raw docstring keeps source indentation; models get one clean paragraph instead.
    return " ".join((inspect.getdoc(func) or "").split())


_CALL_LABELS = {
    "get_weather_forecast": "Checking the weather in {destination} on {date}",
    "get_local_events": "Looking up events in {destination} on {date}",
}


def describe_call(name: str, arguments: Mapping[str, object]) -> str | None:
    """What a call of one of these tools is doing, in words a reader's status line can show; None if unknown."""
    template = _CALL_LABELS.get(name)
    if template is None:
        return None
    destination = str(arguments.get("destination") or "").strip() or "your destination"
    day = _parse_date(str(arguments.get("date") or ""))
    when = f"{day:%a} {day.day} {day:%b}" if day else "the day asked"
    return template.format(destination=destination, date=when)


def travel_tools() -> list[FunctionTool]:
    """Fresh `FunctionTool`s for one agent (a tool instance keeps invocation counters)."""
    return [tool(func, description=_description(func)) for func in (get_weather_forecast, get_local_events)]


__all__ = [
    "CLIMATES",
    "EVENTS",
    "KNOWN_PLACE_NAMES",
    "canonical_city",
    "describe_call",
    "get_local_events",
    "get_weather_forecast",
    "travel_tools",
]
