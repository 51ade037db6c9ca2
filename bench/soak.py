"""Soak: many concurrent clients for a while against gunicorn + a real Prometheus.

    python -m bench.soak [--clients 48] [--duration 60] [--nodes 100] [--outage 20:10]

Starts a simulated dcgm + nvitop cluster whose values move, a real Prometheus scraping it,
and the service under gunicorn as deployed; then `--clients` threads poll a mix of
endpoints (GPU list, processes, filters, capabilities, health, conditional requests, bad
input) for `--duration` seconds, loopback only. With `--outage START:LENGTH` Prometheus is
stopped for LENGTH seconds at START and restarted on the same port, to show the service
keeps answering (stale answers, then 503 envelopes) and recovers by itself.
Every 5 s it prints requests, errors, latency percentiles, and each worker's RSS, open
file descriptors and threads. Every loop is bounded in time; every process is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

import psutil
import requests

from demo.cluster import ClusterSpec
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer, ScrapeTarget

ROOT = Path(__file__).resolve().parent.parent
REPORT_EVERY_S = 5.0
# (weight, path): what a wall of dashboards and a few scripts send.
MIX = [
    (40, "/api/v1/gpu/metrics"),
    (20, "/api/v1/gpu/processes"),
    (10, "/api/v1/gpu/metrics?node=gpu-node-001&node=gpu-node-002"),
    (5, "/api/v1/gpu/metrics?namespace=ml-research"),
    (5, "/api/v1/capabilities"),
    (5, "/api/healthz"),
    (5, "/api/livez"),
    (5, "conditional"),  # If-None-Match with the last ETag seen
    (5, "/api/v1/gpu/metrics?node="),  # bad input: must be a 400 envelope
]


class WorkerStats(TypedDict):
    """One gunicorn worker's RSS (MB), open file descriptors and threads."""

    pid: int
    rss_mb: float
    fds: int
    threads: int


class Interval(TypedDict):
    """One reporting interval's line of the report."""

    t_s: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    wrong: int
    outage_answers: int
    workers: list[WorkerStats]


class Totals(TypedDict):
    """The whole run's figures."""

    requests: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    statuses: dict[int, int]
    wrong: dict[str, int]
    service_alive: bool


class SoakReport(TypedDict):
    """What `--out` writes: the settings, every interval and the totals."""

    clients: int
    duration_s: float
    gpus: int
    outage: str | None
    cpus: int | None
    intervals: list[Interval]
    total: NotRequired[Totals]


@dataclass
class Window:
    """What happened during one reporting interval."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


class Recorder:
    """Thread-safe collection of results, per interval and overall."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window = Window()
        self.total = Window()

    def record(self, latency: float, status: int | None, failure: str | None) -> None:
        with self.lock:
            for target in (self.window, self.total):
                target.latencies.append(latency)
                if status is not None:
                    target.statuses[status] += 1
                if failure is not None:
                    target.failures[failure] += 1

    def take_window(self) -> Window:
        with self.lock:
            window, self.window = self.window, Window()
            return window


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def classify(path: str, response: requests.Response) -> str | None:
    """Return why a response is wrong, or None when it is what the contract says."""
    if path == "/api/openapi.json":
        return None
    if response.status_code == 304:
        return None if path == "conditional" else "unexpected 304"
    try:
        body = response.json()
    except ValueError:
        return f"non-JSON {response.status_code}"
    if set(body) != {"success", "data", "message", "error"}:
        return "not an envelope"
    if path.endswith("node="):
        return None if response.status_code == 400 else f"bad input got {response.status_code}"
    if response.status_code in (503, 504) and body["error"]:
        return None  # an honest outage answer (counted separately below)
    if response.status_code != 200 or body["success"] is not True:
        return f"status {response.status_code}"
    return None


def client_loop(base: str, recorder: Recorder, stop_at: float, seed: int) -> None:
    """One dashboard: pick a request, send it, record, repeat until `stop_at`."""
    rng = random.Random(seed)
    weights = [w for w, _ in MIX]
    paths = [p for _, p in MIX]
    etag = None
    with requests.Session() as session:
        while time.monotonic() < stop_at:
            path = rng.choices(paths, weights)[0]
            headers = {"Accept-Encoding": "gzip"}
            url = base + ("/api/v1/gpu/metrics" if path == "conditional" else path)
            if path == "conditional" and etag:
                headers["If-None-Match"] = etag
            started = time.perf_counter()
            try:
                response = session.get(url, headers=headers, timeout=30)
                failure = classify(path, response)
                status: int | None = response.status_code
                if path.startswith("/api/v1/gpu/metrics") and response.status_code == 200:
                    etag = response.headers.get("ETag", etag)
            except requests.RequestException as exc:
                failure, status = f"transport: {type(exc).__name__}", None
            recorder.record(time.perf_counter() - started, status, failure)


