"""GPU rows keyed by what their series name, and the pods that hold them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.dialects.model import Dialect
from app.prometheus.client import QueryResult
from app.services.labels import GpuKey, GpuLabelReader, Labels, PodKey, int_or_none
from app.services.queries import QueryKey
from app.services.records import Gpu, PodShare
from app.services.samples import number, reading_samples, record_timestamp, series_of


class GpuRows:
    """GPU records keyed by (node, device, MIG instance), created as series name them."""

    def __init__(self, reader: GpuLabelReader) -> None:
        self.reader = reader
        self.rows: dict[GpuKey, Gpu] = {}

    def get(self, labels: Labels, *, create: bool = True, fill: bool = False) -> Gpu | None:
        """Return the row a series belongs to; a new row takes the attributes it carries.

        Every series of one query carries the same label names, so attributes are read when
        a row is created, and again only where asked (`fill`, for info metrics).
        """
        key = self.reader.key(labels)
        if key is None:
            return None
        row = self.rows.get(key)
        if row is None:
            if not create:
                return None
            row = Gpu(node_name=key[0])
            self.rows[key] = row
            self._fill(row, labels)
        elif fill:
            self._fill(row, labels)
        return row

    def _fill(self, row: Gpu, labels: Labels) -> None:
        reader = self.reader
        if row.gpu_index is None:
            row.gpu_index = reader.gpu_index(labels)
        if row.gpu_name is None:
            row.gpu_name, profile = reader.model_and_profile(labels)
            if row.mig_profile is None:
                row.mig_profile = profile
        if row.uuid is None:
            row.uuid = reader.uuid(labels)
        if row.mig_instance is None:
            row.mig_instance = int_or_none(reader.mig(labels))
        if row.mig_profile is None:
            row.mig_profile = reader.mig_profile(labels)

    def add_labels_only(self, series_list: list[dict[str, Any]]) -> None:
        """Create rows from series read only for their labels (info metrics)."""
        for series in series_list:
            row = self.get(series["metric"], fill=True)
            if row is not None:
                record_timestamp(row, series["value"][0])

    def add_index_values(self, series_list: list[dict[str, Any]]) -> None:
        """Take the index from gauges whose value is it, where no label gave one."""
        for series in series_list:
            row = self.get(series["metric"], fill=True)
            if row is None:
                continue
            record_timestamp(row, series["value"][0])
            value = number(series["value"][1])
            if row.gpu_index is None and value is not None and value.is_integer():
                row.gpu_index = int(value)


def pod_share(holder: PodKey) -> PodShare:
    pod, namespace, container = holder
    return PodShare(pod=pod, namespace=namespace or None, container=container or None)


def attach_pods(series_list: list[dict[str, Any]], table: GpuRows, *, create: bool) -> None:
    """Name the workload(s) on each GPU from the pods query."""
    reader = table.reader
    holders: dict[int, tuple[Gpu, dict[PodKey, None]]] = {}
    for series in series_list:
        labels = series["metric"]
        pod = reader.pod(labels)
        if pod is None:
            continue
        row = table.get(labels, create=create)
        if row is None:
            continue
        holder = (pod, reader.namespace(labels) or "", reader.container(labels) or "")
        holders.setdefault(id(row), (row, {}))[1][holder] = None
    for row, found in holders.values():
        row.pods = sorted((pod_share(h) for h in found), key=PodShare.sort_key)


def pod_holders(dialect: Dialect, results: Mapping[QueryKey, QueryResult]) -> list[Gpu]:
    """GPUs with the pods that hold them, from a dialect's pods query alone."""
    table = GpuRows(GpuLabelReader(dialect))
    with reading_samples("pods"):
        attach_pods(series_of(results, ("pods",)), table, create=True)
    return [row for row in table.rows.values() if row.pods]


