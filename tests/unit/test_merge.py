"""Several exporters describing the same GPUs: each GPU (and process) is listed once.

Driven through the public `list_gpus` / `list_processes` with canned series: a GPU seen by
two dialects is listed from the first in preference order; identity is the UUID (in any
case) or the (node, index) pair; rows of one dialect never hide each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from app.dialects.builtin import DCGM, GPU_METRICS, NVIDIA_SMI, NVITOP
from app.dialects.model import Dialect
from app.services.gpus import list_gpus, list_processes
from app.services.records import Gpu, GpuFilters, GpuProcess
from tests.canned_prometheus import CannedPrometheus
from tests.exporter_series import (
    A100,
    MIB,
    add_dcgm,
    add_gpu_metrics,
    add_nvitop,
    add_nvitop_process,
    add_smi_process,
)

UUID_0 = "GPU-5fb36a2c-1d7e-4c3b-9f0a-000000000000"
UUID_1 = "GPU-5fb36a2c-1d7e-4c3b-9f0a-000000000001"
UUID_2 = "GPU-5fb36a2c-1d7e-4c3b-9f0a-000000000002"
# nvitop-exporter's hostname label defaults to the machine's address, not its node name.
NVITOP_HOST = "192.0.2.10"


def gpus(prom: CannedPrometheus, dialects: Sequence[Dialect],
         filters: GpuFilters | None = None) -> list[Gpu]:
    return list_gpus(prom, dialects, filters or GpuFilters())  # type: ignore[arg-type]


def rows(found: list[Gpu]) -> list[tuple[object, ...]]:
    """What says which exporter a GPU came from: its place, its values, its pod."""
    return [(g.node_name, g.gpu_index, g.mig_instance, g.temperature, g.memory_used, g.pod)
            for g in found]


@pytest.fixture
def two_exporters() -> CannedPrometheus:
    """dcgm-exporter and nvitop-exporter on one node, reading the same two GPUs."""
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 0, UUID_0, temperature=61, used_mib=1024, free_mib=3072,
             pods=[("train-0", "ml")])
    add_dcgm(prom, "node-a", 1, UUID_1, temperature=40, used_mib=0, free_mib=4096)
    add_nvitop(prom, "node-a", "0", UUID_0, temperature=62, used_mib=1000, total_mib=4096)
    add_nvitop(prom, "node-a", "1", UUID_1, temperature=41, used_mib=10, total_mib=4096)
    return prom


def test_a_gpu_two_exporters_describe_is_listed_once_from_the_preferred_one(
        two_exporters: CannedPrometheus) -> None:
    assert rows(gpus(two_exporters, [DCGM, NVITOP])) == [
        ("node-a", 0, None, 61.0, 1024 * MIB, "train-0"),
        ("node-a", 1, None, 40.0, 0, None),
    ]


def test_preference_follows_the_order_of_the_dialects(
        two_exporters: CannedPrometheus) -> None:
    assert rows(gpus(two_exporters, [NVITOP, DCGM])) == [
        ("node-a", 0, None, 62.0, 1000 * MIB, None),
        ("node-a", 1, None, 41.0, 10 * MIB, None),
    ]


def test_the_preferred_row_keeps_its_own_derived_values(
        two_exporters: CannedPrometheus) -> None:
    # dcgm has no total: it is used + free of dcgm's own series, not nvitop's total.
    first = gpus(two_exporters, [DCGM, NVITOP])[0]
    assert (first.uuid, first.memory_total, first.memory_free) == (
        UUID_0, 4096 * MIB, 3072 * MIB)


def test_gpus_only_one_exporter_sees_are_all_listed_in_order() -> None:
    prom = CannedPrometheus()
    add_dcgm(prom, "node-b", 0, UUID_0, temperature=50, used_mib=1, free_mib=1)
    add_nvitop(prom, "node-a", "3", UUID_1, temperature=70, used_mib=2, total_mib=4)
    add_nvitop(prom, "node-c", "0", UUID_2, temperature=30, used_mib=3, total_mib=4)
    assert rows(gpus(prom, [DCGM, NVITOP])) == [
        ("node-a", 3, None, 70.0, 2 * MIB, None),
        ("node-b", 0, None, 50.0, 1 * MIB, None),
        ("node-c", 0, None, 30.0, 3 * MIB, None),
    ]


@pytest.mark.parametrize("spelling", [str.upper, str.lower], ids=["upper", "lower"])
def test_the_uuid_identifies_a_gpu_in_any_case_across_node_spellings(
        spelling: Callable[[str], str]) -> None:
    # nvitop names the node by address, so only the UUID says it is dcgm's GPU 0.
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 0, UUID_0, temperature=61, used_mib=1024, free_mib=3072)
    add_nvitop(prom, NVITOP_HOST, "0", spelling(UUID_0), temperature=62, used_mib=1000,
               total_mib=4096)
    add_nvitop(prom, NVITOP_HOST, "1", UUID_1, temperature=41, used_mib=10, total_mib=4096)
    assert rows(gpus(prom, [DCGM, NVITOP])) == [
        (NVITOP_HOST, 1, None, 41.0, 10 * MIB, None),
        ("node-a", 0, None, 61.0, 1024 * MIB, None),
    ]


def test_node_and_index_identify_a_gpu_where_an_exporter_has_no_uuid() -> None:
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 0, UUID_0, temperature=61, used_mib=1024, free_mib=3072)
    add_gpu_metrics(prom, "node-a", 0, temperature=99)  # dcgm's GPU 0: not repeated
    add_gpu_metrics(prom, "node-a", 7, temperature=77)  # same node, another index
    add_gpu_metrics(prom, "node-b", 0, temperature=55)  # same index, another node
    assert rows(gpus(prom, [DCGM, GPU_METRICS])) == [
        ("node-a", 0, None, 61.0, 1024 * MIB, None),
        ("node-a", 7, None, 77.0, 0, None),
        ("node-b", 0, None, 55.0, 0, None),
    ]


def test_mig_instances_of_one_gpu_do_not_hide_each_other() -> None:
    # Both instances share the parent's UUID and index; nvitop's copies of them are hidden.
    prom = CannedPrometheus()
    for instance, temperature in ((1, 45), (2, 46)):
        add_dcgm(prom, "node-a", 0, UUID_0, temperature=temperature, used_mib=instance,
                 free_mib=10, mig=instance)
        add_nvitop(prom, "node-a", f"0:{instance}", f"MIG-{instance}", temperature=90,
                   used_mib=9, total_mib=40, name=f"{A100} MIG 3g.40gb")
    assert rows(gpus(prom, [DCGM, NVITOP])) == [
        ("node-a", 0, 1, 45.0, 1 * MIB, None),
        ("node-a", 0, 2, 46.0, 2 * MIB, None),
    ]


def test_rows_of_a_later_exporter_do_not_hide_each_other() -> None:
    # Only nvitop sees node-b's MIG instances; they share (node, index) and are both kept.
    prom = CannedPrometheus()
    add_dcgm(prom, "node-a", 0, UUID_0, temperature=61, used_mib=1024, free_mib=3072)
    for instance in (1, 2):
        add_nvitop(prom, "node-b", f"0:{instance}", f"MIG-b-{instance}",
                   temperature=50 + instance, used_mib=instance, total_mib=40,
                   name=f"{A100} MIG 3g.40gb")
    found = gpus(prom, [DCGM, NVITOP])
    assert rows(found) == [
        ("node-a", 0, None, 61.0, 1024 * MIB, None),
        ("node-b", 0, 1, 51.0, 1 * MIB, None),
        ("node-b", 0, 2, 52.0, 2 * MIB, None),
    ]
    assert [(g.gpu_name, g.mig_profile) for g in found[1:]] == [(A100, "3g.40gb")] * 2


def test_filters_apply_to_every_exporter_before_the_merge(
        two_exporters: CannedPrometheus) -> None:
    add_nvitop(two_exporters, "node-b", "0", UUID_2, temperature=33, used_mib=5,
               total_mib=8)
    found = gpus(two_exporters, [DCGM, NVITOP], GpuFilters(node=("node-a",)))
    assert rows(found) == [
        ("node-a", 0, None, 61.0, 1024 * MIB, "train-0"),
        ("node-a", 1, None, 40.0, 0, None),
    ]
    by_uuid = gpus(two_exporters, [DCGM, NVITOP], GpuFilters(uuid=(UUID_2,)))
    assert rows(by_uuid) == [("node-b", 0, None, 33.0, 5 * MIB, None)]


# -- processes ---------------------------------------------------------------------------


def processes(prom: CannedPrometheus, dialects: Sequence[Dialect],
              filters: GpuFilters | None = None) -> list[GpuProcess]:
    return list_processes(prom, dialects, filters or GpuFilters())  # type: ignore[arg-type]


def process_rows(found: list[GpuProcess]) -> list[tuple[object, ...]]:
    return [(p.node_name, p.gpu_index, p.pid, p.process_name, p.user, p.gpu_memory)
            for p in found]


@pytest.fixture
def two_process_tables() -> CannedPrometheus:
    """nvidia_gpu_exporter and nvitop-exporter on node-a, both listing pid 4242."""
    prom = CannedPrometheus()
    add_smi_process(prom, "node-a", 0, UUID_0, 4242, used_bytes=2 * 1024 * MIB)
    add_nvitop_process(prom, "node-a", "0", UUID_0, 4242, used_mib=2000)
    return prom


def test_a_process_two_exporters_list_is_listed_once_from_the_preferred_one(
        two_process_tables: CannedPrometheus) -> None:
    assert process_rows(processes(two_process_tables, [NVIDIA_SMI, NVITOP])) == [
        ("node-a", 0, 4242, "python3", None, 2048 * MIB)]
    assert process_rows(processes(two_process_tables, [NVITOP, NVIDIA_SMI])) == [
        ("node-a", 0, 4242, "python", "alice", 2000 * MIB)]


def test_the_same_pid_on_another_node_is_another_process(
        two_process_tables: CannedPrometheus) -> None:
    add_nvitop_process(two_process_tables, "node-b", "1", UUID_1, 4242, used_mib=300)
    assert process_rows(processes(two_process_tables, [NVIDIA_SMI, NVITOP])) == [
        ("node-a", 0, 4242, "python3", None, 2048 * MIB),
        ("node-b", 1, 4242, "python", "alice", 300 * MIB),
    ]


def test_a_process_on_two_gpus_keeps_both_rows_of_its_exporter(
        two_process_tables: CannedPrometheus) -> None:
    # pid 777 holds memory on GPUs 0 and 1; only nvitop, the later dialect, lists it.
    add_nvitop_process(two_process_tables, "node-a", "0", UUID_0, 777, used_mib=100)
    add_nvitop_process(two_process_tables, "node-a", "1", UUID_1, 777, used_mib=200)
    assert process_rows(processes(two_process_tables, [NVIDIA_SMI, NVITOP])) == [
        ("node-a", 0, 777, "python", "alice", 100 * MIB),
        ("node-a", 0, 4242, "python3", None, 2048 * MIB),
        ("node-a", 1, 777, "python", "alice", 200 * MIB),
    ]
