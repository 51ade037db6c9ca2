"""The fleet view: allocation against use, per cluster, node and namespace, over a window.

One fan-out per answer: every dialect's GPU list with its idle rounds and window figures,
plus kube-state-metrics' allocation series. Sums add up what was received: a GPU that
does not report a value is left out of that sum, and a figure nothing reported is None.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from app.dialects.model import Dialect
from app.durations import format_duration
from app.prometheus.client import PrometheusClient, QueryResult
from app.services.fleet_queries import IdleRule, allocation_queries
from app.services.fleet_window import FleetWindow
from app.services.gpus import read_gpus
from app.services.idle import STATES
from app.services.queries import QueryKey
from app.services.records import Gpu, GpuFilters
from app.services.samples import PERCENT_DECIMALS, number

BUSY_STATES = frozenset({"allocated-busy", "unallocated-busy"})
IDLE_STATES = frozenset({"allocated-idle", "free"})


@dataclass(frozen=True)
class FleetQuery:
    """A fleet request: the filters, the window (s) and the idle rule of the states."""

    filters: GpuFilters
    window: float
    idle: IdleRule
    at: float | None = None  # the instant (None: now)


@dataclass(frozen=True)
class Request:
    """GPU resource units a pod's containers request (kube-state-metrics)."""

    namespace: str
    pod: str
    node: str | None
    resource: str
    units: float


@dataclass
class Allocation:
    """What kube-state-metrics says, or `present` False when Prometheus has none of it."""

    present: bool = False
    allocatable: dict[tuple[str, str], float] = field(default_factory=dict)
    running: list[Request] = field(default_factory=list)
    pending: list[Request] = field(default_factory=list)


@dataclass
class FleetData:
    """The rows of one fleet fan-out (with states and window figures) and the allocation."""

    rows: list[Gpu]
    allocation: Allocation
    query: FleetQuery


def read_fleet(prom: PrometheusClient, dialects: Sequence[Dialect], query: FleetQuery
               ) -> FleetData:
    """Run the fleet fan-out and read kube-state-metrics' answers."""
    window = FleetWindow(query.window, query.idle.threshold)
    snapshot = read_gpus(prom, dialects, query.filters, query.at, idle=query.idle,
                         window=window, extra=allocation_queries(query.filters))
    return FleetData(snapshot.rows, _allocation(snapshot.extra), query)


def _allocation(answers: dict[QueryKey, QueryResult]) -> Allocation:
    present = answers.get(("ksm", "present"))
    if present is None or not present.series:
        return Allocation()
    allocatable: dict[tuple[str, str], float] = {}
    for series in answers[("ksm", "allocatable")].series:
        labels, value = series["metric"], number(series["value"][1])
        if value is not None and labels.get("node"):
            allocatable[(labels["node"], labels.get("resource", ""))] = value
    return Allocation(True, allocatable, _requests(answers[("ksm", "running")]),
                      _requests(answers[("ksm", "pending")]))


def _requests(result: QueryResult) -> list[Request]:
    found = []
    for series in result.series:
        labels, value = series["metric"], number(series["value"][1])
        if value is not None and labels.get("pod"):
            found.append(Request(labels.get("namespace", ""), labels["pod"],
                                 labels.get("node") or None, labels.get("resource", ""),
                                 value))
    return found


# ----------------------------------------------------------------------------- figures

def device_key(row: Gpu) -> tuple[str, str]:
    """A physical GPU: its node and UUID (or index); MIG instances share it."""
    return row.node_name, row.uuid or str(row.gpu_index)


def _total(values: Iterable[float | int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 3) if known else None


def _average(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), PERCENT_DECIMALS) if known else None


def _units(requests: Iterable[Request]) -> float:
    return sum(r.units for r in requests)


@dataclass
class RowFigures:
    """Sums and averages over some rows (a cluster, a node)."""

    utilization_avg: float | None
    memory_used: float | None
    memory_total: float | None
    power_usage: float | None
    energy_joules: float | None
    idle_gpu_seconds: float | None


def row_figures(rows: Sequence[Gpu]) -> RowFigures:
    """What every fleet answer sums up: power once per physical GPU (its MIG instances
    repeat the device's), energy and idle seconds from the window."""
    power: dict[tuple[str, str], float | None] = {}
    for row in rows:
        key = device_key(row)
        if power.get(key) is None:
            power[key] = row.power_usage
    return RowFigures(
        utilization_avg=_average(r.window.utilization_avg if r.window else None for r in rows),
        memory_used=_total(r.memory_used for r in rows),
        memory_total=_total(r.memory_total for r in rows),
        power_usage=_total(power.values()),
        energy_joules=_total(r.window.energy_joules if r.window else None for r in rows),
        idle_gpu_seconds=_total(r.window.idle_seconds if r.window else None for r in rows),
    )


def cluster_summary(data: FleetData) -> dict[str, object]:
    """The /api/v1/cluster answer."""
    rows, allocation, filters = data.rows, data.allocation, data.query.filters
    devices = {device_key(r): r.gpu_name for r in rows}
    states = Counter(r.state or "unknown" for r in rows)
    running, pending, allocatable = _scoped(data)
    resources = sorted({r for _, r in allocation.allocatable}
                       | {q.resource for q in allocation.running + allocation.pending})
    figures = row_figures(rows)
    return {
        "window": format_duration(data.query.window),
        "gpus": {
            "total": len(devices),
            "mig_instances": sum(1 for r in rows if r.mig_instance is not None),
            "by_state": {state: states.get(state, 0) for state in STATES},
            "by_model": dict(sorted(Counter(m or "unknown" for m in devices.values()).items())),
        },
        "allocation": {
            "kube_state_metrics": allocation.present,
            "allocatable": None if allocatable is None else _round(sum(allocatable.values())),
            "requested": None if running is None else _round(_units(running)),
            "held": sum(1 for r in rows if r.pods),
            "pending_requests": None if pending is None else _round(_units(pending)),
            "by_resource": {} if not allocation.present else {
                resource: {
                    "allocatable": None if allocatable is None else _round(sum(
                        v for (_, r), v in allocatable.items() if r == resource)),
                    "requested": None if running is None else _round(_units(
                        q for q in running if q.resource == resource)),
                    "pending_requests": None if pending is None else _round(_units(
                        q for q in pending if q.resource == resource)),
                } for resource in resources},
            "scope": _scope_note(filters),
        },
        **figures.__dict__,
    }


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 3)


