"""Join Prometheus series into GPU and process records, in one pass over each answer."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from app.dialects.model import Dialect, Source
from app.prometheus.client import QueryResult
from app.prometheus.errors import PrometheusBadResponseError
from app.services.queries import QueryKey
from app.services.records import Gpu, GpuFilters, GpuProcess, PodShare

Labels = dict[str, str]
# Exporters emit ~9.2e18 blank sentinels for unsupported sensors; nothing real is this big.
SENTINEL_LIMIT = 1e15
MEMORY_FIELDS = frozenset({"memory_used", "memory_total", "memory_free", "memory_reserved",
                           "gpu_memory"})
# Percentages are served to 3 decimals: a ratio of 0.07 x 100 reads 7.0, not 7.000000000000001.
PERCENT_FIELDS = frozenset({"utilization", "memory_utilization", "cpu", "memory"})
PERCENT_DECIMALS = 3
GpuKey = tuple[str, str, str]
PodKey = tuple[str, str, str]


@contextmanager
def reading_samples(what: str) -> Iterator[None]:
    """Turn a malformed sample met while joining into the upstream error it is (502)."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise PrometheusBadResponseError(
            f"Prometheus answered the {what} query with a malformed sample "
            f"({type(exc).__name__})"
        ) from exc


def number(text: Any) -> float | None:
    """Parse a sample value; NaN, infinities and blank sentinels become None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or abs(value) > SENTINEL_LIMIT:
        return None
    return value


def first_label(candidates: Sequence[str]) -> Callable[[Labels], str | None]:
    """Return a reader of the first non-empty label among `candidates` (None if none)."""
    if not candidates:
        return lambda labels: None
    if len(candidates) == 1:
        (only,) = candidates
        return lambda labels: labels.get(only) or None
    names = tuple(candidates)

    def read(labels: Labels) -> str | None:
        for name in names:
            value = labels.get(name)
            if value:
                return value
        return None

    return read


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


class _GpuReader:
    """Reads one dialect's labels into GPU keys and attributes."""

    def __init__(self, dialect: Dialect) -> None:
        labels = dialect.labels
        self.node = first_label(labels.node)
        self.index = first_label(labels.index)
        self.uuid_raw = first_label(labels.uuid)
        self.name = first_label(labels.name)
        self.mig_label = first_label(labels.mig_instance)
        self.mig_profile = first_label(labels.mig_profile)
        self.pod = first_label(labels.pod)
        self.namespace = first_label(labels.namespace)
        self.container = first_label(labels.container)
        self.by_uuid = bool(labels.uuid)
        self.uuid_without_prefix = dialect.uuid_without_prefix
        self.index_encodes_mig = dialect.index_encodes_mig
        self.name_encodes_mig_profile = dialect.name_encodes_mig_profile
        self.key = self._compile_key(dialect)

    def uuid(self, labels: Labels) -> str | None:
        raw = self.uuid_raw(labels)
        if raw and self.uuid_without_prefix:
            return "GPU-" + raw.lower()
        return raw

    def gpu_index(self, labels: Labels) -> int | None:
        """The GPU's index (of a MIG device's parent, where the index encodes MIG)."""
        raw = self.index(labels)
        if raw and self.index_encodes_mig:
            raw = raw.partition(":")[0]
        return _int_or_none(raw)

    def mig(self, labels: Labels) -> str | None:
        """The MIG instance id, from its own label or from a "<gpu>:<instance>" index."""
        found = self.mig_label(labels)
        if found or not self.index_encodes_mig:
            return found
        raw = self.index(labels)
        return raw.partition(":")[2] or None if raw else None

    def model_and_profile(self, labels: Labels) -> tuple[str | None, str | None]:
        """The model name, and a MIG profile where the name says "<model> MIG <profile>"."""
        name = self.name(labels)
        if name and self.name_encodes_mig_profile and " MIG " in name:
            model, _, profile = name.partition(" MIG ")
            return model, profile
        return name, None

    def _compile_key(self, dialect: Dialect) -> Callable[[Labels], GpuKey | None]:
        """Build `key(labels)`: (node, uuid or index, MIG instance), or None when the series
        names no GPU. Built once per dialect: it runs for every series of every answer."""
        spec = dialect.labels
        node_of = first_label(spec.node)
        device_of = first_label(spec.uuid or spec.index)
        mig_of = first_label(spec.mig_instance)
        index_of = first_label(spec.index)
        lower = bool(spec.uuid) and dialect.uuid_without_prefix
        # nvitop writes a MIG device's index as "<gpu>:<instance>"; without a UUID label,
        # the device is that index's first part.
        encoded = dialect.index_encodes_mig
        device_is_index = encoded and not spec.uuid
        device_names = spec.uuid or spec.index
        if (len(spec.node) == 1 and len(device_names) == 1 and len(spec.mig_instance) <= 1
                and not (encoded or lower)):
            return _single_label_key(spec.node[0], device_names[0], spec.mig_instance)

        def key(labels: Labels) -> GpuKey | None:
            node = node_of(labels)
            device = device_of(labels)
            if not node or not device:
                return None
            mig = mig_of(labels) or ""
            if not mig and encoded:
                index = index_of(labels)
                if index and ":" in index:
                    mig = index.partition(":")[2]
            if lower:
                device = device.lower()
            elif device_is_index:
                device = device.partition(":")[0]
            return node, device, mig

        return key


