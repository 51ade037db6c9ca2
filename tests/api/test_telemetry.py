"""The service's own observability through the test client: /metrics, request ids, JSON logs."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.fakes import FakePrometheus
from tests.scrape import Samples, label_values, parse_samples, value, with_labels

DCGM = {"Hostname": "node-a", "gpu": "0", "UUID": "GPU-1", "modelName": "NVIDIA A100"}


@pytest.fixture
def gpu_prometheus(fake_prometheus: FakePrometheus) -> FakePrometheus:
    fake_prometheus.add("DCGM_FI_DEV_GPU_UTIL", DCGM, 55)
    fake_prometheus.add("DCGM_FI_DEV_FB_USED", DCGM, 1024)
    return fake_prometheus


def data_query_ids(prom: FakePrometheus) -> list[str | None]:
    """The X-Request-ID of every data query (not detection's, not the probe's)."""
    data = set(prom.data_queries())
    ids = [rid for query, rid in zip(prom.queries, prom.request_ids, strict=True)
           if query in data]
    assert ids, "no data query was sent"
    return ids


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.get_data(as_text=True))


def test_metrics_are_the_exposition_format_not_the_envelope_and_never_cached(
        client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers
    assert response.get_data(as_text=True).startswith("# HELP")
    samples = parse_samples(response.get_data(as_text=True))
    (build,) = with_labels(samples, "gpu_monitor_build_info")
    assert dict(build)["version"] == "0.1.0"
    openmetrics = client.get("/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.mimetype == "application/openmetrics-text"
    assert openmetrics.get_data(as_text=True).endswith("# EOF\n")


def test_requests_are_counted_by_route_template_never_by_path_or_filter(
        make_app: Callable[..., Flask], gpu_prometheus: FakePrometheus) -> None:
    client = make_app(CACHE_TTL="0").test_client()
    for node in ("node-a", "secret-node-name"):
        assert client.get(f"/api/v1/gpu/metrics?node={node}").status_code == 200
    assert client.get("/api/v1/gpu/metrics?node=").status_code == 400
    assert client.get("/no/such/path/123").status_code == 404
    assert client.post("/api/livez").status_code == 405
    assert client.open("/api/livez", method="BREW").status_code == 405
    samples = scrape(client)
    requests_total = "gpu_monitor_http_requests_total"
    assert value(samples, requests_total, route="/api/v1/gpu/metrics", method="GET",
                 status="200") == 2
    assert value(samples, requests_total, route="/api/v1/gpu/metrics", method="GET",
                 status="400") == 1
    assert value(samples, requests_total, route="unmatched", method="GET", status="404") == 1
    assert value(samples, requests_total, route="unmatched", method="POST",
                 status="405") == 1
    assert value(samples, requests_total, route="unmatched", method="other",
                 status="405") == 1
    assert value(samples, "gpu_monitor_http_request_duration_seconds_count",
                 route="/api/v1/gpu/metrics", method="GET") == 3
    assert label_values(samples, "route") <= {"/api/v1/gpu/metrics", "unmatched", "/metrics"}
    text = client.get("/metrics").get_data(as_text=True)
    assert "secret-node-name" not in text and "/no/such" not in text and "BREW" not in text


def test_prometheus_calls_are_counted_by_endpoint_and_outcome(
        make_app: Callable[..., Flask], gpu_prometheus: FakePrometheus) -> None:
    client = make_app(CACHE_TTL="0", METRICS_DIALECT="dcgm").test_client()
    assert client.get("/api/v1/gpu/metrics").status_code == 200
    queries_ok = len(gpu_prometheus.queries)
    assert queries_ok > 0
    gpu_prometheus.failure = lambda: (400, {}, json.dumps(
        {"status": "error", "errorType": "bad_data", "error": "parse error"}))
    assert client.get("/api/v1/gpu/metrics").status_code == 502
    failed = len(gpu_prometheus.queries) - queries_ok
    samples = scrape(client)
    calls = "gpu_monitor_prometheus_requests_total"
    assert value(samples, calls, endpoint="query", outcome="success") == queries_ok
    assert value(samples, calls, endpoint="query", outcome="query_error") == failed
    assert value(samples, "gpu_monitor_prometheus_request_duration_seconds_count",
                 endpoint="query") == queries_ok + failed


def test_an_unreachable_prometheus_is_counted_as_unavailable(
        make_app: Callable[..., Flask]) -> None:
    client = make_app(PROMETHEUS_URL="http://127.0.0.1:9", METRICS_DIALECT="legacy",
                      CACHE_TTL="0").test_client()
    assert client.get("/api/healthz").status_code == 503
    samples = scrape(client)
    assert value(samples, "gpu_monitor_prometheus_requests_total", endpoint="query",
                 outcome="unavailable") == 1


def test_cache_hits_and_misses_are_counted(make_app: Callable[..., Flask],
                                          gpu_prometheus: FakePrometheus) -> None:
    client = make_app(CACHE_TTL="60").test_client()
    for _ in range(3):
        assert client.get("/api/v1/gpu/metrics").status_code == 200
    assert client.get("/api/v1/gpu/processes").status_code == 200
    samples = scrape(client)
    assert value(samples, "gpu_monitor_cache_lookups_total", result="miss") == 2
    assert value(samples, "gpu_monitor_cache_lookups_total", result="hit") == 2


def test_detected_dialects_are_an_info_metric(client: FlaskClient,
                                             gpu_prometheus: FakePrometheus) -> None:
    assert client.get("/api/v1/capabilities").status_code == 200
    samples = scrape(client)
    dialects = {dict(ls)["dialect"]: v for ls, v in
                with_labels(samples, "gpu_monitor_dialect_info").items()}
    assert dialects["dcgm"] == 1
    assert dialects["nvitop"] == 0 and dialects["legacy"] == 0
    assert value(samples, "gpu_monitor_dialect_detections_total", outcome="success") == 1


def test_metrics_port_moves_metrics_off_the_api(make_app: Callable[..., Flask]) -> None:
    client = make_app(METRICS_PORT="9100").test_client()
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.get_json()["success"] is False


def test_a_request_id_is_accepted_returned_and_sent_to_prometheus(
        make_app: Callable[..., Flask], gpu_prometheus: FakePrometheus) -> None:
    client = make_app(CACHE_TTL="0", METRICS_DIALECT="dcgm").test_client()
    response = client.get("/api/v1/gpu/metrics", headers={"X-Request-ID": "trace-42.a"})
    assert response.headers["X-Request-ID"] == "trace-42.a"
    # Every query of the fan-out (run on the client's threads) carried it; detection,
    # shared by every request and run in its own thread, carries none.
    assert set(data_query_ids(gpu_prometheus)) == {"trace-42.a"}


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 200, "new\nline"])
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_new_one(
        make_app: Callable[..., Flask], gpu_prometheus: FakePrometheus,
        sent: str | None) -> None:
    client = make_app(CACHE_TTL="0", METRICS_DIALECT="dcgm").test_client()
    headers = {} if sent is None else {"X-Request-ID": sent}
    try:
        first = client.get("/api/v1/gpu/metrics", headers=headers)
    except ValueError:  # werkzeug's client refuses a header with a line break itself
        assert sent is not None and "\n" in sent
        return
    second = client.get("/api/v1/gpu/metrics", headers=headers)
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert ids[0] != ids[1] and all(len(i) == 32 and i.isalnum() for i in ids)
    assert set(data_query_ids(gpu_prometheus)) == set(ids)


def test_json_logs_are_one_object_per_line_with_the_request_id(
        make_app: Callable[..., Flask], gpu_prometheus: FakePrometheus,
        capsys: pytest.CaptureFixture[str]) -> None:
    client = make_app(LOG_FORMAT="json", CACHE_TTL="0", METRICS_DIALECT="dcgm").test_client()
    client.get("/api/v1/gpu/metrics?node=node-a", headers={"X-Request-ID": "abc-1"})
    gpu_prometheus.failure = lambda: (503, {}, "down")
    client.get("/api/v1/gpu/metrics", headers={"X-Request-ID": "abc-2"})
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all({"time", "level", "logger", "message", "request_id"} <= set(r)
                           for r in records)
    access = [r for r in records if r["logger"] == "app.access"]
    assert [(r["request_id"], r["status"], r["route"], r["path"], r["method"])
            for r in access] == [("abc-1", 200, "/api/v1/gpu/metrics", "/api/v1/gpu/metrics",
                                  "GET"),
                                 ("abc-2", 503, "/api/v1/gpu/metrics", "/api/v1/gpu/metrics",
                                  "GET")]
    assert all(isinstance(r["duration_ms"], float) for r in access)
    # The failure logged by the error handler carries the id of the request it failed.
    (warning,) = [r for r in records if r["level"] == "WARNING"]
    assert warning["request_id"] == "abc-2" and "upstream failure (503)" in warning["message"]
    assert records[0]["time"].endswith("+00:00")


def test_text_logs_stay_the_default(make_app: Callable[..., Flask],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    make_app().test_client().get("/api/livez")
    out = capsys.readouterr().out
    assert "INFO app.access: GET /api/livez 200 " in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[-1])


def test_a_bad_log_format_stops_start_up_naming_the_variable(
        make_app: Callable[..., Flask]) -> None:
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="LOG_FORMAT='yaml'"):
        make_app(LOG_FORMAT="yaml")
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        make_app(METRICS_PORT="8080")
