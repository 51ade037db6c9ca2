"""A short-lived cache of serialized responses: single flight, honest about staleness.

Many dashboards poll the same lists every few seconds. Each distinct question (endpoint and
normalized filters) is answered from Prometheus at most once per freshness interval (`ttl`)
per worker process, and concurrent misses share one fan-out. What an older answer may do:

- younger than `ttl`: served as is;
- older, while its background refresh is in flight: served as is for up to `stale_for`
  seconds past `ttl` (stale-while-revalidate), so pollers never wait on a slow fan-out;
- past that, with the refresh still waiting on Prometheus and no answer for `stale_for`
  seconds (Prometheus hangs): `RefreshOverdueError`, a 504, at once, rather than waiting up
  to the client's read timeout for the refresh. A refresh whose queries keep coming back,
  or that has its answers and is joining them on a busy worker, is not overdue: the stored
  answer is served on, its age saying how old it is (`app.prometheus.watch`);
- once a refresh has failed: the next request asks again synchronously (one flight for
  every caller), so it gets the failure exactly as an uncached request would, or fresh
  data if Prometheus is back.

A caller may allow stale-if-error (RFC 5861): after a failure, an answer younger than
`stale_if_error` seconds is served marked with the failure (`Served.stale_because`) while
a background refresh keeps trying. Only Prometheus failures qualify; a bug stays a 500.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from cachetools import LRUCache

from app.prometheus.errors import PrometheusError, PrometheusTimeoutError
from app.prometheus.watch import UpstreamWatch, watching

V = TypeVar("V")

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# Runs a refresh later, off the request thread.
Spawn = Callable[[Callable[[], None]], object]


class CacheObserver(Protocol):
    """Told how each lookup was answered and how each background refresh ended."""

    def cache_lookup(self, result: str) -> None:
        ...

    def cache_refreshed(self, succeeded: bool) -> None:
        ...


class _Unobserved:
    def cache_lookup(self, result: str) -> None:
        pass

    def cache_refreshed(self, succeeded: bool) -> None:
        pass


@dataclass(frozen=True)
class CachedBody:
    """A serialized response body, its strong validator and when it was produced."""

    body: bytes
    etag: str
    produced_at: float  # on the cache's clock (time.monotonic() unless injected)


def make_entry(body: bytes, produced_at: float | None = None) -> CachedBody:
    """Wrap a body with a content hash as its ETag."""
    when = time.monotonic() if produced_at is None else produced_at
    return CachedBody(body, hashlib.blake2b(body, digest_size=12).hexdigest(), when)


@dataclass(frozen=True)
class Served:
    """What the cache hands a view: the body, its age now, and why it is stale, if so."""

    entry: CachedBody
    age: float
    stale_because: str | None = None  # set only when served under stale-if-error

    @property
    def body(self) -> bytes:
        return self.entry.body

    @property
    def etag(self) -> str:
        return self.entry.etag


class RefreshOverdueError(PrometheusTimeoutError):
    """The stored answer is too old to serve and its refresh has not come back yet."""

    def __init__(self, upstream: str, waited: float) -> None:
        super().__init__(f"{upstream} has not answered for {waited:.1f}s "
                         "(a refresh of this answer is still waiting)")
        self.waited = waited


class ByteBoundedLRU(Generic[V]):
    """A thread-safe LRU map bounded by the total size of its values, in bytes."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self._data: LRUCache[Hashable, V] = LRUCache(maxsize=max_bytes, getsizeof=size_of)
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            return self._data.get(key)

    def set(self, key: Hashable, value: V) -> None:
        if self._size_of(value) > self._max_bytes:
            return  # larger than the whole cache: serve it, do not keep it
        with self._lock:
            self._data[key] = value

    def current_bytes(self) -> int:
        with self._lock:
            return int(self._data.currsize)


@dataclass(frozen=True)
class _Slot:
    """The last good answer of a key and, if a refresh failed since, that failure."""

    entry: CachedBody
    failure: BaseException | None = None


@dataclass(frozen=True)
class _Flight:
    """One production of a key under way; everyone asking meanwhile shares its outcome."""

    future: Future[CachedBody]
    background: bool  # a refresh while the old answer is served, not a caller waiting
    watch: UpstreamWatch  # how long Prometheus has owed it an answer


