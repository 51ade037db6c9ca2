"""Percentiles, summaries and ratios of the measured durations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0-100), interpolating linearly between ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Latency of repeated calls, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Summary:
        """Summarize durations given in seconds."""
        ms = [s * 1000.0 for s in seconds]
        return cls(
            count=len(ms),
            p50_ms=round(percentile(ms, 50), 3),
            p90_ms=round(percentile(ms, 90), 3),
            min_ms=round(min(ms), 3) if ms else math.nan,
            max_ms=round(max(ms), 3) if ms else math.nan,
        )


def ratio(numerator: float, denominator: float) -> float | None:
    """Return numerator / denominator rounded, or None when undefined."""
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return None
    return round(numerator / denominator, 2)
