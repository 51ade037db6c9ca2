"""Filters reach Prometheus: the PromQL it receives carries each one as an escaped matcher.

The service filters the joined rows again in Python, and the stubbed Prometheus ignores
matchers, so the rows alone cannot tell whether a filter was pushed down. These tests read
the query text Prometheus received. They look for matchers, not whole queries, so that the
shape of each query may change while the narrowing stays.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.fakes import FakePrometheus
from tests.promql_text import carries, code_of, reads

A100 = "NVIDIA A100-SXM4-80GB"
T4 = "Tesla T4"
UUID_A = "GPU-0A1B2C3D-0000-4000-8000-00000000000A"
UUID_B = "GPU-0A1B2C3D-0000-4000-8000-00000000000B"
# One GPU per node; honorLabels: false, so the workload arrives as exported_* and the plain
# pod/namespace name the exporter's own pod.
DCGM_GPUS = (
    {"Hostname": "gpu-node-001", "gpu": "0", "UUID": UUID_A, "modelName": A100,
     "exported_pod": "train-0", "exported_namespace": "ml", "exported_container": "main",
     "pod": "dcgm-exporter-a", "namespace": "gpu-operator"},
    {"Hostname": "gpu-node-002", "gpu": "0", "UUID": UUID_B, "modelName": T4,
     "exported_pod": "serve-0", "exported_namespace": "web", "exported_container": "main",
     "pod": "dcgm-exporter-b", "namespace": "gpu-operator"},
)
DCGM_METRICS = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP")
NVITOP_PROCESS_METRICS = ("process_gpu_memory_MiB", "process_cpu_percent_Percentage",
                          "process_memory_percent_Percentage", "process_info_info")
# Hostile values and the PromQL string literal each must arrive as.
HOSTILE = {
    '"}': r'"\"}"',
    '\\"': r'"\\\""',
    'x"} or vector(1) or {"': r'"x\"} or vector(1) or {\""',
}


def reading(queries: list[str], *metrics: str) -> list[str]:
    """The queries that select any of `metrics`; fails if there are none."""
    found = [q for q in queries if any(reads(q, m) for m in metrics)]
    assert found, f"no query read {metrics}: {queries}"
    return found


def publish_dcgm(prom: FakePrometheus) -> None:
    for labels in DCGM_GPUS:
        for metric in DCGM_METRICS:
            prom.add(metric, labels, 40)


def publish_nvitop(prom: FakePrometheus) -> None:
    """The same two GPUs as DCGM_GPUS, as nvitop-exporter sees them, with one process each."""
    for pid, gpu in enumerate(DCGM_GPUS, start=100):
        device = {"hostname": gpu["Hostname"], "index": gpu["gpu"],
                  "devicename": gpu["modelName"], "uuid": gpu["UUID"]}
        for metric in ("gpu_utilization_Percentage", "gpu_memory_used_MiB"):
            prom.add(metric, device, 10)
        process = {**device, "pid": str(pid), "username": "alice"}
        for metric in NVITOP_PROCESS_METRICS[:-1]:
            prom.add(metric, process, 5)
        prom.add("process_info_info", {**process, "command": "python3 train.py"}, 1)


def publish_nvidia_smi(prom: FakePrometheus) -> None:
    """nvidia_gpu_exporter: bare lower-case UUIDs; name and index only on the info metric."""
    for pid, (node, uuid, name) in enumerate(
            (("gpu-node-001", UUID_A, A100), ("gpu-node-002", UUID_B, T4)), start=100):
        bare = uuid.lower().removeprefix("gpu-")
        device = {"kubernetes_node": node, "uuid": bare}
        prom.add("nvidia_smi_memory_used_bytes", device, 1024)
        prom.add("nvidia_smi_gpu_info", {**device, "name": name, "index": "0"}, 1)
        prom.add("nvidia_smi_compute_app_used_memory_bytes",
                 {**device, "pid": str(pid), "process_name": "python3"}, 512)


def get_data(client: FlaskClient, path: str, **params: str) -> list[dict]:
    response = client.get(path, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


# -- /api/v1/gpu/metrics, dcgm-exporter ----------------------------------------------------


@pytest.mark.parametrize(("name", "value", "label", "literal"), [
    ("node", "gpu-node-001", "Hostname", '"gpu-node-001"'),
    ("gpu_name", A100, "modelName", f'"{A100}"'),
    ("uuid", UUID_A, "UUID", f'"{UUID_A}"'),
])
def test_gpu_identity_filters_reach_every_dcgm_query(
        client: FlaskClient, fake_prometheus: FakePrometheus,
        name: str, value: str, label: str, literal: str) -> None:
    publish_dcgm(fake_prometheus)
    rows = get_data(client, "/api/v1/gpu/metrics", **{name: value})
    assert [row["uuid"] for row in rows] == [UUID_A]
    queries = fake_prometheus.data_queries()
    # Every metric is narrowed, and so is the query that finds the pods.
    for query in reading(queries, *DCGM_METRICS):
        assert carries(query, label, literal), query
    assert len(reading(queries, *DCGM_METRICS)) == len(queries)


@pytest.mark.parametrize(("name", "value", "exported", "plain"), [
    ("namespace", "ml", "exported_namespace", "namespace"),
    ("pod", "train-0", "exported_pod", "pod"),
])
def test_gpu_pod_filters_reach_the_dcgm_pods_query_under_both_label_spellings(
        client: FlaskClient, fake_prometheus: FakePrometheus,
        name: str, value: str, exported: str, plain: str) -> None:
    publish_dcgm(fake_prometheus)
    rows = get_data(client, "/api/v1/gpu/metrics", **{name: value})
    assert [(row["uuid"], row["pod"], row["namespace"]) for row in rows] == [
        (UUID_A, "train-0", "ml")]
    queries = fake_prometheus.data_queries()
    literal = f'"{value}"'
    # honorLabels false: the workload's labels are exported_*.
    assert any(carries(q, exported, literal) for q in queries), queries
    # honorLabels true: the plain label, on series that have no exported_* pod.
    assert any(carries(q, plain, literal) and carries(q, "exported_pod", '""')
               for q in queries), queries


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(("name", "label"), [
    ("node", "Hostname"), ("gpu_name", "modelName"), ("uuid", "UUID"),
    ("namespace", "exported_namespace"), ("pod", "exported_pod"),
])
def test_hostile_gpu_filter_values_arrive_escaped(
        client: FlaskClient, fake_prometheus: FakePrometheus,
        name: str, label: str, value: str) -> None:
    publish_dcgm(fake_prometheus)
    assert get_data(client, "/api/v1/gpu/metrics", **{name: value}) == []
    queries = fake_prometheus.data_queries()
    assert any(carries(q, label, HOSTILE[value]) for q in queries), queries
    for query in queries:
        # Balanced literals, and nothing of the value left outside them.
        assert '"' not in code_of(query) and "vector" not in code_of(query), query


# -- /api/v1/gpu/metrics, nvidia_gpu_exporter ------------------------------------------------


def test_gpu_name_of_nvidia_smi_is_matched_on_its_info_metric_only(
        client: FlaskClient, fake_prometheus: FakePrometheus) -> None:
    publish_nvidia_smi(fake_prometheus)
    rows = get_data(client, "/api/v1/gpu/metrics", gpu_name=T4)
    assert [(row["node_name"], row["gpu_name"]) for row in rows] == [("gpu-node-002", T4)]
    queries = fake_prometheus.data_queries()
    (info,) = reading(queries, "nvidia_smi_gpu_info")
    assert carries(info, "name", f'"{T4}"'), info
    # The model name is not on the value series: a matcher there would match nothing.
    for query in reading(queries, "nvidia_smi_memory_used_bytes"):
        assert not carries(query, "name", f'"{T4}"'), query


def test_uuid_filter_is_spelt_like_nvidia_smi_on_every_query(
        client: FlaskClient, fake_prometheus: FakePrometheus) -> None:
    publish_nvidia_smi(fake_prometheus)
    rows = get_data(client, "/api/v1/gpu/metrics", uuid=UUID_B)
    assert [row["node_name"] for row in rows] == ["gpu-node-002"]
    queries = fake_prometheus.data_queries()
    bare = '"' + UUID_B.lower().removeprefix("gpu-") + '"'
    for query in reading(queries, "nvidia_smi_memory_used_bytes", "nvidia_smi_gpu_info"):
        assert carries(query, "uuid", bare), query


# -- /api/v1/gpu/processes -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["gpu-node-001", *HOSTILE])
def test_process_node_filter_reaches_every_process_query_escaped(
        client: FlaskClient, fake_prometheus: FakePrometheus, value: str) -> None:
    publish_nvitop(fake_prometheus)
    rows = get_data(client, "/api/v1/gpu/processes", node=value)
    assert [row["pid"] for row in rows] == ([100] if value == "gpu-node-001" else [])
    literal = HOSTILE.get(value, f'"{value}"')
    queries = fake_prometheus.data_queries()
    for query in reading(queries, *NVITOP_PROCESS_METRICS):
        assert carries(query, "hostname", literal), query
    for query in queries:
        assert '"' not in code_of(query) and "vector" not in code_of(query), query


@pytest.mark.parametrize(("name", "value", "label"), [
    ("gpu_name", T4, "devicename"),
    ("uuid", UUID_B, "uuid"),
])
def test_process_gpu_filters_go_through_the_gpu_query_not_process_series(
        client: FlaskClient, fake_prometheus: FakePrometheus,
        name: str, value: str, label: str) -> None:
    publish_nvitop(fake_prometheus)
    rows = get_data(client, "/api/v1/gpu/processes", **{name: value})
    assert [(row["pid"], row["gpu_uuid"]) for row in rows] == [(101, UUID_B)]
    queries = fake_prometheus.data_queries()
    literal = f'"{value}"'
    # Process series may lack the GPU's model or UUID, so only the node is matched on them.
    for query in reading(queries, *NVITOP_PROCESS_METRICS):
        assert not carries(query, label, literal), query
    (gpus,) = reading(queries, "gpu_memory_used_MiB")
    assert carries(gpus, label, literal), gpus


@pytest.mark.parametrize(("name", "value", "literal"), [
    ("gpu_name", A100, f'"{A100}"'),
    ("uuid", UUID_A, '"' + UUID_A.lower().removeprefix("gpu-") + '"'),
])
def test_process_gpu_filters_of_nvidia_smi_go_through_its_info_metric(
        client: FlaskClient, fake_prometheus: FakePrometheus,
        name: str, value: str, literal: str) -> None:
    publish_nvidia_smi(fake_prometheus)
    rows = get_data(client, "/api/v1/gpu/processes", **{name: value})
    assert [row["pid"] for row in rows] == [100]
    queries = fake_prometheus.data_queries()
    label = "name" if name == "gpu_name" else "uuid"
    (info,) = reading(queries, "nvidia_smi_gpu_info")
    assert carries(info, label, literal), info
    (processes,) = reading(queries, "nvidia_smi_compute_app_used_memory_bytes")
    assert not carries(processes, label, literal), processes


@pytest.mark.parametrize(("name", "value"), [("namespace", "ml"), ("pod", "train-0")])
def test_borrowed_pod_filters_are_applied_after_borrowing_not_in_promql(
        client: FlaskClient, fake_prometheus: FakePrometheus, name: str, value: str) -> None:
    publish_dcgm(fake_prometheus)
    publish_nvitop(fake_prometheus)
    rows = get_data(client, "/api/v1/gpu/processes", **{name: value}, node="gpu-node-001")
    assert [(row["pid"], row["pod"], row["namespace"]) for row in rows] == [
        (100, "train-0", "ml")]
    queries = fake_prometheus.data_queries()
    # nvitop has no pod labels and dcgm's pods query is narrowed by node only: the pod of a
    # process is known once it is borrowed, and only then filtered on.
    assert all(f'"{value}"' not in q for q in queries), queries
    (pods,) = reading(queries, "DCGM_FI_DEV_FB_USED")
    assert carries(pods, "Hostname", '"gpu-node-001"'), pods
    for query in reading(queries, *NVITOP_PROCESS_METRICS):
        assert carries(query, "hostname", '"gpu-node-001"'), query


OWN_PODS_MAPPING = """
dialects:
  - name: acme
    labels: {node: [host], index: [gpu], uuid: [gpu_uuid], pod: [k8s_pod],
             namespace: [k8s_namespace]}
    gpu_fields:
      memory_used: [{metric: acme_gpu_mem_used_bytes}]
    process_fields:
      gpu_memory: [{metric: acme_proc_mem_bytes}]
