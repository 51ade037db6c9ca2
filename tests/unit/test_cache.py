"""The response cache: freshness, single flight, honest staleness, bounds.

Time is a FakeClock and background refreshes wait in a Backlog until the test runs them,
so every state is reached without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from app.cache import ByteBoundedLRU, RefreshOverdueError, ResponseCache, Served
from app.prometheus.errors import (
    PrometheusError,
    PrometheusTimeoutError,
    PrometheusUnavailableError,
)
from app.prometheus.watch import upstream_call
from tests.cache_doubles import Backlog, FakeClock

DOWN = "Prometheus at http://prom.test:9090 is unreachable: connection refused"


class CountingProducer:
    """Produces b"v<N>" and counts calls; can fail, or be held until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.failure: BaseException | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self) -> bytes:
        with self.lock:
            self.calls += 1
            n = self.calls
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never released the producer"
        if self.failure is not None:
            raise self.failure
        return f"v{n}".encode()


def make_cache(ttl: float = 5, stale_for: float = 5, *, clock: FakeClock | None = None,
               backlog: Backlog | None = None) -> ResponseCache:
    return ResponseCache(ttl=ttl, stale_for=stale_for, max_bytes=1 << 20,
                         clock=clock or FakeClock(), spawn=backlog or Backlog())


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def ask_from_threads(count: int, ask: Callable[[], object],
                     ) -> tuple[list[object], list[Exception], list[threading.Thread]]:
    """Start `count` threads calling `ask` at once; their results, errors and threads."""
    results: list[object] = []
    errors: list[Exception] = []
    started = threading.Barrier(count + 1)

    def run() -> None:
        started.wait()
        try:
            results.append(ask())
        except Exception as exc:  # collected for the assertions
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    started.wait()
    return results, errors, threads


def join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


# -- fresh, single flight -------------------------------------------------------------------


def test_fresh_answers_are_reused() -> None:
    cache = make_cache(ttl=60)
    produce = CountingProducer()
    first = cache.get("k", produce)
    second = cache.get("k", produce)
    assert first.body == second.body == b"v1" and produce.calls == 1
    assert first.etag == second.etag
    assert cache.get("other", produce).body == b"v2"


def test_served_age_follows_the_clock() -> None:
    clock = FakeClock()
    cache = make_cache(ttl=5, clock=clock)
    produce = CountingProducer()
    assert cache.get("k", produce).age == 0
    clock.advance(3.5)
    served = cache.get("k", produce)
    assert served.age == 3.5 and served.stale_because is None and produce.calls == 1


def test_answer_is_asked_again_once_the_ttl_passes() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(4.999)
    assert cache.get("k", produce).body == b"v1" and not backlog.tasks
    clock.advance(0.001)
    cache.get("k", produce)
    assert len(backlog.tasks) == 1


def test_concurrent_misses_share_one_production() -> None:
    cache = make_cache(ttl=60)
    produce = CountingProducer()
    produce.gate = threading.Event()
    results, errors, threads = ask_from_threads(16, lambda: cache.get("k", produce).body)
    wait_until(lambda: cache.collapsed == 15, "the others never joined the production")
    produce.gate.set()
    join(threads)
    assert produce.calls == 1 and not errors
    assert results == [b"v1"] * 16


def test_concurrent_misses_share_one_failure_and_it_is_not_cached() -> None:
    cache = make_cache(ttl=60)
    produce = CountingProducer()
    produce.failure = PrometheusUnavailableError(DOWN)
    produce.gate = threading.Event()
    _, errors, threads = ask_from_threads(8, lambda: cache.get("k", produce))
    wait_until(lambda: cache.collapsed == 7, "the others never joined the production")
    produce.gate.set()
    join(threads)
    assert len(errors) == 8 and produce.calls == 1
    assert len({id(exc) for exc in errors}) == 1  # the one failure, shared
    produce.failure = None
    assert cache.get("k", produce).body == b"v2"  # the failure was not remembered


