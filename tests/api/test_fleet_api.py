"""The fleet endpoints over a stubbed Prometheus: arguments, kube-state-metrics or not,
errors in the envelope. Their figures are checked against a real Prometheus in
tests/integration/test_fleet.py."""

from __future__ import annotations

import time

import pytest
import requests
from flask.testing import FlaskClient

from tests.api.test_gpu_api import assert_envelope
from tests.fakes import FakePrometheus

FLEET = ("/api/v1/cluster", "/api/v1/nodes", "/api/v1/namespaces")
GPU = {"Hostname": "node-a", "gpu": "0", "UUID": "GPU-1", "modelName": "Tesla T4",
       "exported_pod": "train-0", "exported_namespace": "ml"}


def publish(prom: FakePrometheus) -> None:
    prom.add("DCGM_FI_DEV_GPU_UTIL", GPU, 55)
    prom.add("DCGM_FI_DEV_FB_USED", GPU, 1024)
    prom.add("DCGM_FI_DEV_POWER_USAGE", GPU, 70)


@pytest.mark.parametrize("path", FLEET)
def test_without_kube_state_metrics_the_answer_has_null_allocation(
        client: FlaskClient, fake_prometheus: FakePrometheus, path: str) -> None:
    publish(fake_prometheus)
    response = client.get(path)
    assert response.status_code == 200
    body = response.get_json()
    assert_envelope(body, True)
    data = body["data"]
    if path == "/api/v1/cluster":
        assert data["allocation"]["kube_state_metrics"] is False
        assert data["allocation"]["requested"] is None
        assert data["allocation"]["held"] == 1
        assert data["gpus"]["total"] == 1 and data["window"] == "1h"
    elif path == "/api/v1/nodes":
        assert [n["node_name"] for n in data] == ["node-a"]
        assert data[0]["allocatable"] is None
    else:
        assert [n["namespace"] for n in data] == ["ml"]
        assert data[0]["gpus_requested"] is None and data[0]["gpus_held"] == 1


def test_with_kube_state_metrics_its_queries_carry_the_filters(
        client: FlaskClient, fake_prometheus: FakePrometheus) -> None:
    publish(fake_prometheus)
    fake_prometheus.add("kube_pod_status_phase",
                        {"namespace": "ml", "pod": "train-0", "phase": "Running"}, 1)
    data = client.get("/api/v1/cluster?node=node-a&window=15m").get_json()["data"]
    assert data["allocation"]["kube_state_metrics"] is True
    assert data["window"] == "15m"
    asked = [q for q in fake_prometheus.queries if "kube_pod_container_resource_requests" in q]
    assert asked and all('node="node-a"' in q for q in asked)


@pytest.mark.parametrize("path", FLEET)
@pytest.mark.parametrize(("query", "words"), [
    ("window=1m", "window: must be between 5m and 7d"),
    ("window=8d", "window: must be between 5m and 7d"),
    ("window=soon", "window: must be a positive duration"),
    (f"time={int(time.time()) + 3600}", "time: is in the future"),
    ("pod=x", "pod: unknown parameter"),
])
def test_bad_arguments_are_400_in_the_envelope(client: FlaskClient, path: str, query: str,
                                               words: str) -> None:
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert_envelope(body, False)
    assert words in body["error"]


@pytest.mark.parametrize("path", FLEET)
def test_prometheus_unreachable_is_a_503(client: FlaskClient, fake_prometheus: FakePrometheus,
                                         path: str) -> None:
    publish(fake_prometheus)

    def refuse() -> tuple[int, dict[str, str], str]:
        raise requests.ConnectionError("Connection refused")

    fake_prometheus.failure = refuse
    response = client.get(path)
    assert response.status_code == 503
    body = response.get_json()
    assert_envelope(body, False)
    assert "unreachable" in body["error"]


def test_capabilities_say_what_the_fleet_view_lacks(client: FlaskClient,
                                                    fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.add("nvidia_smi_utilization_gpu_ratio", {"uuid": "1", "node": "n"}, 0.5)
    fake_prometheus.add("nvidia_smi_power_draw_watts", {"uuid": "1", "node": "n"}, 60)
    fake_prometheus.add("nvidia_smi_gpu_info", {"uuid": "1", "node": "n", "name": "T4",
                                                "index": "0"}, 1)
    data = client.get("/api/v1/capabilities").get_json()["data"]
    fleet = data["fleet"]
    assert fleet["kube_state_metrics"] is False
    assert fleet["idle_window"] == "30m" and fleet["idle_utilization_percent"] == 5.0
    assert fleet["dialects"] == [{"dialect": "nvidia-smi", "states": "unknown",
                                  "energy": "power integral"}]
    assert any("install" in note for note in fleet["notes"])
    assert any("names no pods" in note for note in data["notes"])
