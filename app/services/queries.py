"""The PromQL a dialect needs for one request, built from data and the caller's filters."""

from __future__ import annotations

from collections.abc import Sequence

from app.dialects.model import Dialect, Source
from app.prometheus.promql import aggregate, filtered_selector
from app.services.records import GpuFilters

# A key names what a query is for: ("field", name, position of the source), ("info", metric)
# or ("pods",). Services join answers by these keys.
QueryKey = tuple[str, ...]
Filter = tuple[Sequence[str], Sequence[str]]


def identity_filters(dialect: Dialect, filters: GpuFilters, *, on_info: bool) -> list[Filter]:
    """Matchers for the filters that describe the GPU itself (node, model, uuid).

    Attributes that a dialect keeps only on its info metric (nvidia_gpu_exporter's model name)
    are matched on that metric alone; the service filters the joined rows again anyway.
    """
    labels = dialect.labels
    wanted: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
        ("node", labels.node, filters.node),
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


def exporter_uuid(dialect: Dialect, uuid: str) -> str:
    """Spell a canonical `GPU-…` UUID the way this exporter labels it."""
    if dialect.uuid_without_prefix and uuid.upper().startswith("GPU-"):
        return uuid[4:].lower()
    return uuid


def _source_query(source: Source, by: Sequence[str], filters: list[Filter],
                  mig_labels: Sequence[str]) -> str | None:
    extra: list[Filter] = []
    fixed: list[str] = []
    if source.skip_on_mig:
        # Every MIG label empty: the series of a whole GPU, not of an instance.
        extra = [((label,), ("",)) for label in mig_labels]
    if source.mig_only:
        if not mig_labels:
            return None  # no MIG instances here: nothing to read
        fixed = [f'{mig_labels[0]}!=""']
    series = filtered_selector(source.metric, filters + extra, fixed)
    return aggregate(source.aggregate, by, series)


def gpu_queries(dialect: Dialect, filters: GpuFilters) -> dict[QueryKey, str]:
    """Return every query needed to list GPUs: one per metric source, info and pods."""
    labels = dialect.labels
    identity = labels.identity()
    field_filters = identity_filters(dialect, filters, on_info=False)
    queries: dict[QueryKey, str] = {}
    for name, sources in dialect.gpu_fields.items():
        for position, source in enumerate(sources):
            query = _source_query(source, identity, field_filters, labels.mig_instance)
            if query is not None:
                queries[("field", name, str(position))] = query
    info_filters = identity_filters(dialect, filters, on_info=True)
    for metric in dialect.gpu_info_metrics:
        queries[("info", metric)] = aggregate(
            "max", identity, filtered_selector(metric, info_filters)
        )
    pods = pods_query(dialect, filters) if labels.pod else None
    if pods is not None:
        queries[("pods",)] = pods
    return queries


def pods_query(dialect: Dialect, filters: GpuFilters) -> str | None:
    """Which pods hold which GPU, narrowed to the requested namespaces and pods.

    With the chart's default honorLabels: false, a workload's labels arrive as exported_*
    and the plain ones name the exporter's own pod. Series with an exported pod are read
    as they are; series without one are kept only if their plain pod is not the scrape
    target's own pod (as `up` records it), which leaves out idle GPUs under honorLabels
    false and keeps workloads under honorLabels true.
    """
    labels = dialect.labels
    base = identity_filters(dialect, filters, on_info=False)
    metric = dialect.pod_metric()
    parts = []
    for exported in (True, False):
        pod = tuple(n for n in labels.pod if n.startswith("exported_") == exported)
        if not pod:
            continue
        namespace = tuple(n for n in labels.namespace if n.startswith("exported_") == exported)
        wanted = list(base)
        if filters.namespace:
            wanted.append((namespace, filters.namespace))
        if filters.pod:
            wanted.append((pod, filters.pod))
        # Only series that name a pod: an idle GPU needs no answer here.
        fixed = [f'{pod[0]}!=""']
        if not exported:
            fixed += [f'{n}=""' for n in labels.pod if n.startswith("exported_")]
        if any(not names for names, _ in wanted):
            continue  # a filter on a label this half does not have matches nothing here
        series = filtered_selector(metric, wanted, fixed)
        if not exported and "pod" in pod:
            series = f'({series} unless on (instance, pod) up{{pod!=""}})'
        parts.append(series)
    if not parts:
        return None  # the filters ask for labels this dialect does not have
    return aggregate("group", labels.identity() + labels.pods(), " or ".join(parts))


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
            query = _source_query(source, by, field_filters, ())
            if query is not None:
                queries[("field", name, str(position))] = query
    for metric in dialect.process_info_metrics:
        queries[("process_info", metric)] = aggregate(
            "max", by, filtered_selector(metric, field_filters)
        )
    info_filters = identity_filters(dialect, filters, on_info=True)
    for metric in dialect.gpu_info_metrics:
        queries[("info", metric)] = aggregate(
            "max", labels.identity(), filtered_selector(metric, info_filters)
        )
    needs_gpu = filters.gpu_name or filters.uuid or filters.pod or filters.namespace
    if needs_gpu and not dialect.gpu_info_metrics:
        # Process series may lack the model name: list the GPUs to filter by it.
        gpu_filters = identity_filters(dialect, filters, on_info=False)
        queries[("gpus",)] = aggregate(
            "group", labels.identity(), filtered_selector(dialect.pod_metric(), gpu_filters)
        )
    pods = pods_query(dialect, filters) if labels.pod else None
    if pods is not None:
        queries[("pods",)] = pods
    return queries
