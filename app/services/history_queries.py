"""The PromQL of GPU history: per dialect and field, one expression meaning the snapshot.

The value of `gpu_value(dialect, field, filters)` at any instant is, per GPU, what the
snapshot (`list_gpus`) serves for that field at that instant: the same sources in the same
order (a fallback only where earlier sources have no series), the same per-pod rule for
time-shared GPUs, canonical units, and what the dialect lacks derived as `derive_memory`
does. It is built from the snapshot's own blocks in queries.py, so both read the same
series. Group expressions add canonical labels (`node_name`, `namespace`, `gpu_name`) with
`label_replace`, so Prometheus aggregates and only the groups travel.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.dialects.model import Dialect, Source
from app.prometheus.promql import aggregate, filtered_selector, quote
from app.services.queries import (
    Filter,
    identity_filters,
    index_filters,
    mig_filters,
    node_map_query,
    podless_series,
    workload_series,
)
from app.services.records import GpuFilters
from app.services.samples import MEMORY_FIELDS, SENTINEL_LIMIT

# Group labels written by label_replace; none of the known exporters uses these names.
NODE = "node_name"
NAMESPACE = "namespace"
GPU_NAME = "gpu_name"
GPU_UUID = "gpu_uuid"
GPU_INDEX = "gpu_index"
_EXPORTER_POD = "exporter_pod"
_MAPPED_NODE = "mapped_node"
# Marks the two halves of an average asked of several dialects (see aggregate_query).
PART = "part"
GROUP_LABELS: dict[str, tuple[str, ...]] = {
    "node": (NODE,), "namespace": (NAMESPACE,), "gpu_name": (GPU_NAME,), "cluster": (),
}
_LIMIT = repr(SENTINEL_LIMIT)


def reported(expression: str) -> str:
    """Keep the samples the snapshot would serve: NaN, infinities and blank sentinels go."""
    return f"(({expression}) <= {_LIMIT} >= -{_LIMIT})"


def relabel(expression: str, target: str, sources: Sequence[str], *,
            regex: str = "(.+)", replacement: str = "$1") -> str:
    """Copy into `target` the first of `sources` that is not empty (as first_label reads).

    Each label_replace overwrites `target` only where its source matches, so they are
    applied in reverse order of preference. A `target` that is not among the sources is
    cleared first: it would otherwise keep what the exporter wrote there.
    """
    out = expression
    if target not in sources:
        out = f'label_replace({out}, {quote(target)}, "", "", "")'
    for source in reversed(sources):
        out = (f"label_replace({out}, {quote(target)}, {quote(replacement)}, "
               f"{quote(source)}, {quote(regex)})")
    return out


def key_labels(dialect: Dialect) -> tuple[str, ...]:
    """The labels of a GPU's key (node, UUID or index, MIG instance): what joins on it."""
    labels = dialect.labels
    return tuple(dict.fromkeys(labels.node + (labels.uuid or labels.index)
                               + labels.mig_instance))


def _on(labels: Sequence[str]) -> str:
    return f"on ({', '.join(labels)})"


# -- the per-GPU value of one field ----------------------------------------------------------


def _scaled(expression: str, source: Source) -> str:
    return expression if source.scale == 1 else f"{expression} * {source.scale!r}"


def source_value(dialect: Dialect, source: Source, base: list[Filter],
                 filters: GpuFilters) -> str:
    """One source's value per GPU, in canonical units, as the snapshot reads it.

    A source read per pod: the device's pod-less series where one exists (even if it holds
    no number, as the snapshot's join does), else the max over the pods' copies.
    """
    identity = dialect.labels.identity()
    wanted = base + mig_filters(source, dialect.labels.mig_instance)
    if not dialect.reads_pods(source):
        value = reported(aggregate("max", identity, filtered_selector(source.metric, wanted)))
        return _scaled(value, source)
    device = aggregate("max", identity, podless_series(dialect, source.metric, wanted))
    pods = workload_series(dialect, source.metric, wanted, filters)
    if pods is None:
        return _scaled(reported(device), source)
    copies = aggregate("max", identity, reported(pods))
    return _scaled(f"({reported(device)} or ({copies} unless {device}))", source)


def field_value(dialect: Dialect, field: str, filters: GpuFilters) -> str | None:
    """The field from the dialect's own sources, per GPU; None if it has none.

    A later source counts only for GPUs the earlier ones have no series of, as in the
    snapshot's `unless` (dcgm's engine activity where GPU_UTIL is absent).
    """
    sources = dialect.gpu_fields.get(field)
    if not sources:
        return None
    labels = dialect.labels
    base = identity_filters(dialect, filters, on_info=False)
    parts: list[str] = []
    earlier: list[str] = []
    for source in sources:
        value = source_value(dialect, source, base, filters)
        if earlier:
            value = f"({value} unless {_on(labels.identity())} ({' or '.join(earlier)}))"
        parts.append(value)
        earlier.append(filtered_selector(
            source.metric, base + mig_filters(source, labels.mig_instance)))
    joined = parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"
    # The snapshot keeps whole bytes; its derived fields add and divide those.
    return f"round({joined})" if field in MEMORY_FIELDS else joined


