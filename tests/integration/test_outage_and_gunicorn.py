"""Prometheus going away and coming back; the app as deployed, under gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from app.config import Config
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer, ScrapeTarget
from tests.integration.conftest import ApiServer
from tests.integration.gunicorn_server import ROOT, GunicornServer, free_port
from tests.integration.upstreams import MisbehavingPrometheus, hang

pytestmark = pytest.mark.integration


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


# With the default cache an outage must show within this long (the requirement).
OUTAGE_VISIBLE_WITHIN_S = 15.0


def poll_until_not_200(api: ApiServer, path: str, started: float,
                       first: requests.Response) -> requests.Response:
    """Poll until the answer is no longer a 200; until then it must be the cached one."""
    deadline = started + OUTAGE_VISIBLE_WITHIN_S + 10  # fail with figures, not a hang
    while True:
        response = api.get(path)
        if response.status_code != 200:
            return response
        assert response.json()["data"] == first.json()["data"]
        assert "Cache-Status" not in response.headers  # stale-if-error is off
        assert time.monotonic() < deadline, "the outage never showed"
        time.sleep(0.05)  # poll like an eager dashboard


def test_an_outage_shows_within_15_s_with_the_default_cache_or_is_marked_stale(
        small_world: tuple[ExporterServer, PrometheusServer],
        api_server: Callable[..., ApiServer]) -> None:
    _, prometheus = small_world
    port = int(prometheus.url.rsplit(":", 1)[1])
    api = api_server(PROMETHEUS_URL=prometheus.url)  # CACHE_TTL 5, CACHE_STALE_SECONDS 5
    lenient = api_server(PROMETHEUS_URL=prometheus.url, CACHE_STALE_IF_ERROR_SECONDS="60")
    first = api.get("/api/v1/gpu/metrics")
    kept = lenient.get("/api/v1/gpu/metrics", headers={"Accept-Encoding": "identity"})
    assert first.status_code == kept.status_code == 200
    assert len(first.json()["data"]) == 4

    started = time.monotonic()
    prometheus.stop()
    response = poll_until_not_200(api, "/api/v1/gpu/metrics", started, first)
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json() == {"success": False, "data": None, "message": None,
                               "error": f"Prometheus at http://127.0.0.1:{port} is "
                                        "unreachable: connection refused"}
    assert elapsed < OUTAGE_VISIBLE_WITHIN_S, f"the outage showed after {elapsed:.1f}s"

    # The same outage, with stale-if-error: the old data, saying what failed and its age.
    deadline = time.monotonic() + 10
    while "Cache-Status" not in (stale := lenient.get(
            "/api/v1/gpu/metrics", headers={"Accept-Encoding": "identity"})).headers:
        assert stale.status_code == 200 and stale.json()["message"] == kept.json()["message"]
        assert time.monotonic() < deadline, "stale-if-error never marked the answer"
        time.sleep(0.05)
    body = stale.json()
    assert stale.status_code == 200 and body["success"] is True and body["error"] is None
    assert body["data"] == kept.json()["data"]
    age = int(stale.headers["Age"])
    assert body["message"] == (f"Prometheus at http://127.0.0.1:{port} is unreachable: "
                               f"connection refused; serving data from {age} s ago")
    assert 5 <= age < 60
    assert 'detail="stale-if-error"' in stale.headers["Cache-Status"]
    assert stale.headers["ETag"] != kept.headers["ETag"]
    assert api.get("/api/healthz").status_code == 503  # health is never cached


def test_a_hanging_prometheus_shows_within_15_s_with_the_default_cache(
        api_server: Callable[..., ApiServer]) -> None:
    with MisbehavingPrometheus() as upstream:
        # PROMETHEUS_TIMEOUT 10 and the cache as shipped; the fake speaks only legacy.
        api = api_server(PROMETHEUS_URL=upstream.url, METRICS_DIALECT="legacy")
        first = api.get("/api/v1/gpu/metrics")
        assert first.status_code == 200 and len(first.json()["data"]) == 1
        one_fan_out = len(upstream.seen("data"))

        started = time.monotonic()
        upstream.fault = hang()  # accepts every query, never answers
        response = poll_until_not_200(api, "/api/v1/gpu/metrics", started, first)
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        error = response.json()["error"]
        assert error.startswith(f"Prometheus at {upstream.url} has not answered for "), error
        assert elapsed < OUTAGE_VISIBLE_WITHIN_S, f"the hang showed after {elapsed:.1f}s"
        # One refresh hangs, holding every query thread it can (a fan-out larger than the
        # pool waits for a free thread); nobody piled more fan-outs onto it meanwhile.
        in_flight = min(one_fan_out, Config().query_threads)
        assert len(upstream.seen("data")) == one_fan_out + in_flight


def test_gunicorn_serves_the_api_with_the_shipped_config(
        small_world: tuple[ExporterServer, PrometheusServer]) -> None:
    _, prometheus = small_world
    server = GunicornServer({"PROMETHEUS_URL": prometheus.url, "WEB_CONCURRENCY": "2",
                             "GUNICORN_THREADS": "4"})
    with server:
        response = requests.get(f"{server.url}/api/v1/gpu/metrics",
                                timeout=5, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert len(response.json()["data"]) == 4
        bad = requests.get(f"{server.url}/api/v1/gpu/metrics?node=", timeout=5)
        assert bad.status_code == 400 and bad.json()["success"] is False
    assert server.returncode == 0, server.output
    assert "GET /api/v1/gpu/metrics 200" in server.output  # one access line per request


def test_bad_configuration_stops_gunicorn_naming_the_variable() -> None:
    env = {**os.environ, "PROMETHEUS_URL": "ftp://nowhere", "PORT": str(free_port())}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run([str(gunicorn), "--config", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "PROMETHEUS_URL" in result.stdout + result.stderr
