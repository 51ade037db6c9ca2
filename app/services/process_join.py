"""Join one dialect's process answers into process rows, placed on their GPU and pod."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from app.dialects.model import Dialect
from app.prometheus.client import QueryResult
from app.services.gpu_rows import GpuRows, attach_pods
from app.services.labels import GpuLabelReader, Labels, first_label, int_or_none
from app.services.queries import QueryKey
from app.services.records import GpuFilters, GpuProcess
from app.services.samples import (
    MEMORY_FIELDS,
    apply_value,
    ordered_sources,
    reading_samples,
    record_timestamp,
    series_of,
)


def join_processes(
    dialect: Dialect, results: Mapping[QueryKey, QueryResult], filters: GpuFilters
) -> list[GpuProcess]:
    """Build one GpuProcess per (node, device, pid), placed on its GPU and pod."""
    with reading_samples("process"):
        table = ProcessRows(dialect, _gpus_of(dialect, results))
        for metric in dialect.process_info_metrics:
            for series in series_of(results, ("process_info", metric)):
                row = table.get(series["metric"])
                if row is not None:
                    record_timestamp(row, series["value"][0])
        for key, field, source in ordered_sources(dialect.process_fields):
            as_int = field in MEMORY_FIELDS
            for series in series_of(results, key):
                row = table.get(series["metric"])
                if row is not None:
                    record_timestamp(row, series["value"][0])
                    apply_value(row, field, source, series["value"][1], as_int=as_int)
        processes = table.matching(filters)
    processes.sort(key=process_sort_key)
    return processes


def _gpus_of(dialect: Dialect, results: Mapping[QueryKey, QueryResult]) -> GpuRows:
    """The GPUs the processes run on: what process series lack (index, model, pods)."""
    gpus = GpuRows(GpuLabelReader(dialect))
    for metric in dialect.gpu_info_metrics:
        gpus.add_labels_only(series_of(results, ("info", metric)))
    for metric in dialect.index_metrics:
        gpus.add_index_values(series_of(results, ("index", metric)))
    gpus.add_labels_only(series_of(results, ("gpus",)))
    attach_pods(series_of(results, ("pods",)), gpus, create=True)
    return gpus


class ProcessRows:
    """Process records keyed by (node, device, pid), each placed on its GPU."""

    def __init__(self, dialect: Dialect, gpus: GpuRows) -> None:
        self.reader = gpus.reader
        # Whole GPUs by (node, device): a process runs on the device, not a MIG instance.
        self.gpu_of = {(key[0], key[1]): row for key, row in gpus.rows.items() if not key[2]}
        labels = dialect.process_labels
        self.pid = first_label(labels.pid)
        self.name = first_label(labels.process_name)
        self.user = first_label(labels.user)
        self.command = first_label(labels.command)
        self.name_from_command = dialect.process_name_from_command
        self.rows: dict[tuple[str, str, int], GpuProcess] = {}

    def get(self, labels: Labels) -> GpuProcess | None:
        """Return the process a series describes (None if it names none), adding labels."""
        key = self.reader.key(labels)
        pid = int_or_none(self.pid(labels))
        if key is None or pid is None:
            return None
        row = self.rows.get((key[0], key[1], pid))
        if row is None:
            row = self.rows[key[0], key[1], pid] = self._new(key[0], key[1], pid, labels)
        if row.process_name is None:
            row.process_name = self.name(labels)
        if row.user is None:
            row.user = self.user(labels)
        if row.command is None:
            row.command = self.command(labels)
        if row.process_name is None and self.name_from_command and row.command:
            # No process name label: the executable's base name stands in.
            row.process_name = os.path.basename(row.command.split()[0])
        return row

    def _new(self, node: str, device: str, pid: int, labels: Labels) -> GpuProcess:
        index = self.reader.gpu_index(labels)
        row = GpuProcess(node_name=node, gpu_index=index, pid=pid,
                         gpu_uuid=self.reader.uuid(labels))
        gpu = self.gpu_of.get((node, device))
        if gpu is not None:
            row.gpu_index = index if index is not None else gpu.gpu_index
            row.gpu_uuid = row.gpu_uuid or gpu.uuid
            if len(gpu.pods) == 1:  # one pod holds the GPU: it owns the process
                row.pod, row.namespace = gpu.pods[0].pod, gpu.pods[0].namespace
        return row

    def matching(self, filters: GpuFilters) -> list[GpuProcess]:
        """The processes asked for: on the wanted nodes, and on GPUs that match."""
        by_gpu = bool(filters.gpu_name or filters.uuid or filters.pod or filters.namespace)
        kept = []
        for (node, device, _), row in self.rows.items():
            if filters.node and row.node_name not in filters.node:
                continue
            if by_gpu:
                gpu = self.gpu_of.get((node, device))
                if gpu is None or not filters.matches(gpu):
                    continue
            kept.append(row)
        return kept


def process_sort_key(row: GpuProcess) -> tuple[Any, ...]:
    """Order processes by node, numeric GPU index, pid."""
    return (row.node_name, row.gpu_index if row.gpu_index is not None else math.inf, row.pid)
