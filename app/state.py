"""What one worker process holds between requests, kept in app.extensions."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from flask import current_app

from app.cache import ResponseCache
from app.config import Config
from app.dialects.detect import DialectSelector
from app.prometheus.client import PrometheusClient

EXTENSION_KEY = "gpu_monitor"


@dataclass
class RequestStats:
    """Per-process request counts by status, for the debug endpoint."""

    started: float = field(default_factory=time.time)
    by_status: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int) -> None:
        """Count one finished request."""
        with self.lock:
            self.by_status[status] += 1

    def snapshot(self) -> dict[str, int]:
        """Return the counts keyed by status, as strings for JSON."""
        with self.lock:
            return {str(status): count for status, count in sorted(self.by_status.items())}


@dataclass
class AppState:
    """The long-lived objects a worker shares across requests."""

    config: Config
    prometheus: PrometheusClient
    dialects: DialectSelector
    cache: ResponseCache
    stats: RequestStats = field(default_factory=RequestStats)

    def start(self) -> None:
        """Begin this process' background work: detecting the exporter dialects.

        Called by the server once the process will serve (gunicorn's post_worker_init),
        never in a master that forks: threads do not survive a fork. Without it, the
        first request detects, and waits for that.
        """
        self.dialects.start(self.prometheus)


def get_state() -> AppState:
    """Return the current app's state."""
    return current_app.extensions[EXTENSION_KEY]


def start_worker(app: object) -> bool:
    """Start the background work of the app a server loaded; False if it is not ours."""
    state = getattr(app, "extensions", {}).get(EXTENSION_KEY)
    if not isinstance(state, AppState):
        return False
    state.start()
    return True
