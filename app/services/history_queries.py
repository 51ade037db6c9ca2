"""The PromQL of GPU history: per dialect and field, one expression meaning the snapshot.

The value of `gpu_value(dialect, field, filters)` at any instant is, per GPU, what the
snapshot (`list_gpus`) serves for that field at that instant: the same sources in the same
order (a fallback only where earlier sources have no series), the same per-pod rule for
time-shared GPUs, canonical units, and what the dialect lacks derived as `derive_memory`
does. It is built from the snapshot's own blocks in queries.py, so both read the same
series. Prometheus aggregates groups, so only the groups travel.

Every operator over per-GPU vectors costs Prometheus about a microsecond per GPU and
timestamp (8,000 GPUs x 121 timestamps: over a second), so the expressions keep them few:
values stay in the exporter's unit while every term shares it (the scale is applied once,
after aggregating where there are groups); a group's GPUs are kept by their key labels
only; blank sentinels are dropped with one comparison per field; a fallback source is
narrowed before it is aggregated; and group labels are the exporter's own, read by the
service, rather than rewritten with label_replace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from app.services.samples import SENTINEL_LIMIT

# Group labels written by label_replace; none of the known exporters uses these names.
NODE = "node_name"
NAMESPACE = "namespace"
GPU_UUID = "gpu_uuid"
GPU_INDEX = "gpu_index"
_EXPORTER_POD = "exporter_pod"
_MAPPED_NODE = "mapped_node"
# Marks the two halves of an average asked of several dialects (see aggregate_query).
PART = "part"
_LIMIT = repr(SENTINEL_LIMIT)


def reported(expression: str) -> str:
    """Keep the samples the snapshot would serve: NaN, +Inf and blank sentinels go.

    One comparison (each is a pass over every GPU at every timestamp): exporters write no
    negative sentinels, and `<=` is false for NaN.
    """
    return f"(({expression}) <= {_LIMIT})"


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
    device = labels.uuid or labels.index
    # nvitop writes a MIG device's instance into its index ("<gpu>:<instance>").
    mig = labels.index if dialect.index_encodes_mig else labels.mig_instance
    return tuple(dict.fromkeys(labels.node + device + mig))


def _on(labels: Sequence[str]) -> str:
    return f"on ({', '.join(labels)})"


# -- the per-GPU value of one field ----------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """A per-GPU expression whose values, times `scale`, are in the canonical unit."""

    expression: str
    scale: float = 1.0

    def canonical(self) -> str:
        """The expression in the canonical unit."""
        return _times(self.expression, self.scale)


def _times(expression: str, scale: float) -> str:
    return expression if scale == 1 else f"{expression} * {scale!r}"


def _alike(*values: Value) -> tuple[list[str], float]:
    """The values' expressions in one unit: theirs if they share it, else canonical."""
    scales = {v.scale for v in values}
    if len(scales) == 1:
        return [v.expression for v in values], values[0].scale
    return [f"({v.canonical()})" for v in values], 1.0


def source_value(dialect: Dialect, source: Source, base: list[Filter], by: Sequence[str],
                 unless: str | None = None) -> str:
    """One source's value per GPU (kept `by` those labels), in the exporter's unit.

    A source read per pod: the device's pod-less series where one exists, else the max
    over all its series (the pods' copies of the device's value): `or` keeps the right
    side only for GPUs the left side lacks. `unless` leaves out, before anything is
    aggregated, the GPUs that have series there (a fallback's earlier sources).
    """
    wanted = base + mig_filters(source, dialect.labels.mig_instance)

    def only_new(series: str) -> str:
        if unless is None:
            return series
        return f"({series} unless {_on(dialect.labels.identity())} ({unless}))"

    every = aggregate("max", by, only_new(filtered_selector(source.metric, wanted)))
    if not dialect.reads_pods(source):
        return every
    device = aggregate("max", by, only_new(podless_series(dialect, source.metric, wanted)))
    return f"({device} or {every})"


