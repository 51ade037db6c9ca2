"""The OpenAPI document describes the API, and the API keeps to it under fuzzing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings

from app import create_app
from app.api import openapi
from tests.fakes import PROM_URL, FakePrometheus
from tests.range_prometheus import RangePrometheus, range_series


def test_openapi_document_describes_every_public_endpoint(client) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/healthz", "/api/livez", "/api/v1/gpu/metrics", "/api/v1/gpu/processes",
        "/api/v1/gpu/history", "/api/v1/gpu/health", "/api/v1/capabilities",
        "/api/v1/cluster", "/api/v1/nodes", "/api/v1/namespaces",
        "/api/openapi.json", "/metrics", "/"}
    page = document["paths"]["/"]["get"]["responses"]["200"]["content"]
    assert page == {"text/html": {"schema": {"type": "string"}}}
    for path in ("/api/v1/cluster", "/api/v1/nodes", "/api/v1/namespaces"):
        fleet = document["paths"][path]["get"]
        assert {p["name"] for p in fleet["parameters"]} == {
            "node", "namespace", "gpu_name", "window", "time"}, path
    scrape = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert scrape == {"text/plain": {"schema": {"type": "string"}}}
    health = document["paths"]["/api/v1/gpu/health"]["get"]
    assert {p["name"] for p in health["parameters"]} == {
        "node", "namespace", "pod", "gpu_name", "uuid", "time", "window"}
    metrics = document["paths"]["/api/v1/gpu/metrics"]["get"]
    assert {p["name"] for p in metrics["parameters"]} == {
        "node", "namespace", "pod", "gpu_name", "uuid", "time"}
    history = document["paths"]["/api/v1/gpu/history"]["get"]
    assert {p["name"] for p in history["parameters"]} == {
        "node", "namespace", "pod", "gpu_name", "uuid", "start", "end", "range", "step",
        "points", "fields", "group_by", "agg"}
    assert {"200", "304", "400", "502", "503", "504"} <= set(metrics["responses"])
    gpu = document["components"]["schemas"]["Gpu"]["properties"]
    assert gpu["memory_used"] == {"type": "integer", "description": "Bytes", "nullable": True}
    assert gpu["timestamp"]["type"] == "string" and gpu["timestamp"]["format"] == "date-time"


def _fuzz_app(make_app: Callable[..., Flask], prom: FakePrometheus) -> Flask:
    labels = {"Hostname": "node-a", "gpu": "0", "UUID": "GPU-1", "modelName": "NVIDIA A100",
              "exported_pod": "train-0", "exported_namespace": "ml"}
    prom.add("DCGM_FI_DEV_FB_USED", labels, 1024)
    prom.add("DCGM_FI_DEV_FB_FREE", labels, "NaN")
    prom.add("DCGM_FI_DEV_GPU_UTIL", labels, 55)
    proc = {"hostname": "node-a", "index": "0", "uuid": "GPU-1", "pid": "42",
            "username": "root", "devicename": "NVIDIA A100"}
    prom.add("gpu_utilization_Percentage", proc | {"pid": ""}, 3)
    prom.add("process_gpu_memory_MiB", proc, 100)
    history = RangePrometheus(prom)
    # Any range query: one GPU series without samples (the shape, not the values).
    history.answer = lambda query: [range_series(labels, [])]
    return make_app()


POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# Valid input everywhere; invalid input where there are parameters to get wrong.
OPERATIONS = [("GET", path, POSITIVE) for path in (
    "/api/healthz", "/api/livez", "/api/v1/gpu/metrics", "/api/v1/gpu/processes",
    "/api/v1/gpu/history", "/api/v1/gpu/health", "/api/v1/capabilities",
    "/api/v1/cluster", "/api/v1/nodes", "/api/v1/namespaces",
    "/api/openapi.json", "/metrics", "/")] + [
    ("GET", path, NEGATIVE) for path in (
        "/api/v1/gpu/metrics", "/api/v1/gpu/processes", "/api/v1/gpu/history",
        "/api/v1/gpu/health", "/api/v1/cluster", "/api/v1/nodes", "/api/v1/namespaces")]
# Answered as they are: the document itself, and the scrape (text, for Prometheus).
NOT_ENVELOPED = frozenset({"/api/openapi.json", "/metrics", "/"})
# Rules the document cannot state (an instant not in the future, start before end, at most
# 11,000 timestamps): input valid by the schema may break them, and gets a 400 naming them.
RULED = {"/api/v1/gpu/metrics": ("time",), "/api/v1/gpu/health": ("time", "window"),
         "/api/v1/gpu/history": ("start", "end", "range", "step"),
         **{path: ("time", "window") for path in (
             "/api/v1/cluster", "/api/v1/nodes", "/api/v1/namespaces")}}


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_api_keeps_to_its_openapi_document_under_fuzzing(
        make_app: Callable[..., Flask], fake_prometheus: FakePrometheus,
        method: str, path: str, mode: schemathesis.GenerationMode) -> None:
    app = _fuzz_app(make_app, fake_prometheus)
    # Invalid input is rejected with 400, or 414/431 when it is also oversized.
    checks: dict[str, Any] = {"negative_data_rejection": {
        "expected-statuses": ["400", "414", "431"]}}
    if path in RULED:
        checks["positive_data_acceptance"] = {"expected-statuses": ["200", "304", "400"]}
    config = schemathesis.Config.from_dict({"checks": checks})
    operation = schemathesis.openapi.from_wsgi("/api/openapi.json", app,
                                               config=config)[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        # The WSGI transport does not decode compressed bodies: ask for none.
        response = case.call(headers={"Accept-Encoding": "identity"})
        # Prometheus (stubbed) is healthy here, so no 5xx at all is acceptable.
        assert response.status_code < 500, response.text
        if mode == POSITIVE and response.status_code == 400:
            error = response.json()["error"]
            assert any(f" {name}: " in error for name in RULED[path]), error
        case.validate_response(response)
        if path not in NOT_ENVELOPED and response.status_code != 304:
            assert set(response.json()) == {"success", "data", "message", "error"}

    check()


def test_create_app_is_importable_for_the_fuzzer() -> None:
    assert create_app({"PROMETHEUS_URL": PROM_URL}).url_map is not None


# -- generated from the views, built once ---------------------------------------------------


def test_openapi_document_is_built_once_per_app(make_app: Callable[..., Flask],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[Flask] = []
    real = openapi.build_spec

    def counting(app: Flask) -> dict[str, Any]:
        builds.append(app)
        return real(app)

    monkeypatch.setattr(openapi, "build_spec", counting)
    app = make_app()
    client = app.test_client()
    bodies = [client.get("/api/openapi.json").get_data() for _ in range(3)]
    assert builds == [app]
    assert bodies[0] == bodies[1] == bodies[2]
    assert json.loads(bodies[0]) == app.extensions[openapi.DOCUMENT_KEY]


def test_every_public_route_is_documented_and_the_debug_ones_are_not(
        make_app: Callable[..., Flask]) -> None:
    app = make_app(ENABLE_DEBUG_ENDPOINTS="true")
    document = app.test_client().get("/api/openapi.json").get_json()
    # The dashboard's assets (ui.static) are files the page loads, not operations.
    routes = {rule.rule for rule in app.url_map.iter_rules()
              if rule.endpoint not in ("static", "ui.static")}
    assert {r for r in routes if r.startswith("/debug/")} == {
        "/debug/vars", "/debug/pprof/threads", "/debug/pprof/profile"}
    assert set(document["paths"]) == {r for r in routes if not r.startswith("/debug/")}


def test_each_success_envelope_wraps_the_schema_its_view_declares(client) -> None:
    document = client.get("/api/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    expected = {
        "/api/healthz": ("HealthEnvelope", {"$ref": "#/components/schemas/Health"}),
        "/api/livez": ("LivenessEnvelope", {"$ref": "#/components/schemas/Liveness"}),
        "/api/v1/capabilities": ("CapabilitiesEnvelope",
                                 {"$ref": "#/components/schemas/Capabilities"}),
        "/api/v1/gpu/metrics": ("GpuListEnvelope", {
            "type": "array", "items": {"$ref": "#/components/schemas/Gpu"}}),
        "/api/v1/gpu/processes": ("GpuProcessListEnvelope", {
            "type": "array", "items": {"$ref": "#/components/schemas/GpuProcess"}}),
    }
    for path, (name, data) in expected.items():
        ok = document["paths"][path]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{name}"}, path
        envelope = schemas[name]
        assert envelope["properties"]["data"] == data, path
        assert set(envelope["required"]) == {"success", "data", "message", "error"}


def test_only_the_cached_lists_document_validators_and_every_route_the_guards(client) -> None:
    document = client.get("/api/openapi.json").get_json()
    cached = {"/api/v1/gpu/metrics", "/api/v1/gpu/processes", "/api/v1/gpu/history",
              "/api/v1/gpu/health", "/api/v1/cluster", "/api/v1/nodes",
              "/api/v1/namespaces"}
    for path, item in document["paths"].items():
        responses = item["get"]["responses"]
        assert {"414", "431"} <= set(responses), path
        assert ("304" in responses) == (path in cached), path
        headers = set(responses["200"].get("headers", {}))
        assert headers == ({"ETag", "Cache-Control", "Age", "Cache-Status", "X-Request-ID"}
                           if path in cached else {"X-Request-ID"}), path
        assert all("X-Request-ID" in answer["headers"] for answer in responses.values()), path
    health = document["paths"]["/api/healthz"]["get"]["responses"]
    assert set(health) == {"200", "400", "503", "414", "431"}
    assert health["503"]["description"] == "Prometheus is unreachable, too slow or failing"


def test_operation_leaves_the_view_itself_unchanged() -> None:
    def view() -> str:
        return "answer"

    assert openapi.Operation("A view", ok="Fine")(view) is view
    assert view() == "answer"