def gpu_value(dialect: Dialect, field: str, filters: GpuFilters) -> str | None:
    """The field per GPU as the snapshot serves it, derived where the exporter lacks it.

    Mirrors `derive_memory`: total = used + free + reserved (reserved absent: 0); free =
    max(total - used - reserved, 0); memory utilization = used / total * 100. A derived
    value stands only where the exporter's own is missing (`own or derived`).
    """
    own = field_value(dialect, field, filters)
    derived = _derived(dialect, field, filters)
    if derived is None:
        return own
    return derived if own is None else f"({own} or {derived})"


def _derived(dialect: Dialect, field: str, filters: GpuFilters) -> str | None:
    used = field_value(dialect, "memory_used", filters)
    if used is None:
        return None
    free = field_value(dialect, "memory_free", filters)
    total = field_value(dialect, "memory_total", filters)
    reserved = field_value(dialect, "memory_reserved", filters)
    # Reserved memory counts as 0 where the exporter does not write it.
    reserved_or_0 = f"({reserved} or {used} * 0)" if reserved is not None else None
    if field == "memory_total":
        if free is None:
            return None
        extra = f" + {reserved_or_0}" if reserved_or_0 else ""
        return f"({used} + {free}{extra})"
    if field == "memory_free":
        if total is None:
            return None  # a total derived from free cannot give free back
        extra = f" - {reserved_or_0}" if reserved_or_0 else ""
        return f"clamp_min({total} - {used}{extra}, 0)"
    if field == "memory_utilization":
        whole = gpu_value(dialect, "memory_total", filters)
        if whole is None:
            return None
        return f"({used} / ({whole} != 0) * 100)"
    return None


# -- which GPUs the filters keep, at each instant --------------------------------------------


def _pod_sources(dialect: Dialect) -> list[Source]:
    """The sources whose pod series name the workloads on a GPU (as the snapshot reads)."""
    found: dict[tuple[str, bool], Source] = {}
    for sources in dialect.gpu_fields.values():
        for source in sources:
            if dialect.reads_pods(source):
                found.setdefault((source.metric, source.skip_on_mig), source)
    return list(found.values())


def _workloads(dialect: Dialect, filters: GpuFilters) -> list[str]:
    base = identity_filters(dialect, filters, on_info=False)
    parts = []
    for source in _pod_sources(dialect):
        wanted = base + mig_filters(source, dialect.labels.mig_instance)
        series = workload_series(dialect, source.metric, wanted, filters)
        if series is not None:
            parts.append(series)
    return parts


def held(dialect: Dialect, filters: GpuFilters) -> str | None:
    """The GPUs that pods matching the pod and namespace filters hold, per instant.

    None when the dialect cannot say (no pod labels): then no GPU of it matches.
    """
    parts = _workloads(dialect, filters)
    if not parts:
        return None
    identity = dialect.labels.identity()
    return " or ".join(aggregate("group", identity, p) for p in parts)


def namespaces_of(dialect: Dialect, filters: GpuFilters) -> str | None:
    """Each GPU with the namespace of each pod holding it, as label `namespace`."""
    parts = _workloads(dialect, filters)
    if not parts:
        return None
    labels = dialect.labels
    identity = labels.identity()
    named = " or ".join(
        relabel(aggregate("group", identity + labels.namespace, p), NAMESPACE,
                labels.namespace) for p in parts)
    return aggregate("group", (*identity, NAMESPACE), named)


def _info_name_filter(dialect: Dialect, filters: GpuFilters) -> str | None:
    """Where the model is only on the info metric: the GPUs whose info names a wanted one."""
    if (not filters.gpu_name or "name" not in dialect.info_only_attributes
            or not dialect.gpu_info_metrics):
        return None
    keys = key_labels(dialect)
    wanted = identity_filters(dialect, filters, on_info=True)
    return " or ".join(aggregate("group", keys, filtered_selector(m, wanted))
                       for m in dialect.gpu_info_metrics)


def _can_match(dialect: Dialect, filters: GpuFilters) -> bool:
    """Whether GPUs of this dialect can match at all: a UUID or model filter matches no
    GPU of a dialect without that label (the snapshot's rows have None there)."""
    labels = dialect.labels
    return not ((filters.uuid and not labels.uuid) or (filters.gpu_name and not labels.name))