def field_value(dialect: Dialect, field: str, filters: GpuFilters,
                by: Sequence[str]) -> Value | None:
    """The field from the dialect's own sources, per GPU; None if it has none.

    A later source counts only for GPUs the earlier ones have no series of, as in the
    snapshot's `unless` (dcgm's engine activity where GPU_UTIL is absent).
    """
    sources = dialect.gpu_fields.get(field)
    if not sources:
        return None
    base = identity_filters(dialect, filters, on_info=False)
    parts: list[Value] = []
    earlier: list[str] = []
    for source in sources:
        value = source_value(dialect, source, base, by,
                             " or ".join(earlier) if earlier else None)
        parts.append(Value(value, source.scale))
        earlier.append(filtered_selector(
            source.metric, base + mig_filters(source, dialect.labels.mig_instance)))
    if len(parts) == 1:
        return parts[0]
    expressions, scale = _alike(*parts)
    return Value("(" + " or ".join(expressions) + ")", scale)


def gpu_value(dialect: Dialect, field: str, filters: GpuFilters,
              by: Sequence[str] | None = None, *, exact: bool = True) -> Value | None:
    """The field per GPU as the snapshot serves it, derived where the exporter lacks it.

    Mirrors `derive_memory`: total = used + free + reserved (reserved absent: 0); free =
    max(total - used - reserved, 0); memory utilization = used / total * 100. A derived
    value stands only where the exporter's own is missing (`own or derived`). NaN, +Inf
    and blank sentinels are no value, as in the snapshot. A GPU's values are kept `by` its
    identity labels unless fewer are asked for (a group needs only its key). Not `exact`
    (for groups): memory utilization may be computed in a cheaper, equal form whose last
    bit can differ, which can move a value on a rounding edge by 0.001.
    """
    by = dialect.labels.identity() if by is None else tuple(by)
    own = field_value(dialect, field, filters, by)
    derived = _derived(dialect, field, filters, by, exact)
    if derived is None:
        return None if own is None else Value(reported(own.expression), own.scale)
    if own is None:
        return Value(reported(derived.expression), derived.scale)
    (mine, made), scale = _alike(own, derived)
    return Value(f"({reported(mine)} or {reported(made)})", scale)


def _derived(dialect: Dialect, field: str, filters: GpuFilters, by: Sequence[str],
             exact: bool) -> Value | None:
    if field not in ("memory_total", "memory_free", "memory_utilization"):
        return None
    used = field_value(dialect, "memory_used", filters, by)
    if used is None:
        return None
    free = field_value(dialect, "memory_free", filters, by)
    total = field_value(dialect, "memory_total", filters, by)
    reserved = field_value(dialect, "memory_reserved", filters, by)
    if field == "memory_free":
        if total is None:
            return None  # a total derived from free cannot give free back
        terms = [total, used] + ([reserved] if reserved else [])
        (capacity, taken, *kept), scale = _alike(*terms)
        minus = f" - ({kept[0]} or {capacity} * 0)" if kept else ""
        # Its inputs are checked here: a sentinel would clamp to a plausible 0.
        return Value(f"clamp_min({reported(capacity)} - {reported(taken)}{minus}, 0)", scale)
    # What the total adds to the memory used: free, and reserved where it is written.
    rest = _unused(free, reserved)
    if field == "memory_total":
        if rest is None:
            return None
        (u, r), scale = _alike(used, rest)
        return Value(f"({u} + {r})", scale)
    if total is None and rest is not None and not exact:
        # used / (used + rest), written with `used` once: it is the costly term (per pod).
        (u, r), _ = _alike(used, rest)
        return Value(f"(1 / (1 + {r} / {u}))", 100.0)
    whole = total if rest is None else _either(total, _sum(used, rest))
    if whole is None:
        return None
    (part, of), _ = _alike(used, whole)
    return Value(f"({part} / ({of} != 0))", 100.0)  # one unit over both: no unit left


