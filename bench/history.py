"""Benchmark GET /api/v1/gpu/history at cluster scale against its floor.

    .venv/bin/python -m bench.history [--size 1000x8] [--duration 3600] [--spacing 60]
                                      [--rounds 15] [--deadline S] [--out FILE]

An hour of a simulated dcgm cluster's history is backfilled into a real Prometheus
(`tests/integration/history_world.py`: rendered per sample time, `promtool tsdb
create-blocks-from openmetrics`). The service runs under gunicorn as shipped with
CACHE_TTL=0, so every request is a whole fan-out. Prometheus' query log gives the
`query_range`s each history request sends; the floor sends those very queries straight to
Prometheus, in parallel, with plain `requests.get` calls that read the body and parse
nothing. Floor and service requests are interleaved in rotating order, one at a time, for
`group_by=cluster`, `group_by=node` and `group_by=gpu&node=<one node>` over the hour.

Exit status: 0 when the cluster and node ratios (service p50 / floor p50) are within
--target (1.5x), 1 when one is missed or a request failed, 2 when a tool is missing (the
venv's gunicorn, promtool, prometheus), 130 when interrupted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import requests

from bench.cli import finish, ready_to_run, run_measured
from bench.service import ROOT, GunicornService, HttpClient, Reply, cpu_seconds
from bench.stats import Summary, ratio
from bench.world import Size
from demo.cluster import ClusterSpec
from tests.integration.history_world import (
    BackfilledPrometheus,
    Exporter,
    HistoryCluster,
    HistoryWorldError,
    build_world,
)

logger = logging.getLogger("bench.history")
DEFAULT_OUT = ROOT / "bench" / "results" / "history.json"
PATH = "/api/v1/gpu/history"
IDENTITY = {"Accept-Encoding": "identity"}
QUERY_THREADS = 8  # the service's default QUERY_THREADS: the floor fans out as widely
# The cases whose ratio fails the run; the one-node GPU case is shown, not enforced: its
# floor is a few milliseconds, where a request's fixed costs make up the ratio.
ENFORCED = ("cluster", "node")


@dataclass(frozen=True)
class RangeQuery:
    """One query_range as Prometheus logged it."""

    query: str
    start: str
    end: str
    step: float
    eval_s: float = 0.0  # what Prometheus logged for it (not replayed)


class QueryLog:
    """Prometheus' query log: which queries ran, with their parameters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        """Forget everything logged so far."""
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> list[dict[str, Any]]:
        """Every entry logged since mark(); Prometheus writes one when a query finishes."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        return [json.loads(line) for line in data.splitlines() if line.strip()]


def split_entries(entries: list[dict[str, Any]]) -> tuple[list[RangeQuery], list[str]]:
    """Range queries (a step) and the text of every other query."""
    ranges, others = [], []
    for entry in entries:
        params = entry.get("params", {})
        if params.get("step"):
            timings = entry.get("stats", {}).get("timings", {})
            ranges.append(RangeQuery(params["query"], params["start"], params["end"],
                                     float(params["step"]),
                                     round(float(timings.get("evalTotalTime", 0.0)), 3)))
        else:
            others.append(str(params.get("query")))
    return ranges, others


class RangeFloor:
    """Send a set of query_ranges in parallel, read each body fully, parse nothing."""

    def __init__(self, prometheus_url: str, queries: list[RangeQuery]) -> None:
        self._url = prometheus_url.rstrip("/") + "/api/v1/query_range"
        self.queries = queries
        self._pool = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="floor")
        self.last_bytes = 0

    def _get(self, query: RangeQuery) -> int:
        response = requests.get(self._url, headers=IDENTITY, timeout=(3.05, 900.0), params={
            "query": query.query, "start": query.start, "end": query.end,
            "step": str(query.step)})
        if response.status_code != 200:
            raise RuntimeError(f"Prometheus answered {response.status_code} to "
                               f"{query.query[:120]!r}: {response.content[:200]!r}")
        return len(response.content)

    def fetch(self) -> None:
        """One whole fan-out."""
        futures = [self._pool.submit(self._get, q) for q in self.queries]
        self.last_bytes = sum(f.result(timeout=900) for f in futures)

    def close(self) -> None:
        """Stop the thread pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class Service(GunicornService):
    """gunicorn as shipped, with a few settings of ours on top (CACHE_TTL, the deadline)."""

    def __init__(self, name: str, prometheus_url: str, log_dir: Path,
                 settings: dict[str, str]) -> None:
        super().__init__(name, prometheus_url, log_dir, cache_ttl=settings.get("CACHE_TTL"))
        self.settings = settings

    def environment(self) -> dict[str, str]:
        """The shipped environment plus our settings."""
        return {**super().environment(), **self.settings}


