"""Real exporter output, served verbatim to a real Prometheus, read through the real API.

Each scenario is one capture from `tests/fixtures/real_exporters/` (sources in its
SOURCES.md) with the target labels its scrape would carry. Every expected value below was
typed from the capture file and converted by hand to the API's units: dcgm FB_* MiB times
1024**2, ratios times 100, percentages rounded to 3 decimals. Nothing here calls the app's
conversion code: a failure means the API and the capture disagree.

Target labels that a capture cannot show (node names of relabelings, kube-state-metrics
lines) are made up and say so; the exporters' own lines are never edited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.prometheus import PrometheusServer
from tests.integration.captures import FIXTURES, CaptureTarget, capture_text, serving_all
from tests.integration.conftest import ApiServer

pytestmark = pytest.mark.integration

MIB = 1024**2
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")

L4 = "dcgm-exporter-l4-kops-gpuoperator-full-scrape.prom"
H100_PODS = "dcgm-exporter-h100x8-eks-gpuoperator-podlabels.prom"
H100_QUERY_JSON = "dcgm-exporter-h100x8-eks-prometheus-query-gpu-util.json"
H100_NODE_A = "dcgm-exporter-h100x8-eks-reconstructed-ip-10-0-171-111.prom"
H100_NODE_B = "dcgm-exporter-h100x8-eks-reconstructed-ip-10-0-206-2.prom"
A800 = "dcgm-exporter-a800x8-gpu0-mig-2g20gb-mixed-excerpt.prom"
A100_MIG = "dcgm-exporter-a100-mig-1g5gb-nvidia-docs-2.x.prom"
PR736 = "dcgm-exporter-a30-mig-pods-plus-rtx2000ada-lowercase-hostname-pr736.prom"
COMPAT_1X = "dcgm-exporter-1x-compat-dcgm_-names-issue188.prom"
TEXTFILE_1X = "dcgm-exporter-1.x-textfile-lowercase-uuid-gpumontools-v1.prom"
SENTINEL = "dcgm-exporter-readme-blank-sentinel-value.prom"
SMI_V12 = "nvidia_gpu_exporter-v1.2-docs-win10-rtx2080super-full-scrape.prom"
SMI_H200 = "nvidia_gpu_exporter-v1.14.0-h200-load-golden.prom"
SMI_H100_MIG = "nvidia_gpu_exporter-v1.14.0-h100-mig-mode-load-golden.prom"

# The GPU Operator's exporter pods on the two EKS nodes, as the H100 query answer shows
# them: target labels of the ServiceMonitor (honorLabels: true) scrape.
H100_TARGET_A = {"instance": "10.0.172.246:9400", "job": "nvidia-dcgm-exporter",
                 "service": "nvidia-dcgm-exporter", "endpoint": "gpu-metrics",
                 "pod": "nvidia-dcgm-exporter-wqqqn", "namespace": "gpu-operator",
                 "container": "nvidia-dcgm-exporter"}
H100_TARGET_B = {**H100_TARGET_A, "instance": "10.0.247.52:9400",
                 "pod": "nvidia-dcgm-exporter-g2fjs"}
# PR #736's exporter pod (its Hostname); namespace, container and the relabeled node name
# are made up: the thread does not show them.
PR736_TARGET = {"job": "dcgm-exporter", "pod": "dcgm-exporter-wwwjh",
                "namespace": "dcgm-exporter", "container": "exporter"}
PR736_NODE = "gpu-worker-3"
# kube-state-metrics' kube_pod_info, in KSM's label order, for issue #188's exporter pod
# (its Hostname) and a second exporter pod on another node. Hand-written: the issue shows
# no kube-state-metrics output.
KSM_POD_INFO = """\
# HELP kube_pod_info [STABLE] Information about pod.
# TYPE kube_pod_info gauge
kube_pod_info{namespace="gpu-operator",pod="dcgm-exporter-6ldbb",uid="3f1c0d52-1e0a-4b8e-9a57-6c2d1f0e8b41",host_ip="10.0.1.11",pod_ip="10.244.1.7",node="gpu-worker-1",created_by_kind="DaemonSet",created_by_name="dcgm-exporter",priority_class="",host_network="false"} 1
kube_pod_info{namespace="gpu-operator",pod="dcgm-exporter-x2b7q",uid="8d0e6a3b-52f4-4c1e-b7a9-0f3e2d1c4b5a",host_ip="10.0.1.12",pod_ip="10.244.2.9",node="gpu-worker-2",created_by_kind="DaemonSet",created_by_name="dcgm-exporter",priority_class="",host_network="false"} 1
"""  # noqa: E501
SENTINEL_MAPPING = """\
dialects:
  - name: dcgm-memory-temperature
    description: dcgm-exporter read for its memory temperature sensor
    labels: {node: [Hostname, instance], index: [gpu], uuid: [UUID]}
    gpu_fields:
      temperature: [{metric: DCGM_FI_DEV_MEMORY_TEMP}]
