"""The GPU endpoints through the Flask test client, against a stubbed Prometheus."""

from __future__ import annotations

import re

import pytest
import requests
from flask.testing import FlaskClient

from tests.factories import SAMPLE_TIME
from tests.fakes import FakePrometheus

GIB = 1024**3
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GPU_FIELDS = {
    "node_name", "gpu_index", "gpu_name", "utilization", "memory_used", "memory_total",
    "memory_free", "memory_utilization", "temperature", "timestamp", "uuid", "power_usage",
    "pod", "namespace", "container", "mig_profile", "mig_instance", "pods", "health",
    "state", "idle_seconds",
}
PROCESS_FIELDS = {
    "node_name", "gpu_index", "pid", "process_name", "user", "command", "gpu_memory", "cpu",
    "memory", "timestamp", "gpu_uuid", "pod", "namespace",
}


def publish_gpu(prom: FakePrometheus, node: str, index: int, **values: float | str) -> None:
    labels = {"hostname": node, "gpu_id": str(index), "gpu_name": "NVIDIA H100 80GB HBM3"}
    names = {
        "utilization": "nvidia_gpu_utilization_percent",
        "used": "nvidia_gpu_used_memory_bytes",
        "total": "nvidia_gpu_total_memory_bytes",
        "free": "nvidia_gpu_free_memory_bytes",
        "mem_util": "nvidia_gpu_memory_utilization_percent",
        "temperature": "nvidia_gpu_temperature_celsius",
    }
    for key, value in values.items():
        prom.add(names[key], labels, value)


def assert_envelope(body: dict, success: bool) -> None:
    assert set(body) == {"success", "data", "message", "error"}
    assert body["success"] is success


