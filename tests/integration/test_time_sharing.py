"""Time-shared GPUs through a real Prometheus, in every shape dcgm-exporter writes them.

The cluster is written by hand, and so is every expected value: nothing here is computed
with the rules the service uses. One node, five GPUs:

- GPU 0, an L4 time-shared by two pods: 46 % busy (30 + 16 per pod), 10000 MiB used
  (6000 + 4000), 12000 MiB free, 500 MiB reserved, 61 degrees C, 72.5 W;
- GPUs 1 and 2, two H100s held by one pod (`train-0`): 80 % and 70 %, 40000 and 30000 MiB
  used, 40000 and 50000 MiB free, 960 MiB reserved each;
- GPU 3, an idle L4: 0 %, 22000 MiB free, 500 MiB reserved;
- GPU 4, an A100 in MIG mode: instance 1 (3g.40gb) held by `mig-a`, 55 % busy (engine
  activity 0.55), 20000 MiB used, 20448 free, 512 reserved; instance 2 (2g.20gb) idle,
  19968 MiB free, 512 reserved; the device's 50 degrees and 200 W on both.

Each node of the lab is that node in one exporter shape, scraped with honorLabels on or off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from demo.cluster import MIB, SimGpu, SimPod
from demo.dialects import render
from demo.prometheus import PrometheusServer
from tests.integration.captures import CaptureTarget, serving
from tests.integration.conftest import ApiServer

pytestmark = pytest.mark.integration

INFER_A = SimPod("infer-a", "team-a", "server")
INFER_B = SimPod("infer-b", "team-b", "server")
TRAIN = SimPod("train-0", "ml", "trainer")
MIG_A = SimPod("mig-a", "ml", "jupyter")


def gpu(node: str, index: int, name: str, util: float, used: int, free: int, reserved: int,
        temperature: float, power: float, pods: tuple[SimPod, ...] = (),
        util_shares: tuple[float, ...] = (), memory_shares: tuple[int, ...] = (),
        mig: tuple[int, str] | None = None) -> SimGpu:
    """One GPU row of the hand-written node; memory in MiB."""
    return SimGpu(
        node=node, index=index, uuid=f"GPU-{node}-{index}", name=name,
        pci_bus_id=f"00000000:0{index}:00.0", driver_version="580.105.08",
        utilization=util, memory_copy_utilization=0.0,
        memory_total_bytes=(used + free + reserved) * MIB, memory_used_bytes=used * MIB,
        memory_reserved_bytes=reserved * MIB, memory_free_bytes=free * MIB,
        temperature=temperature, power_w=power, sm_clock_mhz=1000.0,
        mig_instance=mig[0] if mig else None, mig_profile=mig[1] if mig else None,
        pods=pods, util_shares=util_shares,
        memory_shares=tuple(share * MIB for share in memory_shares), processes=(),
        host_cpu_percent=10.0, host_memory_percent=20.0,
    )


def node_rows(node: str) -> list[SimGpu]:
    return [
        gpu(node, 0, "NVIDIA L4", 46.0, 10000, 12000, 500, 61.0, 72.5, (INFER_A, INFER_B),
            (30.0, 16.0), (6000, 4000)),
        gpu(node, 1, "NVIDIA H100 80GB HBM3", 80.0, 40000, 40000, 960, 70.0, 500.0, (TRAIN,),
            (80.0,), (40000,)),
        gpu(node, 2, "NVIDIA H100 80GB HBM3", 70.0, 30000, 50000, 960, 65.0, 450.0, (TRAIN,),
            (70.0,), (30000,)),
        gpu(node, 3, "NVIDIA L4", 0.0, 0, 22000, 500, 35.0, 16.0),
        gpu(node, 4, "NVIDIA A100-SXM4-80GB", 55.0, 20000, 20448, 512, 50.0, 200.0, (MIG_A,),
            (55.0,), (20000,), mig=(1, "3g.40gb")),
        gpu(node, 4, "NVIDIA A100-SXM4-80GB", 0.0, 0, 19968, 512, 50.0, 200.0,
            mig=(2, "2g.20gb")),
    ]


# node name: (simulator dialect, honorLabels). The exporter's own pod is a target label.
LAB = {
    "copy-honor-off": ("dcgm", False),
    "copy-honor-on": ("dcgm", True),
    "shares-honor-off": ("dcgm-hostname", False),
    "shares-honor-on": ("dcgm-hostname", True),
    "single-honor-off": ("dcgm-single-pod", False),
}


@pytest.fixture(scope="module")
def lab() -> Iterator[PrometheusServer]:
    targets = [
        CaptureTarget(render(node_rows(node), dialect),
                      {"pod": f"nvidia-dcgm-exporter-{number}", "namespace": "gpu-operator",
                       "container": "nvidia-dcgm-exporter"}, honor)
        for number, (node, (dialect, honor)) in enumerate(LAB.items())
    ]
    with serving(targets) as prometheus:
        yield prometheus


def pod(name: str, namespace: str, container: str, utilization: float | None = None,
        memory_used: int | None = None) -> dict[str, Any]:
    return {"pod": name, "namespace": namespace, "container": container,
            "utilization": utilization, "memory_used": memory_used}


def expected_rows(node: str, shape: str) -> list[dict[str, Any]]:
    """What the API must say for one lab node, written out by hand."""
    shares = shape == "shares"
    gpu0_pods = [pod("infer-a", "team-a", "server", 30.0 if shares else None,
                     6000 * MIB if shares else None)]
    if shape != "single":
        gpu0_pods.append(pod("infer-b", "team-b", "server", 16.0 if shares else None,
                             4000 * MIB if shares else None))
    return [
        {"gpu_index": 0, "mig_instance": None, "utilization": 46.0,
         "memory_used": 10000 * MIB, "memory_free": 12000 * MIB, "memory_total": 22500 * MIB,
         "memory_utilization": 44.444, "temperature": 61.0, "power_usage": 72.5,
         "pod": "infer-a" if shape == "single" else "infer-a,infer-b",
         "namespace": "team-a" if shape == "single" else "team-a,team-b",
         "container": "server", "pods": gpu0_pods},
        {"gpu_index": 1, "mig_instance": None, "utilization": 80.0,
         "memory_used": 40000 * MIB, "memory_free": 40000 * MIB, "memory_total": 80960 * MIB,
         "memory_utilization": 49.407, "temperature": 70.0, "power_usage": 500.0,
         "pod": "train-0", "namespace": "ml", "container": "trainer",
         "pods": [pod("train-0", "ml", "trainer", 80.0 if shares else None,
                      40000 * MIB if shares else None)]},
        {"gpu_index": 2, "mig_instance": None, "utilization": 70.0,
         "memory_used": 30000 * MIB, "memory_free": 50000 * MIB, "memory_total": 80960 * MIB,
         "memory_utilization": 37.055, "temperature": 65.0, "power_usage": 450.0,
         "pod": "train-0", "namespace": "ml", "container": "trainer",
         "pods": [pod("train-0", "ml", "trainer", 70.0 if shares else None,
                      30000 * MIB if shares else None)]},
        {"gpu_index": 3, "mig_instance": None, "utilization": 0.0,
         "memory_used": 0, "memory_free": 22000 * MIB, "memory_total": 22500 * MIB,
         "memory_utilization": 0.0, "temperature": 35.0, "power_usage": 16.0,
         "pod": None, "namespace": None, "container": None, "pods": []},
        # MIG: no GPU_UTIL, so utilization is the engine activity; it is not split per pod.
        {"gpu_index": 4, "mig_instance": 1, "mig_profile": "3g.40gb", "utilization": 55.0,
         "memory_used": 20000 * MIB, "memory_free": 20448 * MIB, "memory_total": 40960 * MIB,
         "memory_utilization": 48.828, "temperature": 50.0, "power_usage": 200.0,
         "pod": "mig-a", "namespace": "ml", "container": "jupyter",
         "pods": [pod("mig-a", "ml", "jupyter", None, 20000 * MIB if shares else None)]},
        {"gpu_index": 4, "mig_instance": 2, "mig_profile": "2g.20gb", "utilization": 0.0,
         "memory_used": 0, "memory_free": 19968 * MIB, "memory_total": 20480 * MIB,
         "memory_utilization": 0.0, "temperature": 50.0, "power_usage": 200.0,
         "pod": None, "namespace": None, "container": None, "pods": []},
    ]


@pytest.mark.parametrize("node", list(LAB))
def test_a_time_shared_gpu_is_counted_once_with_every_pod_listed(
        lab: PrometheusServer, api_server: Callable[..., ApiServer], node: str) -> None:
    api = api_server(PROMETHEUS_URL=lab.url, METRICS_DIALECT="dcgm", CACHE_TTL="0")
    response = api.get(f"/api/v1/gpu/metrics?node={node}")
    assert response.status_code == 200, response.text
    rows = response.json()["data"]
    expected = expected_rows(node, node.split("-")[0])
    assert [(r["gpu_index"], r["mig_instance"]) for r in rows] == [
        (e["gpu_index"], e["mig_instance"]) for e in expected]
    for got, want in zip(rows, expected, strict=True):
        assert got["node_name"] == node
        for field, value in want.items():
            assert got[field] == value, (node, want["gpu_index"], field, got[field])
            assert type(got[field]) is type(value), (node, want["gpu_index"], field)


def test_filtering_by_a_pod_finds_every_gpu_it_holds(
        lab: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=lab.url, METRICS_DIALECT="dcgm", CACHE_TTL="0")
    rows = api.get("/api/v1/gpu/metrics?pod=train-0&node=shares-honor-on").json()["data"]
    assert [(r["gpu_index"], r["pod"]) for r in rows] == [(1, "train-0"), (2, "train-0")]
    shared = api.get("/api/v1/gpu/metrics?namespace=team-b").json()["data"]
    # Only the shapes that name both pods know that team-b holds GPU 0.
    assert sorted(r["node_name"] for r in shared) == [
        "copy-honor-off", "copy-honor-on", "shares-honor-off", "shares-honor-on"]
    assert all(r["gpu_index"] == 0 for r in shared)


def test_auto_detection_reads_the_lab_the_same_way(
        lab: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=lab.url, CACHE_TTL="0")
    rows = api.get("/api/v1/gpu/metrics?node=shares-honor-on").json()["data"]
    assert [r["utilization"] for r in rows] == [46.0, 80.0, 70.0, 0.0, 55.0, 0.0]
    assert rows[0]["pods"][1] == pod("infer-b", "team-b", "server", 16.0, 4000 * MIB)
