"""Is the service able to do its job? Only Prometheus' cheapest query decides."""

from __future__ import annotations

import time

from app.prometheus.client import PrometheusClient
from app.prometheus.errors import PrometheusError, PrometheusUnavailableError
from app.services.records import HealthReport, UpstreamStatus


def check_health(prom: PrometheusClient, version: str) -> HealthReport:
    """Probe Prometheus with `vector(1)`.

    Any failure (unreachable, too slow, garbage) means "not ready": it is raised as
    PrometheusUnavailableError (503), with the original explanation.
    """
    try:
        latency = prom.probe()
    except PrometheusUnavailableError:
        raise
    except PrometheusError as exc:
        raise PrometheusUnavailableError(str(exc)) from exc
    return HealthReport(
        status="healthy",
        timestamp=time.time(),
        version=version,
        prometheus=UpstreamStatus(url=prom.display_url, latency_ms=round(latency * 1000, 1)),
    )
