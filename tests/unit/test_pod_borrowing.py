"""Processes take the pod of their GPU from an exporter that knows it.

nvitop-exporter and nvidia_gpu_exporter list processes but no pods; dcgm-exporter names the
pods but lists no processes. Through the public `list_processes` with canned series: a GPU
held by exactly one pod lends it to its processes; a shared GPU, a MIG instance or an idle
GPU lends nothing; a process finds its GPU by UUID first, then by (node, index); `pod=` and
`namespace=` filters see the borrowed pods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from app.dialects.builtin import DCGM, GPU_METRICS, NVIDIA_SMI, NVITOP
from app.dialects.model import Dialect
from app.services.gpus import list_processes
from app.services.records import GpuFilters, GpuProcess
from tests.canned_prometheus import CannedPrometheus
from tests.exporter_series import (
    MIB,
    add_dcgm,
    add_gpu_metrics_process,
    add_nvitop_process,
    add_smi_process,
)

UUIDS = [f"GPU-7c1e90aa-3b2d-4f6e-8a11-00000000000{i}" for i in range(4)]
# nvitop-exporter's hostname label defaults to the machine's address, not its node name.
NVITOP_HOST = "192.0.2.10"


def processes(prom: CannedPrometheus, dialects: Sequence[Dialect] = (DCGM, NVITOP),
              **filters: tuple[str, ...]) -> list[GpuProcess]:
    return list_processes(prom, dialects, GpuFilters(**filters))  # type: ignore[arg-type]


def owners(found: list[GpuProcess]) -> list[tuple[object, ...]]:
    """Each process with the pod and namespace it was given."""
    return [(p.node_name, p.gpu_index, p.pid, p.pod, p.namespace) for p in found]


@pytest.fixture
def cluster() -> CannedPrometheus:
    """dcgm-exporter and nvitop-exporter on node-a: a held, a shared and an idle GPU.

    GPU 0 is held by train-0 (ml), GPU 1 is time-shared by two pods of `web`, GPU 3 is idle;
    nvitop lists one process on each.
    """
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 0, UUIDS[0], temperature=60, used_mib=900, free_mib=100,
             pods=[("train-0", "ml")])
    add_dcgm(prom, "node-a", 1, UUIDS[1], temperature=60, used_mib=900, free_mib=100,
             pods=[("serve-0", "web"), ("serve-1", "web")])
    add_dcgm(prom, "node-a", 3, UUIDS[3], temperature=30, used_mib=0, free_mib=1000)
    for pid, gpu in ((100, 0), (101, 1), (103, 3)):
        add_nvitop_process(prom, "node-a", str(gpu), UUIDS[gpu], pid, used_mib=100)
    return prom


def test_a_gpu_held_by_one_pod_lends_it_and_a_shared_or_idle_gpu_lends_none(
        cluster: CannedPrometheus) -> None:
    assert owners(processes(cluster)) == [
        ("node-a", 0, 100, "train-0", "ml"),
        ("node-a", 1, 101, None, None),  # two pods: whose process it is is unknown
        ("node-a", 3, 103, None, None),
    ]


def test_every_process_on_a_held_gpu_takes_its_pod(cluster: CannedPrometheus) -> None:
    add_nvitop_process(cluster, "node-a", "0", UUIDS[0], 200, used_mib=5,
                       command="/usr/bin/python loader.py")
    assert owners(processes(cluster))[:2] == [
        ("node-a", 0, 100, "train-0", "ml"),
        ("node-a", 0, 200, "train-0", "ml"),
    ]


def test_a_mig_instance_lends_no_pod() -> None:
    # One pod holds instance 1 of GPU 2; nvitop places its process on "2:1" of the same
    # node. The instance's pod does not say whose the parent GPU's processes are.
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 2, UUIDS[2], temperature=50, used_mib=10, free_mib=30,
             pods=[("mig-0", "ml")], mig=1)
    add_nvitop_process(prom, "node-a", "2:1", "MIG-1", 300, used_mib=10)
    add_nvitop_process(prom, "node-a", "2", UUIDS[2], 301, used_mib=10)
    assert owners(processes(prom)) == [
        ("node-a", 2, 300, None, None),
        ("node-a", 2, 301, None, None),
    ]


@pytest.mark.parametrize("spelling", [str.upper, str.lower], ids=["upper", "lower"])
def test_the_uuid_finds_the_gpu_whatever_the_node_is_called(
        spelling: Callable[[str], str]) -> None:
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 0, UUIDS[0], temperature=60, used_mib=900, free_mib=100,
             pods=[("train-0", "ml")])
    add_nvitop_process(prom, NVITOP_HOST, "0", spelling(UUIDS[0]), 100, used_mib=100)
    assert owners(processes(prom)) == [(NVITOP_HOST, 0, 100, "train-0", "ml")]


def test_the_uuid_wins_over_node_and_index() -> None:
    # nvitop counts GPUs in another order than dcgm: its "0" is dcgm's GPU 1.
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 0, UUIDS[0], temperature=60, used_mib=900, free_mib=100,
             pods=[("train-0", "ml")])
    add_dcgm(prom, "node-a", 1, UUIDS[1], temperature=60, used_mib=900, free_mib=100,
             pods=[("infer-0", "web")])
    add_nvitop_process(prom, "node-a", "0", UUIDS[1], 100, used_mib=100)
    assert owners(processes(prom)) == [("node-a", 0, 100, "infer-0", "web")]


def test_node_and_index_find_the_gpu_where_the_process_exporter_has_no_uuid() -> None:
    prom = CannedPrometheus()
    add_dcgm(prom, "node-b", 0, UUIDS[0], temperature=60, used_mib=900, free_mib=100,
             pods=[("infer-0", "web")])
    add_dcgm(prom, "node-c", 1, UUIDS[1], temperature=60, used_mib=900, free_mib=100,
             pods=[("other-0", "web")])
    add_gpu_metrics_process(prom, "node-b", 0, 500, used_bytes=MIB)
    add_gpu_metrics_process(prom, "node-b", 1, 501, used_bytes=MIB)  # node-c has GPU 1
    assert owners(processes(prom, (DCGM, GPU_METRICS))) == [
        ("node-b", 0, 500, "infer-0", "web"),
        ("node-b", 1, 501, None, None),
    ]


def test_a_bare_uuid_of_nvidia_gpu_exporter_finds_the_gpu() -> None:
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 0, UUIDS[0], temperature=60, used_mib=900, free_mib=100,
             pods=[("train-0", "ml")])
    add_smi_process(prom, "worker-7", 0, UUIDS[0], 100, used_bytes=MIB)
    assert owners(processes(prom, (DCGM, NVIDIA_SMI))) == [
        ("worker-7", 0, 100, "train-0", "ml")]


def test_without_an_exporter_that_knows_pods_no_process_has_one(
        cluster: CannedPrometheus) -> None:
    assert [p.pod for p in processes(cluster, (NVITOP,))] == [None, None, None]
    assert processes(cluster, (NVITOP,), pod=("train-0",)) == []


@pytest.mark.parametrize(("filters", "pids"), [
    ({"pod": ("train-0",)}, [100]),
    ({"namespace": ("ml",)}, [100]),
    ({"pod": ("train-0",), "namespace": ("ml",)}, [100]),
    ({"pod": ("train-0",), "namespace": ("web",)}, []),
    ({"pod": ("train-0", "serve-0")}, [100]),  # the shared GPU lent serve-0 nothing
    ({"namespace": ("web",)}, []),
    ({"pod": ("nobody",)}, []),
    ({"node": ("node-a",), "pod": ("train-0",)}, [100]),
    ({"node": ("node-b",), "pod": ("train-0",)}, []),
], ids=lambda value: str(value) if isinstance(value, dict) else None)
def test_pod_and_namespace_filters_apply_after_borrowing(
        cluster: CannedPrometheus, filters: dict[str, tuple[str, ...]], pids: list[int]) -> None:
    found = processes(cluster, **filters)
    assert [p.pid for p in found] == pids
    assert all((p.pod, p.namespace) == ("train-0", "ml") for p in found)
