"""Benchmark the fleet view (/api/v1/cluster, /nodes, /namespaces) at cluster scale.

    .venv/bin/python -m bench.fleet [--size 1000x8] [--duration 5400] [--spacing 60]
                                    [--rounds 9] [--out FILE]

A simulated dcgm cluster in the fleet scenario (pods holding idle GPUs, pausing jobs, work
outside Kubernetes) and its kube-state-metrics are backfilled into a real Prometheus
(`tests/integration/history_world.py`), long enough for the idle window (30 minutes) and
the answers' window (1 hour). The service runs under gunicorn as shipped with CACHE_TTL=0,
so every request is a whole fan-out, at one fixed instant. Prometheus' query log gives the
instant queries each request sends (both rounds); the floor sends those very queries
straight to Prometheus in one parallel batch with plain `requests.get`, reading each body
and parsing nothing. Floor and service requests are interleaved in rotating order.

Exit status: 0 when the cluster and namespaces ratios (service p50 / floor p50) are within
--target (1.5x), 1 when one is missed or a request failed, 2 when a tool is missing,
130 when interrupted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

from bench.cli import finish, ready_to_run, run_measured
from bench.history import (
    IDENTITY,
    QUERY_THREADS,
    QueryLog,
    Service,
    _timed,
    _warm_up,
    wait_prometheus_idle,
)
from bench.service import ROOT, GunicornService, HttpClient, Reply
from bench.stats import Summary, ratio
from bench.world import Size
from demo.cluster import ClusterSpec
from tests.integration.history_world import Exporter, HistoryCluster, build_world

logger = logging.getLogger("bench.fleet")
DEFAULT_OUT = ROOT / "bench" / "results" / "fleet.json"
ENFORCED = ("cluster", "namespaces")


@dataclass(frozen=True)
class InstantQuery:
    """One instant query as Prometheus logged it."""

    query: str
    time: str


def instant_queries(entries: list[dict[str, Any]]) -> list[InstantQuery]:
    """The instant queries among query-log entries (no step), in the order they ran."""
    return [InstantQuery(entry["params"]["query"], entry["params"]["start"])
            for entry in entries if not entry.get("params", {}).get("step")]


class InstantFloor:
    """Send a set of instant queries in parallel, read each body fully, parse nothing."""

    def __init__(self, prometheus_url: str, queries: list[InstantQuery]) -> None:
        self._url = prometheus_url.rstrip("/") + "/api/v1/query"
        self.queries = queries
        self._pool = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="floor")

    def _get(self, query: InstantQuery) -> int:
        response = requests.get(self._url, headers=IDENTITY, timeout=(3.05, 600.0),
                                params={"query": query.query, "time": query.time})
        if response.status_code != 200:
            raise RuntimeError(f"Prometheus answered {response.status_code} to "
                               f"{query.query[:120]!r}: {response.content[:200]!r}")
        return len(response.content)

    def fetch(self) -> None:
        """One whole batch."""
        for future in [self._pool.submit(self._get, q) for q in self.queries]:
            future.result(timeout=600)

    def close(self) -> None:
        """Stop the thread pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _get_into(replies: list[Reply], client: HttpClient, path: str) -> None:
    replies.append(client.get(path, IDENTITY))