def _timed(run: Callable[[], None], pids: list[int]) -> tuple[float, float]:
    """Wall seconds and the CPU seconds `pids` spent meanwhile."""
    cpu = cpu_seconds(pids)
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0, cpu_seconds(pids) - cpu


def _warm_up(service: GunicornService, path: str, attempts: int = 30) -> dict[str, Any]:
    """Fresh connections until every worker has answered once (detection done there).

    `/api/livez` would not do: detection must have finished, and only a request that
    reads GPUs waits for it. The GPU list is cheap; the history request is the measured one.
    """
    served: set[int] = set()
    statuses: list[int] = []
    workers = set(service.worker_pids())
    for _ in range(attempts):
        client = HttpClient(service.port, timeout=300)
        try:
            statuses.append(client.get(path, IDENTITY).status)
            port = client.local_port
            pid = service.worker_holding(port) if port is not None else None
        finally:
            client.close()
        if pid is not None:
            served.add(pid)
        if workers <= served:
            break
    return {"workers_warm": len(served), "statuses": sorted(set(statuses))}


def _get_into(replies: list[Reply], client: HttpClient, path: str) -> None:
    replies.append(client.get(path, IDENTITY))


def _series_count(body: bytes) -> tuple[int, int, int]:
    """Series, timestamps and non-null values of a history answer."""
    data = orjson.loads(body)["data"]
    values = sum(1 for s in data["series"] for column in s["values"].values()
                 for v in column if v is not None)
    return len(data["series"]), len(data["timestamps"]), values


