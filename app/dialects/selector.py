"""Hand out the current detection to requests; detect in the background, one at a time."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Protocol

from app.dialects.detect import Detection, detect
from app.dialects.model import Dialect
from app.prometheus.client import PrometheusClient
from app.prometheus.errors import PrometheusError, PrometheusTimeoutError

logger = logging.getLogger(__name__)


Detector = Callable[[PrometheusClient], Detection]
# A request that finds no detection yet waits for the one in flight: that is bounded by
# the client's deadline, and this margin covers connecting and the thread hand-over.
WAIT_MARGIN_S = 5.0


class DetectionObserver(Protocol):
    """Told of every detection: the dialects in use among the candidates, or a failure."""

    def dialects_detected(self, found: Iterable[str], candidates: Iterable[str]) -> None:
        ...

    def detection_failed(self) -> None:
        ...


class DialectSelector:
    """Hand out the current Detection; detect in a background thread, one at a time.

    `start()` begins detecting when the worker starts. `current()` answers at once with
    the detection it has, and when that is due for a re-check it starts a background
    refresh (single flight). Only a caller that comes before any detection exists waits,
    for the one in flight. A failed refresh keeps the previous detection and is retried
    after `retry_s`; with no detection at all, every caller tries again (and gets the error).
    """

    def __init__(
        self,
        candidates: Sequence[Dialect],
        *,
        forced: bool,
        node_label: str | None = None,
        refresh_s: float = 300.0,
        retry_s: float = 15.0,
        detector: Detector | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer: DetectionObserver | None = None,
    ) -> None:
        self.candidates = tuple(candidates)
        self._observer = observer
        self.forced = forced
        self.node_label = node_label
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self._detector: Detector = detector or self._detect
        self._clock = clock
        self._lock = threading.Lock()
        self._detection: Detection | None = None
        self._next_check = 0.0
        self._flight: Future[Detection] | None = None
        self._flight_pid = 0
        self._failures = 0  # in a row; the first of a streak is logged, not every retry

    @property
    def latest(self) -> Detection | None:
        """The current detection, if there is one, without starting anything."""
        return self._detection

    @property
    def detecting(self) -> bool:
        """Whether a detection is running in this process now."""
        with self._lock:
            return self._running() is not None

    def start(self, prom: PrometheusClient) -> Future[Detection]:
        """Begin a detection in a background thread unless one is running; return it."""
        with self._lock:
            return self._launch(prom)

    def current(self, prom: PrometheusClient) -> Detection:
        """Return the detection, refreshing it in the background when due.

        Before the first detection exists, wait for the one in flight (starting it if
        need be) and raise its PrometheusError if it fails.
        """
        detection = self._detection
        if detection is not None:
            if self._clock() >= self._next_check:
                with self._lock:
                    if self._clock() >= self._next_check:
                        self._launch(prom)
            return detection
        with self._lock:
            if self._detection is not None:  # finished while we took the lock
                return self._detection
            flight = self._launch(prom)
        wait_s = prom.settings.deadline + WAIT_MARGIN_S
        try:
            return flight.result(timeout=wait_s)
        except TimeoutError:
            raise PrometheusTimeoutError(
                f"dialect detection against Prometheus at {prom.display_url} did not finish "
                f"within {wait_s:g}s"
            ) from None

    # -- internals --------------------------------------------------------------------

    def _detect(self, prom: PrometheusClient) -> Detection:
        return detect(prom, self.candidates, forced=self.forced, node_label=self.node_label)

    def _running(self) -> Future[Detection] | None:
        # A flight started before a fork has no thread in this process: it never ends here.
        flight = self._flight
        if flight is None or flight.done() or self._flight_pid != os.getpid():
            return None
        return flight

    def _launch(self, prom: PrometheusClient) -> Future[Detection]:
        """Start a detection thread unless one runs; the caller holds the lock."""
        flight = self._running()
        if flight is not None:
            return flight
        flight = Future()
        self._flight, self._flight_pid = flight, os.getpid()
        threading.Thread(target=self._run, args=(prom, flight), name="dialect-detection",
                         daemon=True).start()
        return flight

    def _run(self, prom: PrometheusClient, flight: Future[Detection]) -> None:
        try:
            fresh = self._detector(prom)
        except Exception as exc:  # handed to the waiting callers, never lost in the thread
            try:
                self._failed(exc)
            finally:
                flight.set_exception(exc)
            return
        try:
            self._succeeded(fresh)
        finally:
            flight.set_result(fresh)

    def _succeeded(self, fresh: Detection) -> None:
        if self._observer is not None:
            self._observer.dialects_detected(_names(fresh), [d.name for d in self.candidates])
        found = bool(fresh.dialects) and any(fresh.series_counts.values())
        with self._lock:
            previous, self._detection = self._detection, fresh
            self._next_check = self._clock() + (self.refresh_s if found else self.retry_s)
            failures, self._failures = self._failures, 0
            self._flight = None
        if failures and previous is not None:
            logger.info("dialect detection works again after %d failed attempt(s)", failures)
        if previous is None or _names(previous) != _names(fresh):
            took = f" (detected in {fresh.elapsed_s * 1000:.0f} ms)" if fresh.elapsed_s else ""
            logger.info("reading GPU metrics as: %s%s", ", ".join(_names(fresh)) or "nothing",
                        took)

    def _failed(self, exc: Exception) -> None:
        if self._observer is not None:
            self._observer.detection_failed()
        with self._lock:
            self._failures += 1
            first = self._failures == 1
            kept = self._detection is not None
            if kept:
                self._next_check = self._clock() + self.retry_s
            self._flight = None
        if not isinstance(exc, PrometheusError):
            logger.error("dialect detection failed unexpectedly", exc_info=exc)
        elif not first:
            logger.debug("dialect detection failed again: %s", exc)
        elif kept:
            logger.warning("dialect re-detection failed; keeping the previous answer and "
                           "retrying every %gs: %s", self.retry_s, exc)
        else:
            logger.warning("dialect detection failed; the next request tries again: %s", exc)


def _names(detection: Detection) -> list[str]:
    return [d.name for d in detection.dialects]
