"""Durations as people and Prometheus write them: seconds (`90`) or units (`5m`, `1h30m`)."""

from __future__ import annotations

import math
import re

DURATION_PATTERN = r"^(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d|w|y))+)$"
# \Z, not $: a trailing newline is not part of the value.
_DURATION_TEXT = re.compile(DURATION_PATTERN[:-1] + r"\Z", re.ASCII)
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y))")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
LONGEST_S = 100 * UNITS["y"]


def parse_duration(text: str) -> float | None:
    """Seconds of a positive duration, or None when `text` is not one."""
    if not _DURATION_TEXT.match(text):
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = sum(float(n) * UNITS[unit] for n, unit in _DURATION.findall(text))
    if not math.isfinite(seconds) or seconds <= 0 or seconds > LONGEST_S:
        return None
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling in one unit: 3600 -> "1h", 90 -> "90s"."""
    for unit in ("d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"