"""

SCENARIOS: dict[str, list[CaptureTarget]] = {
    # kOps: no ServiceMonitor details in the evidence; scraped as a plain target.
    "l4": [CaptureTarget.from_file(L4)],
    "h100-honor": [CaptureTarget.from_file(H100_PODS, H100_TARGET_A)],
    # The dcgm-exporter chart's default ServiceMonitor: workload labels become exported_*.
    "h100-no-honor": [CaptureTarget.from_file(H100_PODS, H100_TARGET_A, honor_labels=False)],
    "h100-query": [CaptureTarget.from_file(H100_NODE_A, H100_TARGET_A),
                   CaptureTarget.from_file(H100_NODE_B, H100_TARGET_B)],
    "a800": [CaptureTarget.from_file(A800)],
    "a100-mig": [CaptureTarget.from_file(A100_MIG)],
    "pr736": [CaptureTarget.from_file(PR736, {**PR736_TARGET, "kubernetes_node": PR736_NODE})],
    "pr736-unmapped": [CaptureTarget.from_file(PR736, PR736_TARGET)],
    # A static target (no pod label): only kube-state-metrics knows whose pod it is.
    "compat-1x": [CaptureTarget.from_file(COMPAT_1X, {"job": "dcgm-exporter",
                                                      "instance": "10.244.1.7:9400"}),
                  CaptureTarget(KSM_POD_INFO, {"job": "kube-state-metrics"})],
    # 1.x wrote a node-exporter textfile: the node is only node-exporter's instance.
    "textfile-1x": [CaptureTarget.from_file(TEXTFILE_1X, {"job": "node-exporter",
                                                          "instance": "10.0.3.7:9100"})],
    "sentinel": [CaptureTarget.from_file(SENTINEL, {"instance": "10.0.0.9:9400"})],
    # A Windows desktop: no Kubernetes, no relabeling; the instance names the machine.
    "smi-v1.2": [CaptureTarget.from_file(SMI_V12, {"instance": "win10-rtx2080:9835"})],
    "smi-h200": [CaptureTarget.from_file(SMI_H200, {"instance": "10.0.5.17:9835",
                                                    "kubernetes_node": "h200-node-0"})],
    "smi-h100-mig": [CaptureTarget.from_file(SMI_H100_MIG, {"instance": "10.0.5.18:9835",
                                                            "nodename": "h100-mig-node-0"})],
}

GPU_FIELDS = ("node_name", "gpu_index", "gpu_name", "utilization", "memory_used",
              "memory_total", "memory_free", "memory_utilization", "temperature", "uuid",
              "power_usage", "pod", "namespace", "container", "mig_profile", "mig_instance",
              "pods")
PROCESS_FIELDS = ("node_name", "gpu_index", "pid", "process_name", "user", "command",
                  "gpu_memory", "cpu", "memory", "gpu_uuid", "pod", "namespace")


def gpu(node: str, index: int | None, uuid: str | None, name: str | None,
        **values: Any) -> dict[str, Any]:
    """An expected GPU row: every contract field, None (or no pods) unless given."""
    row: dict[str, Any] = dict.fromkeys(GPU_FIELDS)
    row.update(node_name=node, gpu_index=index, uuid=uuid, gpu_name=name, pods=[])
    unknown = set(values) - set(GPU_FIELDS)
    assert not unknown, f"not a GPU field: {unknown}"
    row.update(values)
    return row


def held_by(pod: str, namespace: str, container: str) -> dict[str, Any]:
    """The fields of a row held by one workload whose own share the exporter does not say."""
    return {"pod": pod, "namespace": namespace, "container": container,
            "pods": [{"pod": pod, "namespace": namespace, "container": container,
                      "utilization": None, "memory_used": None}]}


def process(node: str, index: int, pid: int, name: str, gpu_memory: int,
            gpu_uuid: str) -> dict[str, Any]:
    """An expected process row (nvidia_gpu_exporter has no user, command or CPU)."""
    row: dict[str, Any] = dict.fromkeys(PROCESS_FIELDS)
    row.update(node_name=node, gpu_index=index, pid=pid, process_name=name,
               gpu_memory=gpu_memory, gpu_uuid=gpu_uuid)
    return row


def assert_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Compare every expected field of every row exactly; report all differences at once."""
    problems: list[str] = []
    if len(actual) != len(expected):
        problems.append(f"{len(actual)} rows, expected {len(expected)}: got "
                        f"{[(r.get('node_name'), r.get('gpu_index'), r.get('mig_instance'), r.get('pid')) for r in actual]}")  # noqa: E501
    for position, (got, want) in enumerate(zip(actual, expected, strict=False)):
        where = (f"row {position} ({want['node_name']} gpu {want['gpu_index']}"
                 + (f" mig {want['mig_instance']}" if want.get("mig_instance") else "")
                 + (f" pid {want['pid']}" if "pid" in want else "") + ")")
        for field, value in want.items():
            if field not in got:
                problems.append(f"{where}: no field {field!r} (expected {value!r})")
            elif got[field] != value or (_is_int(value) and not _is_int(got[field])):
                problems.append(f"{where}: {field} = {got[field]!r}, expected {value!r}")
        stamp = got.get("timestamp")
        if not (isinstance(stamp, str) and RFC3339.match(stamp)):
            problems.append(f"{where}: timestamp {stamp!r} is not RFC 3339")
    assert not problems, "\n".join(problems)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@pytest.fixture(scope="module")
