"""What the bench writes: model-sized chunks (a few words each, as the offline model streams them)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

from travelplanner.offline_model import chunk_text

_PASSAGE = (
    "## Day 1 — Arrival and the old town\n\n"
    "**Morning (09:00):** Start at the covered market for coffee and pastries, then walk the river "
    "embankment while the light is soft. **Afternoon (13:30):** The castle museum is quiet after lunch; "
    "allow two hours for the armoury and the rooftop terrace. **Evening (19:00):** Dinner in the lanes "
    "behind the cathedral, where the small family places serve grilled fish and local wine. "
    "Weather: 18°C, light cloud — bring a layer for the evening. Getting around: a day pass covers "
    "trams and the funicular, and most sights are a short walk apart.\n"
)
CHUNKS: tuple[str, ...] = tuple(chunk_text(_PASSAGE, 3))
MEAN_CHUNK_BYTES = sum(len(c.encode()) for c in CHUNKS) / len(CHUNKS)


def chunks() -> Iterator[str]:
    return itertools.cycle(CHUNKS)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"
