"""List GPUs and GPU processes: plan the PromQL, fan it out, join and merge the answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from app.dialects.model import Dialect
from app.prometheus.client import PrometheusClient, QueryResult
from app.services.join import (
    GpuJoin,
    gpu_sort_key,
    join_processes,
    pod_holders,
    process_sort_key,
)
from app.services.queries import QueryKey, gpu_queries, pods_query, process_queries
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
    identities: Callable[[Row], tuple[tuple[object, ...], ...]],
    sort_key: Callable[[Row], tuple[object, ...]],
) -> list[Row]:
    """Concatenate dialects' rows; what an earlier dialect already reported is not repeated.

    Two exporters on one node (dcgm-exporter for pods, nvitop for processes) describe the
    same GPUs; a row is dropped when any of its identities (UUID, node and index) was seen
    in an earlier dialect's rows. Rows of one dialect never hide each other.
    """
    if len(per_dialect) == 1:
        return per_dialect[0]
    seen: set[tuple[object, ...]] = set()
    merged: list[Row] = []
    for rows in per_dialect:
        added: set[tuple[object, ...]] = set()
        for row in rows:
            keys = identities(row)
            if seen.intersection(keys):
                continue
            added.update(keys)
            merged.append(row)
        seen |= added
    merged.sort(key=sort_key)
    return merged


def _gpu_identities(gpu: Gpu) -> tuple[tuple[object, ...], ...]:
    keys: list[tuple[object, ...]] = []
    if gpu.uuid:
        keys.append(("uuid", gpu.uuid.lower()))
    if gpu.gpu_index is not None:
        keys.append(("index", gpu.node_name, gpu.gpu_index))
    return tuple(keys)


def _process_identities(process: GpuProcess) -> tuple[tuple[object, ...], ...]:
    return (("pid", process.node_name, process.pid),)


def list_gpus(
    prom: PrometheusClient, dialects: Sequence[Dialect], filters: GpuFilters
) -> list[Gpu]:
    """Return every GPU that matches `filters`, sorted by node, index, MIG instance."""
    plans = {d.name: gpu_queries(d, filters) for d in dialects}
    joins = {d.name: GpuJoin(d, plans[d.name]) for d in dialects}
    queries = {(name, *key): promql for name, plan in plans.items()
               for key, promql in plan.items()}
    if queries:
        # Each answer is joined as it arrives, while Prometheus works on the others.
        for (name, *key), result in prom.query_each(queries):
            joins[name].add(tuple(key), result)
    return _merge([joins[d.name].finish(filters) for d in dialects], _gpu_identities,
                  gpu_sort_key)


def list_processes(
    prom: PrometheusClient, dialects: Sequence[Dialect], filters: GpuFilters
) -> list[GpuProcess]:
    """Return every GPU process that matches `filters`, sorted by node, GPU index, pid.

    Exporters with a process table but no pod labels (nvitop, nvidia_gpu_exporter) take
    the pod of the GPU a process runs on from an exporter that knows it (dcgm-exporter).
    """
    with_processes = [d for d in dialects if d.process_fields]
    if not with_processes:
        return []
    pod_sources = [d for d in dialects if d.labels.pod and not d.process_fields]
    borrowing = bool(pod_sources) and any(not d.labels.pod for d in with_processes)
    asked = with_processes + (pod_sources if borrowing else [])

    def plan(dialect: Dialect, wanted: GpuFilters) -> dict[QueryKey, str]:
        if dialect.process_fields:
            return process_queries(dialect, _own_filters(dialect, wanted, borrowing))
        pods = pods_query(dialect, GpuFilters(node=wanted.node))
        return {("pods",): pods} if pods is not None else {}

    answers = _fan_out(prom, asked, plan, filters)
    holders = _holders_by_gpu(pod_sources, answers) if borrowing else {}
    per_dialect = []
    for dialect in with_processes:
        rows = join_processes(dialect, answers[dialect.name],
                              _own_filters(dialect, filters, borrowing))
        if holders and not dialect.labels.pod:
            rows = _borrow_pods(rows, holders, filters)
        per_dialect.append(rows)
    return _merge(per_dialect, _process_identities, process_sort_key)


def _own_filters(dialect: Dialect, filters: GpuFilters, borrowing: bool) -> GpuFilters:
    """Pod filters are applied after borrowing pods, for exporters that have none."""
    if borrowing and not dialect.labels.pod:
        return dataclasses.replace(filters, pod=(), namespace=())
    return filters


def _holders_by_gpu(
    pod_sources: Sequence[Dialect], answers: dict[str, dict[QueryKey, QueryResult]]
) -> dict[tuple[object, ...], Gpu]:
    """Whole GPUs held by exactly one pod, by UUID and by (node, index)."""
    holders: dict[tuple[object, ...], Gpu] = {}
    for dialect in pod_sources:
        for gpu in pod_holders(dialect, answers[dialect.name]):
            if gpu.mig_instance is not None or len(gpu.pods) != 1:
                continue  # a MIG instance or a shared GPU does not say whose a process is
            for key in _gpu_identities(gpu):
                holders.setdefault(key, gpu)
    return holders


def _borrow_pods(
    rows: list[GpuProcess], holders: dict[tuple[object, ...], Gpu], filters: GpuFilters
) -> list[GpuProcess]:
    kept = []
    for row in rows:
        keys = [("index", row.node_name, row.gpu_index)]
        if row.gpu_uuid:
            keys.insert(0, ("uuid", row.gpu_uuid.lower()))
        holder = next((holders[k] for k in keys if k in holders), None)
        if holder is not None and row.pod is None:
            row.pod, row.namespace = holder.pod, holder.namespace
        if filters.pod and row.pod not in filters.pod:
            continue
        if filters.namespace and row.namespace not in filters.namespace:
            continue
        kept.append(row)
    return kept