def captures() -> Iterator[dict[str, PrometheusServer]]:
    """Every scenario in its own Prometheus, started together, kept for the module."""
    with serving_all(SCENARIOS) as started:
        yield started


def api_for(api_server: Callable[..., ApiServer], prometheus: PrometheusServer,
            dialect: str | None = None, **env: str) -> ApiServer:
    """The real app on `prometheus`, uncached; `dialect` None means auto-detection."""
    if dialect is not None:
        env["METRICS_DIALECT"] = dialect
    return api_server(PROMETHEUS_URL=prometheus.url, CACHE_TTL="0", **env)


def fetch(api: ApiServer, path: str, **params: str) -> list[dict[str, Any]]:
    """GET an endpoint and return its data, checking the success envelope."""
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["error"] is None, body
    return list(body["data"])


# -- dcgm-exporter -------------------------------------------------------------------------

def test_l4_full_scrape_is_detected_and_read_whole(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["l4"])
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        gpu("i-030791dc5a37cd257", 0, "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c", "NVIDIA L4",
            utilization=0.0, temperature=31.0, power_usage=16.365,
            # FB_USED 0 + FB_FREE 22563 + FB_RESERVED 470 MiB
            memory_used=0, memory_free=22563 * MIB, memory_total=23033 * MIB,
            memory_utilization=0.0),
    ])
    capabilities = fetch_capabilities(api)
    assert capabilities["mode"] == "auto"
    assert [d["name"] for d in capabilities["dialects"]] == ["dcgm"]


def fetch_capabilities(api: ApiServer) -> dict[str, Any]:
    response = api.get("/api/v1/capabilities")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def h100_node_a_rows() -> list[dict[str, Any]]:
    """The eight GPUs of ip-10-0-171-111 in the truncated scrape: temp, power, util only."""
    node, name = "ip-10-0-171-111.ec2.internal", "NVIDIA H100 80GB HBM3"
    return [
        gpu(node, 0, "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005", name, utilization=0.0,
            temperature=30.0, power_usage=113.611,
            **held_by("vllm-agg-0-vllmdecodeworker-s65j5", "dynamo-workload", "main")),
        gpu(node, 1, "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a", name, utilization=0.0,
            temperature=29.0, power_usage=68.347),
        gpu(node, 2, "GPU-fbc2c554-4d37-8938-0032-f923bad0f716", name, utilization=0.0,
            temperature=26.0, power_usage=65.709),
        gpu(node, 3, "GPU-a65a773d-52bb-bcc1-a8ee-f78c3faa2e2d", name, utilization=0.0,
            temperature=29.0, power_usage=67.316),
        gpu(node, 4, "GPU-82e45d1b-1618-559f-144c-eab51545030b", name, utilization=0.0,
            temperature=28.0, power_usage=68.717),
        gpu(node, 5, "GPU-39e28159-8c62-ee71-64db-b748edd61e15", name, utilization=0.0,
            temperature=26.0, power_usage=65.742),
        gpu(node, 6, "GPU-e64d69ca-b4b3-59b2-e78c-94f26c4db365", name, utilization=0.0,
            temperature=28.0, power_usage=67.328),
        gpu(node, 7, "GPU-04d228d3-3b5a-3534-f5cf-969706647d56", name, utilization=0.0,
            temperature=26.0, power_usage=66.997),
    ]