def _unused(free: Value | None, reserved: Value | None) -> Value | None:
    """free + reserved, a missing reserved counted as 0 (`derive_memory`)."""
    if free is None or reserved is None:
        return free
    (f, r), scale = _alike(free, reserved)
    return Value(f"(({f} + {r}) or {f})", scale)


def _sum(first: Value, second: Value) -> Value:
    (a, b), scale = _alike(first, second)
    return Value(f"({a} + {b})", scale)


def _either(first: Value | None, second: Value | None) -> Value | None:
    """`first`, and `second` for the GPUs `first` lacks."""
    if first is None or second is None:
        return first or second
    (a, b), scale = _alike(first, second)
    return Value(f"({a} or {b})", scale)


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


def held(dialect: Dialect, filters: GpuFilters,
         by: Sequence[str] | None = None) -> str | None:
    """The GPUs (kept `by` those labels) that pods matching the pod and namespace filters
    hold, per instant. None when the dialect cannot say (no pod labels): no GPU matches.
    """
    parts = _workloads(dialect, filters)
    if not parts:
        return None
    keep = dialect.labels.identity() if by is None else tuple(by)
    return " or ".join(aggregate("group", keep, p) for p in parts)


def namespaces_of(dialect: Dialect, filters: GpuFilters, by: Sequence[str]) -> str | None:
    """Each GPU (kept `by` those labels) with the namespace of each pod holding it, as
    label `namespace`."""
    parts = _workloads(dialect, filters)
    if not parts:
        return None
    labels = dialect.labels
    named = " or ".join(
        relabel(aggregate("group", (*by, *labels.namespace), p), NAMESPACE,
                labels.namespace) for p in parts)
    return aggregate("group", (*by, NAMESPACE), named)


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


def listed(dialect: Dialect, field: str, filters: GpuFilters,
           by: Sequence[str] | None = None, *, exact: bool = True) -> Value | None:
    """The field per GPU, kept to the GPUs the filters ask for at each instant.

    None when the dialect has nothing for it (no source, or the filters ask for what it
    cannot name).
    """
    value = gpu_value(dialect, field, filters, by, exact=exact)
    if value is None or not _can_match(dialect, filters):
        return None
    expression = value.expression
    if filters.pod or filters.namespace:
        holders = held(dialect, filters, by)
        if holders is None:
            return None
        expression = f"({expression} and ({holders}))"
    info = _info_name_filter(dialect, filters)
    if info is not None:
        expression = f"({expression} and {_on(key_labels(dialect))} ({info}))"
    return Value(expression, value.scale)


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
    """The GPUs of a dialect that the filters keep, among series with `fixed`, by key and
    index (what a later dialect's GPUs are matched on)."""
    base = identity_filters(dialect, filters, on_info=False)
    source = dialect.pod_source()
    wanted = base + mig_filters(source, dialect.labels.mig_instance)
    keys = tuple(dict.fromkeys(key_labels(dialect) + dialect.labels.index))
    gpus = aggregate("group", keys, filtered_selector(source.metric, wanted, fixed))
    if filters.pod or filters.namespace:
        holders = held(dialect, filters, keys)
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


def _mapped_node(dialect: Dialect, value: str, filters: GpuFilters) -> str:
    """Label `node_name` with the node of the exporter pod the node label names (from
    kube_pod_info), or with the label itself where no pod of that name is known."""
    named = relabel(value, NODE, dialect.labels.node)
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


def _with_model(dialect: Dialect, value: str, filters: GpuFilters) -> str:
    """Where the model is only on the info metric, join its name labels onto the values;
    a GPU without info keeps none (a null model, as in the snapshot)."""
    labels = dialect.labels
    keys = key_labels(dialect)
    wanted = identity_filters(dialect, filters, on_info=True)
    infos = " or ".join(aggregate("group", keys + labels.name, filtered_selector(m, wanted))
                        for m in dialect.gpu_info_metrics)
    info = f"topk by ({', '.join(keys)}) (1, {infos})"
    joined = f"({value} * {_on(keys)} group_left ({', '.join(labels.name)}) {info})"
    return f"({joined} or ({value} unless {_on(keys)} {info}))"


