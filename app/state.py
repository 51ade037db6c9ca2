"""What one worker process holds between requests, and the one place it is built.

`build_state(config)` is the composition root: the Flask app (`create_app`), the
benchmarks and the demo all wire the Prometheus client, the dialect selector and the
response cache through it, so they cannot drift apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from flask import current_app

from app.cache import CacheObserver, Clock, ResponseCache, Spawn
from app.config import Config
from app.dialects.detect import Detection
from app.dialects.selector import DetectionObserver, DialectSelector
from app.prometheus.client import PrometheusClient
from app.telemetry.metrics import Telemetry

logger = logging.getLogger(__name__)

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
    # The same server with the history budget (HISTORY_DEADLINE): its own pool, so a
    # long rollup never holds the threads the lists fan out on.
    history_prometheus: PrometheusClient
    dialects: DialectSelector
    cache: ResponseCache
    telemetry: Telemetry
    stats: RequestStats = field(default_factory=RequestStats)

    def detection(self) -> Detection:
        """Return the exporter dialects found in Prometheus (see DialectSelector.current)."""
        return self.dialects.current(self.prometheus)

    def start(self) -> None:
        """Begin this process' background work: detecting the exporter dialects.

        Called by the server once the process will serve (gunicorn's post_worker_init),
        never in a master that forks: threads do not survive a fork. Without it, the
        first request detects, and waits for that.
        """
        self.dialects.start(self.prometheus)

    def close(self) -> None:
        """Stop the clients' thread pools (tests and the demo; gunicorn simply exits)."""
        self.prometheus.close()
        self.history_prometheus.close()


def build_state(config: Config) -> AppState:
    """Wire the Prometheus client, the dialect selector and the response cache of `config`.

    Nothing here touches the network or starts a thread: the client's pool is created
    on first use and detection begins with `AppState.start()` or the first request.
    """
    if not config.tls_verify:
        logger.warning("TLS verification of Prometheus is OFF "
                       "(PROMETHEUS_TLS_INSECURE_SKIP_VERIFY)")
    from app import __version__

    telemetry = Telemetry(__version__)
    return AppState(
        config=config,
        prometheus=PrometheusClient(config.client_settings(), observer=telemetry),
        history_prometheus=PrometheusClient(config.history_client_settings(),
                                            observer=telemetry),
        dialects=build_selector(config, observer=telemetry),
        cache=build_cache(config, observer=telemetry),
        telemetry=telemetry,
    )


def build_selector(config: Config, *,
                   observer: DetectionObserver | None = None) -> DialectSelector:
    """The dialects METRICS_DIALECT names (forced), or every known one to detect among."""
    catalog = config.dialect_catalog()
    return DialectSelector(
        [catalog[name] for name in config.metrics_dialects] or list(catalog.values()),
        forced=bool(config.metrics_dialects),
        node_label=config.node_label,
        refresh_s=config.dialect_refresh,
        observer=observer,
    )


def build_cache(config: Config, *, clock: Clock = time.monotonic,
                spawn: Spawn | None = None,
                observer: CacheObserver | None = None) -> ResponseCache:
    """The response cache of `config`; tests pass a fake `clock` and a held `spawn`."""
    return ResponseCache(config.cache_ttl, config.cache_stale, config.cache_max_mb << 20,
                         clock=clock, spawn=spawn, observer=observer)


def get_state() -> AppState:
    """Return the current app's state."""
    state: AppState = current_app.extensions[EXTENSION_KEY]
    return state


def start_worker(app: object) -> bool:
    """Start the background work of the app a server loaded; False if it is not ours."""
    state = getattr(app, "extensions", {}).get(EXTENSION_KEY)
    if not isinstance(state, AppState):
        return False
    state.start()
    return True