@pytest.mark.parametrize("scenario", ["h100-honor", "h100-no-honor"])
def test_h100_workload_pod_on_gpu0_and_exporter_pod_on_none(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer],
        scenario: str) -> None:
    # What the ServiceMonitor setting did to GPU 0's series inside Prometheus.
    (stored,) = captures[scenario].query('DCGM_FI_DEV_GPU_UTIL{gpu="0"}')["data"]["result"]
    workload_label = "pod" if scenario == "h100-honor" else "exported_pod"
    assert stored["metric"][workload_label] == "vllm-agg-0-vllmdecodeworker-s65j5"
    assert "pod_uid" not in stored["metric"]  # pod_uid="" is dropped
    api = api_for(api_server, captures[scenario], "dcgm")
    expected = h100_node_a_rows()
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), expected)
    # The exporter's own pod (a target label on every series) holds no GPU.
    assert fetch(api, "/api/v1/gpu/metrics", pod="nvidia-dcgm-exporter-wqqqn") == []
    assert fetch(api, "/api/v1/gpu/metrics", namespace="gpu-operator") == []
    assert_rows(fetch(api, "/api/v1/gpu/metrics", pod="vllm-agg-0-vllmdecodeworker-s65j5"),
                expected[:1])


def test_h100_query_answer_is_reproduced_by_the_reconstructed_scrapes(
        captures: dict[str, PrometheusServer]) -> None:
    """The two reconstructed expositions plus target labels give the published answer."""
    published = json.loads((FIXTURES / H100_QUERY_JSON).read_text())["data"]["result"]
    stored = captures["h100-query"].query("DCGM_FI_DEV_GPU_UTIL")["data"]["result"]

    def label_sets(result: list[dict[str, Any]]) -> list[tuple[tuple[str, str], ...]]:
        return sorted(tuple(sorted(s["metric"].items())) for s in result)

    assert len(published) == 16
    assert label_sets(stored) == label_sets(published)
    assert sorted(s["value"][1] for s in stored) == sorted(s["value"][1] for s in published)


def test_h100_query_idle_gpus_get_no_pod_and_the_busy_one_its_workload(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["h100-query"], "dcgm")
    node_a, node_b = "ip-10-0-171-111.ec2.internal", "ip-10-0-206-2.ec2.internal"
    name = "NVIDIA H100 80GB HBM3"
    expected = [
        gpu(node_a, 0, "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005", name, utilization=0.0,
            **held_by("vllm-agg-0-vllmdecodeworker-s65j5", "dynamo-workload", "main")),
        gpu(node_a, 1, "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a", name, utilization=0.0),
        gpu(node_a, 2, "GPU-fbc2c554-4d37-8938-0032-f923bad0f716", name, utilization=0.0),
        gpu(node_a, 3, "GPU-a65a773d-52bb-bcc1-a8ee-f78c3faa2e2d", name, utilization=0.0),
        gpu(node_a, 4, "GPU-82e45d1b-1618-559f-144c-eab51545030b", name, utilization=0.0),
        gpu(node_a, 5, "GPU-39e28159-8c62-ee71-64db-b748edd61e15", name, utilization=0.0),
        gpu(node_a, 6, "GPU-e64d69ca-b4b3-59b2-e78c-94f26c4db365", name, utilization=0.0),
        gpu(node_a, 7, "GPU-04d228d3-3b5a-3534-f5cf-969706647d56", name, utilization=0.0),
        gpu(node_b, 0, "GPU-92da0328-2f33-b563-d577-9d2b9f21f280", name, utilization=0.0),
        gpu(node_b, 1, "GPU-184dab49-47ce-eeec-2239-3e03fbd4c002", name, utilization=0.0),
        gpu(node_b, 2, "GPU-dbabb552-a092-0ca9-0580-8d4fe378eb02", name, utilization=0.0),
        gpu(node_b, 3, "GPU-5342927e-e180-84f1-55ba-257f1cbd3ba4", name, utilization=0.0),
        gpu(node_b, 4, "GPU-95085215-739e-e7c6-4011-8dbe004af8c3", name, utilization=0.0),
        gpu(node_b, 5, "GPU-a7b658ad-f23e-cea9-2523-569d521700bf", name, utilization=0.0),
        gpu(node_b, 6, "GPU-1e9a0e94-769a-b1e6-36f7-9296e286ef90", name, utilization=0.0),
        gpu(node_b, 7, "GPU-16b2cd36-9dbe-3ee7-0810-07b330e36e04", name, utilization=0.0),
    ]
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), expected)
    assert fetch(api, "/api/v1/gpu/metrics", pod="nvidia-dcgm-exporter-g2fjs") == []
    assert_rows(fetch(api, "/api/v1/gpu/metrics", namespace="dynamo-workload"), expected[:1])


