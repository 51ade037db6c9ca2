"""Benchmark one cluster size: floor, cold and warm service, concurrency, load, memory."""

from __future__ import annotations

import logging
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench import code, first_request, stages, wrk
from bench.floor import FloorClient, Plan, plan_for
from bench.service import GunicornService, HttpClient, Reply
from bench.stats import Summary, ratio
from bench.world import Size, World

logger = logging.getLogger("bench")

PATH = "/api/v1/gpu/metrics"
# Above this share of all cores spent on other processes, a size's numbers are suspect.
FOREIGN_CPU_MAX_SHARE = 0.05
IDENTITY = {"Accept-Encoding": "identity"}
MB = 1 << 20


@dataclass(frozen=True)
class Budget:
    """How many repetitions, and how many seconds at most, each measurement may take."""

    duration_s: int = 30          # each warm wrk run
    cold_wrk_s: int = 10          # the cold-path wrk run
    stage: tuple[int, float] = (9, 25.0)
    # Rounds of floor, keep-alive floor and cold request; spans two scrape intervals at 1000x8.
    cold: tuple[int, float] = (60, 35.0)
    # Longer than two freshness intervals, so background refreshes land inside it.
    warm: tuple[int, float] = (1000, 12.0)
    gzip: tuple[int, float] = (200, 5.0)
    not_modified: tuple[int, float] = (300, 5.0)
    # Fresh gunicorn starts, each answering one first request this long after livez.
    first_request_starts: int = 5
    first_request_delay_s: float = 2.0


# The measurements `--only` can pick; None runs them all.
ONLY_CHOICES = ("first-request",)


def run_size(size: Size, dialect: str, scrape_interval_s: int, budget: Budget,
             log_dir: Path, only: str | None = None) -> dict[str, Any]:
    """Measure one cluster size end to end; every process started here is stopped here.

    `only="first-request"` measures the world, the plan and the first requests alone.
    """
    out: dict[str, Any] = {"size": size.label, "nodes": size.nodes,
                           "gpus_per_node": size.gpus_per_node, "dialect": dialect,
                           "only": only}
    started = time.monotonic()
    cpu_before = cpu_snapshot()
    code_before = code.fingerprint()
    out["code"] = {"git_head": code.git_head(), "fingerprint_start": code_before}
    logger.info("[%s] starting exporter and Prometheus", size.label)
    with World(size, dialect, scrape_interval_s) as world:
        out["world"] = {
            "expected_gpus": world.expected_gpus,
            "exposition_bytes": world.exposition_bytes,
            "series_exposed": sum(world.expected.values()),
            "ready_after_s": world.ready_after_s,
            "scrape_before": world.scrape_health(),
        }
        logger.info("[%s] %d GPUs, %d series in Prometheus after %.1fs; scrape %s",
                    size.label, world.expected_gpus, out["world"]["series_exposed"],
                    world.ready_after_s, out["world"]["scrape_before"])
        plan = plan_for(world.prometheus_url)
        out["plan"] = {
            "dialects": [d.name for d in plan.dialects],
            "fan_out": plan.fan_out,
            "query_threads": plan.config.query_threads,
            "cache_ttl_default_s": plan.config.cache_ttl,
            "queries": {"/".join(key): promql for key, promql in plan.queries.items()},
            "notes": list(plan.notes),
        }
        if not plan.queries:
            raise RuntimeError(f"auto-detection found no GPU dialect: {plan.notes}")
        floor = FloorClient(world.prometheus_url, plan.queries, plan.config.query_threads)
        keep_alive = FloorClient(world.prometheus_url, plan.queries,
                                 plan.config.query_threads, keep_alive=True)
        # What PROMETHEUS_COMPRESSION=gzip would change: bytes on the wire against CPU.
        gzip_floor = FloorClient(world.prometheus_url, plan.queries,
                                 plan.config.query_threads, accept_encoding="gzip")
        try:
            if only is None:
                count, seconds = budget.stage
                logger.info("[%s] cold-path stages in-process", size.label)
                out["stages"] = stages.measure(plan, floor, count=count, budget_s=seconds)
                plan.client.close()
                logger.info("[%s] cold instance (CACHE_TTL=0), floor interleaved", size.label)
                with GunicornService("cold-" + size.label, world.prometheus_url, log_dir,
                                     cache_ttl="0") as cold:
                    out["floor"], out["cold"] = _cold_phase(
                        cold, world, plan, {"floor": floor, "keep_alive": keep_alive,
                                            "gzip": gzip_floor}, budget)
                logger.info("[%s] floor p50 %.1f ms, cold p50 %.1f ms", size.label,
                            out["floor"]["p50_ms"], out["cold"]["sequential"]["p50_ms"])
            logger.info("[%s] first requests of %d fresh instances, %g s after livez",
                        size.label, budget.first_request_starts, budget.first_request_delay_s)
            floor.fetch()  # untimed: first touch of these queries
            out["first_request"] = first_request.measure(
                world, floor, log_dir, starts=budget.first_request_starts,
                delay_s=budget.first_request_delay_s)
        finally:
            for client in (floor, keep_alive, gzip_floor):
                client.close()
            plan.client.close()
        if only is None:
            logger.info("[%s] warm instance (default cache)", size.label)
            with GunicornService("warm-" + size.label, world.prometheus_url, log_dir) as warm:
                out["warm"] = _warm_phase(warm, world, plan, budget)
        out["world"]["scrape_after"] = world.scrape_health()
    out["machine_load"] = foreign_cpu(cpu_before, cpu_snapshot())
    out["code"]["fingerprint_end"] = code_after = code.fingerprint()
    # gunicorn and this process load app/ at different moments: equal hashes mean they
    # measured the same code.
    out["code"]["changed_during_size"] = code_after != code_before
    if only is None:
        out["consistency"] = _consistency(out, world.expected_gpus)
        out["ratios"] = _ratios(out)
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


