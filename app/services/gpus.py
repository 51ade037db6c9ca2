"""List GPUs and GPU processes: plan the PromQL, fan it out, join and merge the answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from app.dialects.model import Dialect
from app.health.queries import HealthWindow, health_queries
from app.health.verdict import HealthJoin
from app.prometheus.client import PrometheusClient, QueryResult
from app.services.fleet_queries import IdleRule, idle_queries
from app.services.fleet_window import FleetWindow, WindowJoin
from app.services.gpu_join import GpuJoin, gpu_sort_key
from app.services.idle import IdleJoin
from app.services.merge import (
    borrow_pods,
    gpu_identities,
    holders_by_gpu,
    merge_rows,
    own_filters,
    process_identities,
)
from app.services.process_join import join_processes, process_sort_key
from app.services.queries import QueryKey, gpu_queries, pods_query, process_queries
from app.services.records import Gpu, GpuFilters, GpuProcess


def _fan_out(
    prom: PrometheusClient,
    dialects: Sequence[Dialect],
    plan: Callable[[Dialect, GpuFilters], dict[QueryKey, str]],
    filters: GpuFilters,
) -> dict[str, dict[QueryKey, QueryResult]]:
    """Run every dialect's queries in one parallel batch; return answers per dialect."""
    queries = {
        (dialect.name, *key): promql
        for dialect in dialects
        for key, promql in plan(dialect, filters).items()
    }
    answers: dict[str, dict[QueryKey, QueryResult]] = {d.name: {} for d in dialects}
    if queries:
        for (name, *key), result in prom.query_many(queries).items():
            answers[name][tuple(key)] = result
    return answers


def list_gpus(
    prom: PrometheusClient, dialects: Sequence[Dialect], filters: GpuFilters,
    at: float | None = None, health: HealthWindow | None = None,
    idle: IdleRule | None = None,
) -> list[Gpu]:
    """Return every GPU that matches `filters`, sorted by node, index, MIG instance.

    `at` is the Unix time the GPUs are read at (default: now): every query of the
    fan-out is evaluated at that instant, so the rows are the snapshot as it was then.
    With `health`, each row also gets its verdict over that window (same fan-out); with
    `idle`, its idle time and state.
    """
    return read_gpus(prom, dialects, filters, at, health, idle=idle).rows


@dataclass
class GpuSnapshot:
    """The GPU rows of one fan-out, and (with health) the GPUs gone from their exporter."""

    rows: list[Gpu]
    vanished: list[Gpu] = field(default_factory=list)
    # The instant Prometheus evaluated the health (or idle) queries at (None without).
    evaluated_at: float | None = None
    # The answers of the `extra` queries, by their keys.
    extra: dict[QueryKey, QueryResult] = field(default_factory=dict)


def list_queries(dialect: Dialect, filters: GpuFilters, health: HealthWindow | None = None,
                 idle: IdleRule | None = None, *, vanished: bool = False
                 ) -> dict[QueryKey, str]:
    """One dialect's first round of the GPU list: its fields, and with `health` and
    `idle` the queries of the verdict and idle time its rows carry."""
    queries = gpu_queries(dialect, filters)
    if health is not None:
        queries.update(health_queries(dialect, filters, health, vanished=vanished))
    if idle is not None:
        queries.update(idle_queries(dialect, filters, idle))
    return queries