def test_a800_mig_gpu_is_three_instance_rows_without_a_whole_gpu_row(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["a800"], "dcgm")
    node, name = "msxf-hpc-64-35-ai", "NVIDIA A800-SXM4-80GB"
    mig_uuid = "GPU-1f027ee8-6e1e-2b8c-0108-3d370e5f0418"
    # Per instance: FB_USED 10 + FB_FREE 19957 = 19967 MiB; 10/19967 = 0.05008 %.
    # No GPU_UTIL and no PROF_* for GPU 0: utilization unknown.
    instance = {"memory_used": 10 * MIB, "memory_free": 19957 * MIB,
                "memory_total": 19967 * MIB, "memory_utilization": 0.05,
                "temperature": 33.0, "mig_profile": "2g.20gb"}
    # Whole GPUs: 2 + 81226 = 81228 MiB; 2/81228 = 0.00246 %.
    whole = {"utilization": 0.0, "memory_used": 2 * MIB, "memory_free": 81226 * MIB,
             "memory_total": 81228 * MIB, "memory_utilization": 0.002}
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        gpu(node, 0, mig_uuid, name, mig_instance=3, power_usage=78.174, **instance),
        gpu(node, 0, mig_uuid, name, mig_instance=5, power_usage=78.174, **instance),
        gpu(node, 0, mig_uuid, name, mig_instance=6, power_usage=78.446, **instance),
        gpu(node, 1, "GPU-9e5b8fec-61bf-5124-a0a9-079af1b65cc6", name, temperature=27.0,
            power_usage=55.942, **whole),
        gpu(node, 2, "GPU-5022ce43-b44a-987b-71c3-dee05378a618", name, temperature=26.0,
            power_usage=53.752, **whole),
        gpu(node, 3, "GPU-f22db14d-1597-8eb1-78dc-d93765918c73", name, temperature=31.0,
            power_usage=56.99, **whole),
        gpu(node, 4, "GPU-a878a9f3-cf6d-b94c-38ba-892ed140c7ee", name, temperature=31.0,
            power_usage=58.643, **whole),
        gpu(node, 5, "GPU-a1dd6923-de62-e22b-c882-4d6f7e1ec5ce", name, temperature=26.0,
            power_usage=54.581, **whole),
        gpu(node, 6, "GPU-c07eb90d-74b0-d3b4-e6ce-f18687564243", name, temperature=26.0,
            power_usage=57.145, **whole),
        gpu(node, 7, "GPU-4e75c9ab-0ed7-8a57-75f5-23761b9f053f", name, temperature=29.0,
            power_usage=55.011, **whole),
    ])


def test_a100_docs_parent_and_mig_instance_take_engine_activity(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["a100-mig"], "dcgm")
    node, uuid = "ub20-a100-k8s", "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        # No DCGM_FI_DEV_GPU_UTIL in the sample: PROF_GR_ENGINE_ACTIVE 0.995630 -> 99.563 %.
        # No modelName label in 2.1.x. FB: 4845 used + 35690 free = 40535 MiB -> 11.953 %.
        gpu(node, 0, uuid, None, utilization=99.563, temperature=61.0, power_usage=409.692,
            memory_used=4845 * MIB, memory_free=35690 * MIB, memory_total=40535 * MIB,
            memory_utilization=11.953),
        # The instance has only XID_ERRORS and PROF_*: 0.995687 -> 99.5687 -> 99.569 %.
        gpu(node, 0, uuid, None, utilization=99.569, mig_profile="1g.5gb", mig_instance=13),
    ])