# -- the service ----------------------------------------------------------------------------

def _warm_up(service: GunicornService, attempts: int = 40, budget_s: float = 120.0) -> dict:
    """One request, then new connections until every worker has answered one (detection)."""
    served: dict[int, int] = {}
    statuses: list[int] = []
    deadline = time.monotonic() + budget_s
    workers = set(service.worker_pids())
    for _ in range(attempts):
        client = HttpClient(service.port)
        try:
            reply = client.get(PATH, IDENTITY)
            statuses.append(reply.status)
            port = client.local_port
            pid = service.worker_holding(port) if port is not None else None
        finally:
            client.close()
        if pid is not None:
            served[pid] = served.get(pid, 0) + 1
        if workers and workers <= set(served):
            break
        if time.monotonic() > deadline:
            break
    return {"requests": len(statuses), "statuses": sorted(set(statuses)),
            "served_by_worker": {str(k): v for k, v in served.items()},
            "all_workers_warm": bool(workers) and workers <= set(served)}


def _sequential(service: GunicornService, headers: dict[str, str], count: int,
                budget_s: float, accept: Callable[[Reply], bool] | None = None,
                ) -> tuple[Summary, list[Reply], int]:
    """Sequential GETs on one keep-alive connection; returns latencies of accepted replies."""
    client = HttpClient(service.port)
    replies: list[Reply] = []
    kept: list[float] = []
    rejected = 0
    deadline = time.monotonic() + 4 * budget_s
    try:
        started = time.monotonic()
        for _ in range(count):
            now = time.monotonic()
            if (now - started >= budget_s and len(kept) >= 5) or now > deadline:
                break
            t0 = time.perf_counter()
            reply = client.get(PATH, headers)
            elapsed = time.perf_counter() - t0
            if accept is None or accept(reply):
                kept.append(elapsed)
            else:
                rejected += 1
            if len(replies) < 2:
                replies.append(reply)
            else:
                replies[-1] = reply
    finally:
        client.close()
    return Summary.of(kept), replies, rejected