@dataclass(frozen=True)
class GroupPlan:
    """A dialect's per-GPU values ready to aggregate `by` its group labels.

    `by` holds the dialect's candidate labels for the group in order of preference; the
    group of an answer's series is the first of them that is set (as the snapshot reads
    a row's node or model), so several label spellings may make one group.
    """

    value: Value
    by: tuple[str, ...]


def grouped(dialect: Dialect, field: str, filters: GpuFilters, group_by: str,
            earlier: Sequence[Dialect] = ()) -> GroupPlan | None:
    """The field per GPU of `dialect`, ready to aggregate per group.

    GPUs an earlier dialect lists are left out. A GPU held by pods of two namespaces is
    in both namespace groups; one held by none is in no namespace group.
    """
    labels = dialect.labels
    # A GPU's values are kept by its key, and by its model's labels to group by them.
    keep = key_labels(dialect)
    if group_by == "gpu_name" and "name" not in dialect.info_only_attributes:
        keep = tuple(dict.fromkeys(keep + labels.name))
    pods: str | None = None
    if group_by == "namespace":
        own = gpu_value(dialect, field, filters, keep, exact=False)
        pods = namespaces_of(dialect, filters, keep)
        if own is None or pods is None or not _can_match(dialect, filters):
            return None
        value = own
        info = _info_name_filter(dialect, filters)
        if info is not None:
            value = Value(f"({value.expression} and {_on(key_labels(dialect))} ({info}))",
                          value.scale)
    else:
        found = listed(dialect, field, filters, keep, exact=False)
        if found is None:
            return None
        value = found
    expression = _not_seen_earlier(dialect, value.expression, earlier, filters)
    by: tuple[str, ...] = ()
    mapped = dialect.node_map_metric is not None and (group_by == "node" or bool(filters.node))
    if mapped:
        expression = _mapped_node(dialect, expression, filters)
        if filters.node:
            expression = _only_nodes(expression, filters.node)
    if group_by == "node":
        by = (NODE,) if mapped else labels.node
    elif group_by == "gpu_name":
        if "name" in dialect.info_only_attributes and dialect.gpu_info_metrics:
            expression = _with_model(dialect, expression, filters)
        by = labels.name
    elif pods is not None:
        expression = f"({pods} * {_on(keep)} group_left () {expression})"
        by = (NAMESPACE,)
    return GroupPlan(Value(expression, value.scale), by)


def aggregate_query(plan: GroupPlan, agg: str, *, halves: bool) -> str:
    """Aggregate per group, in the canonical unit (every scale is positive, so it commutes
    with each aggregate). With `halves`, an average comes as its sum and count, labelled
    `part`, for the service to combine groups of several label spellings or dialects."""
    value = plan.value
    if agg == "count":
        return aggregate(agg, plan.by, value.expression)  # how many, in no unit
    if agg != "avg" or not halves:
        return _times(aggregate(agg, plan.by, value.expression), value.scale)
    total = _times(aggregate("sum", plan.by, value.expression), value.scale)
    count = aggregate("count", plan.by, value.expression)
    return (f'label_replace({total}, "{PART}", "sum", "", "") or '
            f'label_replace({count}, "{PART}", "count", "", "")')


def count_query(dialect: Dialect, filters: GpuFilters, group_by: str,
                earlier: Sequence[Dialect] = ()) -> str | None:
    """How many series one field of this dialect gives now: the estimate of the answer."""
    field = next((name for name, sources in dialect.gpu_fields.items()
                  if dialect.pod_source() in sources), None)
    if field is None:
        return None
    if group_by == "gpu":
        value = listed(dialect, field, filters)
        return None if value is None else f"count({value.expression})"
    plan = grouped(dialect, field, filters, group_by, earlier)
    if plan is None:
        return None
    return f"count({aggregate('count', plan.by, plan.value.expression)})"
