"""Is a production waiting on Prometheus, or on its own work? Tells a hang from a busy worker.

The response cache gives each production an `UpstreamWatch` and runs it inside `watching`;
the Prometheus client wraps every exchange in `upstream_call`, in whichever thread (the
fan-out's threads run in copies of the caller's context). A refresh that has been waiting
on Prometheus with no answer for its stale window is overdue; one whose queries keep coming
back, or that has every answer and is joining them on a busy worker, is not.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class UpstreamWatch:
    """A production's requests to Prometheus in flight, and when it last heard back."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._asked = False
        # Since when nothing has come back: the start, then each answer (or a new round).
        self._silent_since = clock()

    def started(self) -> None:
        """One request to Prometheus is under way."""
        with self._lock:
            if self._in_flight == 0 and self._asked:
                self._silent_since = self._clock()  # a new round: its own wait starts now
            self._in_flight += 1
            self._asked = True

    def answered(self) -> None:
        """One request came back (an answer or a failure)."""
        with self._lock:
            self._in_flight -= 1
            self._silent_since = self._clock()

    def silent_for(self) -> float:
        """Seconds Prometheus has owed this production an answer; 0 while none is owed.

        Before its first request the production counts as waiting: it may be queued
        behind others and Prometheus is what it will wait for.
        """
        with self._lock:
            if self._asked and self._in_flight == 0:
                return 0.0
            return max(0.0, self._clock() - self._silent_since)


_current: contextvars.ContextVar[UpstreamWatch | None] = contextvars.ContextVar(
    "upstream_watch", default=None)


@contextmanager
def watching(watch: UpstreamWatch) -> Iterator[None]:
    """Report the requests made within this block (and the threads it fans out to)."""
    token = _current.set(watch)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def upstream_call() -> Iterator[None]:
    """One request to Prometheus: tell the production's watch, if it has one."""
    watch = _current.get()
    if watch is None:
        yield
        return
    watch.started()
    try:
        yield
    finally:
        watch.answered()