def _gpus_of(reply: Reply) -> list[dict[str, Any]]:
    document = orjson.loads(reply.body)
    return list(document.get("data") or [])


def _wrk_with_load(service: GunicornService, world: World, connections: int, duration_s: int,
                   plan: Plan, timeout_s: float | None, cached: bool) -> dict[str, Any]:
    """One wrk run, with the queries Prometheus received and the workers' CPU meanwhile."""
    queries_before = world.query_requests_total()
    cpu_before = service.worker_cpu_seconds()
    t0 = time.monotonic()
    with QueryRateSampler(world) as per_second:
        result, text = wrk.run(service.url + PATH, connections=connections,
                               duration_s=duration_s, timeout_s=timeout_s)
    window = time.monotonic() - t0
    cpu_after = service.worker_cpu_seconds()
    queries = world.query_requests_total() - queries_before
    out = result.as_dict()
    out["raw"] = text
    completed = max(result.requests, 1)
    out["worker_cpu_ms_per_request"] = round((cpu_after - cpu_before) * 1000.0 / completed, 3)
    out["worker_cpu_utilization"] = round((cpu_after - cpu_before) / window, 2)
    out["prometheus"] = _load(queries, window, plan, service.workers, cached, result.requests)
    out["prometheus"]["queries_each_second"] = per_second.deltas
    return out


class QueryRateSampler:
    """Read Prometheus' query counter once a second in a thread: when did fan-outs land."""

    def __init__(self, world: World, interval: float = 1.0) -> None:
        self._world = world
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="query-rate", daemon=True)
        self.deltas: list[int] = []

    def __enter__(self) -> QueryRateSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            previous = self._world.query_requests_total()
            for _ in range(3600):  # bounded: an hour of seconds at most
                if self._stop.wait(self._interval):
                    return
                current = self._world.query_requests_total()
                self.deltas.append(int(current - previous))
                previous = current
        except Exception as exc:  # a missing detail, never a failed run
            logger.warning("query-rate sampling stopped: %s", exc)


def _load(queries: float, window_s: float, plan: Plan, workers: int, cached: bool,
          requests: int) -> dict[str, Any]:
    """Queries Prometheus received in the window, against one fan-out per TTL per worker."""
    fan_out = plan.fan_out
    ttl = plan.config.cache_ttl
    out: dict[str, Any] = {
        "window_s": round(window_s, 2),
        "queries": int(queries),
        "queries_per_s": round(queries / window_s, 2),
        "fan_outs": round(queries / fan_out, 2),
        "fan_out_size": fan_out,
        "workers": workers,
    }
    if cached:
        # Fetch starts of one worker are at least one TTL apart (the next refresh begins
        # TTL after the previous answer was produced), so a window of W seconds holds at
        # most floor(W / TTL) + 1 of them per worker.
        allowed = workers * fan_out * (math.floor(window_s / ttl) + 1)
        out.update(
            freshness_s=ttl,
            bound_queries_per_s=round(workers * fan_out / ttl, 2),
            bound_queries=allowed,
            bound_held=queries <= allowed,
        )
    else:
        # Without the cache every request is a whole fan-out.
        out["fan_outs_per_request"] = round(queries / fan_out / max(requests, 1), 3)
    return out


def _memory(service: GunicornService) -> dict[str, Any]:
    sampler = service.sampler
    current = service.worker_rss()
    peaks = dict(sampler.peak_by_pid) if sampler is not None else {}
    return {
        "rss_after_mb": {str(pid): round(rss / MB, 1) for pid, rss in current.items()},
        "rss_peak_mb": {str(pid): round(rss / MB, 1) for pid, rss in peaks.items()},
        "rss_peak_max_mb": round(max(peaks.values(), default=0) / MB, 1),
        "samples": sampler.samples if sampler is not None else 0,
        "workers_seen": len(service.seen_workers | set(peaks)),
        # More pids than workers means gunicorn replaced a worker (crash or timeout).
        "worker_restarts": max(0, len(service.seen_workers | set(peaks)) - service.workers),
    }


