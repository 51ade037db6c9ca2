"""Answer a list endpoint from the response cache: one helper for every cached view."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import Response

from app.api.envelope import cached_ok, envelope_bytes
from app.dialects.model import Dialect
from app.prometheus.client import PrometheusClient
from app.services.records import GpuFilters
from app.state import get_state

Row = TypeVar("Row")
# The shape of list_gpus and list_processes: the client, the dialects in use, the filters.
ListService = Callable[[PrometheusClient, Sequence[Dialect], GpuFilters], list[Row]]


def cached_list(name: str, service: ListService[Row], filters: GpuFilters,
                dump: Callable[[list[Row]], Any], message: str) -> Response:
    """Serve `service`'s rows for `filters` from the cache, stale-if-error as configured.

    On a miss (or a refresh) the rows are produced with the dialects detected then,
    dumped and wrapped in the envelope once; hits reuse those bytes and their ETag.
    """
    state = get_state()

    def produce() -> bytes:
        # May run on a cache-refresh thread: it holds plain objects, no request context.
        rows = service(state.prometheus, state.detection().dialects, filters)
        return envelope_bytes(dump(rows), message)

    served = state.cache.get((name, filters), produce,
                             stale_if_error=state.config.cache_stale_if_error,
                             upstream=f"Prometheus at {state.prometheus.display_url}")
    return cached_ok(served, state.cache.ttl)