def read_gpus(
    prom: PrometheusClient, dialects: Sequence[Dialect], filters: GpuFilters,
    at: float | None = None, health: HealthWindow | None = None, *, vanished: bool = False,
    idle: IdleRule | None = None, window: FleetWindow | None = None,
    extra: Mapping[QueryKey, str] | None = None,
) -> GpuSnapshot:
    """Plan every dialect's GPU (and health, idle) queries, run them as one fan-out, join.

    With `vanished`, the GPUs seen within the health window but not now are found too.
    With `window`, each row gets its figures over that window (`Gpu.window`). `extra`
    queries (keyed without a dialect) ride in the same fan-out; their answers are in the
    snapshot's `extra`.
    """
    plans = {d.name: list_queries(d, filters, health, idle, vanished=vanished)
             for d in dialects}
    # The join reads only the field, info and index answers among its plan's.
    joins = {d.name: GpuJoin(d, plans[d.name]) for d in dialects}
    judges = {d.name: HealthJoin(d, health) for d in dialects} if health else {}
    idlers = {d.name: IdleJoin(d, idle) for d in dialects} if idle else {}
    windows = {d.name: WindowJoin(d, window) for d in dialects} if window else {}
    queries: dict[tuple[str, ...], str] = {(name, *key): promql for name, plan in plans.items()
                                           for key, promql in plan.items()}
    queries.update({(name, *key): promql for name, joiner in windows.items()
                    for key, promql in joiner.queries(filters).items()})
    queries.update({("", *key): promql for key, promql in (extra or {}).items()})
    extras: dict[QueryKey, QueryResult] = {}
    if queries:
        # Each answer is joined as it arrives, while Prometheus works on the others.
        answers = prom.query_each(queries) if at is None else prom.query_each(queries, at=at)
        for (name, *key), result in answers:
            if not name:
                extras[tuple(key)] = result
            elif key[0] == "health":
                judges[name].add(tuple(key), result)
            elif key[0] == "idle":
                idlers[name].add(tuple(key), result)
            elif key[0] == "window":
                windows[name].add(tuple(key), result)
            else:
                joins[name].add(tuple(key), result)
    evaluated = next((j.now for j in judges.values() if j.now is not None), None)
    if evaluated is None:
        evaluated = next((i.now for i in idlers.values() if i.now is not None), None)
    _follow_up(prom, judges, idlers, joins, filters, at if at is not None else evaluated)
    current = [joins[d.name].finish(filters) for d in dialects]
    # After the joins' finish: a state needs the pods the join names.
    for name, idler in idlers.items():
        idler.finish(joins[name].table.rows)
    for name, joiner in windows.items():
        joiner.finish(joins[name].table.rows)
    gone: list[list[Gpu]] = []
    for dialect in dialects if health else ():
        join, judge = joins[dialect.name], judges[dialect.name]
        missing = judge.vanished(join.table.rows)
        judge.judge({**join.table.rows, **missing})
        for row in missing.values():
            row.node_name = join.node_of_pod.get(row.node_name) or row.node_name
        gone.append(sorted((r for r in missing.values() if filters.matches(r)),
                           key=gpu_sort_key))
    rows = merge_rows(current, gpu_identities, gpu_sort_key)
    if not any(gone):
        return GpuSnapshot(rows, evaluated_at=evaluated, extra=extras)
    # A GPU gone from one exporter but listed by another is that other's row.
    everything = merge_rows([rows, *gone], gpu_identities, gpu_sort_key)
    listed = {id(row) for row in rows}
    return GpuSnapshot(rows, [row for row in everything if id(row) not in listed], evaluated,
                       extras)


def _follow_up(prom: PrometheusClient, judges: dict[str, HealthJoin],
               idlers: dict[str, IdleJoin], joins: dict[str, GpuJoin], filters: GpuFilters,
               at: float | None) -> None:
    """Ask the second rounds (health rules, last busy instants), for the GPUs the first
    found, at the first round's instant."""
    queries = {(name, *key): promql for name, judge in judges.items()
               for key, promql in judge.followups(filters).items()}
    queries.update({(name, *key): promql for name, idler in idlers.items()
                    for key, promql in idler.followups(joins[name].table.rows,
                                                       filters).items()})
    if queries:
        for (name, *key), result in prom.query_each(queries, at=at):
            if key[0] == "idle":
                idlers[name].add(tuple(key), result)
            else:
                judges[name].add(tuple(key), result)


def list_processes(
    prom: PrometheusClient, dialects: Sequence[Dialect], filters: GpuFilters
) -> list[GpuProcess]:
    """Return every GPU process that matches `filters`, sorted by node, GPU index, pid.

    Exporters with a process table but no pod labels (nvitop, nvidia_gpu_exporter) take
    the pod of the GPU a process runs on from an exporter that knows it (dcgm-exporter).
    """
    with_processes = [d for d in dialects if d.process_fields]
    if not with_processes:
        return []
    pod_sources = [d for d in dialects if d.labels.pod and not d.process_fields]
    borrowing = bool(pod_sources) and any(not d.labels.pod for d in with_processes)
    asked = with_processes + (pod_sources if borrowing else [])

    def plan(dialect: Dialect, wanted: GpuFilters) -> dict[QueryKey, str]:
        if dialect.process_fields:
            return process_queries(dialect, own_filters(dialect, wanted, borrowing))
        pods = pods_query(dialect, GpuFilters(node=wanted.node))
        return {("pods",): pods} if pods is not None else {}

    answers = _fan_out(prom, asked, plan, filters)
    holders = holders_by_gpu(pod_sources, answers) if borrowing else {}
    per_dialect = []
    for dialect in with_processes:
        rows = join_processes(dialect, answers[dialect.name],
                              own_filters(dialect, filters, borrowing))
        if holders and not dialect.labels.pod:
            rows = borrow_pods(rows, holders, filters)
        per_dialect.append(rows)
    return merge_rows(per_dialect, process_identities, process_sort_key)