def _interleaved(service: GunicornService, floors: dict[str, FloorClient],
                 count: int, budget_s: float, prometheus: psutil.Process | None,
                 ) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]],
                            Reply | None, int]:
    """Each floor variant and one cold request in turn, never overlapping.

    Prometheus' speed drifts (scrapes, compaction, Go GC): alternating them in one loop
    exposes them all to the same conditions, so their ratio is like for like. The order
    rotates each round so none of them always follows another.
    """
    client = HttpClient(service.port)
    durations: dict[str, list[float]] = {name: [] for name in (*floors, "cold")}
    # CPU seconds each step cost Prometheus, the gunicorn workers and this process.
    cpu: dict[str, dict[str, list[float]]] = {
        name: {"prometheus": [], "service_workers": [], "client": []} for name in durations}
    last: Reply | None = None
    non_200 = 0

    def cold() -> None:
        nonlocal last, non_200
        reply = client.get(PATH, IDENTITY)
        if reply.status != 200:
            non_200 += 1
            raise _NotOk
        last = reply

    steps: list[tuple[str, Callable[[], object]]] = [
        *((name, floor.fetch) for name, floor in floors.items()), ("cold", cold)]
    started = time.monotonic()
    try:
        for round_number in range(count):
            elapsed = time.monotonic() - started
            if (elapsed >= budget_s and len(durations["cold"]) >= 5) or elapsed >= 4 * budget_s:
                break
            shift = round_number % len(steps)
            for name, step in steps[shift:] + steps[:shift]:
                before = _cpu_of(prometheus), service.worker_cpu_seconds(), time.process_time()
                t0 = time.perf_counter()
                try:
                    step()
                except _NotOk:
                    continue
                durations[name].append(time.perf_counter() - t0)
                after = _cpu_of(prometheus), service.worker_cpu_seconds(), time.process_time()
                for who, b, a in zip(cpu[name], before, after, strict=True):
                    cpu[name][who].append(a - b)
    finally:
        client.close()
    return durations, cpu, last, non_200


