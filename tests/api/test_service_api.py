"""Health, liveness, errors for unknown paths and methods, CORS and debug endpoints."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app import __version__, create_app
from app.config import ConfigError
from tests.fakes import FakePrometheus


def test_healthz_reports_healthy_with_version_and_prometheus(
        client: FlaskClient, fake_prometheus: FakePrometheus) -> None:
    response = client.get("/api/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True and body["error"] is None
    assert body["message"] == "Service is healthy"
    data = body["data"]
    assert data["status"] == "healthy"
    assert data["version"] == __version__
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", data["timestamp"])
    assert data["prometheus"]["url"] == "http://prometheus.test:9090"
    assert fake_prometheus.queries == ["vector(1)"]  # never `up`


def test_healthz_is_503_when_prometheus_is_unreachable(
        client: FlaskClient, fake_prometheus: FakePrometheus) -> None:
    def refuse():
        raise requests.ConnectionError("Connection refused")

    fake_prometheus.failure = refuse
    response = client.get("/api/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body == {"success": False, "data": None, "message": None,
                    "error": "Prometheus at http://prometheus.test:9090 is unreachable: "
                             "connection refused"}


def test_livez_does_not_ask_prometheus(client: FlaskClient,
                                       fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.failure = lambda: (503, {}, "down")
    response = client.get("/api/livez")
    assert response.status_code == 200
    assert response.get_json()["data"] == {"status": "alive"}
    assert fake_prometheus.queries == []


def test_unknown_path_is_a_404_envelope(client: FlaskClient) -> None:
    response = client.get("/api/v1/gpu/nope")
    assert response.status_code == 404
    assert response.content_type == "application/json"
    body = response.get_json()
    assert body["success"] is False and body["data"] is None and "no such endpoint" in body["error"]


def test_wrong_method_is_a_405_envelope_with_allow(client: FlaskClient) -> None:
    response = client.delete("/api/v1/gpu/metrics")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.get_json()["success"] is False


def test_cors_preflight_and_simple_requests(client: FlaskClient) -> None:
    preflight = client.options("/api/v1/gpu/metrics", headers={
        "Origin": "https://dash.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    simple = client.get("/api/livez", headers={"Origin": "https://dash.example"})
    assert simple.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_allowlist_admits_only_listed_origins(make_app: Callable[..., Flask],
                                                   fake_prometheus: FakePrometheus) -> None:
    client = make_app(CORS_ORIGINS="https://ok.example").test_client()
    allowed = client.get("/api/livez", headers={"Origin": "https://ok.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    denied = client.get("/api/livez", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_debug_endpoints_are_404_unless_enabled(make_app: Callable[..., Flask],
                                                fake_prometheus: FakePrometheus) -> None:
    assert make_app().test_client().get("/debug/vars").status_code == 404
    client = make_app(ENABLE_DEBUG_ENDPOINTS="true").test_client()
    client.get("/api/livez")
    data = client.get("/debug/vars").get_json()["data"]
    assert data["threads"] >= 1 and data["memstats"]["rss_bytes"] > 0
    assert data["requests_by_status"]["200"] >= 1
    profile = client.get("/debug/pprof/profile?seconds=0.2").get_json()
    assert profile["success"] is True and profile["data"]["thread_samples"] >= 0
    assert client.get("/debug/pprof/threads").get_json()["success"] is True


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "eighty"), ("PORT", "70000"), ("PROMETHEUS_URL", "ftp://x"),
    ("PROMETHEUS_URL", "not a url"), ("LOG_LEVEL", "loud"), ("PROMETHEUS_TIMEOUT", "-1"),
    ("CORS_ORIGINS", "evil"), ("ENABLE_DEBUG_ENDPOINTS", "maybe"), ("QUERY_THREADS", "0"),
])
def test_bad_configuration_stops_startup_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        create_app({name: value})


def test_prometheus_url_keeps_a_path_prefix(make_app: Callable[..., Flask]) -> None:
    app = make_app(PROMETHEUS_URL="http://vm.test:8481/select/0/prometheus/")
    assert app.extensions["gpu_monitor"].prometheus.settings.base_url == (
        "http://vm.test:8481/select/0/prometheus")


def test_every_response_carries_security_headers(client: FlaskClient) -> None:
    for path in ("/api/livez", "/nope", "/api/v1/gpu/metrics?bad=1"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"


def test_oversized_query_string_is_a_414_envelope(client: FlaskClient) -> None:
    response = client.get("/api/v1/gpu/metrics?" + "&".join(["node=" + "x" * 200] * 30))
    assert response.status_code == 414
    body = response.get_json()
    assert body["success"] is False and "query string" in body["error"]


def test_oversized_headers_are_a_431_envelope(client: FlaskClient) -> None:
    response = client.get("/api/livez", headers={f"X-Filler-{i}": "y" * 500 for i in range(20)})
    assert response.status_code == 431
    assert response.get_json()["success"] is False


@pytest.mark.parametrize("failure", [
    lambda: (200, {}, "<html>proxy login</html>"),
    lambda: (503, {}, '{"status":"error","errorType":"timeout","error":"slow"}'),
])
def test_healthz_is_503_whenever_prometheus_fails(client: FlaskClient,
                                                  fake_prometheus: FakePrometheus,
                                                  failure) -> None:
    fake_prometheus.failure = failure
    response = client.get("/api/healthz")
    assert response.status_code == 503
    assert "Prometheus at http://prometheus.test:9090" in response.get_json()["error"]
