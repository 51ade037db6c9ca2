"""The service's own Prometheus metrics, served at /metrics.

Under gunicorn each worker process counts on its own; prometheus-client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, set up by gunicorn.conf.py before any worker starts)
keeps every process' values in files that /metrics adds up. Labels stay few: the route
template (never the raw path, never a filter value), the method, the status, the kind of
Prometheus call and its outcome, and the dialect names.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from app.prometheus.errors import (
    PrometheusBadResponseError,
    PrometheusQueryError,
    PrometheusTimeoutError,
    PrometheusUnavailableError,
)
from app.telemetry.multiproc import MULTIPROC_ENV

NAMESPACE = "gpu_monitor"
# Up to the default REQUEST_DEADLINE (20 s): a slow fan-out still lands in a bucket.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
# The route label of a request no view matched (404s): one value, whatever the path.
UNMATCHED_ROUTE = "unmatched"


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when this process counts in it."""
    return os.environ.get(MULTIPROC_ENV) or None


def query_outcome(exc: BaseException | None) -> str:
    """Name how a call to Prometheus ended, as the `outcome` label says it."""
    if exc is None:
        return "success"
    if isinstance(exc, PrometheusUnavailableError):
        return "unavailable"
    if isinstance(exc, PrometheusTimeoutError):
        return "timeout"
    if isinstance(exc, PrometheusQueryError):
        return "query_error"
    if isinstance(exc, PrometheusBadResponseError):
        return "bad_response"
    return "error"


class Telemetry:
    """Every metric of one worker process, registered in a registry of its own.

    A registry per app keeps tests apart; in multiprocess mode the values live in the
    shared files anyway, and `render` reads those.
    """

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess = multiprocess_dir() is not None
        if not self._multiprocess:
            # Per-process figures make no sense summed over workers: single process only.
            for collector in (ProcessCollector, PlatformCollector, GCCollector):
                collector(registry=self.registry)
        reg = self.registry
        self.requests = Counter(
            "http_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], namespace=NAMESPACE, registry=reg)
        self.request_seconds = Histogram(
            "http_request_duration_seconds", "Time to answer an HTTP request.",
            ["route", "method"], namespace=NAMESPACE, buckets=LATENCY_BUCKETS, registry=reg)
        self.queries = Counter(
            "prometheus_requests", "Calls to the Prometheus API, by endpoint and outcome.",
            ["endpoint", "outcome"], namespace=NAMESPACE, registry=reg)
        self.query_seconds = Histogram(
            "prometheus_request_duration_seconds", "Time of one call to the Prometheus API.",
            ["endpoint"], namespace=NAMESPACE, buckets=LATENCY_BUCKETS, registry=reg)
        self.cache_lookups = Counter(
            "cache_lookups", "Response cache lookups: hit (fresh), stale (served while "
            "refreshing), stale_if_error, miss (asked Prometheus), overdue (a hanging "
            "refresh, answered 504).", ["result"], namespace=NAMESPACE, registry=reg)
        self.cache_refreshes = Counter(
            "cache_refreshes", "Background refreshes of stale cached answers, by outcome.",
            ["outcome"], namespace=NAMESPACE, registry=reg)
        self.detections = Counter(
            "dialect_detections", "Exporter dialect detections run, by outcome.",
            ["outcome"], namespace=NAMESPACE, registry=reg)
        # A gauge, not an Info: prometheus-client's Info does not work across processes.
        # livemax: a dialect counts while any live worker currently reads it.
        self.dialects = Gauge(
            "dialect_info", "1 for each exporter dialect in use, 0 for one not found.",
            ["dialect"], namespace=NAMESPACE, registry=reg, multiprocess_mode="livemax")
        build = Gauge(
            "build_info", "Always 1; the labels say which build runs.",
            ["version", "python_version"], namespace=NAMESPACE, registry=reg,
            multiprocess_mode="max")
        build.labels(version, platform.python_version()).set(1)

    # -- what the other parts report --------------------------------------------------

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def query_done(self, endpoint: str, exc: BaseException | None, seconds: float) -> None:
        """Count one call to Prometheus; `exc` is what it raised, if anything."""
        self.queries.labels(endpoint, query_outcome(exc)).inc()
        self.query_seconds.labels(endpoint).observe(seconds)

    def cache_lookup(self, result: str) -> None:
        """Count one response-cache lookup and how it was answered."""
        self.cache_lookups.labels(result).inc()

    def cache_refreshed(self, succeeded: bool) -> None:
        """Count one background refresh of the response cache."""
        self.cache_refreshes.labels("success" if succeeded else "failure").inc()

    def dialects_detected(self, found: Iterable[str], candidates: Iterable[str]) -> None:
        """Record a detection: which of the candidate dialects are in use now."""
        self.detections.labels("success").inc()
        in_use = set(found)
        for name in {*candidates, *in_use}:
            self.dialects.labels(name).set(1 if name in in_use else 0)

    def detection_failed(self) -> None:
        """Count a detection that failed (the previous answer, if any, is kept)."""
        self.detections.labels("failure").inc()

    # -- exposition -------------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format `accept` asks for (text or OpenMetrics), and its type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.exposed_registry()), content_type

    def exposed_registry(self) -> CollectorRegistry:
        """What a scrape reads: every process' files in multiprocess mode, else ours."""
        if not self._multiprocess:
            return self.registry
        return aggregate_registry()


def aggregate_registry() -> CollectorRegistry:
    """A registry that adds up the values every process wrote to the multiprocess dir."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry

