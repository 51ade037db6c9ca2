"""The history window: defaults, the step list, alignment, and what Prometheus would refuse.

Every expectation is counted by hand: a window's timestamps are the multiples of the step
from the aligned start to the aligned end, both included.
"""

from __future__ import annotations

import pytest

from app.services.history import (
    MAX_POINTS,
    WindowError,
    align,
    count_points,
    resolve_window,
)

NOW = 1_764_460_800.0  # 2025-11-30T00:00:00Z: a multiple of every step up to a day
HOUR = 3600.0


def window(**kwargs: float | None) -> tuple[float, float, float]:
    args: dict = {"start": None, "end": None, "range_s": None, "step": None, "points": 240,
                  "now": NOW}
    args.update(kwargs)
    return resolve_window(**args)


def test_default_is_the_last_hour_at_30s_because_15s_gives_241_timestamps() -> None:
    # 3600 / 15 + 1 = 241 > 240; 3600 / 30 + 1 = 121.
    assert window() == (NOW - HOUR, NOW, 30)


def test_points_241_lets_the_hour_have_15s() -> None:
    assert window(points=241) == (NOW - HOUR, NOW, 15)


@pytest.mark.parametrize(("range_s", "points", "step"), [
    (15 * 60, 240, 15),        # 61 timestamps
    (6 * HOUR, 240, 300),      # 1 m: 361; 5 m: 73
    (24 * HOUR, 240, 900),     # 5 m: 289; 15 m: 97
    (7 * 86400, 240, 3600),    # 30 m: 337; 1 h: 169
    (30 * 86400, 240, 21600),  # 1 h: 721; 6 h: 121
    (HOUR, 60, 300),           # 1 m: 61 > 60; 5 m: 13
    (HOUR, 1, 86400),          # nothing gives 1 timestamp over an hour: the coarsest
])
def test_default_step_is_the_finest_that_fits(range_s: float, points: int,
                                              step: float) -> None:
    assert window(range_s=range_s, points=points)[2] == step


def test_an_unaligned_window_is_aligned_down_and_counted_after_alignment() -> None:
    # NOW - 3593 .. NOW + 20 at 15 s: NOW - 3600 .. NOW + 15, 242 timestamps, over 240;
    # at 30 s: NOW - 3600 .. NOW, 121.
    assert window(start=NOW - 3593, end=NOW + 20, now=NOW + 60) == (NOW - HOUR, NOW, 30)
    # NOW - 3593 .. NOW + 7 at 15 s: NOW - 3600 .. NOW, 241 timestamps.
    assert window(start=NOW - 3593, end=NOW + 7, points=241, now=NOW + 60) == (
        NOW - HOUR, NOW, 15)


def test_an_explicit_step_aligns_both_ends_to_its_multiples() -> None:
    start, end, step = window(start=NOW - 1000, end=NOW - 10, step=90)
    assert (start, end, step) == (NOW - 1080, NOW - 90, 90)  # NOW is a multiple of 90
    assert count_points(NOW - 1000, NOW - 10, 90) == 12


def test_range_ends_at_end() -> None:
    assert window(range_s=6 * HOUR, end=NOW - HOUR) == (NOW - 7 * HOUR, NOW - HOUR, 300)


def test_one_instant_is_one_timestamp() -> None:
    assert window(start=NOW - 60, end=NOW - 60, step=15) == (NOW - 60, NOW - 60, 15)


def test_11000_timestamps_are_allowed_and_11001_are_not() -> None:
    assert window(start=NOW - 10999 * 15, end=NOW, step=15)[0] == NOW - 10999 * 15
    with pytest.raises(WindowError, match="11001 timestamps") as raised:
        window(start=NOW - 11000 * 15, end=NOW, step=15)
    assert raised.value.argument == "step"
    assert MAX_POINTS == 11000


def test_start_after_end_is_refused_naming_start() -> None:
    with pytest.raises(WindowError, match="after end") as raised:
        window(start=NOW - 10, end=NOW - 20)
    assert raised.value.argument == "start"


def test_an_end_in_the_future_is_refused() -> None:
    with pytest.raises(WindowError, match="future") as raised:
        window(end=NOW + 1)
    assert raised.value.argument == "end"


def test_start_and_range_together_are_refused() -> None:
    with pytest.raises(WindowError, match="not both") as raised:
        window(start=NOW - HOUR, range_s=HOUR)
    assert raised.value.argument == "range"


def test_a_step_below_a_millisecond_is_refused() -> None:
    with pytest.raises(WindowError, match="at least"):
        window(step=0.0001)


def test_align_keeps_milliseconds_exact() -> None:
    assert align(1_764_460_812.345, 15) == 1_764_460_800.0
    assert align(1_764_460_800.1234, 0.001) == 1_764_460_800.123