def worker_stats(master: psutil.Process) -> list[WorkerStats]:
    """RSS (MB), open fds and threads of each gunicorn worker."""
    stats: list[WorkerStats] = []
    for child in master.children():
        try:
            stats.append({"pid": child.pid, "rss_mb": round(child.memory_info().rss / 2**20, 1),
                          "fds": child.num_fds(), "threads": child.num_threads()})
        except psutil.NoSuchProcess:
            continue
    return stats


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        try:
            if requests.get(url + "/api/v1/gpu/metrics", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError("the service did not answer in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--nodes", type=int, default=100, help="GPU nodes, 8 GPUs each")
    parser.add_argument("--outage", default=None,
                        help="START:LENGTH seconds: stop Prometheus during the run")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 512 or not 1 <= args.duration <= 1800:
        parser.error("--clients must be 1..512 and --duration 1..1800")
    outage = tuple(float(x) for x in args.outage.split(":")) if args.outage else None

    spec = ClusterSpec(nodes=args.nodes, gpus_per_node=8, seed=5, shared_gpus=4)
    report: SoakReport = {"clients": args.clients, "duration_s": args.duration,
                          "gpus": args.nodes * 8, "outage": args.outage,
                          "cpus": os.cpu_count(), "intervals": []}
    with ExitStack() as stack:
        targets = []
        for dialect in ("dcgm", "nvitop"):
            exporter = stack.enter_context(ExporterServer(spec, dialect, period_s=15.0))
            targets.append(ScrapeTarget(exporter.address))
        prometheus = PrometheusServer(targets, scrape_interval="5s").start()
        stack.callback(lambda: prometheus.stop())
        prometheus.wait_for("DCGM_FI_DEV_GPU_TEMP", min_count=spec.nodes * 8, timeout=60)
        prometheus_port = int(prometheus.url.rsplit(":", 1)[1])

        port = free_port()
        env = {**os.environ, "PROMETHEUS_URL": prometheus.url, "PORT": str(port),
               "LOG_LEVEL": "warning", "WEB_CONCURRENCY": "2"}
        gunicorn = Path(sys.executable).with_name("gunicorn")
        service = subprocess.Popen([str(gunicorn), "--config", "gunicorn.conf.py", "wsgi:app"],
                                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)

        def stop_service() -> None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
                service.wait(timeout=10)

        stack.callback(stop_service)
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, service)
        master = psutil.Process(service.pid)

        recorder = Recorder()
        started = time.monotonic()
        stop_at = started + args.duration
        threads = [threading.Thread(target=client_loop, args=(base, recorder, stop_at, i),
                                    daemon=True) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        print(f"{args.clients} clients for {args.duration:g}s against {args.nodes * 8} GPUs"
              f"{f', Prometheus down {outage[1]:g}s at {outage[0]:g}s' if outage else ''}")
        print(f"{'t':>4} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'bad':>4} {'503':>4} "
              f"{'RSS MB':>13} {'fds':>9} {'threads':>9}")
        down = False
        next_report = started + REPORT_EVERY_S
        while time.monotonic() < stop_at + 1 and any(t.is_alive() for t in threads):
            now = time.monotonic() - started
            if outage and not down and outage[0] <= now < outage[0] + outage[1]:
                prometheus.stop()
                down = True
            elif outage and down and now >= outage[0] + outage[1]:
                prometheus = PrometheusServer(targets, scrape_interval="5s",
                                              port=prometheus_port).start()
                down = False
            if time.monotonic() >= next_report:
                next_report += REPORT_EVERY_S
                window = recorder.take_window()
                workers = worker_stats(master)
                row: Interval = {
                    "t_s": round(now),
                    "requests_per_s": round(len(window.latencies) / REPORT_EVERY_S, 1),
                    "p50_ms": round(percentile(window.latencies, 50) * 1000, 1),
                    "p99_ms": round(percentile(window.latencies, 99) * 1000, 1),
                    "wrong": sum(window.failures.values()),
                    "outage_answers": window.statuses[503] + window.statuses[504],
                    "workers": workers,
                }
                report["intervals"].append(row)
                print(f"{row['t_s']:>4} {row['requests_per_s']:>7} {row['p50_ms']:>7} "
                      f"{row['p99_ms']:>7} {row['wrong']:>4} {row['outage_answers']:>4} "
                      f"{'/'.join(str(w['rss_mb']) for w in workers):>13} "
                      f"{'/'.join(str(w['fds']) for w in workers):>9} "
                      f"{'/'.join(str(w['threads']) for w in workers):>9}")
            time.sleep(0.2)
        for thread in threads:
            thread.join(timeout=35)
        total = recorder.total
        totals: Totals = {
            "requests": len(total.latencies),
            "requests_per_s": round(len(total.latencies) / args.duration, 1),
            "p50_ms": round(percentile(total.latencies, 50) * 1000, 1),
            "p90_ms": round(percentile(total.latencies, 90) * 1000, 1),
            "p99_ms": round(percentile(total.latencies, 99) * 1000, 1),
            "statuses": dict(sorted(total.statuses.items())),
            "wrong": dict(total.failures),
            "service_alive": service.poll() is None,
        }
        report["total"] = totals
        print(json.dumps(totals, indent=1))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=1))
        return 0 if not total.failures and service.poll() is None else 1


if __name__ == "__main__":
    sys.exit(main())