def test_ttl_zero_disables_caching() -> None:
    cache = make_cache(ttl=0, stale_for=30)
    produce = CountingProducer()
    cache.get("k", produce)
    cache.get("k", produce)
    assert produce.calls == 2 and not cache.enabled


# -- stale while a refresh is in flight ----------------------------------------------------


def test_stale_answer_is_served_at_once_while_refreshing_in_background() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    assert cache.get("k", produce).body == b"v1"
    clock.advance(6)
    stale = cache.get("k", produce)
    assert stale.body == b"v1" and stale.age == 6 and stale.stale_because is None
    assert produce.calls == 1 and len(backlog.tasks) == 1  # refreshing, not yet produced
    backlog.run()
    fresh = cache.get("k", produce)
    assert fresh.body == b"v2" and fresh.age == 0 and produce.calls == 2


def test_a_stampede_on_a_stale_answer_starts_exactly_one_refresh() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(5)
    for _ in range(50):
        assert cache.get("k", produce).body == b"v1"
        clock.advance(0.01)
    assert len(backlog.tasks) == 1
    backlog.run()
    assert produce.calls == 2 and cache.get("k", produce).body == b"v2"


def test_a_stampede_from_threads_on_a_stale_answer_starts_one_refresh() -> None:
    clock = FakeClock()
    cache = ResponseCache(ttl=5, stale_for=5, max_bytes=1 << 20, clock=clock)  # real threads
    produce = CountingProducer()
    cache.get("k", produce)
    produce.gate = threading.Event()
    produce.entered.clear()
    clock.advance(6)
    results, errors, threads = ask_from_threads(8, lambda: cache.get("k", produce).body)
    join(threads)  # none of them waited on the refresh, which is still held
    assert results == [b"v1"] * 8 and not errors
    assert produce.entered.wait(10)
    produce.gate.set()
    wait_until(lambda: cache.get("k", produce).body == b"v2", "the refresh never landed")
    assert produce.calls == 2


def test_too_old_answer_with_no_refresh_under_way_is_produced_now() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(10)  # nobody asked while it was merely stale
    assert cache.get("k", produce).body == b"v2" and not backlog.tasks


# -- after a failed refresh -----------------------------------------------------------------


def test_after_a_failed_refresh_the_next_request_gets_the_failure() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(5.5)
    produce.failure = PrometheusUnavailableError(DOWN)
    assert cache.get("k", produce).body == b"v1"  # in flight: the old answer, at once
    backlog.run()  # the refresh fails
    with pytest.raises(PrometheusUnavailableError, match="unreachable"):
        cache.get("k", produce)  # well inside the old stale window
    assert produce.calls == 3  # the failed refresh, then this request asking again
    assert not backlog.tasks  # it asked on its own thread, not in the background


def test_a_retry_that_succeeds_serves_fresh_data() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(6)
    produce.failure = PrometheusUnavailableError(DOWN)
    cache.get("k", produce)
    backlog.run()
    produce.failure = None  # Prometheus is back
    served = cache.get("k", produce)
    assert served.body == b"v3" and served.age == 0 and served.stale_because is None
    clock.advance(1)
    assert cache.get("k", produce).body == b"v3" and produce.calls == 3  # fresh again


def test_recovery_after_failed_retries_clears_the_failure() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(6)
    produce.failure = PrometheusTimeoutError("Prometheus did not answer within 10.0s")
    cache.get("k", produce)
    backlog.run()
    for _ in range(3):
        with pytest.raises(PrometheusTimeoutError):
            cache.get("k", produce)
    produce.failure = None
    assert cache.get("k", produce).body == b"v6"
    clock.advance(6)
    assert cache.get("k", produce).body == b"v6"  # stale while refreshing, as before
    assert len(backlog.tasks) == 1


