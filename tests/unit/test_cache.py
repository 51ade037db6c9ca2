"""The response cache: freshness, single flight, stale-while-revalidate, bounds."""

from __future__ import annotations

import threading
import time

import pytest

from app.cache import ByteBoundedLRU, ResponseCache


class CountingProducer:
    """Produces b"v<N>" and counts calls; can be made slow or failing."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = False
        self.lock = threading.Lock()

    def __call__(self) -> bytes:
        with self.lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("prometheus down")
        return f"v{n}".encode()


def test_fresh_answers_are_reused() -> None:
    cache = ResponseCache(ttl=60, stale_for=0, max_bytes=1 << 20)
    produce = CountingProducer()
    first = cache.get("k", produce)
    second = cache.get("k", produce)
    assert first.body == second.body == b"v1" and produce.calls == 1
    assert first.etag == second.etag
    assert cache.get("other", produce).body == b"v2"


def test_concurrent_misses_share_one_production() -> None:
    cache = ResponseCache(ttl=60, stale_for=0, max_bytes=1 << 20)
    produce = CountingProducer(delay=0.2)
    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(cache.get("k", produce).body))
               for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert produce.calls == 1
    assert bodies == [b"v1"] * 16


def test_concurrent_misses_share_one_failure_and_it_is_not_cached() -> None:
    cache = ResponseCache(ttl=60, stale_for=0, max_bytes=1 << 20)
    produce = CountingProducer(delay=0.1)
    produce.fail = True
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            cache.get("k", produce)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 8 and produce.calls == 1
    produce.fail = False
    assert cache.get("k", produce).body == b"v2"  # the failure was not remembered


def test_stale_answer_is_served_at_once_while_refreshing_in_background() -> None:
    cache = ResponseCache(ttl=0.05, stale_for=10, max_bytes=1 << 20)
    produce = CountingProducer(delay=0.3)
    assert cache.get("k", produce).body == b"v1"
    time.sleep(0.06)
    started = time.monotonic()
    stale = cache.get("k", produce)
    assert stale.body == b"v1" and time.monotonic() - started < 0.1
    deadline = time.monotonic() + 5
    while cache.get("k", produce).body != b"v2":
        assert time.monotonic() < deadline, "the background refresh never landed"
        time.sleep(0.02)
    assert produce.calls == 2  # one refresh, however many stale reads


def test_too_old_answer_is_not_served() -> None:
    cache = ResponseCache(ttl=0.01, stale_for=0.01, max_bytes=1 << 20)
    produce = CountingProducer()
    cache.get("k", produce)
    time.sleep(0.05)
    assert cache.get("k", produce).body == b"v2"


def test_ttl_zero_disables_caching() -> None:
    cache = ResponseCache(ttl=0, stale_for=30, max_bytes=1 << 20)
    produce = CountingProducer()
    cache.get("k", produce)
    cache.get("k", produce)
    assert produce.calls == 2 and not cache.enabled


def test_cache_is_bounded_in_bytes_and_evicts_least_recently_used() -> None:
    store = ByteBoundedLRU(max_bytes=100, size_of=len)
    store.set("a", b"x" * 40)
    store.set("b", b"x" * 40)
    store.get("a")
    store.set("c", b"x" * 40)
    assert store.get("b") is None and store.get("a") is not None
    assert store.current_bytes() <= 100
    store.set("huge", b"x" * 101)
    assert store.get("huge") is None


@pytest.mark.parametrize("body", [b"", b"{}", b"x" * 10000])
def test_etag_is_a_content_hash(body: bytes) -> None:
    cache = ResponseCache(ttl=60, stale_for=0, max_bytes=1 << 20)
    one = cache.get("a", lambda: body)
    two = cache.get("b", lambda: body)
    assert one.etag == two.etag
    assert cache.get("c", lambda: body + b" ").etag != one.etag


def test_a_stampede_on_a_stale_answer_starts_exactly_one_refresh() -> None:
    cache = ResponseCache(ttl=0.05, stale_for=10, max_bytes=1 << 20)
    produce = CountingProducer(delay=0.2)
    cache.get("k", produce)
    time.sleep(0.06)

    def read_for(seconds: float) -> None:
        # Readers keep seeing the stale answer for as long as the refresh runs.
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            cache.get("k", produce)
            time.sleep(0.001)

    threads = [threading.Thread(target=read_for, args=(0.15,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.5)  # let the refresh, and anything queued behind it, finish
    assert produce.calls == 2