def wait_prometheus_idle(url: str, timeout_s: float = 900.0) -> float:
    """Wait until the Prometheus at `url` runs no query (its prometheus_engine_queries
    gauge); the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        text = requests.get(f"{url}/metrics", timeout=10).text
        running = next((float(line.split()[-1]) for line in text.splitlines()
                        if line.startswith("prometheus_engine_queries ")), 0.0)
        if running == 0:
            break
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def measure(service: GunicornService, prometheus: BackfilledPrometheus, log: QueryLog,
            cases: dict[str, str], rounds: int, budget_s: float) -> dict[str, Any]:
    """Capture each case's query_ranges, then time service and floor interleaved."""
    plans: dict[str, Any] = {}
    failed: dict[str, Any] = {}
    cases = dict(cases)
    floors: dict[str, RangeFloor] = {}
    client = HttpClient(service.port, timeout=900)
    prometheus_pid = [prometheus.pid] if prometheus.pid is not None else []
    try:
        for name, path in list(cases.items()):
            # The queries of a request that timed out may still run.
            wait_prometheus_idle(prometheus.url)
            log.mark()
            t0 = time.perf_counter()
            reply = client.get(path, IDENTITY)
            elapsed = round(time.perf_counter() - t0, 2)
            ranges, others = split_entries(log.since_mark())
            plans[name] = {"path": path, "range_queries": [asdict(q) for q in ranges],
                           "other_queries": others, "first_request_s": elapsed}
            if reply.status != 200 or not ranges:
                # Nothing to compare: say what the service answered, and go on.
                failed[name] = {**plans[name], "status": reply.status,
                                "error": reply.body[:500].decode(errors="replace")}
                del cases[name]
                continue
            series, points, values = _series_count(reply.body)
            plans[name].update(series=series, timestamps=points, non_null_values=values,
                               body_bytes=len(reply.body))
            floors[name] = RangeFloor(prometheus.url, ranges)
            floors[name].fetch()  # untimed: first touch of these queries
        plan_keys = {name: {(q.query, q.start, q.end) for q in floor.queries}
                     for name, floor in floors.items()}
        wait_prometheus_idle(prometheus.url)
        samples: dict[str, dict[str, list[float]]] = {
            name: {"service": [], "floor": [], "service_prometheus_cpu": [],
                   "floor_prometheus_cpu": [], "service_worker_cpu": []} for name in cases}
        failures: list[str] = []
        fan_outs: dict[str, list[int]] = {name: [] for name in cases}
        requests_seen: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
        started = time.monotonic()
        for number in range(rounds):
            if time.monotonic() - started > budget_s and number >= 5:
                break
            logger.info("round %d of %d", number + 1, rounds)
            for name, path in cases.items():
                turn = [("service", name), ("floor", name)]
                # Rotate who goes first, so neither always meets a freshly idle Prometheus.
                for kind, _ in turn if number % 2 == 0 else reversed(turn):
                    if kind == "floor":
                        try:
                            wall, cpu = _timed(floors[name].fetch, prometheus_pid)
                        except RuntimeError as exc:  # Prometheus refused or timed out
                            failures.append(f"{name}: the floor failed: {exc}"[:300])
                            continue
                        samples[name]["floor"].append(wall)
                        samples[name]["floor_prometheus_cpu"].append(cpu)
                        continue
                    replies: list[Reply] = []
                    log.mark()
                    workers = service.worker_pids()
                    worker_cpu = cpu_seconds(workers)
                    wall, cpu = _timed(partial(_get_into, replies, client, path),
                                       prometheus_pid)
                    samples[name]["service_worker_cpu"].append(cpu_seconds(workers) - worker_cpu)
                    samples[name]["service"].append(wall)
                    samples[name]["service_prometheus_cpu"].append(cpu)
                    # Only this request's queries: a timed-out request's queries may still
                    # finish in Prometheus meanwhile.
                    fan_outs[name].append(sum(
                        1 for q in split_entries(log.since_mark())[0]
                        if (q.query, q.start, q.end) in plan_keys[name]))
                    reply = replies[0]
                    requests_seen[name].append({
                        "ms": round(wall * 1000.0, 1), "status": reply.status,
                        "bytes": len(reply.body), "range_queries": fan_outs[name][-1],
                        "age": reply.headers.get("age"),
                        "cache_status": reply.headers.get("cache-status")})
                    if reply.status != 200:
                        failures.append(f"{name}: HTTP {reply.status}")
                    elif _series_count(reply.body)[:2] != (plans[name]["series"],
                                                           plans[name]["timestamps"]):
                        failures.append(f"{name}: an answer with other series or timestamps "
                                        f"than the first: {_series_count(reply.body)}")
        results: dict[str, Any] = {}
        for name in cases:
            got = samples[name]
            service_summary, floor_summary = Summary.of(got["service"]), Summary.of(got["floor"])
            plan_size = len(plans[name]["range_queries"])
            results[name] = {
                **plans[name],
                "service": asdict(service_summary),
                "floor": asdict(floor_summary),
                "ratio_p50": ratio(service_summary.p50_ms, floor_summary.p50_ms),
                "ratio_p90": ratio(service_summary.p90_ms, floor_summary.p90_ms),
                "cpu_ms": {
                    "service_prometheus": _median_ms(got["service_prometheus_cpu"]),
                    "service_workers": _median_ms(got["service_worker_cpu"]),
                    "floor_prometheus": _median_ms(got["floor_prometheus_cpu"]),
                },
                "floor_bytes": floors[name].last_bytes,
                # Every timed request did the whole fan-out: nothing came from a cache.
                "every_request_fanned_out": all(n == plan_size for n in fan_outs[name]),
                "service_requests": requests_seen[name],
            }
        for name, failure in failed.items():
            failures.append(f"{name}: the first request answered HTTP {failure['status']} "
                            f"after {failure['first_request_s']} s: {failure['error'][:200]}")
        rounds_run = len(samples[next(iter(cases))]["service"]) if cases else 0
        return {"cases": results, "failed_cases": failed, "failures": failures,
                "rounds": rounds_run}
    finally:
        client.close()
        for floor in floors.values():
            floor.close()