def _single_label_key(node_label: str, device_label: str,
                      mig_labels: Sequence[str]) -> Callable[[Labels], GpuKey | None]:
    """The key where each part has one label name: the common case, read without loops."""
    if not mig_labels:
        def key(labels: Labels) -> GpuKey | None:
            node = labels.get(node_label)
            device = labels.get(device_label)
            return (node, device, "") if node and device else None

        return key
    (mig_label,) = mig_labels

    def key_with_mig(labels: Labels) -> GpuKey | None:
        node = labels.get(node_label)
        device = labels.get(device_label)
        return (node, device, labels.get(mig_label) or "") if node and device else None

    return key_with_mig


def _apply(row: Any, field: str, source: Source, raw_value: Any, *, as_int: bool) -> None:
    if getattr(row, field) is not None:
        return  # an earlier source (or an earlier series) already answered
    value = number(raw_value)
    if value is None:
        return
    setattr(row, field, _canonical(field, value * source.scale, as_int=as_int))


def _canonical(field: str, value: float, *, as_int: bool) -> float | int:
    """Round a value as the API serves it: whole bytes, percentages to PERCENT_DECIMALS."""
    if as_int:
        return round(value)
    if field in PERCENT_FIELDS:
        return round(value, PERCENT_DECIMALS)
    return value


def _timestamp(row: Any, ts: Any) -> None:
    ts = float(ts)  # raises on garbage: see reading_samples
    if row.timestamp is None or ts > row.timestamp:
        row.timestamp = ts


def _ordered_sources(
    fields: Mapping[str, tuple[Source, ...]],
) -> list[tuple[QueryKey, str, Source]]:
    return [
        (("field", name, str(position)), name, source)
        for name, sources in fields.items()
        for position, source in enumerate(sources)
    ]


class _GpuRows:
    """GPU records keyed by (node, device, MIG instance), created as series name them."""

    def __init__(self, reader: _GpuReader) -> None:
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
            row.mig_instance = _int_or_none(reader.mig(labels))
        if row.mig_profile is None:
            row.mig_profile = reader.mig_profile(labels)

    def add_labels_only(self, series_list: list[dict[str, Any]]) -> None:
        """Create rows from series read only for their labels (info metrics)."""
        for series in series_list:
            row = self.get(series["metric"], fill=True)
            if row is not None:
                _timestamp(row, series["value"][0])

    def add_index_values(self, series_list: list[dict[str, Any]]) -> None:
        """Take the index from gauges whose value is it, where no label gave one."""
        for series in series_list:
            row = self.get(series["metric"], fill=True)
            if row is None:
                continue
            _timestamp(row, series["value"][0])
            value = number(series["value"][1])
            if row.gpu_index is None and value is not None and value.is_integer():
                row.gpu_index = int(value)


