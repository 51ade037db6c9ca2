"""Answer an endpoint from the response cache: one helper for every cached view."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from flask import Response

from app.api.envelope import cached_ok, envelope_bytes
from app.dialects.detect import Detection
from app.dialects.model import Dialect
from app.prometheus.client import PrometheusClient
from app.services.records import GpuFilters
from app.state import get_state

Row = TypeVar("Row")
# The shape of list_gpus and list_processes: the client, the dialects in use, the filters.
ListService = Callable[[PrometheusClient, Sequence[Dialect], GpuFilters], list[Row]]
# What a cached view computes on a miss: the client and the detection in, `data` out.
Producer = Callable[[PrometheusClient, Detection], Any]


def cached_list(name: str, service: ListService[Row], filters: GpuFilters,
                dump: Callable[[list[Row]], Any], message: str) -> Response:
    """Serve `service`'s rows for `filters` from the cache, stale-if-error as configured."""
    return cached_answer((name, filters),
                         lambda prom, found: dump(service(prom, found.dialects, filters)),
                         message)


def cached_answer(key: Hashable, produce_data: Producer, message: str, *,
                  history: bool = False) -> Response:
    """Serve the `data` that `produce_data` makes, from the cache under `key`.

    On a miss (or a refresh) the data is produced with the detection of then (the
    dialects in use) and wrapped in the envelope once; hits reuse those bytes and their ETag.
    A `history` answer is asked with the history client, and its previous answer is
    served while a refresh runs for up to HISTORY_DEADLINE, the time that refresh may take.
    """
    state = get_state()
    prom = state.history_prometheus if history else state.prometheus

    def produce() -> bytes:
        # May run on a cache-refresh thread: it holds plain objects, no request context.
        data = produce_data(prom, state.detection())
        return envelope_bytes(data, message)

    served = state.cache.get(key, produce,
                             stale_if_error=state.config.cache_stale_if_error,
                             upstream=f"Prometheus at {prom.display_url}",
                             stale_for=state.config.history_deadline if history else None)
    return cached_ok(served, state.cache.ttl)