def _median_ms(seconds: list[float]) -> float | None:
    return round(statistics.median(seconds) * 1000.0, 1) if seconds else None


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def table(document: dict[str, Any]) -> str:
    """The figures, as a short plain-text table."""
    build = document["backfill"]
    lines = [
        f"{document['size']}: {build['gpus']} GPUs, {build['series']} series, "
        f"{build['sample_times']} sample times {build['spacing_s']} s apart",
        f"backfill: write {build['write_s']} s ({build['openmetrics_mb']} MB OpenMetrics), "
        f"promtool {build['promtool_s']} s ({build['blocks']} blocks, {build['tsdb_mb']} MB), "
        f"Prometheus ready {build['prometheus_start_s']} s",
        f"{'case':<10} {'queries':>7} {'series':>7} {'points':>6} {'floor p50/p90':>15} "
        f"{'service p50/p90':>17} {'ratio':>11} {'Prom CPU svc/floor':>19} {'worker CPU':>10}",
    ]
    for name, case in document["cases"].items():
        cpu, floor, service = case["cpu_ms"], case["floor"], case["service"]
        lines.append(
            f"{name:<10} {len(case['range_queries']):>7} {case['series']:>7} "
            f"{case['timestamps']:>6} {floor['p50_ms']:>7.1f}/{floor['p90_ms']:<7.1f}"
            f" {service['p50_ms']:>8.1f}/{service['p90_ms']:<8.1f} "
            f"{case['ratio_p50']!s:>5}/{case['ratio_p90']!s:<5} "
            f"{cpu['service_prometheus']!s:>9}/{cpu['floor_prometheus']!s:<9} "
            f"{cpu['service_workers']!s:>10}")
    return "\n".join(lines)


