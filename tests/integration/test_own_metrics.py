"""Our own /metrics and JSON logs under gunicorn with two workers: the counts add up."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector

from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer
from tests.integration.gunicorn_server import GunicornServer, free_port
from tests.scrape import Samples, parse_samples, total, value

pytestmark = pytest.mark.integration

GPUS = "/api/v1/gpu/metrics"
LIST_REQUESTS, BAD_REQUESTS, UNKNOWN_PATHS, HEALTH_IN_OUTAGE = 40, 7, 5, 6
MAX_LIST_REQUESTS = 400  # the kernel may hand many fresh connections in a row to one worker


def fresh_get(url: str, **headers: str) -> requests.Response:
    """One request on a connection of its own, so either worker may accept it."""
    return requests.get(url, timeout=10, headers={"Connection": "close", **headers})


def scrape(url: str) -> Samples:
    response = fresh_get(url)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse_samples(response.text)


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line gunicorn and the app printed, each of which must be one JSON object."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def workers(server: GunicornServer) -> list[int]:
    return sorted(child.pid for child in psutil.Process(server.pid).children())


def lists_served(metrics_dir: Path, pid: int) -> float:
    """The GPU-list answers one worker has counted so far, read from its own counter file."""
    path = metrics_dir / f"counter_{pid}.db"
    if not path.exists():
        return 0
    for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
        for sample in metric.samples:
            if (sample.name == "gpu_monitor_http_requests_total"
                    and sample.labels.get("route") == GPUS
                    and sample.labels.get("status") == "200"):
                return sample.value
    return 0


def get_lists_until_both_workers_served(server: GunicornServer, metrics_dir: Path) -> int:
    """At least LIST_REQUESTS list answers, and more until each worker has served one.

    Which worker accepts a fresh connection is the kernel's choice, so a fixed count could
    land on one worker only; the test needs both. Returns how many were sent.
    """
    pids = wait_for_workers(server, 2, set())
    sent = 0
    while sent < LIST_REQUESTS or not all(lists_served(metrics_dir, pid) for pid in pids):
        assert sent < MAX_LIST_REQUESTS, f"one worker of {pids} served all {sent} lists"
        response = fresh_get(server.url + GPUS, **{"X-Request-ID": f"list-{sent}"})
        assert response.status_code == 200 and len(response.json()["data"]) == 4
        assert response.headers["X-Request-ID"] == f"list-{sent}"
        sent += 1
    return sent


def wait_for_workers(server: GunicornServer, count: int, not_in: set[int]) -> list[int]:
    deadline = time.monotonic() + 30
    while True:
        pids = workers(server)
        if (len(pids) == count and not set(pids) & not_in
                and fresh_get(f"{server.url}/api/livez").status_code == 200):
            return pids
        assert time.monotonic() < deadline, f"workers are {pids}"
        time.sleep(0.1)


def test_metrics_add_up_across_two_workers_and_survive_a_worker_restart(
        small_world: tuple[ExporterServer, PrometheusServer], tmp_path: Path) -> None:
    _, prometheus = small_world
    metrics_dir = tmp_path / "multiproc"
    server = GunicornServer({
        "PROMETHEUS_URL": prometheus.url, "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4",
        "LOG_FORMAT": "json", "CACHE_TTL": "300", "METRICS_DIALECT": "dcgm",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    with server:
        sent = get_lists_until_both_workers_served(server, metrics_dir)
        for _ in range(BAD_REQUESTS):
            assert fresh_get(server.url + GPUS + "?node=").status_code == 400
        for i in range(UNKNOWN_PATHS):
            assert fresh_get(f"{server.url}/api/v1/nothing/{i}").status_code == 404

        samples = scrape(server.url + "/metrics")
        requests_total = "gpu_monitor_http_requests_total"
        assert value(samples, requests_total, route=GPUS, method="GET",
                     status="200") == sent
        assert value(samples, requests_total, route=GPUS, method="GET",
                     status="400") == BAD_REQUESTS
        assert value(samples, requests_total, route="unmatched", method="GET",
                     status="404") == UNKNOWN_PATHS
        assert value(samples, "gpu_monitor_http_request_duration_seconds_count",
                     route=GPUS, method="GET") == sent + BAD_REQUESTS
        # Each worker asked Prometheus once for the list; every other request was a hit.
        misses = value(samples, "gpu_monitor_cache_lookups_total", result="miss")
        hits = value(samples, "gpu_monitor_cache_lookups_total", result="hit")
        assert misses is not None and hits is not None
        assert misses + hits == sent
        assert value(samples, "gpu_monitor_dialect_info", dialect="dcgm") == 1
        ((_, build),) = [(k, v) for k, v in samples.items()
                         if k[0] == "gpu_monitor_build_info"]
        assert build == 1  # one series, not one per worker

        # An outage: every health check is one failed probe, in whichever worker.
        prometheus.stop()
        for _ in range(HEALTH_IN_OUTAGE):
            assert fresh_get(server.url + "/api/healthz").status_code == 503
        before = scrape(server.url + "/metrics")
        assert value(before, "gpu_monitor_prometheus_requests_total", endpoint="query",
                     outcome="unavailable") == HEALTH_IN_OUTAGE
        assert total(before, "gpu_monitor_prometheus_requests_total",
                     outcome="success") >= misses

        # A worker restarts: its counts stay in the totals, its live gauges go.
        old = workers(server)
        os.kill(old[0], signal.SIGTERM)
        now = wait_for_workers(server, 2, {old[0]})
        after = scrape(server.url + "/metrics")
        assert value(after, requests_total, route=GPUS, method="GET",
                     status="200") == sent
        assert value(after, "gpu_monitor_prometheus_requests_total", endpoint="query",
                     outcome="unavailable") == HEALTH_IN_OUTAGE
        files = {p.name for p in metrics_dir.iterdir()}
        assert f"counter_{old[0]}.db" in files
        assert not any(name.startswith("gauge_live") and name.endswith(f"_{old[0]}.db")
                       for name in files), files
        assert set(now) - set(old)
    assert server.returncode == 0, server.output[-2000:]

    records = json_lines(server.output)  # gunicorn's own lines are JSON objects too
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"]
               for r in records)
    access = [r for r in records if r["logger"] == "app.access" and r["route"] == GPUS
              and r["status"] == 200]
    assert sorted(r["request_id"] for r in access) == sorted(
        f"list-{i}" for i in range(sent))
    # Both workers served the list, and each counted exactly one miss.
    serving = {r["pid"] for r in access}
    assert len(serving) == 2 and misses == len(serving)


def test_metrics_port_serves_every_workers_metrics_from_the_master(
        small_world: tuple[ExporterServer, PrometheusServer]) -> None:
    _, prometheus = small_world
    metrics_port = free_port()
    server = GunicornServer({"PROMETHEUS_URL": prometheus.url, "WEB_CONCURRENCY": "2",
                             "METRICS_PORT": str(metrics_port), "METRICS_DIALECT": "dcgm"})
    with server:
        for _ in range(10):
            assert fresh_get(server.url + GPUS).status_code == 200
        assert fresh_get(server.url + "/metrics").status_code == 404  # not on the API port
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert value(samples, "gpu_monitor_http_requests_total", route=GPUS, method="GET",
                     status="200") == 10
    assert server.returncode == 0, server.output[-2000:]


def test_an_unwritable_metrics_directory_stops_gunicorn_naming_the_variable(
        tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    server = GunicornServer({"PROMETHEUS_MULTIPROC_DIR": str(blocker / "metrics")},
                            ready_timeout=10)
    with pytest.raises(RuntimeError, match="gunicorn did not start"):
        server.start()
    assert "PROMETHEUS_MULTIPROC_DIR" in server.output