class GpuJoin:
    """Builds GPU rows from query answers in any order, as they arrive.

    Answers are worked on while Prometheus still evaluates the others. The only order
    that matters is within one field: a fallback source (dcgm's engine activity where
    GPU_UTIL is absent) is applied after the sources before it, so the first one that
    answers for a GPU wins.
    """

    def __init__(self, dialect: Dialect, planned: Iterable[QueryKey]) -> None:
        self.dialect = dialect
        self.reader = _GpuReader(dialect)
        self.table = _GpuRows(self.reader)
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

    def _apply_samples(self, field: str, source: Source,
                       series_list: list[dict[str, Any]]) -> None:
        rows = self.table.rows
        key_of = self.reader.key
        table = self.table
        reserved = self.reserved
        as_int = field in MEMORY_FIELDS
        percent = field in PERCENT_FIELDS
        scale = source.scale
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
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if not -SENTINEL_LIMIT <= value <= SENTINEL_LIMIT:
                continue  # NaN, infinities and blank sentinels: not reported (as number())
            value *= scale
            if field == "memory_reserved":
                # Only used to derive the total; not served on its own.
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
        table = self.table
        reader = self.reader
        key_of = reader.key
        pod_of = reader.pod
        as_int = field in MEMORY_FIELDS
        scale = source.scale
        devices: set[GpuKey] = set()
        on_pods: list[tuple[GpuKey, Labels, float | None]] = []
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
            value = number(raw)
            if value is not None:
                value = _canonical(field, value * scale, as_int=as_int)
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
                share = book[holder] = _pod_share(holder)
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
            _derive_memory(row, self.reserved.get(gpu_key))
            book = self.pods.get(gpu_key)
            if book:
                row.pods = sorted(book.values(), key=PodShare.sort_key)
        gpus = list(self.table.rows.values())
        if not filters.is_empty():
            gpus = [row for row in gpus if filters.matches(row)]
        gpus.sort(key=gpu_sort_key)
        return gpus


def _pod_share(holder: PodKey) -> PodShare:
    pod, namespace, container = holder
    return PodShare(pod=pod, namespace=namespace or None, container=container or None)


def join_gpus(
    dialect: Dialect, results: Mapping[QueryKey, QueryResult], filters: GpuFilters
) -> list[Gpu]:
    """Build one Gpu per (node, device, MIG instance) from every query's answer."""
    join = GpuJoin(dialect, results)
    for key, result in results.items():
        join.add(key, result)
    return join.finish(filters)


def _series(results: Mapping[QueryKey, QueryResult], key: QueryKey) -> list[dict[str, Any]]:
    result = results.get(key)
    return result.series if result is not None else []


def _derive_memory(row: Gpu, reserved: int | None) -> None:
    """Fill what the exporter does not emit from what it does (dcgm has no total)."""
    used, total, free = row.memory_used, row.memory_total, row.memory_free
    if total is None and used is not None and free is not None:
        row.memory_total = total = used + free + (reserved or 0)
    if free is None and used is not None and total is not None:
        row.memory_free = max(total - used - (reserved or 0), 0)
    if row.memory_utilization is None and used is not None and total:
        row.memory_utilization = round(used / total * 100.0, PERCENT_DECIMALS)


def _attach_pods(series_list: list[dict[str, Any]], table: _GpuRows, *, create: bool) -> None:
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
        row.pods = sorted((_pod_share(h) for h in found), key=PodShare.sort_key)


def gpu_sort_key(row: Gpu) -> tuple[Any, ...]:
    """Order GPUs by node, numeric index, MIG instance."""
    return (
        row.node_name,
        row.gpu_index if row.gpu_index is not None else math.inf,
        row.mig_instance if row.mig_instance is not None else -1,
        row.uuid or "",
    )


def pod_holders(dialect: Dialect, results: Mapping[QueryKey, QueryResult]) -> list[Gpu]:
    """GPUs with the pods that hold them, from a dialect's pods query alone."""
    table = _GpuRows(_GpuReader(dialect))
    with reading_samples("pods"):
        _attach_pods(_series(results, ("pods",)), table, create=True)
    return [row for row in table.rows.values() if row.pods]