def _cpu_of(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _median_cpu_ms(cpu: dict[str, list[float]]) -> dict[str, float]:
    return {who: round(statistics.median(values) * 1000.0, 1) if values else 0.0
            for who, values in cpu.items()}


class _NotOk(Exception):
    """A cold request that did not answer 200 (counted, not timed)."""


def _cold_phase(service: GunicornService, world: World, plan: Plan,
                floors: dict[str, FloorClient], budget: Budget) -> tuple[dict, dict]:
    """`floors`: "floor" (as the service asks), "keep_alive" and "gzip" variants."""
    out: dict[str, Any] = {"warm_up": _warm_up(service)}
    for client in floors.values():
        client.fetch()  # untimed: first touch of these queries and connections
    count, seconds = budget.cold
    durations, cpu, body, non_200 = _interleaved(service, floors, count, seconds,
                                                 world.prometheus_process())
    floor, gzip_floor = floors["floor"], floors["gzip"]
    floor_out: dict[str, Any] = {
        **asdict(Summary.of(durations["floor"])),
        "keep_alive": asdict(Summary.of(durations["keep_alive"])),
        "gzip": {**asdict(Summary.of(durations["gzip"])),
                 "cpu_ms": _median_cpu_ms(cpu["gzip"]),
                 "wire_bytes_total": sum(gzip_floor.last_wire_sizes.values())},
        "cpu_ms": _median_cpu_ms(cpu["floor"]),
        "bytes_total": sum(floor.last_sizes.values()),
        "wire_bytes_total": sum(floor.last_wire_sizes.values()),
        "bytes_per_query": {"/".join(k): v for k, v in floor.last_sizes.items()},
        "threads": plan.config.query_threads,
    }
    out["sequential"] = {**asdict(Summary.of(durations["cold"])), "non_200": non_200,
                         "cpu_ms": _median_cpu_ms(cpu["cold"])}
    if body is not None:
        out["body_bytes"] = len(body.body)
        out["gpus"] = len(_gpus_of(body))
        out["_data"] = _gpus_of(body)
    # A longer timeout than wrk's 2 s default, so slow cold answers are measured, not cut.
    logger.info("wrk -c8 -d%ds (cold)", budget.cold_wrk_s)
    out["wrk_c8"] = _wrk_with_load(service, world, 8, budget.cold_wrk_s, plan,
                                   timeout_s=30.0, cached=False)
    out["memory"] = _memory(service)
    out["gunicorn_worker_timeouts"] = service.count_in_log("WORKER TIMEOUT")
    return floor_out, out


def _warm_phase(service: GunicornService, world: World, plan: Plan,
                budget: Budget) -> dict[str, Any]:
    out: dict[str, Any] = {"warm_up": _warm_up(service)}
    count, seconds = budget.warm
    summary, replies, rejected = _sequential(service, IDENTITY, count, seconds,
                                             accept=lambda r: r.status == 200)
    out["sequential"] = {**asdict(summary), "non_200": rejected}
    body = replies[-1] if replies else None
    if body is not None:
        out["body_bytes"] = len(body.body)
        out["gpus"] = len(_gpus_of(body))
        out["_data"] = _gpus_of(body)
        out["cache_headers"] = {k: body.headers.get(k) for k in ("cache-control", "age", "etag")}

    count, seconds = budget.gzip
    gzip_summary, gzip_replies, rejected = _sequential(
        service, {"Accept-Encoding": "gzip"}, count, seconds,
        accept=lambda r: r.status == 200 and r.headers.get("content-encoding") == "gzip")
    out["gzip"] = {**asdict(gzip_summary), "rejected": rejected,
                   "body_bytes": len(gzip_replies[-1].body) if gzip_replies else None}

    # Revalidation: a 304 while the cached body is unchanged. When a refresh brings a new
    # body (a new scrape changed the sample timestamps), the answer is 200 with a new ETag.
    etag = body.headers.get("etag") if body is not None else None
    headers = {**IDENTITY, "If-None-Match": etag or '"none"'}

    def is_304(reply: Reply) -> bool:
        if reply.status == 200 and reply.headers.get("etag"):
            headers["If-None-Match"] = reply.headers["etag"]
        return reply.status == 304

    count, seconds = budget.not_modified
    nm_summary, _, changed = _sequential(service, headers, count, seconds, accept=is_304)
    out["not_modified"] = {**asdict(nm_summary), "answered_200_new_etag": changed}

    for connections in (8, 32):
        logger.info("wrk -c%d -d%ds (warm)", connections, budget.duration_s)
        out[f"wrk_c{connections}"] = _wrk_with_load(service, world, connections,
                                                    budget.duration_s, plan,
                                                    timeout_s=None, cached=True)
    out["memory"] = _memory(service)
    out["gunicorn_worker_timeouts"] = service.count_in_log("WORKER TIMEOUT")
    # wrk counts answers that were not 2xx/3xx; the access log says which they were.
    out["answers_by_status"] = service.statuses(PATH)
    out["log_problems"] = service.problems()
    return out


# -- was the machine ours? --------------------------------------------------------------------

def cpu_snapshot() -> tuple[float, float, float]:
    """(wall clock, busy CPU seconds of the whole machine, CPU seconds of this process tree).

    This process' children are all waited for by the time a size ends (gunicorn waits for
    its workers, we wait for gunicorn, Prometheus and wrk), so `os.times()` counts them.
    """
    machine = psutil.cpu_times()
    busy = machine.user + machine.nice + machine.system + getattr(machine, "irq", 0.0) + \
        getattr(machine, "softirq", 0.0) + getattr(machine, "steal", 0.0)
    mine = os.times()
    ours = mine.user + mine.system + mine.children_user + mine.children_system
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        ours += times.user + times.system
    return time.monotonic(), busy, ours


def foreign_cpu(before: tuple[float, float, float], after: tuple[float, float, float],
                unreaped_cpu_s: float = 0.0) -> dict[str, Any]:
    """CPU the machine spent on anything but this benchmark while the size ran.

    `unreaped_cpu_s`: CPU of the benchmark's own processes that this process does not reap
    (a browser's), measured by the benchmark before they exited."""
    wall = after[0] - before[0]
    busy = after[1] - before[1]
    ours = after[2] - before[2] + unreaped_cpu_s
    cores = psutil.cpu_count() or 1
    foreign = max(0.0, busy - ours)
    share = foreign / (wall * cores) if wall > 0 else 0.0
    return {
        "wall_s": round(wall, 1),
        "machine_busy_cpu_s": round(busy, 1),
        "benchmark_cpu_s": round(ours, 1),
        "foreign_cpu_s": round(foreign, 1),
        "foreign_share": round(share, 3),
        # Other work on the machine (someone's tests, a soak run) skews every latency here.
        "quiet": share <= FOREIGN_CPU_MAX_SHARE,
    }


# -- derived ---------------------------------------------------------------------------------

def _without_timestamps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "timestamp"} for row in rows]