class ResponseCache:
    """Answer repeated questions from memory, asking Prometheus once per `ttl` seconds."""

    def __init__(self, ttl: float, stale_for: float, max_bytes: int, *,
                 clock: Clock = time.monotonic, spawn: Spawn | None = None,
                 observer: CacheObserver | None = None) -> None:
        self.ttl = ttl
        self._observer: CacheObserver = observer or _Unobserved()
        self.stale_for = stale_for
        self._clock = clock
        self._spawn = spawn
        self._entries: ByteBoundedLRU[_Slot] = ByteBoundedLRU(
            max_bytes, lambda slot: len(slot.entry.body))
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, _Flight] = {}
        self._refresher: ThreadPoolExecutor | None = None
        self._refresher_pid = 0
        # Callers that shared a production under way instead of starting one (RFC 9211
        # calls them collapsed): how well single flight works, for tests and debugging.
        self.collapsed = 0

    @property
    def enabled(self) -> bool:
        """A ttl of 0 turns caching off (every request asks Prometheus)."""
        return self.ttl > 0

    def get(self, key: Hashable, produce: Callable[[], bytes], *,
            stale_if_error: float = 0.0, upstream: str = "Prometheus",
            stale_for: float | None = None) -> Served:
        """Return a body for `key`: fresh, stale while refreshing, or produced now (once).

        `stale_for` replaces the cache's own for answers whose production takes longer
        than that to come back even from a healthy Prometheus. Raises what `produce`
        raised when the answer cannot be had, or RefreshOverdueError (naming `upstream`)
        when the refresh of a too old answer has not come back.
        """
        if not self.enabled:
            return Served(make_entry(produce(), self._clock()), 0.0)
        observe = self._observer.cache_lookup
        slot = self._entries.get(key)
        if not isinstance(slot, _Slot):
            observe("miss")
            return self._produce_now(key, produce)
        now = self._clock()
        age = now - slot.entry.produced_at
        if age < self.ttl:
            observe("hit")
            return Served(slot.entry, age)
        problem = slot.failure
        window = self.stale_for if stale_for is None else stale_for
        if problem is None:
            if age < self.ttl + window:
                self._refresh_in_background(key, produce)
                observe("stale")
                return Served(slot.entry, age)
            flight = self._flight(key)
            if flight is not None and flight.background:
                silent = flight.watch.silent_for()
                if silent < window:
                    # Prometheus answers; the refresh is slow on our side (a busy worker).
                    observe("stale")
                    return Served(slot.entry, age)
                problem = RefreshOverdueError(upstream, silent)
        if isinstance(problem, PrometheusError) and age < stale_if_error:
            self._refresh_in_background(key, produce)  # keep trying; nobody waits on it
            observe("stale_if_error")
            return Served(slot.entry, age, str(problem))
        if isinstance(problem, RefreshOverdueError):
            observe("overdue")
            raise problem  # do not pile a second fan-out onto a Prometheus that hangs
        # The refresh failed (or the answer is simply too old): ask again, once for all.
        try:
            served = self._produce_now(key, produce)
        except PrometheusError as exc:
            age = self._clock() - slot.entry.produced_at
            if age < stale_if_error:
                observe("stale_if_error")
                return Served(slot.entry, age, str(exc))
            observe("miss")
            raise
        observe("miss")
        return served

    def _flight(self, key: Hashable) -> _Flight | None:
        with self._lock:
            return self._inflight.get(key)

    def _claim(self, key: Hashable, background: bool) -> tuple[_Flight, bool]:
        """Return the production of `key` under way, or start one: (flight, ours)."""
        with self._lock:
            flight = self._inflight.get(key)
            if flight is not None:
                self.collapsed += 1
                return flight, False
            flight = _Flight(Future(), background, UpstreamWatch(self._clock))
            self._inflight[key] = flight
            return flight, True

    def _produce_now(self, key: Hashable, produce: Callable[[], bytes]) -> Served:
        """Produce `key` on this thread, or wait for the production already under way."""
        flight, owner = self._claim(key, background=False)
        if owner:
            self._fill(key, produce, flight)
        entry = flight.future.result()
        return Served(entry, max(0.0, self._clock() - entry.produced_at))

    def _refresh_in_background(self, key: Hashable, produce: Callable[[], bytes]) -> None:
        flight, owner = self._claim(key, background=True)
        if owner:
            spawn = self._spawn or self._background().submit
            # The refresh runs for the request that found the answer stale: its id goes
            # with it, into the refresh's queries and log lines.
            context = contextvars.copy_context()
            spawn(lambda: context.run(self._refresh, key, produce, flight))

    def _fill(self, key: Hashable, produce: Callable[[], bytes], flight: _Flight) -> None:
        """Produce the body we claimed, store it (or the failure), and tell every waiter."""
        try:
            with watching(flight.watch):
                body = produce()
            entry = make_entry(body, self._clock())
        except BaseException as exc:
            slot = self._entries.get(key)
            if isinstance(slot, _Slot):  # a failed miss leaves nothing behind to mark
                self._entries.set(key, replace(slot, failure=exc))
            flight.future.set_exception(exc)
        else:
            self._entries.set(key, _Slot(entry))
            flight.future.set_result(entry)
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _background(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._refresher is None or self._refresher_pid != os.getpid():
                self._refresher = ThreadPoolExecutor(max_workers=2,
                                                     thread_name_prefix="cache-refresh")
                self._refresher_pid = os.getpid()
            return self._refresher

    def _refresh(self, key: Hashable, produce: Callable[[], bytes], flight: _Flight) -> None:
        self._fill(key, produce, flight)
        failure = flight.future.exception()
        self._observer.cache_refreshed(failure is None)
        if failure is not None:
            # Logged here, once: no request sees this exception (the next one asks again).
            logger.warning("background refresh of %s failed: %s", key, failure)