def test_the_synchronous_retry_is_one_flight_for_every_caller() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(6)
    produce.failure = PrometheusUnavailableError(DOWN)
    cache.get("k", produce)
    backlog.run()
    assert produce.calls == 2
    produce.failure = None
    produce.gate = threading.Event()
    collapsed = cache.collapsed
    results, errors, threads = ask_from_threads(16, lambda: cache.get("k", produce).body)
    wait_until(lambda: cache.collapsed == collapsed + 15, "the others never joined the retry")
    produce.gate.set()
    join(threads)
    assert not errors and results == [b"v3"] * 16
    assert produce.calls == 3  # one retry shared by all sixteen


def test_a_bug_in_a_refresh_is_not_hidden_behind_the_old_answer() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(6)
    produce.failure = RuntimeError("bug")
    cache.get("k", produce, stale_if_error=60)
    backlog.run()
    with pytest.raises(RuntimeError, match="bug"):
        cache.get("k", produce, stale_if_error=60)


# -- a refresh that does not come back (Prometheus hangs) ----------------------------------


def test_a_refresh_still_in_flight_after_the_stale_window_is_a_504_at_once() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(5)
    assert cache.get("k", produce).body == b"v1"  # the refresh starts, and hangs
    clock.advance(4.9)
    assert cache.get("k", produce).body == b"v1"  # 9.9 s old: still served
    clock.advance(0.1)
    with pytest.raises(PrometheusTimeoutError, match=r"has not answered for 5\.0s") as caught:
        cache.get("k", produce)
    assert isinstance(caught.value, RefreshOverdueError)
    assert produce.calls == 1 and len(backlog.tasks) == 1  # no second fan-out piled on


def test_a_slow_answer_is_served_while_its_refresh_runs_for_its_own_stale_window() -> None:
    # History rollups take Prometheus tens of seconds: their refresh is not overdue at 10 s.
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce, stale_for=60)
    clock.advance(5)
    assert cache.get("k", produce, stale_for=60).body == b"v1"  # the refresh starts
    clock.advance(59.9)
    assert cache.get("k", produce, stale_for=60).body == b"v1"  # 64.9 s old: served
    clock.advance(0.1)
    with pytest.raises(RefreshOverdueError, match=r"has not answered for 60\.0s"):
        cache.get("k", produce, stale_for=60)
    assert produce.calls == 1 and len(backlog.tasks) == 1
    backlog.run()
    assert cache.get("k", produce, stale_for=60).body == b"v2"


class TwoRoundProducer:
    """After a first quick answer: a production in two rounds, each a request to Prometheus
    held until the test answers it, with local work in between (a busy worker's join)."""

    def __init__(self) -> None:
        self.calls = 0
        self.reached = [threading.Event() for _ in range(3)]
        self.release = [threading.Event() for _ in range(3)]

    def _step(self, number: int) -> None:
        self.reached[number].set()
        assert self.release[number].wait(10), "the test never released this step"

    def __call__(self) -> bytes:
        self.calls += 1
        if self.calls > 1:
            with upstream_call():
                self._step(0)  # Prometheus evaluates round one
            self._step(1)  # the worker joins the answers
            with upstream_call():
                self._step(2)  # Prometheus evaluates round two
        return f"v{self.calls}".encode()

    def reach(self, number: int) -> None:
        assert self.reached[number].wait(10), f"the producer never reached step {number}"


def test_a_refresh_with_its_answers_in_is_not_overdue_but_a_silent_round_is() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = TwoRoundProducer()
    cache.get("k", produce)
    clock.advance(5)
    assert cache.get("k", produce).body == b"v1"  # the refresh starts
    refresh = threading.Thread(target=backlog.run)
    refresh.start()
    try:
        produce.reach(0)
        clock.advance(3)
        produce.release[0].set()  # Prometheus answers round one at 8 s
        produce.reach(1)
        clock.advance(4)
        # 12 s old, past ttl + stale, but Prometheus owes nothing: the worker is slow.
        served = cache.get("k", produce)
        assert (served.body, served.age) == (b"v1", 12)
        produce.release[1].set()
        produce.reach(2)  # round two asks Prometheus at 12 s
        clock.advance(4.9)
        assert cache.get("k", produce).body == b"v1"
        clock.advance(0.1)
        with pytest.raises(RefreshOverdueError, match=r"has not answered for 5\.0s"):
            cache.get("k", produce)
    finally:
        for gate in produce.release:
            gate.set()
        refresh.join(10)
    assert cache.get("k", produce).body == b"v2"
    assert produce.calls == 2


def test_an_overdue_refresh_that_lands_serves_its_answer() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(5)
    cache.get("k", produce)
    clock.advance(6)
    with pytest.raises(RefreshOverdueError):
        cache.get("k", produce)
    backlog.run()  # Prometheus was only slow
    assert cache.get("k", produce).body == b"v2"


# -- stale-if-error ---------------------------------------------------------------------------


def test_stale_if_error_serves_the_old_answer_marked_with_the_failure() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce, stale_if_error=60)
    clock.advance(6)
    produce.failure = PrometheusUnavailableError(DOWN)
    cache.get("k", produce, stale_if_error=60)
    backlog.run()
    clock.advance(36)
    served = cache.get("k", produce, stale_if_error=60)
    assert served == Served(served.entry, 42.0, DOWN)
    assert served.body == b"v1"
    # Nobody waits on the next attempt: it runs in the background, once.
    assert produce.calls == 2 and len(backlog.tasks) == 1
    cache.get("k", produce, stale_if_error=60)
    assert len(backlog.tasks) == 1


def test_stale_if_error_ends_when_the_answer_is_older_than_allowed() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(6)
    produce.failure = PrometheusUnavailableError(DOWN)
    cache.get("k", produce, stale_if_error=60)
    backlog.run()
    clock.advance(54)  # 60 s old
    with pytest.raises(PrometheusUnavailableError):
        cache.get("k", produce, stale_if_error=60)


def test_stale_if_error_recovers_with_fresh_unmarked_data() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(6)
    produce.failure = PrometheusUnavailableError(DOWN)
    cache.get("k", produce, stale_if_error=60)
    backlog.run()
    assert cache.get("k", produce, stale_if_error=60).stale_because == DOWN
    produce.failure = None
    backlog.run()  # the background retry succeeds
    served = cache.get("k", produce, stale_if_error=60)
    assert served.body == b"v3" and served.stale_because is None


def test_stale_if_error_covers_a_hanging_refresh() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(5)
    cache.get("k", produce, stale_if_error=60)
    clock.advance(7)
    served = cache.get("k", produce, stale_if_error=60)
    assert served.body == b"v1" and served.age == 12
    assert served.stale_because == ("Prometheus has not answered for 7.0s "
                                    "(a refresh of this answer is still waiting)")


def test_stale_if_error_covers_a_failed_production_of_a_too_old_answer() -> None:
    clock, backlog = FakeClock(), Backlog()
    cache = make_cache(ttl=5, stale_for=5, clock=clock, backlog=backlog)
    produce = CountingProducer()
    cache.get("k", produce)
    clock.advance(20)  # idle: no refresh under way, too old to serve unmarked
    produce.failure = PrometheusUnavailableError(DOWN)
    served = cache.get("k", produce, stale_if_error=60)
    assert served.body == b"v1" and served.age == 20 and served.stale_because == DOWN
    with pytest.raises(PrometheusError):
        cache.get("k", produce)  # without stale-if-error: the failure


# -- bounds and validators ------------------------------------------------------------------


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


def test_a_body_larger_than_the_cache_is_served_but_not_kept() -> None:
    cache = ResponseCache(ttl=60, stale_for=0, max_bytes=10, clock=FakeClock())
    assert cache.get("k", lambda: b"x" * 11).body == b"x" * 11
    assert cache.get("k", lambda: b"y").body == b"y"


@pytest.mark.parametrize("body", [b"", b"{}", b"x" * 10000])
def test_etag_is_a_content_hash(body: bytes) -> None:
    cache = make_cache(ttl=60)
    one = cache.get("a", lambda: body)
    two = cache.get("b", lambda: body)
    assert one.etag == two.etag
    assert cache.get("c", lambda: body + b" ").etag != one.etag
