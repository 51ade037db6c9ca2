"""List GPUs and GPU processes: plan the PromQL, fan it out, join the answers."""

from __future__ import annotations

from app.dialects.model import Dialect
from app.prometheus.client import PrometheusClient
from app.services.join import join_gpus, join_processes
from app.services.queries import gpu_queries, process_queries
from app.services.records import Gpu, GpuFilters, GpuProcess


def list_gpus(prom: PrometheusClient, dialect: Dialect, filters: GpuFilters) -> list[Gpu]:
    """Return every GPU that matches `filters`, sorted by node then index."""
    results = prom.query_many(gpu_queries(dialect, filters))
    return join_gpus(dialect, results, filters)


def list_processes(
    prom: PrometheusClient, dialect: Dialect, filters: GpuFilters
) -> list[GpuProcess]:
    """Return every GPU process that matches `filters`, sorted by node, GPU index, pid."""
    queries = process_queries(dialect, filters)
    if not dialect.process_fields:
        return []  # this exporter publishes no per-process series
    return join_processes(dialect, prom.query_many(queries), filters)