def _scope_note(filters: GpuFilters) -> str | None:
    if filters.namespace:
        return "allocatable is a node figure: null with a namespace filter"
    if filters.gpu_name:
        return ("allocation of the nodes that have this model; pending pods name no "
                "model: null")
    return None


def _scoped(data: FleetData) -> tuple[list[Request] | None, list[Request] | None,
                                      dict[tuple[str, str], float] | None]:
    """Running and pending requests and allocatable resources within the filters (None
    where kube-state-metrics is missing or the filter does not apply to the figure)."""
    allocation, filters = data.allocation, data.query.filters
    if not allocation.present:
        return None, None, None
    running, pending = list(allocation.running), list(allocation.pending)
    allocatable: dict[tuple[str, str], float] | None = dict(allocation.allocatable)
    if filters.gpu_name:
        nodes = {r.node_name for r in data.rows}
        running = [q for q in running if q.node in nodes]
        allocatable = {k: v for k, v in allocation.allocatable.items() if k[0] in nodes}
        return running, None, None if filters.namespace else allocatable
    if filters.namespace:
        allocatable = None
    return running, pending, allocatable


def node_rows(data: FleetData) -> list[dict[str, object]]:
    """The /api/v1/nodes answer: one row per node with GPUs or GPU resources."""
    by_node: dict[str, list[Gpu]] = {}
    for row in data.rows:
        by_node.setdefault(row.node_name, []).append(row)
    running, _, allocatable = _scoped(data)
    nodes = set(by_node)
    if allocatable is not None and not data.query.filters.gpu_name:
        nodes |= {node for node, _ in allocatable}
    result = []
    for node in sorted(nodes):
        rows = by_node.get(node, [])
        models = Counter(r.gpu_name for r in {device_key(r): r for r in rows}.values())
        result.append({
            "node_name": node,
            "gpu_name": models.most_common(1)[0][0] if models else None,
            "gpus": len({device_key(r) for r in rows}),
            "mig_instances": sum(1 for r in rows if r.mig_instance is not None),
            "allocatable": None if allocatable is None else _round(sum(
                v for (n, _), v in allocatable.items() if n == node)),
            "requested": None if running is None else _round(_units(
                q for q in running if q.node == node)),
            "held": sum(1 for r in rows if r.pods),
            "busy": sum(1 for r in rows if r.state in BUSY_STATES),
            "idle": sum(1 for r in rows if r.state in IDLE_STATES),
            **row_figures(rows).__dict__,
        })
    return result


def _energy_shares(row: Gpu) -> tuple[dict[str, float], str]:
    """Each namespace's part of a GPU's energy, and how it was split."""
    if len(row.pods) < 2:
        return ({row.pods[0].namespace or "": 1.0} if row.pods else {}), "none"
    parts: dict[str, float] = {}
    used = [p.utilization for p in row.pods]
    total = sum(u for u in used if u is not None)
    by_share = all(u is not None for u in used) and total > 0
    for pod in row.pods:
        part = (pod.utilization or 0.0) / total if by_share else 1 / len(row.pods)
        parts[pod.namespace or ""] = parts.get(pod.namespace or "", 0.0) + part
    return parts, "utilization-share" if by_share else "even"


def namespace_rows(data: FleetData) -> list[dict[str, object]]:
    """The /api/v1/namespaces answer: one row per namespace holding or requesting GPUs."""
    running, pending, _ = _scoped(data)
    wanted = data.query.filters.namespace
    held: dict[str, list[tuple[Gpu, float, str]]] = {}
    pods: dict[str, set[str]] = {}
    for row in data.rows:
        shares, how = _energy_shares(row)
        for namespace, part in shares.items():
            held.setdefault(namespace, []).append((row, part, how))
        for pod in row.pods:
            pods.setdefault(pod.namespace or "", set()).add(pod.pod)
    for request in (running or []) + (pending or []):
        pods.setdefault(request.namespace, set()).add(request.pod)
    result = []
    for namespace in sorted(n for n in pods if not wanted or n in wanted):
        mine = held.get(namespace, [])
        splits = {how for _, _, how in mine if how != "none"}
        energies = [r.window.energy_joules * part if r.window and r.window.energy_joules
                    is not None else None for r, part, _ in mine]
        result.append({
            "namespace": namespace,
            "pods": len(pods[namespace]),
            "gpus_requested": None if running is None else _round(_units(
                q for q in running if q.namespace == namespace)),
            "pending_requests": None if pending is None else _round(_units(
                q for q in pending if q.namespace == namespace)),
            "gpus_held": len(mine),
            "utilization_avg": _average(r.window.utilization_avg if r.window else None
                                        for r, _, _ in mine),
            "idle_gpu_seconds": _total(r.window.idle_seconds if r.window else None
                                       for r, _, _ in mine),
            "energy_joules": _total(energies),
            "energy_split": "none" if not splits else splits.pop() if len(splits) == 1
            else "mixed",
        })
    return result
