"""The OpenAPI document describes the API, and the API keeps to it under fuzzing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings

from app import create_app
from tests.fakes import PROM_URL, FakePrometheus


def test_openapi_document_describes_every_public_endpoint(client) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/healthz", "/api/livez", "/api/v1/gpu/metrics", "/api/v1/gpu/processes",
        "/api/v1/capabilities", "/api/openapi.json"}
    metrics = document["paths"]["/api/v1/gpu/metrics"]["get"]
    assert {p["name"] for p in metrics["parameters"]} == {
        "node", "namespace", "pod", "gpu_name", "uuid"}
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
    return make_app()


POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# Valid input everywhere; invalid input where there are parameters to get wrong.
OPERATIONS = [("GET", path, POSITIVE) for path in (
    "/api/healthz", "/api/livez", "/api/v1/gpu/metrics", "/api/v1/gpu/processes",
    "/api/v1/capabilities", "/api/openapi.json")] + [
    ("GET", "/api/v1/gpu/metrics", NEGATIVE), ("GET", "/api/v1/gpu/processes", NEGATIVE)]


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_api_keeps_to_its_openapi_document_under_fuzzing(
        make_app: Callable[..., Flask], fake_prometheus: FakePrometheus,
        method: str, path: str, mode: schemathesis.GenerationMode) -> None:
    app = _fuzz_app(make_app, fake_prometheus)
    # Invalid input is rejected with 400, or 414/431 when it is also oversized.
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": ["400", "414", "431"]}}})
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
        case.validate_response(response)
        if path != "/api/openapi.json" and response.status_code != 304:
            assert set(response.json()) == {"success", "data", "message", "error"}

    check()


def test_create_app_is_importable_for_the_fuzzer() -> None:
    assert create_app({"PROMETHEUS_URL": PROM_URL}).url_map is not None
