"""Choose the dialect to read: the one configured, or the one Prometheus holds."""

from __future__ import annotations

from app.dialects.builtin import BUILTIN_DIALECTS, LEGACY
from app.dialects.model import Dialect
from app.prometheus.client import PrometheusClient


class DialectSelector:
    """Hand out the dialect for the next request."""

    def __init__(self, forced: str | None = None) -> None:
        self.forced = BUILTIN_DIALECTS[forced] if forced else None

    def current(self, prom: PrometheusClient) -> Dialect:
        """Return the dialect to use now."""
        return self.forced or LEGACY