def pr736_rows(node: str) -> list[dict[str, Any]]:
    """The four GPUs/instances of the PR #736 windows (whatever families they show)."""
    a30_0, a30_2 = ("GPU-9a63752e-af8d-fe52-7f0d-968bca6d52e3",
                    "GPU-63bc0b91-2265-1b94-831c-15c41fe92675")
    # The API reads pods from the DCGM_FI_DEV_FB_USED and GPU_UTIL series (a full scrape
    # has them on every family). The paste cut GPU 0 instance 3's and GPU 2 instance 3's
    # FB_USED lines, and MIG instances have no GPU_UTIL: their pods (on GPU_TEMP/FB_FREE
    # here) are not seen, which is what this truncated capture can show.
    return [
        gpu(node, 0, a30_0, "NVIDIA A30", temperature=50.0, mig_profile="1g.6gb",
            mig_instance=3),
        gpu(node, 0, a30_0, "NVIDIA A30", memory_used=3744 * MIB, mig_profile="1g.6gb",
            mig_instance=6, **held_by("triton-server-f7cb5d77-2w5b2", "default",
                                      "triton-server")),
        # Only DEC/ENC (not read), FB_FREE and GPU_TEMP survived the paste for the RTX.
        gpu(node, 1, "GPU-fc60126e-514d-3522-2828-c5daa8e99d85",
            "NVIDIA RTX 2000 Ada Generation", memory_free=11275 * MIB, temperature=44.0),
        gpu(node, 2, a30_2, "NVIDIA A30", memory_free=2207 * MIB, temperature=45.0,
            mig_profile="1g.6gb", mig_instance=3),
    ]


def test_pr736_exporter_pod_hostname_yields_to_the_relabeled_node(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["pr736"])  # auto: lowercase hostname, sorted families
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), pr736_rows(PR736_NODE))
    assert fetch(api, "/api/v1/gpu/metrics", pod="dcgm-exporter-wwwjh") == []


def test_pr736_without_a_node_mapping_keeps_the_pod_name_and_says_so(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["pr736-unmapped"], "dcgm")
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), pr736_rows("dcgm-exporter-wwwjh"))
    notes = " ".join(fetch_capabilities(api)["notes"])
    assert "NODE_NAME" in notes, notes


def test_dcgm_1x_compat_names_take_the_node_from_kube_pod_info(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["compat-1x"], "dcgm-old")
    # Hostname is the exporter pod dcgm-exporter-6ldbb; kube_pod_info puts it on
    # gpu-worker-1. pod="" etc. are dropped by Prometheus; dcgm_fb_* were cut off.
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        gpu("gpu-worker-1", 0, "GPU-c1f38265-5e7c-0a81-14a0-240a35ea8160", None,
            utilization=0.0, temperature=54.0, power_usage=30.982),
    ])


def test_dcgm_1x_textfile_lowercase_uuid_on_the_node_exporter_instance(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["textfile-1x"], "dcgm-old")
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        gpu("10.0.3.7:9100", 0, "GPU-8f640a3c-7e9a-608d-02a3-f4372d72b323", None,
            utilization=0.0, temperature=34.0, power_usage=31.737),
    ])


def test_blank_sentinel_reading_is_null_not_a_temperature(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer],
        tmp_path: Path) -> None:
    prometheus = captures["sentinel"]
    stored = prometheus.query("DCGM_FI_DEV_MEMORY_TEMP")["data"]["result"]
    assert [float(s["value"][1]) for s in stored] == [9223372036854775794.0]  # ~9.2e18
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(SENTINEL_MAPPING)
    api = api_for(api_server, prometheus, "dcgm-memory-temperature",
                  METRICS_MAPPING_FILE=str(mapping))
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        gpu("10.0.0.9:9400", 0, "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52", None,
            temperature=None),
    ])


# -- utkuozdemir/nvidia_gpu_exporter -------------------------------------------------------

