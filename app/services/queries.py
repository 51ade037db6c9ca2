"""The PromQL a dialect needs for one request, built from data and the caller's filters."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from app.dialects.model import TARGET_ADDRESS_LABEL, Dialect, GpuLabels, Source
from app.prometheus.promql import aggregate, filtered_selector, quote
from app.services.records import GpuFilters

# A key names what a query is for: ("field", name, position of the source), ("info", metric),
# ("index", metric), ("pods",) or ("node_map",). Services join answers by these keys.
QueryKey = tuple[str, ...]
Filter = tuple[Sequence[str], Sequence[str]]


def identity_filters(dialect: Dialect, filters: GpuFilters, *, on_info: bool) -> list[Filter]:
    """Matchers for the filters that describe the GPU itself (node, model, uuid).

    Attributes that a dialect keeps only on its info metric (nvidia_gpu_exporter's model name)
    are matched on that metric alone; the service filters the joined rows again anyway.
    """
    labels = dialect.labels
    # A node label that holds pod names (see node_map_metric) cannot be matched by node.
    node = () if dialect.node_map_metric else labels.node
    wanted: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
        ("node", node, filters.node),
        ("name", labels.name, filters.gpu_name),
        ("uuid", labels.uuid, tuple(exporter_uuid(dialect, u) for u in filters.uuid)),
    ]
    result: list[Filter] = []
    for attribute, candidates, values in wanted:
        if not values or not candidates:
            continue
        if not on_info and attribute in dialect.info_only_attributes:
            continue
        result.append((candidates, values))
    return result


def index_filters(dialect: Dialect, filters: GpuFilters) -> list[Filter]:
    """Matchers for an index gauge (nvidia_smi_index{uuid}): it carries no model name,
    which the info metric's matcher and the joined rows check instead."""
    return identity_filters(dialect, dataclasses.replace(filters, gpu_name=()), on_info=True)


def exporter_uuid(dialect: Dialect, uuid: str) -> str:
    """Spell a canonical `GPU-…` UUID the way this exporter labels it."""
    if dialect.uuid_without_prefix and uuid.upper().startswith("GPU-"):
        return uuid[4:].lower()
    return uuid


# The scrape targets' own pods, as `up` records them.
_TARGETS = "up"


def mig_filters(source: Source, mig_labels: Sequence[str]) -> list[Filter]:
    """Matchers that keep a `skip_on_mig` source to whole GPUs (every MIG label empty)."""
    return [((label,), ("",)) for label in mig_labels] if source.skip_on_mig else []


def workload_series(dialect: Dialect, metric: str, base: list[Filter],
                    filters: GpuFilters) -> str | None:
    """The series of `metric` that name a workload pod, narrowed to the wanted pods.

    Series with an exported pod are read as they are; series without one count only if
    their plain pod is not the scrape target's own pod (as `up` records it), which leaves
    out idle GPUs under honorLabels false and keeps workloads under honorLabels true.
    None when the dialect has no pod labels or the filters ask for labels it lacks.
    """
    labels = dialect.labels
    exported_pods = tuple(n for half in labels.pod_halves() if half.exported for n in half.pod)
    parts = []
    for half in labels.pod_halves():
        wanted = list(base)
        if filters.namespace:
            wanted.append((half.namespace, filters.namespace))
        if filters.pod:
            wanted.append((half.pod, filters.pod))
        if any(not names for names, _ in wanted):
            continue  # a filter on a label this half does not have matches nothing here
        fixed = [f'{half.pod[0]}!=""']
        if not half.exported:
            fixed += [f'{n}=""' for n in exported_pods]
        series = filtered_selector(metric, wanted, fixed)
        own = _target_pod(labels, half.pod)
        if not half.exported and own:
            series = f"({series} unless {_on_target(own)} {_targets_with(own)})"
        parts.append(series)
    return " or ".join(parts) if parts else None


def podless_series(dialect: Dialect, metric: str, base: list[Filter]) -> str:
    """The series of `metric` that name no workload: a device's own values."""
    labels = dialect.labels
    pods = labels.pod
    if not pods:
        return filtered_selector(metric, base)
    empty = [f'{n}=""' for n in pods]
    series = filtered_selector(metric, base, empty)
    own = _target_pod(labels, pods)
    if not own:
        return series
    # Under honorLabels true a pod-less series takes the target's own pod label.
    others = [f'{n}=""' for n in pods if n != own]
    mine = filtered_selector(metric, base, [*others, f'{own}!=""'])
    return f"{series} or ({mine} and {_on_target(own)} {_targets_with(own)})"


def _target_pod(labels: GpuLabels, pods: Sequence[str]) -> str | None:
    """The workload label that is also the scrape target's pod label, if one is."""
    return next((name for name in labels.target_pod if name in pods), None)


def _on_target(pod_label: str) -> str:
    return f"on ({TARGET_ADDRESS_LABEL}, {pod_label})"


def _targets_with(pod_label: str) -> str:
    return _TARGETS + "{" + pod_label + '!=""}'


def _source_query(dialect: Dialect, source: Source, filters: list[Filter],
                  wanted: GpuFilters) -> str:
    """One source's query: the GPU-level value, plus each pod's series where it has any."""
    identity = dialect.labels.identity()
    base = filters + mig_filters(source, dialect.labels.mig_instance)
    if not dialect.reads_pods(source):
        return aggregate("max", identity, filtered_selector(source.metric, base))
    device = aggregate("max", identity, podless_series(dialect, source.metric, base))
    pods = workload_series(dialect, source.metric, base, wanted)
    if pods is None:
        return device
    return f"{device} or {aggregate('max', identity + dialect.labels.pods(), pods)}"


def gpu_queries(dialect: Dialect, filters: GpuFilters) -> dict[QueryKey, str]:
    """Return every query needed to list GPUs: one per metric source, plus info metrics.

    A field's fallback source (dcgm's engine activity, where GPU_UTIL is absent) asks only
    for the GPUs its earlier sources do not cover, so its answer stays small.
    """
    labels = dialect.labels
    identity = labels.identity()
    field_filters = identity_filters(dialect, filters, on_info=False)
    queries: dict[QueryKey, str] = {}
    for name, sources in dialect.gpu_fields.items():
        earlier: list[str] = []
        for position, source in enumerate(sources):
            query = _source_query(dialect, source, field_filters, filters)
            if earlier:
                query = f"({query}) unless on ({', '.join(identity)}) ({' or '.join(earlier)})"
            queries[("field", name, str(position))] = query
            earlier.append(filtered_selector(
                source.metric, field_filters + mig_filters(source, labels.mig_instance)))
    info_filters = identity_filters(dialect, filters, on_info=True)
    for metric in dialect.gpu_info_metrics:
        queries[("info", metric)] = aggregate(
            "max", identity, filtered_selector(metric, info_filters)
        )
    for metric in dialect.index_metrics:
        queries[("index", metric)] = aggregate(
            "max", identity, filtered_selector(metric, index_filters(dialect, filters))
        )
    if dialect.node_map_metric:
        queries[("node_map",)] = node_map_query(dialect, field_filters)
    return queries


def node_map_query(dialect: Dialect, filters: list[Filter]) -> str:
    """The node of each pod named by the dialect's node label (the exporter's own pods)."""
    assert dialect.node_map_metric is not None
    gpus = filtered_selector(dialect.pod_metric(), filters)
    named = " or ".join(
        f'label_replace({aggregate("group", (label,), gpus)}, '
        f'"pod", "$1", {quote(label)}, "(.+)")'
        for label in dialect.labels.node
    )
    return aggregate("group", ("pod", "node"), f"{dialect.node_map_metric} and on (pod) ({named})")


def pods_query(dialect: Dialect, filters: GpuFilters) -> str | None:
    """Which pods hold which GPU, narrowed to the requested namespaces and pods."""
    labels = dialect.labels
    if not labels.pod:
        return None
    base = identity_filters(dialect, filters, on_info=False)
    series = workload_series(dialect, dialect.pod_metric(), base, filters)
    if series is None:
        return None  # the filters ask for labels this dialect does not have
    return aggregate("group", labels.identity() + labels.pods(), series)


def process_queries(dialect: Dialect, filters: GpuFilters) -> dict[QueryKey, str]:
    """Return every query needed to list processes, plus what places them on a GPU."""
    labels = dialect.labels
    by = labels.identity() + dialect.process_labels.all()
    # Process series may lack the GPU's model or UUID: only the node is matched on them;
    # the other GPU filters go through the GPU-level queries below.
    field_filters = identity_filters(dialect, GpuFilters(node=filters.node), on_info=False)
    queries: dict[QueryKey, str] = {}
    for name, sources in dialect.process_fields.items():
        for position, source in enumerate(sources):
            queries[("field", name, str(position))] = aggregate(
                "max", by, filtered_selector(source.metric, field_filters))
    for metric in dialect.process_info_metrics:
        queries[("process_info", metric)] = aggregate(
            "max", by, filtered_selector(metric, field_filters)
        )
    info_filters = identity_filters(dialect, filters, on_info=True)
    for metric in dialect.gpu_info_metrics:
        queries[("info", metric)] = aggregate(
            "max", labels.identity(), filtered_selector(metric, info_filters)
        )
    for metric in dialect.index_metrics:
        queries[("index", metric)] = aggregate(
            "max", labels.identity(), filtered_selector(metric, index_filters(dialect, filters))
        )
    needs_gpu = filters.gpu_name or filters.uuid or filters.pod or filters.namespace
    if needs_gpu and not dialect.gpu_info_metrics:
        # Process series may lack the model name: list the GPUs to filter by it.
        gpu_filters = identity_filters(dialect, filters, on_info=False)
        queries[("gpus",)] = aggregate(
            "group", labels.identity(), filtered_selector(dialect.pod_metric(), gpu_filters)
        )
    pods = pods_query(dialect, filters)
    if pods is not None:
        queries[("pods",)] = pods
    return queries