def listed(dialect: Dialect, field: str, filters: GpuFilters) -> str | None:
    """The field per GPU, kept to the GPUs the filters ask for at each instant.

    None when the dialect has nothing for it (no source, or the filters ask for pods it
    cannot name).
    """
    value = gpu_value(dialect, field, filters)
    if value is None or not _can_match(dialect, filters):
        return None
    if filters.pod or filters.namespace:
        holders = held(dialect, filters)
        if holders is None:
            return None
        value = f"({value} and ({holders}))"
    info = _info_name_filter(dialect, filters)
    if info is not None:
        value = f"({value} and {_on(key_labels(dialect))} ({info}))"
    return value


# -- extra answers for group_by=gpu (read in Python, as the snapshot's join does) -------------


def info_queries(dialect: Dialect, filters: GpuFilters) -> dict[tuple[str, ...], str]:
    """Label-only series (model name, index) and the node of exporter pods, per dialect."""
    identity = dialect.labels.identity()
    info_filters = identity_filters(dialect, filters, on_info=True)
    queries: dict[tuple[str, ...], str] = {}
    for metric in dialect.gpu_info_metrics:
        queries[("info", metric)] = aggregate("max", identity,
                                              filtered_selector(metric, info_filters))
    for metric in dialect.index_metrics:
        queries[("index", metric)] = aggregate(
            "max", identity, filtered_selector(metric, index_filters(dialect, filters)))
    if dialect.node_map_metric:
        queries[("node_map",)] = node_map_query(
            dialect, identity_filters(dialect, filters, on_info=False))
    return queries


# -- groups ----------------------------------------------------------------------------------


def _canonical_uuid(dialect: Dialect, expression: str) -> str:
    replacement = "GPU-$1" if dialect.uuid_without_prefix else "$1"
    return relabel(expression, GPU_UUID, dialect.labels.uuid, replacement=replacement)


def _canonical_index(dialect: Dialect, expression: str) -> str:
    # nvitop writes a MIG device's index as "<gpu>:<instance>": the GPU's is the first part.
    regex = "([^:]+)(?::.*)?" if dialect.index_encodes_mig else "(.+)"
    return relabel(expression, GPU_INDEX, dialect.labels.index, regex=regex)


def _indexed(dialect: Dialect) -> bool:
    """Whether the GPU's index is on every series and its node label names nodes."""
    return (bool(dialect.labels.index) and "index" not in dialect.info_only_attributes
            and dialect.node_map_metric is None)


def _present(dialect: Dialect, filters: GpuFilters, fixed: Sequence[str]) -> str:
    """The GPUs of a dialect that the filters keep, by identity, among series with `fixed`."""
    base = identity_filters(dialect, filters, on_info=False)
    source = dialect.pod_source()
    wanted = base + mig_filters(source, dialect.labels.mig_instance)
    gpus = aggregate("group", dialect.labels.identity(),
                     filtered_selector(source.metric, wanted, fixed))
    if filters.pod or filters.namespace:
        holders = held(dialect, filters)
        gpus = f"({gpus} and ({holders}))" if holders else f"({gpus} unless {gpus})"
    return gpus


def _not_seen_earlier(dialect: Dialect, value: str, earlier: Sequence[Dialect],
                      filters: GpuFilters) -> str:
    """Leave out the GPUs an earlier dialect lists at that instant (counted once).

    A GPU is the same as one listed earlier if their UUIDs are (where both have one) or
    their node and index are (where both carry them on every series), as in merge_rows.
    """
    by_uuid: list[str] = []
    by_index: list[str] = []
    for other in earlier:
        if dialect.labels.uuid and other.labels.uuid:
            by_uuid.extend(_canonical_uuid(other, _present(other, filters, [f'{label}!=""']))
                           for label in other.labels.uuid)
        if _indexed(dialect) and _indexed(other):
            by_index.extend(
                _canonical_index(other, relabel(_present(other, filters, [f'{label}!=""']),
                                                NODE, other.labels.node))
                for label in other.labels.index)
    if by_uuid:
        value = (f"({_canonical_uuid(dialect, value)} unless {_on((GPU_UUID,))} "
                 f"({' or '.join(by_uuid)}))")
    if by_index:
        mine = _canonical_index(dialect, relabel(value, NODE, dialect.labels.node))
        value = f"({mine} unless {_on((NODE, GPU_INDEX))} ({' or '.join(by_index)}))"
    return value