def measure(service: GunicornService, prometheus: Any, log: QueryLog, cases: dict[str, str],
            rounds: int) -> dict[str, Any]:
    """Capture each case's queries, then time service and floor interleaved."""
    client = HttpClient(service.port, timeout=600)
    floors: dict[str, InstantFloor] = {}
    plans: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    prometheus_pid = [prometheus.pid] if prometheus.pid is not None else []
    try:
        for name, path in cases.items():
            wait_prometheus_idle(prometheus.url)
            log.mark()
            reply = client.get(path, IDENTITY)
            queries = instant_queries(log.since_mark())
            plans[name] = {"path": path, "status": reply.status, "queries": len(queries),
                           "body_bytes": len(reply.body)}
            if reply.status != 200:
                failures.append(f"{name}: HTTP {reply.status}: {reply.body[:300]!r}")
                continue
            floors[name] = InstantFloor(prometheus.url, queries)
            floors[name].fetch()  # untimed: first touch
        samples: dict[str, dict[str, list[float]]] = {
            name: {"service": [], "floor": []} for name in floors}
        for number in range(rounds):
            logger.info("round %d of %d", number + 1, rounds)
            for name in floors:
                turn = ["service", "floor"] if number % 2 == 0 else ["floor", "service"]
                for kind in turn:
                    wait_prometheus_idle(prometheus.url)
                    if kind == "floor":
                        wall, _ = _timed(floors[name].fetch, prometheus_pid)
                        samples[name]["floor"].append(wall)
                        continue
                    replies: list[Reply] = []
                    wall, _ = _timed(partial(_get_into, replies, client, cases[name]),
                                     prometheus_pid)
                    samples[name]["service"].append(wall)
                    if replies[0].status != 200:
                        failures.append(f"{name}: HTTP {replies[0].status}")
        results = {}
        for name, got in samples.items():
            service_summary, floor_summary = Summary.of(got["service"]), Summary.of(got["floor"])
            results[name] = {**plans[name], "service": asdict(service_summary),
                             "floor": asdict(floor_summary),
                             "ratio_p50": ratio(service_summary.p50_ms, floor_summary.p50_ms),
                             "ratio_p90": ratio(service_summary.p90_ms, floor_summary.p90_ms)}
        return {"cases": results, "failures": failures, "rounds": rounds}
    finally:
        client.close()
        for floor in floors.values():
            floor.close()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Backfill, start the service, measure; everything started here is stopped here."""
    size: Size = args.size
    spec = ClusterSpec(nodes=size.nodes, gpus_per_node=size.gpus_per_node, seed=0,
                       fleet=True)
    cluster = HistoryCluster("bench", spec, (
        Exporter("dcgm", target_labels=(("namespace", "gpu-operator"),)),
        Exporter("kube-state-metrics")))
    started = time.monotonic()
    timeline, stats, prometheus = build_world([cluster], work, args.duration, args.spacing,
                                              query_log=True)
    try:
        document: dict[str, Any] = {"size": size.label, "backfill": {
            "gpus": size.nodes * size.gpus_per_node, "sample_times": timeline.count,
            "spacing_s": args.spacing, "samples": stats.samples,
            "write_s": stats.render_s, "promtool_s": stats.promtool_s,
            "total_s": round(time.monotonic() - started, 1)}}
        logger.info("backfill done: %s", document["backfill"])
        at = timeline.last // 60 * 60
        query = urlencode({"time": at, "window": "1h"})
        cases = {name: f"/api/v1/{name}?{query}" for name in ("cluster", "namespaces", "nodes")}
        log = QueryLog(prometheus.query_log_path or work / "queries.jsonl")
        # Detect at start only: the backfill ends when it was written (see bench.history).
        settings = {"CACHE_TTL": "0", "DIALECT_REFRESH_SECONDS": "3600"}
        document["service_settings"] = settings
        with Service("fleet", prometheus.url, work, settings) as service:
            document["warm_up"] = _warm_up(service, "/api/v1/gpu/metrics?node=gpu-node-001")
            document.update(measure(service, prometheus, log, cases, args.rounds))
        return document
    finally:
        prometheus.stop()


def table(document: dict[str, Any]) -> str:
    """The figures, as a short plain-text table."""
    lines = [f"{document['size']}: {document['backfill']}",
             f"{'case':<11} {'queries':>7} {'floor p50/p90 ms':>17} {'service p50/p90 ms':>19} "
             f"{'ratio p50/p90':>14}"]
    for name, case in document["cases"].items():
        floor, service = case["floor"], case["service"]
        lines.append(f"{name:<11} {case['queries']:>7} {floor['p50_ms']:>8.1f}/"
                     f"{floor['p90_ms']:<8.1f} {service['p50_ms']:>9.1f}/"
                     f"{service['p90_ms']:<9.1f} {case['ratio_p50']!s:>6}/"
                     f"{case['ratio_p90']!s:<6}")
    return "\n".join(lines)


def missed_targets(document: dict[str, Any], target: float) -> list[str]:
    """What fails the run."""
    missed = list(document.get("failures", []))
    for name in ENFORCED:
        case = document.get("cases", {}).get(name)
        if case is None:
            missed.append(f"{name}: not measured")
        elif case["ratio_p50"] is None or case["ratio_p50"] > target:
            missed.append(f"{name}: service p50 {case['service']['p50_ms']} ms is "
                          f"{case['ratio_p50']}x the floor's {case['floor']['p50_ms']} ms "
                          f"(target <= {target}x)")
    return missed


def main(argv: list[str] | None = None) -> int:
    """Run the fleet benchmark; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.fleet",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=Size.parse, default=Size(1000, 8),
                        help="NODESxGPUS (default 1000x8)")
    parser.add_argument("--duration", type=int, default=5400,
                        help="seconds of history (default 5400: the hour, and the idle window)")
    parser.add_argument("--spacing", type=int, default=60,
                        help="seconds between backfilled samples, a multiple of 15 (default 60)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--target", type=float, default=1.5,
                        help="largest service/floor p50 ratio (default 1.5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON results (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.spacing < 15 or args.spacing % 15 or args.duration % args.spacing:
        parser.error("--spacing must be a multiple of 15 that divides --duration")
    if not ready_to_run("promtool", "prometheus"):
        return 2
    document, status = run_measured("bench.fleet", argv, "gpu-bench-fleet-",
                                    partial(run, args))
    if "cases" in document:
        print(table(document))
    return finish(document, args.out, missed_targets(document, args.target), status)


if __name__ == "__main__":
    sys.exit(main())