def test_metrics_returns_every_field_of_every_gpu(client: FlaskClient,
                                                  fake_prometheus: FakePrometheus) -> None:
    publish_gpu(fake_prometheus, "node-b", 0, utilization=12, used=1 * GIB, total=80 * GIB,
                free=79 * GIB, mem_util=1.25, temperature=40)
    publish_gpu(fake_prometheus, "node-a", 3, utilization=99.5, used=60 * GIB, total=80 * GIB,
                free=20 * GIB, mem_util=75, temperature=81)
    response = client.get("/api/v1/gpu/metrics")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    assert_envelope(body, True)
    assert body["error"] is None
    assert body["message"] == "GPU metrics retrieved successfully"
    first, second = body["data"]
    assert set(first) == GPU_FIELDS
    assert (first["node_name"], first["gpu_index"]) == ("node-a", 3)
    assert (second["node_name"], second["gpu_index"]) == ("node-b", 0)
    assert first["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert first["utilization"] == 99.5
    assert first["memory_used"] == 60 * GIB
    assert first["memory_total"] == 80 * GIB
    assert first["memory_free"] == 20 * GIB
    assert first["memory_utilization"] == 75.0
    assert first["temperature"] == 81.0
    assert RFC3339.match(first["timestamp"])
    assert first["timestamp"] == "2025-11-30T00:00:00.123Z"  # the sample's time
    assert first["pod"] is None and first["uuid"] is None
    assert first["pods"] == []  # no workload labels: an empty list, not null
    # This exporter has no health signal: the verdict says so instead of claiming ok.
    assert first["health"]["status"] == "unknown"
    assert [r["code"] for r in first["health"]["reasons"]] == ["no_health_signals"]


def test_metrics_of_an_empty_cluster_is_an_empty_list(client: FlaskClient) -> None:
    body = client.get("/api/v1/gpu/metrics").get_json()
    assert_envelope(body, True)
    assert body["data"] == []


def test_metrics_reports_missing_and_nan_values_as_null(client: FlaskClient,
                                                        fake_prometheus: FakePrometheus) -> None:
    publish_gpu(fake_prometheus, "n", 0, utilization="NaN", used=GIB, total=2 * GIB,
                temperature="+Inf")
    (gpu,) = client.get("/api/v1/gpu/metrics").get_json()["data"]
    assert gpu["utilization"] is None
    assert gpu["temperature"] is None
    assert gpu["memory_free"] == GIB  # derived: total - used
    assert gpu["memory_utilization"] == 50.0  # derived: used / total


def test_metrics_accepts_the_node_and_gpu_label_spelling(client: FlaskClient,
                                                         fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.add("nvidia_gpu_utilization_percent",
                        {"node": "node-x", "gpu": "7", "gpu_name": "Tesla T4"}, 5)
    (gpu,) = client.get("/api/v1/gpu/metrics").get_json()["data"]
    assert (gpu["node_name"], gpu["gpu_index"], gpu["utilization"]) == ("node-x", 7, 5.0)


def test_metrics_filter_by_node_is_pushed_into_promql_escaped(
        client: FlaskClient, fake_prometheus: FakePrometheus) -> None:
    publish_gpu(fake_prometheus, "node-a", 0, utilization=1)
    publish_gpu(fake_prometheus, "node-b", 0, utilization=2)
    body = client.get('/api/v1/gpu/metrics?node=node-b&node=a"}').get_json()
    assert [g["node_name"] for g in body["data"]] == ["node-b"]
    data_queries = [q for q in fake_prometheus.queries
                    if "nvidia_gpu_" in q and "count" not in q and "timestamp(" not in q]
    # Only the published metric is read, grouped by the labels that exist; `a"}` sorts
    # first, its quote escaped for the string and its brace for the regex. The idle
    # window's maximum is narrowed the same way.
    assert data_queries == [
        'max by (hostname, gpu_id, gpu_name) '
        '(nvidia_gpu_utilization_percent{hostname=~"a\\"\\\\}|node-b"})',
        'max by (hostname, gpu_id, gpu_name) '
        '(max_over_time(nvidia_gpu_utilization_percent{hostname=~"a\\"\\\\}|node-b"}[1800s]))',
    ]


def test_processes_returns_every_field(client: FlaskClient,
                                       fake_prometheus: FakePrometheus) -> None:
    labels = {"hostname": "node-a", "gpu_id": "1", "pid": "4242", "process_name": "python3",
              "user": "alice", "command": "python3 train.py --epochs 3"}
    publish_gpu(fake_prometheus, "node-a", 1, utilization=50)
    fake_prometheus.add("nvidia_gpu_process_gpu_memory_bytes", labels, 3 * GIB)
    fake_prometheus.add("nvidia_gpu_process_cpu_percent", labels, 101.5)
    fake_prometheus.add("nvidia_gpu_process_memory_percent", labels, 2.25)
    body = client.get("/api/v1/gpu/processes").get_json()
    assert_envelope(body, True)
    assert body["message"] == "GPU processes retrieved successfully"
    (proc,) = body["data"]
    assert set(proc) == PROCESS_FIELDS
    assert proc["node_name"] == "node-a" and proc["gpu_index"] == 1 and proc["pid"] == 4242
    assert proc["process_name"] == "python3" and proc["user"] == "alice"
    assert proc["command"] == "python3 train.py --epochs 3"
    assert proc["gpu_memory"] == 3 * GIB
    assert proc["cpu"] == 101.5 and proc["memory"] == 2.25
    assert RFC3339.match(proc["timestamp"])


def test_processes_of_an_idle_cluster_is_an_empty_list(client: FlaskClient) -> None:
    body = client.get("/api/v1/gpu/processes").get_json()
    assert body["data"] == [] and body["success"] is True


@pytest.mark.parametrize("query", [
    "?nodes=a",                      # unknown parameter
    "?node=",                        # empty value
    "?node=" + "x" * 300,            # too long
    "?node=a%00b",                   # control character
    "?" + "&".join(f"node=n{i}" for i in range(51)),  # too many values
])
def test_metrics_rejects_bad_query_parameters_with_400(client: FlaskClient, query: str) -> None:
    for path in ("/api/v1/gpu/metrics", "/api/v1/gpu/processes"):
        response = client.get(path + query)
        assert response.status_code == 400
        body = response.get_json()
        assert_envelope(body, False)
        assert body["data"] is None and body["message"] is None
        assert body["error"].startswith("invalid query parameters: ")


@pytest.mark.parametrize(("exc", "status", "words"), [
    (requests.ConnectionError("Connection refused"), 503, "unreachable"),
    (requests.ReadTimeout("read timed out"), 504, "did not answer"),
])
def test_metrics_maps_transport_failures(client: FlaskClient, fake_prometheus: FakePrometheus,
                                         exc: Exception, status: int, words: str) -> None:
    def explode():
        raise exc

    fake_prometheus.failure = explode
    response = client.get("/api/v1/gpu/metrics")
    assert response.status_code == status
    body = response.get_json()
    assert_envelope(body, False)
    assert words in body["error"] and "prometheus.test" in body["error"]


@pytest.mark.parametrize(("status", "body", "expected"), [
    (502, "<html><body>Bad Gateway</body></html>", 502),
    (503, "<html>Service Unavailable</html>", 503),
    (500, "oops", 502),
    (200, "{not json", 502),
    (422, '{"status":"error","errorType":"execution","error":"many-to-many matching"}', 502),
    (503, '{"status":"error","errorType":"timeout","error":"query timed out"}', 504),
])
def test_metrics_maps_prometheus_errors_to_honest_statuses(
        client: FlaskClient, fake_prometheus: FakePrometheus,
        status: int, body: str, expected: int) -> None:
    fake_prometheus.failure = lambda: (status, {"Content-Type": "text/html"}, body)
    response = client.get("/api/v1/gpu/metrics")
    assert response.status_code == expected
    envelope = response.get_json()
    assert_envelope(envelope, False)
    assert "Prometheus" in envelope["error"]
    assert "<html>" not in envelope["error"]


def test_unexpected_errors_are_500_without_internals(client: FlaskClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("app.api.gpu.list_gpus", broken)
    response = client.get("/api/v1/gpu/metrics")
    assert response.status_code == 500
    body = response.get_json()
    assert_envelope(body, False)
    assert "secret" not in body["error"] and "Traceback" not in body["error"]


def test_sample_time_is_prometheus_time_not_server_time(client: FlaskClient,
                                                        fake_prometheus: FakePrometheus) -> None:
    publish_gpu(fake_prometheus, "n", 0, utilization=1)
    (gpu,) = client.get("/api/v1/gpu/metrics").get_json()["data"]
    assert gpu["timestamp"].startswith("2025-11-30T00:00:00")
    assert SAMPLE_TIME  # the factories' fixed sample time, far from now