def _consistency(out: dict[str, Any], expected_gpus: int) -> dict[str, Any]:
    cold = out["cold"].pop("_data", None)
    warm = out["warm"].pop("_data", None)
    return {
        "expected_gpus": expected_gpus,
        "cold_gpus": len(cold) if cold is not None else None,
        "warm_gpus": len(warm) if warm is not None else None,
        # Values are frozen; only the sample timestamps move with each scrape.
        "bodies_match_except_timestamp": (
            cold is not None and warm is not None
            and _without_timestamps(cold) == _without_timestamps(warm)
        ),
        "all_gpus_present": cold is not None and len(cold) == expected_gpus
        and warm is not None and len(warm) == expected_gpus,
        "service_fan_out_matches_plan": _fan_out_matches(out["cold"]["wrk_c8"]),
    }


def _fan_out_matches(run: dict[str, Any]) -> bool:
    """Did the cold instance send as many queries per request as the plan has?

    Each completed request is one fan-out; at most one more per connection may have
    started and not finished when wrk stopped.
    """
    requests = max(run["requests"], 1)
    per_request = run["prometheus"]["fan_outs_per_request"]
    upper = (requests + run["connections"]) / requests
    return 0.97 <= per_request <= upper + 0.03


def _ratios(out: dict[str, Any]) -> dict[str, Any]:
    floor = out["floor"]
    cold = out["cold"]["sequential"]
    warm = out["warm"]["sequential"]
    return {
        "cold_p50_over_floor_p50": ratio(cold["p50_ms"], floor["p50_ms"]),
        "cold_p90_over_floor_p90": ratio(cold["p90_ms"], floor["p90_ms"]),
        "warm_p50_over_floor_p50": ratio(warm["p50_ms"], floor["p50_ms"]),
        "warm_p90_over_floor_p90": ratio(warm["p90_ms"], floor["p90_ms"]),
        "gzip_p50_over_floor_p50": ratio(out["warm"]["gzip"]["p50_ms"], floor["p50_ms"]),
        "not_modified_p50_over_floor_p50": ratio(out["warm"]["not_modified"]["p50_ms"],
                                                 floor["p50_ms"]),
        "cold_p50_over_keep_alive_floor_p50": ratio(cold["p50_ms"],
                                                     floor["keep_alive"]["p50_ms"]),
        "cold_p50_over_warm_p50": ratio(cold["p50_ms"], warm["p50_ms"]),
        "warm_c8_rps_over_cold_c8_rps": ratio(out["warm"]["wrk_c8"]["requests_per_s"],
                                              out["cold"]["wrk_c8"]["requests_per_s"]),
        "produce_in_process_over_floor_p50": ratio(out["stages"]["produce_ms"],
                                                   floor["p50_ms"]),
        "gzip_bytes_over_identity_bytes": ratio(out["warm"]["gzip"].get("body_bytes") or 0,
                                                out["warm"].get("body_bytes") or 0),
    }
