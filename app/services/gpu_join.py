"""Join one dialect's answers into GPU rows, as the answers arrive."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from app.dialects.model import DERIVED_ONLY_FIELDS, Dialect, Source
from app.prometheus.client import QueryResult
from app.services.gpu_rows import GpuRows, pod_share
from app.services.labels import GpuKey, GpuLabelReader, Labels, PodKey
from app.services.queries import QueryKey
from app.services.records import Gpu, GpuFilters, PodShare
from app.services.samples import (
    MEMORY_FIELDS,
    PERCENT_DECIMALS,
    PERCENT_FIELDS,
    SENTINEL_LIMIT,
    canonical,
    number,
    reading_samples,
)


class GpuJoin:
    """Builds GPU rows from query answers in any order, as they arrive.

    Answers are worked on while Prometheus still evaluates the others. The only order
    that matters is within one field: a fallback source (dcgm's engine activity where
    GPU_UTIL is absent) is applied after the sources before it, so the first one that
    answers for a GPU wins.
    """

    def __init__(self, dialect: Dialect, planned: Iterable[QueryKey]) -> None:
        self.dialect = dialect
        self.reader = GpuLabelReader(dialect)
        self.table = GpuRows(self.reader)
        self.reserved: dict[GpuKey, int] = {}
        self.pods: dict[GpuKey, dict[PodKey, PodShare]] = {}
        self.planned = set(planned)
        self._applied: dict[str, int] = dict.fromkeys(dialect.gpu_fields, 0)
        self._waiting: dict[QueryKey, QueryResult] = {}
        # Where the node label names the exporter's pod: that pod's node (kube_pod_info).
        self.node_of_pod: dict[str, str] = {}

    def add(self, key: QueryKey, result: QueryResult) -> None:
        """Take one query's answer."""
        kind = key[0]
        if kind == "info":
            with reading_samples(key[-1]):
                self.table.add_labels_only(result.series)
        elif kind == "index":
            with reading_samples(key[-1]):
                self.table.add_index_values(result.series)
        elif kind == "field":
            self._waiting[key] = result
            self._apply_ready(key[1])
        elif kind == "node_map":
            self.node_of_pod = {
                series["metric"].get("pod", ""): series["metric"].get("node", "")
                for series in result.series}

    def _apply_ready(self, field: str) -> None:
        sources = self.dialect.gpu_fields[field]
        while self._applied[field] < len(sources):
            position = self._applied[field]
            key = ("field", field, str(position))
            if key in self.planned:
                if key not in self._waiting:
                    return  # an earlier source has not answered yet
                self._apply(field, sources[position], self._waiting.pop(key).series)
            self._applied[field] = position + 1

    def _apply(self, field: str, source: Source, series_list: list[dict[str, Any]]) -> None:
        with reading_samples(source.metric):
            if self.dialect.reads_pods(source):
                self._apply_per_pod(field, source, series_list)
            else:
                self._apply_samples(field, source, series_list)

    def _rows_of(self, series_list: list[dict[str, Any]]
                 ) -> Iterator[tuple[GpuKey, Gpu, Labels, Any]]:
        """Each series' GPU key, row (created as needed, its sample time noted), labels and
        raw value; series that name no GPU are passed over."""
        rows = self.table.rows
        key_of = self.reader.key
        table = self.table
        for series in series_list:
            labels = series["metric"]
            gpu_key = key_of(labels)
            if gpu_key is None:
                continue
            row = rows.get(gpu_key) or table.get(labels)
            if row is None:
                continue
            timestamp, raw = series["value"]
            timestamp = float(timestamp)  # raises on garbage: see reading_samples
            if row.timestamp is None or timestamp > row.timestamp:
                row.timestamp = timestamp
            yield gpu_key, row, labels, raw

    def _apply_samples(self, field: str, source: Source,
                       series_list: list[dict[str, Any]]) -> None:
        reserved = self.reserved
        as_int = field in MEMORY_FIELDS
        percent = field in PERCENT_FIELDS
        scale = source.scale
        for gpu_key, row, _, raw in self._rows_of(series_list):
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if not -SENTINEL_LIMIT <= value <= SENTINEL_LIMIT:
                continue  # NaN, infinities and blank sentinels: not reported (as number())
            value *= scale
            if field in DERIVED_ONLY_FIELDS:  # memory_reserved: only for the total
                reserved.setdefault(gpu_key, round(value))
            elif getattr(row, field) is None:  # an earlier source already answered
                if as_int:
                    value = round(value)
                elif percent:
                    value = round(value, PERCENT_DECIMALS)
                setattr(row, field, value)

    def _apply_per_pod(self, field: str, source: Source,
                       series_list: list[dict[str, Any]]) -> None:
        """Read a metric that may come once per pod (see Source.per_pod).

        A series without a workload pod is the device's own value; the others are one per
        pod. Where a device series exists, the pods' values are their own shares; where
        none does, they are copies of the device's value, and the GPU's value is their max.
        """
        rows = self.table.rows
        reader = self.reader
        pod_of = reader.pod
        as_int = field in MEMORY_FIELDS
        scale = source.scale
        devices: set[GpuKey] = set()
        on_pods: list[tuple[GpuKey, Labels, float | None]] = []
        for gpu_key, row, labels, raw in self._rows_of(series_list):
            value = number(raw)
            if value is not None:
                value = canonical(field, value * scale, as_int=as_int)
            if pod_of(labels) is not None:
                on_pods.append((gpu_key, labels, value))
                continue
            devices.add(gpu_key)
            if value is not None and getattr(row, field) is None:
                setattr(row, field, value)
        own_share = field in ("utilization", "memory_used")
        copies: dict[GpuKey, float] = {}
        for gpu_key, labels, value in on_pods:
            holder = (pod_of(labels) or "", reader.namespace(labels) or "",
                      reader.container(labels) or "")
            book = self.pods.get(gpu_key)
            if book is None:
                book = self.pods[gpu_key] = {}
            share = book.get(holder)
            if share is None:
                share = book[holder] = pod_share(holder)
            if gpu_key in devices:
                if own_share:
                    setattr(share, field, value)
            elif value is not None and value > copies.get(gpu_key, -math.inf):
                copies[gpu_key] = value
        for gpu_key, value in copies.items():
            row = rows[gpu_key]
            if getattr(row, field) is None:
                setattr(row, field, value)

    def finish(self, filters: GpuFilters) -> list[Gpu]:
        """Derive what the exporter lacks, name the pods, filter and sort."""
        # Sources still waiting had an earlier source that was never asked: apply in order.
        for field, sources in self.dialect.gpu_fields.items():
            for position in range(self._applied[field], len(sources)):
                result = self._waiting.pop(("field", field, str(position)), None)
                if result is not None:
                    self._apply(field, sources[position], result.series)
        for gpu_key, row in self.table.rows.items():
            row.node_name = self.node_of_pod.get(row.node_name) or row.node_name
            derive_memory(row, self.reserved.get(gpu_key))
            book = self.pods.get(gpu_key)
            if book:
                row.pods = sorted(book.values(), key=PodShare.sort_key)
        gpus = list(self.table.rows.values())
        if not filters.is_empty():
            gpus = [row for row in gpus if filters.matches(row)]
        gpus.sort(key=gpu_sort_key)
        return gpus


def join_gpus(
    dialect: Dialect, results: Mapping[QueryKey, QueryResult], filters: GpuFilters
) -> list[Gpu]:
    """Build one Gpu per (node, device, MIG instance) from every query's answer."""
    join = GpuJoin(dialect, results)
    for key, result in results.items():
        join.add(key, result)
    return join.finish(filters)


def derive_memory(row: Gpu, reserved: int | None) -> None:
    """Fill what the exporter does not emit from what it does (dcgm has no total)."""
    used, total, free = row.memory_used, row.memory_total, row.memory_free
    if total is None and used is not None and free is not None:
        row.memory_total = total = used + free + (reserved or 0)
    if free is None and used is not None and total is not None:
        row.memory_free = max(total - used - (reserved or 0), 0)
    if row.memory_utilization is None and used is not None and total:
        row.memory_utilization = round(used / total * 100.0, PERCENT_DECIMALS)


def gpu_sort_key(row: Gpu) -> tuple[Any, ...]:
    """Order GPUs by node, numeric index, MIG instance."""
    return (
        row.node_name,
        row.gpu_index if row.gpu_index is not None else math.inf,
        row.mig_instance if row.mig_instance is not None else -1,
        row.uuid or "",
    )


