"""Test doubles for time-driven code (the cache, dialect detection): a clock that moves when
told, and background work held until the test runs it."""

from __future__ import annotations

from collections.abc import Callable


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backlog:
    """Background refreshes, queued until the test runs them."""

    def __init__(self) -> None:
        self.tasks: list[Callable[[], None]] = []

    def __call__(self, task: Callable[[], None]) -> None:
        self.tasks.append(task)

    def run(self) -> None:
        """Run every queued refresh on this thread."""
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task()
