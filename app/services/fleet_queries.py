"""The PromQL of the fleet view: idle time per GPU, window figures, Kubernetes allocation.

Idle time comes in two rounds, like the health rules. The first, in the GPU list's own
fan-out, is one `max_over_time` over the idle window per utilization source: a GPU whose
window maximum is below the threshold has been idle for the whole window, one that is
at or above it now is busy. Only the GPUs in between (below now, busy earlier in the
window) need the instant they were last busy, which a second round asks for those GPUs
alone (a subquery over every GPU costs about a second per thousand GPUs).

The window figures of /api/v1/cluster, /nodes and /namespaces are subqueries over the
device-level value (`max by` the GPU's labels: a time-shared GPU's series repeat the
device's value per pod, or carry a pod's smaller share), so a GPU whose pods came and went
during the window is still one continuous series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.dialects.model import Dialect, Source
from app.prometheus.promql import aggregate, equals_any, quote, selectors
from app.services.queries import Filter, QueryKey, identity_filters, mig_filters
from app.services.records import GpuFilters

# Never evaluate finer than a common scrape interval; at most this many steps a window.
MIN_STEP_S = 15
WINDOW_STEPS = 240
# More candidates than this for the second round: ask for every GPU instead (the matcher
# would outgrow a query string; the answer is the same).
MAX_NARROWED = 300
# kube-state-metrics' spelling of the GPU extended resources (nvidia.com/gpu, the renamed
# time-slicing replicas nvidia.com/gpu.shared, and one resource per MIG profile).
GPU_RESOURCES = "nvidia_com_gpu|nvidia_com_gpu_shared|nvidia_com_mig_.+"
REQUESTS = "kube_pod_container_resource_requests"
ALLOCATABLE = "kube_node_status_allocatable"
PHASE = "kube_pod_status_phase"
# One series when Prometheus holds any kube-state-metrics pod or node series.
KSM_PRESENT = f"group({PHASE}) or group({ALLOCATABLE})"


def duration(seconds: float) -> str:
    """A PromQL duration of whole seconds (at least 1s)."""
    return f"{max(1, math.ceil(seconds))}s"


def window_step(seconds: float) -> int:
    """Seconds between a window subquery's evaluations: MIN_STEP_S or coarser."""
    return max(MIN_STEP_S, int(seconds / WINDOW_STEPS) // MIN_STEP_S * MIN_STEP_S)


@dataclass(frozen=True)
class IdleRule:
    """When a GPU counts as idle: utilization (%) below `threshold` for `window` seconds."""

    threshold: float = 5.0
    window: float = 1800.0

    @property
    def step(self) -> int:
        """The precision of the instant a GPU was last busy (the second round's step)."""
        return window_step(self.window)


def utilization_sources(dialect: Dialect) -> tuple[Source, ...]:
    """The dialect's utilization sources, in the order the GPU list applies them."""
    return tuple(dialect.gpu_fields.get("utilization", ()))


def _base(dialect: Dialect, source: Source, filters: GpuFilters) -> list[Filter]:
    return identity_filters(dialect, filters, on_info=False) + mig_filters(
        source, dialect.labels.mig_instance)


def _ranged(function: str, metric: str, base: list[Filter], seconds: float,
            fixed: Sequence[str] = ()) -> str:
    """`function(selector[window])` for each spelling of the filters, joined with `or`."""
    window = duration(seconds)
    return " or ".join(f"{function}({s}[{window}])" for s in selectors(metric, base, fixed))


def _device_value(dialect: Dialect, source: Source, base: list[Filter],
                  fixed: Sequence[str] = ()) -> str:
    """The GPU's own value at each instant: the max over its series (see module doc)."""
    inner = " or ".join(selectors(source.metric, base, fixed))
    return aggregate("max", dialect.labels.identity(), inner)


def threshold_of(source: Source, percent: float) -> str:
    """The idle threshold in the source's own unit (a 0-1 ratio for engine activity)."""
    return repr(percent / source.scale)


def idle_queries(dialect: Dialect, filters: GpuFilters, rule: IdleRule) -> dict[QueryKey, str]:
    """First round: each GPU's utilization maximum over the idle window, per source.

    As in the GPU list, a fallback source (dcgm's engine activity) is asked only for the
    GPUs whose earlier sources report nothing now: those GPUs take their utilization from
    it, every other GPU from an earlier source, so its answer stays small.
    """
    identity = dialect.labels.identity()
    queries: dict[QueryKey, str] = {}
    earlier: list[str] = []
    for position, source in enumerate(utilization_sources(dialect)):
        base = _base(dialect, source, filters)
        query = aggregate("max", identity,
                          _ranged("max_over_time", source.metric, base, rule.window))
        if earlier:
            query = f"({query}) unless on ({', '.join(identity)}) ({' or '.join(earlier)})"
        queries[("idle", "max", str(position))] = query
        earlier.extend(selectors(source.metric, base))
    return queries


def device_label(dialect: Dialect) -> str | None:
    """The label that tells a GPU from another within its node (UUID, else index)."""
    names = dialect.labels.uuid or dialect.labels.index
    return names[0] if names else None


def last_busy_queries(dialect: Dialect, filters: GpuFilters, rule: IdleRule,
                      devices: Sequence[str]) -> dict[QueryKey, str]:
    """Second round: the latest sample time at or above the threshold within the idle
    window, for the GPUs named in `devices` (their UUID or index label values); every GPU
    when there are more than MAX_NARROWED of them."""
    label = device_label(dialect)
    fixed = [equals_any(label, sorted(set(devices)))] if (
        label and len(set(devices)) <= MAX_NARROWED) else []
    queries: dict[QueryKey, str] = {}
    for position, source in enumerate(utilization_sources(dialect)):
        base = _base(dialect, source, filters)
        parts = []
        for series in selectors(source.metric, base, fixed):
            # `timestamp` of a plain selector is the sample's own time; `and` keeps it
            # where the sample is at or above the threshold.
            busy = f"timestamp({series}) and ({series} >= {threshold_of(source, rule.threshold)})"
            parts.append(f"max_over_time(({busy})[{duration(rule.window)}:{rule.step}s])")
        queries[("idle", "last_busy", str(position))] = aggregate(
            "max", dialect.labels.identity(), " or ".join(parts))
    return queries


def device_labels(dialect: Dialect) -> tuple[str, ...]:
    """The labels of a physical GPU: its node and UUID or index (not its MIG instance)."""
    labels = dialect.labels
    return tuple(dict.fromkeys(labels.node + labels.uuid + labels.index))


def window_queries(dialect: Dialect, filters: GpuFilters, seconds: float,
                   threshold: float) -> dict[QueryKey, str]:
    """Per GPU over the window: average utilization and seconds below the idle threshold
    (per utilization source), and per physical GPU the energy in the exporter's unit:
    the increase of the energy counter (which survives counter resets), else the integral
    of power (its samples times the step, where the counter is missing)."""
    step = window_step(seconds)
    # (t - window, t]: Prometheus before 3.0 also evaluates a subquery at its range's start,
    # which would count one step too many; the counter's increase wants both ends.
    within = f"[{duration(seconds - 1)}:{step}s]"
    return {**_utilization_window(dialect, filters, within, step, threshold),
            **_energy_window(dialect, filters, f"[{duration(seconds)}:{step}s]", step)}


def _utilization_window(dialect: Dialect, filters: GpuFilters, over: str, step: int,
                        threshold: float) -> dict[QueryKey, str]:
    queries: dict[QueryKey, str] = {}
    for position, source in enumerate(utilization_sources(dialect)):
        value = _device_value(dialect, source, _base(dialect, source, filters))
        queries[("window", "utilization", str(position))] = f"avg_over_time(({value}){over})"
        below = f"{value} < {threshold_of(source, threshold)}"
        queries[("window", "idle", str(position))] = (
            f"count_over_time(({below}){over}) * {step}")
    return queries


def _energy_window(dialect: Dialect, filters: GpuFilters, over: str, step: int
                   ) -> dict[QueryKey, str]:
    by = device_labels(dialect)
    base = identity_filters(dialect, filters, on_info=False)
    queries: dict[QueryKey, str] = {}
    counter = dialect.energy_source
    counted = None
    if counter is not None:
        counted = aggregate("max", by, " or ".join(selectors(counter.metric, base)))
        queries[("window", "energy")] = f"increase(({counted}){over})"
    power = dialect.gpu_fields.get("power_usage", ())
    if power:
        watts = aggregate("max", by, " or ".join(selectors(power[0].metric, base)))
        if counted is not None:
            watts = f"({watts} unless on ({', '.join(by)}) {counted})"
        queries[("window", "power")] = f"sum_over_time(({watts}){over}) * {step}"
    return queries


def allocation_queries(filters: GpuFilters) -> dict[QueryKey, str]:
    """kube-state-metrics: is it there, each node's allocatable GPU resources, and the GPU
    resources requested by the containers (not init containers) of running and of pending
    pods. Duplicate KSM replicas are folded by `max` before anything is added up."""
    resource = f"resource=~{quote(GPU_RESOURCES)}"
    nodes = [equals_any("node", filters.node)] if filters.node else []
    spaces = [equals_any("namespace", filters.namespace)] if filters.namespace else []
    requested = aggregate("max", ("namespace", "pod", "container", "node", "resource"),
                          f"{REQUESTS}{{{', '.join([resource, *nodes, *spaces])}}}")

    def in_phase(phase: str) -> str:
        pods = aggregate("max", ("namespace", "pod"), f'{PHASE}{{phase="{phase}"}}')
        held = f"{requested} and on (namespace, pod) ({pods} == 1)"
        return aggregate("sum", ("namespace", "pod", "node", "resource"), held)

    return {
        ("ksm", "present"): KSM_PRESENT,
        ("ksm", "allocatable"): aggregate(
            "sum", ("node", "resource"), f"{ALLOCATABLE}{{{', '.join([resource, *nodes])}}}"),
        ("ksm", "running"): in_phase("Running"),
        ("ksm", "pending"): in_phase("Pending"),
    }
