"""Prometheus going away and coming back; the app as deployed, under gunicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from demo.cluster import ClusterSpec
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer, ScrapeTarget
from tests.integration.conftest import ApiServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SPEC = ClusterSpec(nodes=2, gpus_per_node=2, seed=21, node_prefix="out-")


@pytest.fixture
def small_world() -> Iterator[tuple[ExporterServer, PrometheusServer]]:
    with ExporterServer(SPEC, "dcgm") as exporter:
        prometheus = PrometheusServer([ScrapeTarget(exporter.address)]).start()
        try:
            prometheus.wait_for("DCGM_FI_DEV_GPU_TEMP", min_count=4, timeout=60)
            yield exporter, prometheus
        finally:
            prometheus.stop()


def test_outage_gives_503_envelopes_and_recovers_without_restart(
        small_world: tuple[ExporterServer, PrometheusServer],
        api_server: Callable[..., ApiServer]) -> None:
    exporter, prometheus = small_world
    port = int(prometheus.url.rsplit(":", 1)[1])
    api = api_server(PROMETHEUS_URL=prometheus.url, CACHE_TTL="0")
    assert api.get("/api/healthz").status_code == 200
    assert len(api.get("/api/v1/gpu/metrics").json()["data"]) == 4

    prometheus.stop()
    # (dcgm-exporter has no process series, so /processes does not need Prometheus here.)
    for path in ("/api/healthz", "/api/v1/gpu/metrics"):
        response = api.get(path)
        assert response.status_code == 503, (path, response.text)
        body = response.json()
        assert body == {"success": False, "data": None, "message": None,
                        "error": f"Prometheus at http://127.0.0.1:{port} is unreachable: "
                                 "connection refused"}
    assert api.get("/api/livez").status_code == 200  # Kubernetes must not restart us

    revived = PrometheusServer([ScrapeTarget(exporter.address)], port=port).start()
    try:
        revived.wait_for("DCGM_FI_DEV_GPU_TEMP", min_count=4, timeout=60)
        assert api.get("/api/healthz").status_code == 200
        assert len(api.get("/api/v1/gpu/metrics").json()["data"]) == 4
    finally:
        revived.stop()


def test_stale_answer_is_served_while_prometheus_is_briefly_down(
        small_world: tuple[ExporterServer, PrometheusServer],
        api_server: Callable[..., ApiServer]) -> None:
    _, prometheus = small_world
    api = api_server(PROMETHEUS_URL=prometheus.url, CACHE_TTL="0.2", CACHE_STALE_SECONDS="30")
    first = api.get("/api/v1/gpu/metrics")
    assert first.status_code == 200
    prometheus.stop()
    time.sleep(0.3)  # past the freshness interval: the next answer is stale
    again = api.get("/api/v1/gpu/metrics")
    assert again.status_code == 200
    assert again.json()["data"] == first.json()["data"]
    assert int(again.headers["Age"]) >= 0 and again.headers["ETag"] == first.headers["ETag"]
    assert api.get("/api/healthz").status_code == 503  # health is never cached


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_gunicorn_serves_the_api_with_the_shipped_config(
        small_world: tuple[ExporterServer, PrometheusServer]) -> None:
    _, prometheus = small_world
    port = _free_port()
    env = {**os.environ, "PROMETHEUS_URL": prometheus.url, "PORT": str(port),
           "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4"}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen([str(gunicorn), "--config", "gunicorn.conf.py", "wsgi:app"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/api/v1/gpu/metrics",
                                        timeout=5, headers={"Accept-Encoding": "gzip"})
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert len(response.json()["data"]) == 4
        bad = requests.get(f"http://127.0.0.1:{port}/api/v1/gpu/metrics?node=", timeout=5)
        assert bad.status_code == 400 and bad.json()["success"] is False
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert "GET /api/v1/gpu/metrics 200" in output  # one access line per request


def test_bad_configuration_stops_gunicorn_naming_the_variable() -> None:
    env = {**os.environ, "PROMETHEUS_URL": "ftp://nowhere", "PORT": str(_free_port())}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run([str(gunicorn), "--config", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "PROMETHEUS_URL" in result.stdout + result.stderr
