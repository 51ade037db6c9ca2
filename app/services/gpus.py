"""List GPUs and GPU processes: plan the PromQL, fan it out, join and merge the answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from app.dialects.model import Dialect
from app.prometheus.client import PrometheusClient, QueryResult
from app.services.join import gpu_sort_key, join_gpus, join_processes, process_sort_key
from app.services.queries import QueryKey, gpu_queries, process_queries
from app.services.records import Gpu, GpuFilters, GpuProcess

Row = TypeVar("Row", Gpu, GpuProcess)


def _fan_out(
    prom: PrometheusClient,
    dialects: Sequence[Dialect],
    plan: Callable[[Dialect, GpuFilters], dict[QueryKey, str]],
    filters: GpuFilters,
) -> dict[str, dict[QueryKey, QueryResult]]:
    """Run every dialect's queries in one parallel batch; return answers per dialect."""
    queries = {
        (dialect.name, *key): promql
        for dialect in dialects
        for key, promql in plan(dialect, filters).items()
    }
    answers: dict[str, dict[QueryKey, QueryResult]] = {d.name: {} for d in dialects}
    if queries:
        for (name, *key), result in prom.query_many(queries).items():
            answers[name][tuple(key)] = result
    return answers


def _merge(
    per_dialect: list[list[Row]],
    identity: Callable[[Row], tuple[object, ...] | None],
    sort_key: Callable[[Row], tuple[object, ...]],
) -> list[Row]:
    """Concatenate dialects' rows; a GPU seen by two exporters is kept once (the first)."""
    if len(per_dialect) == 1:
        return per_dialect[0]
    seen: set[tuple[object, ...]] = set()
    merged: list[Row] = []
    for rows in per_dialect:
        for row in rows:
            key = identity(row)
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            merged.append(row)
    merged.sort(key=sort_key)
    return merged


def list_gpus(
    prom: PrometheusClient, dialects: Sequence[Dialect], filters: GpuFilters
) -> list[Gpu]:
    """Return every GPU that matches `filters`, sorted by node, index, MIG instance."""
    answers = _fan_out(prom, dialects, gpu_queries, filters)
    return _merge(
        [join_gpus(d, answers[d.name], filters) for d in dialects],
        lambda g: (g.uuid.lower(), g.mig_instance) if g.uuid else None,
        gpu_sort_key,
    )


def list_processes(
    prom: PrometheusClient, dialects: Sequence[Dialect], filters: GpuFilters
) -> list[GpuProcess]:
    """Return every GPU process that matches `filters`, sorted by node, GPU index, pid."""
    with_processes = [d for d in dialects if d.process_fields]
    answers = _fan_out(prom, with_processes, process_queries, filters)
    return _merge(
        [join_processes(d, answers[d.name], filters) for d in with_processes],
        lambda p: (p.node_name, p.gpu_uuid.lower(), p.pid) if p.gpu_uuid else None,
        process_sort_key,
    )