def missed_targets(document: dict[str, Any], target: float) -> list[str]:
    """What fails the run."""
    missed = list(document.get("failures", []))
    for name in ENFORCED:
        if name not in document.get("cases", {}) and name not in document.get(
                "failed_cases", {}) and "error" not in document:
            missed.append(f"{name}: not measured")
    for name, case in document.get("cases", {}).items():
        if not case["every_request_fanned_out"]:
            missed.append(f"{name}: some requests did not send the whole fan-out (cached?)")
        if name in ENFORCED and (case["ratio_p50"] is None or case["ratio_p50"] > target):
            missed.append(f"{name}: service p50 {case['service']['p50_ms']} ms is "
                          f"{case['ratio_p50']}x the floor's {case['floor']['p50_ms']} ms "
                          f"(target <= {target}x)")
    return missed


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Backfill, start the service, measure; everything started here is stopped here."""
    size: Size = args.size
    spec = ClusterSpec(nodes=size.nodes, gpus_per_node=size.gpus_per_node, seed=0,
                       processes_per_busy_gpu=2)
    # As bench/world.py scrapes it: one target, honorLabels true, a namespace target label.
    cluster = HistoryCluster("bench", spec, (Exporter(
        "dcgm", target_labels=(("namespace", "gpu-operator"),)),))
    logger.info("backfilling %s: %d s of history, one sample every %d s", size.label,
                args.duration, args.spacing)
    started = time.monotonic()
    timeline, stats, prometheus = build_world([cluster], work, args.duration, args.spacing,
                                              query_log=True)
    try:
        prometheus_start_s = round(time.monotonic() - started - stats.render_s
                                   - stats.promtool_s, 2)
        gpus = size.nodes * size.gpus_per_node
        stored = prometheus.query_at("count(DCGM_FI_DEV_GPU_TEMP)", timeline.last)
        if not stored or int(float(stored[0]["value"][1])) != gpus:
            raise HistoryWorldError(f"Prometheus holds {stored} GPU temperatures at the last "
                                    f"sample, expected {gpus}")
        document: dict[str, Any] = {"size": size.label, "backfill": {
            "gpus": gpus, "series": stats.lines_per_sample_time,
            "sample_times": timeline.count, "spacing_s": args.spacing,
            "samples": stats.samples, "openmetrics_mb": round(stats.openmetrics_bytes / 1e6, 1),
            "write_s": stats.render_s, "promtool_s": stats.promtool_s, "blocks": stats.blocks,
            "tsdb_mb": round(_directory_bytes(work / "data") / 1e6, 1),
            "prometheus_start_s": prometheus_start_s,
            "total_s": round(time.monotonic() - started, 1)}}
        logger.info("backfill done in %.1f s: %s", time.monotonic() - started,
                    document["backfill"])
        end = timeline.last // 60 * 60
        window = {"range": f"{args.duration}s", "end": end}
        node = "gpu-node-001"
        cases = {
            "cluster": f"{PATH}?{urlencode({**window, 'group_by': 'cluster'})}",
            "node": f"{PATH}?{urlencode({**window, 'group_by': 'node'})}",
            "gpu@node": f"{PATH}?{urlencode({**window, 'group_by': 'gpu', 'node': node})}",
        }
        log = QueryLog(prometheus.query_log_path or work / "queries.jsonl")
        # Detection reads what is live now (5 minutes of lookback); the backfill ends when
        # it was written, so a worker re-detecting later would find nothing and answer
        # empty series at once. Detect at start only, as a live cluster keeps finding it.
        settings = {"CACHE_TTL": "0", "DIALECT_REFRESH_SECONDS": "3600"}
        if args.deadline:
            # gunicorn.conf.py derives the worker timeout from it.
            settings.update(HISTORY_DEADLINE=str(args.deadline))
        document["service_settings"] = settings
        try:
            with Service("history", prometheus.url, work, settings) as service:
                document["warm_up"] = _warm_up(service, "/api/v1/gpu/metrics?node=" + node)
                document.update(measure(service, prometheus, log, cases, args.rounds,
                                        args.budget))
        finally:
            # Next to the results (a git-ignored directory): what gunicorn said meanwhile.
            gunicorn_log = work / "gunicorn-history.log"
            if gunicorn_log.exists():
                args.out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(gunicorn_log, args.out.with_suffix(".gunicorn.log"))
        return document
    finally:
        prometheus.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the history benchmark; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.history",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=Size.parse, default=Size(1000, 8),
                        help="NODESxGPUS (default 1000x8)")
    parser.add_argument("--duration", type=int, default=3600,
                        help="seconds of history, and the window asked for (default 3600)")
    parser.add_argument("--spacing", type=int, default=60,
                        help="seconds between backfilled samples, a multiple of 15 (default 60)")
    parser.add_argument("--rounds", type=int, default=15,
                        help="interleaved rounds of every case (default 15)")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds the rounds may take; at least 5 rounds run (default 300)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="HISTORY_DEADLINE of the service in seconds, when the "
                             "shipped 60 s is too short to measure")
    parser.add_argument("--target", type=float, default=1.5,
                        help="largest service/floor p50 ratio for cluster and node (default 1.5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON results (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.spacing < 15 or args.spacing % 15 or args.duration % args.spacing:
        parser.error("--spacing must be a multiple of 15 that divides --duration")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not ready_to_run("promtool", "prometheus"):
        return 2
    document, status = run_measured("bench.history", argv, "gpu-bench-history-",
                                    partial(run, args))
    document["target_ratio"] = args.target
    if "cases" in document:
        print(table(document))
    for name, failure in document.get("failed_cases", {}).items():
        print(f"{name}: HTTP {failure['status']} after {failure['first_request_s']} s, "
              f"{len(failure['range_queries'])} query_range(s) completed in Prometheus")
    return finish(document, args.out, missed_targets(document, args.target), status)

if __name__ == "__main__":
    sys.exit(main())