def join_processes(
    dialect: Dialect, results: Mapping[QueryKey, QueryResult], filters: GpuFilters
) -> list[GpuProcess]:
    """Build one GpuProcess per (node, device, pid), placed on its GPU and pod."""
    with reading_samples("process"):
        return _join_processes(dialect, results, filters)


def _join_processes(
    dialect: Dialect, results: Mapping[QueryKey, QueryResult], filters: GpuFilters
) -> list[GpuProcess]:
    reader = _GpuReader(dialect)
    # What the process series lack (index, model, pods) comes from the GPU-level answers.
    gpus = _GpuRows(reader)
    for metric in dialect.gpu_info_metrics:
        gpus.add_labels_only(_series(results, ("info", metric)))
    for metric in dialect.index_metrics:
        gpus.add_index_values(_series(results, ("index", metric)))
    gpus.add_labels_only(_series(results, ("gpus",)))
    _attach_pods(_series(results, ("pods",)), gpus, create=True)
    needs_gpu = bool(filters.gpu_name or filters.uuid or filters.pod or filters.namespace)
    gpu_of = {(key[0], key[1]): row for key, row in gpus.rows.items() if not key[2]}

    labels_of = dialect.process_labels
    read_pid = first_label(labels_of.pid)
    read_name = first_label(labels_of.process_name)
    read_user = first_label(labels_of.user)
    read_command = first_label(labels_of.command)
    # Where there is no process name label, the executable's base name stands in.
    name_from_command = dialect.process_name_from_command
    rows: dict[tuple[str, str, int], GpuProcess] = {}

    def row_for(labels: Labels) -> GpuProcess | None:
        key = reader.key(labels)
        pid = _int_or_none(read_pid(labels))
        if key is None or pid is None:
            return None
        row = rows.get((key[0], key[1], pid))
        if row is None:
            gpu = gpu_of.get((key[0], key[1]))
            index = reader.gpu_index(labels)
            row = GpuProcess(node_name=key[0], gpu_index=index, pid=pid,
                             gpu_uuid=reader.uuid(labels))
            if gpu is not None:
                row.gpu_index = index if index is not None else gpu.gpu_index
                row.gpu_uuid = row.gpu_uuid or gpu.uuid
                if len(gpu.pods) == 1:  # one pod holds the GPU: it owns the process
                    row.pod, row.namespace = gpu.pods[0].pod, gpu.pods[0].namespace
            rows[key[0], key[1], pid] = row
        if row.process_name is None:
            row.process_name = read_name(labels)
        if row.user is None:
            row.user = read_user(labels)
        if row.command is None:
            row.command = read_command(labels)
        if row.process_name is None and name_from_command and row.command:
            row.process_name = os.path.basename(row.command.split()[0])
        return row

    for metric in dialect.process_info_metrics:
        for series in _series(results, ("process_info", metric)):
            row = row_for(series["metric"])
            if row is not None:
                _timestamp(row, series["value"][0])
    for key, field, source in _ordered_sources(dialect.process_fields):
        as_int = field in MEMORY_FIELDS
        for series in _series(results, key):
            row = row_for(series["metric"])
            if row is None:
                continue
            _timestamp(row, series["value"][0])
            _apply(row, field, source, series["value"][1], as_int=as_int)

    def keep(process: GpuProcess, key: tuple[str, str, int]) -> bool:
        if filters.node and process.node_name not in filters.node:
            return False
        if not needs_gpu:
            return True
        gpu = gpu_of.get((key[0], key[1]))
        return gpu is not None and filters.matches(gpu)

    processes = [row for key, row in rows.items() if keep(row, key)]
    processes.sort(key=process_sort_key)
    return processes


def process_sort_key(row: GpuProcess) -> tuple[Any, ...]:
    """Order processes by node, numeric GPU index, pid."""
    return (row.node_name, row.gpu_index if row.gpu_index is not None else math.inf, row.pid)
