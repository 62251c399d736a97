"""Percentiles and medians over repeats: the only arithmetic the figures need."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def median(values: Sequence[float]) -> float:
    """Median of the repeats, ignoring NaN (a repeat that measured nothing)."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(statistics.median(kept)) if kept else math.nan


def ratio(ours: float, baseline: float) -> float:
    if math.isnan(ours) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return ours / baseline
