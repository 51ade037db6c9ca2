"""Thread stacks are read with the garbage collector held off (CPython gh-106883)."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from app import introspection


@pytest.fixture
def collector_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Whether the collector was enabled at each call of sys._current_frames."""
    seen: list[bool] = []
    real = sys._current_frames

    def spy() -> dict[int, FrameType]:
        seen.append(gc.isenabled())
        return real()

    monkeypatch.setattr(sys, "_current_frames", spy)
    was_enabled = gc.isenabled()
    yield seen
    if was_enabled:
        gc.enable()


def test_thread_stacks_hold_the_collector_off_and_turn_it_back_on(
        collector_seen: list[bool]) -> None:
    gc.enable()
    stacks = introspection.thread_stacks()
    assert collector_seen == [False]
    assert gc.isenabled()
    me = f"{threading.current_thread().name} ({threading.get_ident()})"
    assert any("test_thread_stacks_hold_the_collector_off" in line for line in stacks[me])


def test_a_collector_turned_off_by_the_process_stays_off(collector_seen: list[bool]) -> None:
    gc.disable()  # as a deployment may have it
    introspection.thread_stacks()
    assert collector_seen == [False]
    assert not gc.isenabled()


def test_every_profile_sample_holds_the_collector_off(collector_seen: list[bool]) -> None:
    gc.enable()
    profile = introspection.sample_profile(0.05, top=3)
    assert collector_seen and not any(collector_seen)
    assert gc.isenabled()
    assert profile["thread_samples"] >= 0
