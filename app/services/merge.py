"""Merge what several exporters say about the same GPUs, and lend pods to processes.

Two exporters on one node (dcgm-exporter for pods, nvitop for processes) describe the same
GPUs: a GPU is listed once, and a process table without pod labels takes the pod of the GPU
a process runs on from an exporter that has one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from app.dialects.model import Dialect
from app.prometheus.client import QueryResult
from app.services.gpu_rows import pod_holders
from app.services.queries import QueryKey
from app.services.records import Gpu, GpuFilters, GpuProcess

Row = TypeVar("Row", Gpu, GpuProcess)


def merge_rows(
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


def gpu_identities(gpu: Gpu) -> tuple[tuple[object, ...], ...]:
    keys: list[tuple[object, ...]] = []
    if gpu.uuid:
        keys.append(("uuid", gpu.uuid.lower()))
    if gpu.gpu_index is not None:
        keys.append(("index", gpu.node_name, gpu.gpu_index))
    return tuple(keys)


def process_identities(process: GpuProcess) -> tuple[tuple[object, ...], ...]:
    return (("pid", process.node_name, process.pid),)


def own_filters(dialect: Dialect, filters: GpuFilters, borrowing: bool) -> GpuFilters:
    """Pod filters are applied after borrowing pods, for exporters that have none."""
    if borrowing and not dialect.labels.pod:
        return dataclasses.replace(filters, pod=(), namespace=())
    return filters


def holders_by_gpu(
    pod_sources: Sequence[Dialect], answers: dict[str, dict[QueryKey, QueryResult]]
) -> dict[tuple[object, ...], Gpu]:
    """Whole GPUs held by exactly one pod, by UUID and by (node, index)."""
    holders: dict[tuple[object, ...], Gpu] = {}
    for dialect in pod_sources:
        for gpu in pod_holders(dialect, answers[dialect.name]):
            if gpu.mig_instance is not None or len(gpu.pods) != 1:
                continue  # a MIG instance or a shared GPU does not say whose a process is
            for key in gpu_identities(gpu):
                holders.setdefault(key, gpu)
    return holders


def borrow_pods(
    rows: list[GpuProcess], holders: dict[tuple[object, ...], Gpu], filters: GpuFilters
) -> list[GpuProcess]:
    kept = []
    for row in rows:
        keys: list[tuple[object, ...]] = [("index", row.node_name, row.gpu_index)]
        if row.gpu_uuid:
            keys.insert(0, ("uuid", row.gpu_uuid.lower()))
        holder = next((holders[k] for k in keys if k in holders), None)
        if holder is not None and row.pod is None:
            row.pod, row.namespace = holder.pod, holder.namespace
        if filters.matches_workload(row.pod, row.namespace):
            kept.append(row)
    return kept