def test_nvidia_smi_v1_2_index_from_its_own_gauge(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["smi-v1.2"], "nvidia-smi")
    # gpu_info has no index label before v1.3: nvidia_smi_index{uuid} 0 is the index.
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        gpu("win10-rtx2080:9835", 0, "GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa",
            "NVIDIA GeForce RTX 2080 SUPER", utilization=0.0, temperature=34.0,
            power_usage=28.07,
            # 674 MiB used of 8192 MiB, 7518 MiB free: 674/8192 = 8.2275390625 %.
            memory_used=706740224, memory_total=8589934592, memory_free=7883194368,
            memory_utilization=8.228),
    ])
    # WDDM: no per-process data at all.
    assert fetch(api, "/api/v1/gpu/processes") == []


def test_nvidia_smi_v1_14_h200_gpu_and_its_processes(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["smi-h200"], "nvidia-smi")
    node, uuid = "h200-node-0", "GPU-00000000-0000-0000-0000-000000000000"
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        # utilization_gpu_ratio 1 -> 100 %; 32362 of 143771 MiB used -> 22.509 %.
        gpu(node, 0, uuid, "NVIDIA H200", utilization=100.0, temperature=52.0,
            power_usage=627.4, memory_used=33934016512, memory_total=150754820096,
            memory_free=116178026496, memory_utilization=22.509),
    ])
    assert_rows(fetch(api, "/api/v1/gpu/processes"), [
        process(node, 0, 10291, "/root/tools/memhog", 2690646016, uuid),
        process(node, 0, 10293, "/root/tools/memhog", 1616904192, uuid),
        process(node, 0, 10309, "./gpu_burn", 29605494784, uuid),
    ])


def test_nvidia_smi_v1_14_h100_in_mig_mode_has_no_utilization(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["smi-h100-mig"], "nvidia-smi")
    node, uuid = "h100-mig-node-0", "GPU-00000000-0000-0000-0000-000000000000"
    assert_rows(fetch(api, "/api/v1/gpu/metrics"), [
        # No utilization_*_ratio in MIG mode; 11125 of 81559 MiB used -> 13.640 %.
        # The nvidia-smi backend has no per-instance series: one whole-GPU row.
        gpu(node, 0, uuid, "NVIDIA H100 80GB HBM3", utilization=None, temperature=53.0,
            power_usage=433.78, memory_used=11665408000, memory_total=85520809984,
            memory_free=73354182656, memory_utilization=13.64),
    ])
    assert_rows(fetch(api, "/api/v1/gpu/processes"), [
        process(node, 0, 21180, "/root/tools/memhog", 2407530496, uuid),
        process(node, 0, 21181, "/root/tools/memhog", 1333788672, uuid),
        process(node, 0, 21198, "./gpu_burn", 7847542784, uuid),
    ])


def test_every_fixture_capture_is_served_by_some_scenario() -> None:
    """A capture copied into the fixtures but never loaded would be dead weight."""
    served = {t.text for targets in SCENARIOS.values() for t in targets}
    unused = [p.name for p in sorted(FIXTURES.glob("*.prom")) if capture_text(p.name)
              not in served]
    assert unused == []


# -- health ------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["l4", "a100-mig"])
def test_real_dcgm_captures_with_zero_error_counters_are_ok(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer],
        scenario: str) -> None:
    # L4: PCIE_REPLAY_COUNTER 0, (UN)CORRECTABLE_REMAPPED_ROWS 0, ROW_REMAP_FAILURE 0;
    # A100 docs: XID_ERRORS 0 on the parent and on the instance, PCIE_REPLAY_COUNTER 0.
    api = api_for(api_server, captures[scenario], "dcgm")
    rows = fetch(api, "/api/v1/gpu/metrics")
    assert rows and all(row["health"] == {"status": "ok", "reasons": []} for row in rows)


def test_real_l4_capture_says_which_health_counters_to_enable(
        captures: dict[str, PrometheusServer], api_server: Callable[..., ApiServer]) -> None:
    api = api_for(api_server, captures["l4"])
    signals = {s["name"]: s["found"] for s in fetch_capabilities(api)["health_signals"]}
    # The capture's three health families; it lacks the default CSV's XID gauge.
    assert {name for name, found in signals.items() if found} == {
        "pcie_replay", "uncorrectable_remapped_rows", "row_remap_failure"}
    notes = fetch_capabilities(api)["notes"]
    assert ("health: xid is not checked; add DCGM_FI_DEV_XID_ERRORS to dcgm-exporter's "
            "counters CSV") in notes
    assert any("ecc_dbe is not checked; add DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" in n for n in notes)