"""


@pytest.mark.parametrize(("name", "value", "label"), [
    ("namespace", "ml", "k8s_namespace"), ("pod", "train-0", "k8s_pod"),
])
def test_process_pod_filters_reach_the_pods_query_of_an_exporter_with_pods(
        make_app: Callable[..., Flask], fake_prometheus: FakePrometheus, tmp_path: Path,
        name: str, value: str, label: str) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(OWN_PODS_MAPPING)
    client = make_app(METRICS_MAPPING_FILE=str(mapping), METRICS_DIALECT="acme").test_client()
    for pid, (node, pod, namespace) in enumerate(
            (("gpu-node-001", "train-0", "ml"), ("gpu-node-002", "serve-0", "web")), start=100):
        gpu = {"host": node, "gpu": "0", "gpu_uuid": f"GPU-{pid}"}
        fake_prometheus.add("acme_gpu_mem_used_bytes",
                            {**gpu, "k8s_pod": pod, "k8s_namespace": namespace}, 1024)
        fake_prometheus.add("acme_proc_mem_bytes", {**gpu, "pid": str(pid)}, 512)
    rows = get_data(client, "/api/v1/gpu/processes", **{name: value})
    assert [(row["pid"], row["pod"], row["namespace"]) for row in rows] == [
        (100, "train-0", "ml")]
    queries = fake_prometheus.data_queries()
    assert any(carries(q, label, f'"{value}"') for q in queries), queries
    # Process series carry no pod labels of their own.
    for query in reading(queries, "acme_proc_mem_bytes"):
        assert not carries(query, label, f'"{value}"'), query
