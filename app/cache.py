"""A short-lived cache of serialized responses: single flight, stale-while-revalidate.

Many dashboards poll the same lists every few seconds. Each distinct question (endpoint and
normalized filters) is answered from Prometheus at most once per freshness interval per
worker process; concurrent misses share one fan-out, and once an answer exists, callers get
it at once while a background thread refreshes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from cachetools import LRUCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedBody:
    """A serialized response body, its strong validator and when it was produced."""

    body: bytes
    etag: str
    produced_at: float  # time.monotonic()

    def age(self) -> float:
        """Seconds since the data was fetched."""
        return time.monotonic() - self.produced_at


def make_entry(body: bytes) -> CachedBody:
    """Wrap a body with a content hash as its ETag."""
    return CachedBody(body, hashlib.blake2b(body, digest_size=12).hexdigest(), time.monotonic())


class ByteBoundedLRU:
    """A thread-safe LRU map bounded by the total size of its values, in bytes."""

    def __init__(self, max_bytes: int, size_of: Callable[[object], int]) -> None:
        self._data: LRUCache[Hashable, object] = LRUCache(maxsize=max_bytes, getsizeof=size_of)
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> object | None:
        with self._lock:
            return self._data.get(key)

    def set(self, key: Hashable, value: object) -> None:
        if self._size_of(value) > self._max_bytes:
            return  # larger than the whole cache: serve it, do not keep it
        with self._lock:
            self._data[key] = value

    def current_bytes(self) -> int:
        with self._lock:
            return int(self._data.currsize)


class ResponseCache:
    """Answer repeated questions from memory, asking Prometheus once per `ttl` seconds."""

    def __init__(self, ttl: float, stale_for: float, max_bytes: int) -> None:
        self.ttl = ttl
        self.stale_for = stale_for
        self._entries = ByteBoundedLRU(max_bytes, lambda entry: len(entry.body))  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[CachedBody]] = {}
        self._refresher: ThreadPoolExecutor | None = None
        self._refresher_pid = 0

    @property
    def enabled(self) -> bool:
        """A ttl of 0 turns caching off (every request asks Prometheus)."""
        return self.ttl > 0

    def get(self, key: Hashable, produce: Callable[[], bytes]) -> CachedBody:
        """Return a body for `key`: fresh, stale while refreshing, or produced now (once)."""
        if not self.enabled:
            return make_entry(produce())
        entry = self._entries.get(key)
        if isinstance(entry, CachedBody):
            age = entry.age()
            if age < self.ttl:
                return entry
            if age < self.ttl + self.stale_for:
                future, owner = self._claim(key)
                if owner:
                    self._background().submit(self._refresh, key, produce, future)
                return entry
        future, owner = self._claim(key)
        if owner:
            self._fill(key, produce, future)
        return future.result()

    def _claim(self, key: Hashable) -> tuple[Future[CachedBody], bool]:
        """Return the production of `key` under way, or start one: (future, ours)."""
        with self._lock:
            future = self._inflight.get(key)
            if future is not None:
                return future, False
            future = Future()
            self._inflight[key] = future
            return future, True

    def _fill(self, key: Hashable, produce: Callable[[], bytes],
              future: Future[CachedBody]) -> None:
        """Produce the body we claimed, store it, and hand it to everyone waiting."""
        try:
            entry = make_entry(produce())
        except BaseException as exc:
            future.set_exception(exc)
        else:
            self._entries.set(key, entry)
            future.set_result(entry)
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

    def _refresh(self, key: Hashable, produce: Callable[[], bytes],
                 future: Future[CachedBody]) -> None:
        self._fill(key, produce, future)
        if future.exception() is not None:
            # The stale answer stays until it expires; the next poll will try again.
            logger.warning("background refresh of %s failed: %s", key, future.exception())
