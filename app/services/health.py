"""Is the service able to do its job? Only Prometheus' cheapest query decides."""

from __future__ import annotations

import time

from app.prometheus.client import PrometheusClient
from app.services.records import HealthReport, UpstreamStatus


def check_health(prom: PrometheusClient, version: str) -> HealthReport:
    """Probe Prometheus with `vector(1)`; raise a PrometheusError when it cannot answer."""
    latency = prom.probe()
    return HealthReport(
        status="healthy",
        timestamp=time.time(),
        version=version,
        prometheus=UpstreamStatus(url=prom.display_url, latency_ms=round(latency * 1000, 1)),
    )
