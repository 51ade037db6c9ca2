"""Check the response cache's single flight in isolation: how many produces per expiry.

The service promises one fan-out per freshness interval per worker. This drives the app's
own `ResponseCache` from many threads, with a short TTL and a `produce` that only sleeps
and counts, so anything above one produce per expiry is the cache's doing, not
Prometheus' or the network's.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from app.cache import ResponseCache


def probe(threads: int = 32, ttl_s: float = 0.5, produce_s: float = 0.05,
          duration_s: float = 3.0) -> dict[str, Any]:
    """Hammer one key from `threads` threads; return the produce calls grouped by expiry."""
    cache = ResponseCache(ttl=ttl_s, stale_for=30.0, max_bytes=1 << 20)
    starts: list[float] = []
    lock = threading.Lock()

    def produce() -> bytes:
        with lock:
            starts.append(time.monotonic())
        time.sleep(produce_s)
        return b"{}"

    stop_at = time.monotonic() + duration_s

    def client() -> None:
        for _ in range(100_000):  # bounded; the clock ends it long before
            if time.monotonic() >= stop_at:
                return
            cache.get(("metrics",), produce)
            time.sleep(0.001)

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=duration_s + 30)
    # Produces closer together than half a TTL belong to the same expiry.
    bursts: list[int] = []
    previous = None
    for start in sorted(starts):
        if previous is None or start - previous > ttl_s / 2:
            bursts.append(0)
        bursts[-1] += 1
        previous = start
    return {
        "threads": threads,
        "ttl_s": ttl_s,
        "produce_s": produce_s,
        "duration_s": duration_s,
        "produces": len(starts),
        "produces_per_expiry": bursts,
        "max_produces_per_expiry": max(bursts, default=0),
        "single_flight_held": max(bursts, default=0) <= 1,
    }
