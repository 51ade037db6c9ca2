"""List GPUs and GPU processes: plan the PromQL, fan it out, join and merge the answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.dialects.model import Dialect
from app.health.queries import HealthWindow, health_queries
from app.health.verdict import HealthJoin
from app.prometheus.client import PrometheusClient, QueryResult
from app.services.gpu_join import GpuJoin, gpu_sort_key
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
) -> list[Gpu]:
    """Return every GPU that matches `filters`, sorted by node, index, MIG instance.

    `at` is the Unix time the GPUs are read at (default: now): every query of the
    fan-out is evaluated at that instant, so the rows are the snapshot as it was then.
    With `health`, each row also gets its verdict over that window (same fan-out).
    """
    return read_gpus(prom, dialects, filters, at, health).rows


@dataclass
class GpuSnapshot:
    """The GPU rows of one fan-out, and (with health) the GPUs gone from their exporter."""

    rows: list[Gpu]
    vanished: list[Gpu] = field(default_factory=list)
    # The instant Prometheus evaluated the health queries at (None without health).
    evaluated_at: float | None = None


def read_gpus(
    prom: PrometheusClient, dialects: Sequence[Dialect], filters: GpuFilters,
    at: float | None = None, health: HealthWindow | None = None, *, vanished: bool = False,
) -> GpuSnapshot:
    """Plan every dialect's GPU (and health) queries, run them as one fan-out, join.

    With `vanished`, the GPUs seen within the health window but not now are found too.
    """
    plans = {d.name: gpu_queries(d, filters) for d in dialects}
    joins = {d.name: GpuJoin(d, plans[d.name]) for d in dialects}
    judges = {d.name: HealthJoin(d, health) for d in dialects} if health else {}
    queries = {(name, *key): promql for name, plan in plans.items()
               for key, promql in plan.items()}
    if health is not None:
        queries.update({(d.name, *key): promql for d in dialects
                        for key, promql in health_queries(d, filters, health,
                                                          vanished=vanished).items()})
    if queries:
        # Each answer is joined as it arrives, while Prometheus works on the others.
        answers = prom.query_each(queries) if at is None else prom.query_each(queries, at=at)
        for (name, *key), result in answers:
            if key[0] == "health":
                judges[name].add(tuple(key), result)
            else:
                joins[name].add(tuple(key), result)
    evaluated = next((j.now for j in judges.values() if j.now is not None), None)
    _follow_up(prom, judges, filters, at if at is not None else evaluated)
    current = [joins[d.name].finish(filters) for d in dialects]
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
        return GpuSnapshot(rows, evaluated_at=evaluated)
    # A GPU gone from one exporter but listed by another is that other's row.
    everything = merge_rows([rows, *gone], gpu_identities, gpu_sort_key)
    listed = {id(row) for row in rows}
    return GpuSnapshot(rows, [row for row in everything if id(row) not in listed], evaluated)


def _follow_up(prom: PrometheusClient, judges: dict[str, HealthJoin], filters: GpuFilters,
               at: float | None) -> None:
    """Ask the health rules' second round, for the GPUs the first found, at its instant."""
    queries = {(name, *key): promql for name, judge in judges.items()
               for key, promql in judge.followups(filters).items()}
    if queries:
        for (name, *key), result in prom.query_each(queries, at=at):
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