def _with_node(dialect: Dialect, value: str, filters: GpuFilters) -> str:
    """Label `node_name` with the GPU's node; where the node label holds the exporter's
    pod, with that pod's node from kube_pod_info (else the pod's name, as the snapshot)."""
    named = relabel(value, NODE, dialect.labels.node)
    if dialect.node_map_metric is None:
        return named
    pairs = node_map_query(dialect, identity_filters(dialect, filters, on_info=False))
    pod_map = (f"topk by ({_EXPORTER_POD}) (1, "
               + relabel(relabel(pairs, _EXPORTER_POD, ("pod",)), _MAPPED_NODE, ("node",))
               + ")")
    by_pod = relabel(named, _EXPORTER_POD, (NODE,))
    mapped = relabel(f"({by_pod} * {_on((_EXPORTER_POD,))} group_left ({_MAPPED_NODE}) "
                     f"{pod_map})", NODE, (_MAPPED_NODE,))
    unmapped = f"({named} unless {_on((NODE,))} {relabel(pod_map, NODE, (_EXPORTER_POD,))})"
    return f"({mapped} or {unmapped})"


def _only_nodes(value: str, nodes: Sequence[str]) -> str:
    """Keep the series whose `node_name` is one of `nodes` (names are escaped literals)."""
    wanted = " or ".join(
        f'label_replace(vector(1), "{NODE}", {quote(n.replace("$", "$$"))}, "", "")'
        for n in nodes)
    return f"({value} and {_on((NODE,))} ({wanted}))"


def _with_gpu_name(dialect: Dialect, value: str, filters: GpuFilters) -> str:
    """Label `gpu_name` with the GPU's model, from its series or its info metric."""
    labels = dialect.labels
    if "name" in dialect.info_only_attributes and dialect.gpu_info_metrics:
        keys = key_labels(dialect)
        wanted = identity_filters(dialect, filters, on_info=True)
        infos = " or ".join(aggregate("group", keys + labels.name,
                                      filtered_selector(m, wanted))
                            for m in dialect.gpu_info_metrics)
        info = f"topk by ({', '.join(keys)}) (1, {relabel(infos, GPU_NAME, labels.name)})"
        joined = f"({value} * {_on(keys)} group_left ({GPU_NAME}) {info})"
        return f"({joined} or ({value} unless {_on(keys)} {info}))"
    named = relabel(value, GPU_NAME, labels.name)
    if dialect.name_encodes_mig_profile:
        # nvitop names a MIG device "<model> MIG <profile>": the model is the GPU's name.
        named = f'label_replace({named}, "{GPU_NAME}", "$1", "{GPU_NAME}", "(.+?) MIG .*")'
    return named


def grouped(dialect: Dialect, field: str, filters: GpuFilters, group_by: str,
            earlier: Sequence[Dialect] = ()) -> str | None:
    """The field per GPU of `dialect`, labelled with its group, ready to aggregate.

    GPUs an earlier dialect lists are left out. A GPU held by pods of two namespaces is
    in both namespace groups; one held by none is in no namespace group.
    """
    pods: str | None = None
    if group_by == "namespace":
        value = gpu_value(dialect, field, filters)
        pods = namespaces_of(dialect, filters)
        if value is None or pods is None or not _can_match(dialect, filters):
            return None
        info = _info_name_filter(dialect, filters)
        if info is not None:
            value = f"({value} and {_on(key_labels(dialect))} ({info}))"
    else:
        listed_value = listed(dialect, field, filters)
        if listed_value is None:
            return None
        value = listed_value
    value = _not_seen_earlier(dialect, value, earlier, filters)
    by_node = dialect.node_map_metric is not None and bool(filters.node)
    if group_by == "node" or by_node:
        value = _with_node(dialect, value, filters)
        if by_node:
            value = _only_nodes(value, filters.node)
    if group_by == "gpu_name":
        value = _with_gpu_name(dialect, value, filters)
    if pods is not None:
        value = f"({pods} * {_on(dialect.labels.identity())} group_left () {value})"
    return value


def aggregate_query(value: str, group_by: str, agg: str, *, halves: bool) -> str:
    """Aggregate per group; with `halves`, an average as its sum and count, labelled
    `part`, so that the averages of several dialects can be combined."""
    by = GROUP_LABELS[group_by]
    if agg != "avg" or not halves:
        return aggregate(agg, by, value)
    return (f'label_replace({aggregate("sum", by, value)}, "{PART}", "sum", "", "") or '
            f'label_replace({aggregate("count", by, value)}, "{PART}", "count", "", "")')


def count_query(dialect: Dialect, filters: GpuFilters, group_by: str,
                earlier: Sequence[Dialect] = ()) -> str | None:
    """How many series one field of this dialect gives now: the estimate of the answer."""
    field = next((name for name, sources in dialect.gpu_fields.items()
                  if dialect.pod_source() in sources), None)
    if field is None:
        return None
    if group_by == "gpu":
        value = listed(dialect, field, filters)
        return None if value is None else f"count({value})"
    value = grouped(dialect, field, filters, group_by, earlier)
    if value is None:
        return None
    return f"count({aggregate('count', GROUP_LABELS[group_by], value)})"
