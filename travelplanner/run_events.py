"""What a run shows its readers besides its text: the tool calls it makes, and the tokens it used.

Both are written to the run log as compact JSON (`tool` and `usage` entries, see README "API reference").

**Tool activity** comes from the function_call and function_result contents of the agent's updates. A
real model streams each call in fragments under one call id (the first names the tool, later ones carry
pieces of its arguments); the offline model sends each call whole. A call counts as asked for once the
stream has moved past it (another call, text, usage, or the tools' results, or the end of the stream):
that is a `started` event. Its result is a `completed` event, or `failed` when the tool raised. Every
event carries the call id, the tool's name, a label (what the step is doing, in words a status line can
show), and the arguments; a result adds a short summary:

    {"call_id":"call_1","name":"get_weather_forecast","status":"completed",
     "label":"Checking the weather in Kyoto on Sun 6 Dec","arguments":{"destination":"Kyoto","date":"2026-12-06"},
     "summary":"Weather for Kyoto on 2026-12-06: Overcast, high of 52°F (11°C)…"}

Only what is safe to show leaves here: argument values and summaries are cut to 120 characters, an
argument whose name suggests a secret (key, token, password, …) is withheld, and a failure's summary is
the word "failed", never the exception's text.

**Usage** is the token counts the model reported for the whole run (all its model calls), when it
reported any: `{"input_tokens":1096,"output_tokens":165,"total_tokens":1261}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SHOWN_CHARS = 120
_SECRET_NAME = re.compile(r"key|token|secret|password|passwd|credential|authorization|cookie", re.IGNORECASE)
_WITHHELD = "[withheld]"
_USAGE_FIELDS = {"input_token_count": "input_tokens", "output_token_count": "output_tokens",
                 "total_token_count": "total_tokens"}

Labeller = Callable[[str, Mapping[str, Any]], "str | None"]  # (tool name, arguments) -> label, or None


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS].rstrip() + "…"


def shown_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as readers may see them: secrets withheld, long values cut, nesting flattened to text."""
    shown: dict[str, Any] = {}
    for name, value in list(arguments.items())[:20]:
        name = _cut(str(name))
        if _SECRET_NAME.search(name):
            shown[name] = _WITHHELD
        elif value is None or isinstance(value, bool | int | float):
            shown[name] = value
        else:
            shown[name] = _cut(value if isinstance(value, str) else _compact(value))
    return shown


@dataclass
class _Call:
    name: str = ""
    fragments: list[str] = field(default_factory=list)
    whole: Mapping[str, Any] | None = None

    def arguments(self) -> dict[str, Any]:
        if self.whole is not None:
            return dict(self.whole)
        try:
            parsed = json.loads("".join(self.fragments) or "{}")
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


class ToolActivity:
    """Turns one attempt's updates into `tool` events, in the order the calls were asked for and answered."""

    def __init__(self, label: Labeller | None = None) -> None:
        self._label = label or (lambda _name, _arguments: None)
        self._asking: dict[str, _Call] = {}  # calls whose fragments may still be arriving
        self._asked: dict[str, _Call] = {}  # calls announced, waiting for their result

    def events(self, contents: Iterable[Any]) -> list[str]:
        """The events these contents (of one update) complete, as JSON texts."""
        events: list[str] = []
        for content in contents:
            if content.type == "function_call":
                call_id = str(content.call_id or f"call-{len(self._asking) + len(self._asked)}")
                events += self._announce(keep=call_id)
                call = self._asking.setdefault(call_id, _Call())
                call.name = call.name or str(content.name or "")
                if isinstance(content.arguments, Mapping):
                    call.whole = content.arguments
                elif content.arguments:
                    call.fragments.append(str(content.arguments))
            else:
                events += self._announce()
                if content.type == "function_result":
                    events.append(self._result(content))
        return events

    def finish(self) -> list[str]:
        """The calls still waiting to be announced when the stream ends."""
        return self._announce()

    def _announce(self, keep: str | None = None) -> list[str]:
        events = []
        for call_id in [c for c in self._asking if c != keep]:
            call = self._asking.pop(call_id)
            self._asked[call_id] = call
            events.append(self._event(call_id, call, "started"))
        return events

    def _result(self, content: Any) -> str:
        call_id = str(content.call_id or "")
        call = self._asked.pop(call_id, None) or self._asking.pop(call_id, None) or _Call()
        if getattr(content, "exception", None) is not None:
            return self._event(call_id, call, "failed", "failed")
        return self._event(call_id, call, "completed", _cut(" ".join(_result_text(content).split())))

    def _event(self, call_id: str, call: _Call, status: str, summary: str | None = None) -> str:
        arguments = call.arguments()
        label = self._label(call.name, arguments) or f"Running {call.name or 'a tool'}"
        event = {"call_id": call_id, "name": call.name, "status": status, "label": _cut(label),
                 "arguments": shown_arguments(arguments)}
        if summary is not None:
            event["summary"] = summary
        return _compact(event)


def _result_text(content: Any) -> str:
    if isinstance(content.result, str):
        return content.result
    items = getattr(content, "items", None) or []
    text = " ".join(item.text or "" for item in items if getattr(item, "type", None) == "text")
    return text or ("" if content.result is None else _compact(content.result))


def tool_events_of(messages: Iterable[Any], label: Labeller | None = None) -> list[str]:
    """The tool events of a whole (non-streamed) answer's messages."""
    activity = ToolActivity(label)
    events: list[str] = []
    for message in messages:
        events += activity.events(message.contents)
    return events + activity.finish()


def usage_event(details: Mapping[str, Any] | None) -> str | None:
    """The `usage` event for a run's usage details, or None when the model reported no token counts."""
    usage = {name: details[field_name] for field_name, name in _USAGE_FIELDS.items()
             if details and isinstance(details.get(field_name), int)}
    return _compact(usage) if usage else None
