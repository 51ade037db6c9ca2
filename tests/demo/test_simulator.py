"""Tests of the simulated cluster, its exporter dialects, its HTTP server and a real Prometheus."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections import defaultdict

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from demo.cluster import (
    MIB,
    ClusterSpec,
    Fault,
    SimGpu,
    SimHealth,
    SimPod,
    current_step,
    mig_node_names,
    node_names,
    parse_fault,
    shared_gpu_slots,
    snapshot,
)
from demo.dialects import (
    DIALECTS,
    NODELESS_DIALECTS,
    RenderCache,
    exporter_pod,
    render,
    smi_uuid,
)
from demo.exporter import ExporterServer
from demo.prometheus import (
    PrometheusNotInstalledError,
    PrometheusServer,
    ScrapeTarget,
    find_prometheus_binary,
)

SPEC = ClusterSpec(nodes=3, gpus_per_node=4, seed=7, mig_nodes=1, shared_gpus=2)
UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NODE_LABELS = {"node", "hostname", "Hostname", "instance"}

EXPECTED_NAMES = {
    "legacy-node": {
        "nvidia_gpu_utilization_percent",
        "nvidia_gpu_used_memory_bytes",
        "nvidia_gpu_total_memory_bytes",
        "nvidia_gpu_free_memory_bytes",
        "nvidia_gpu_memory_utilization_percent",
        "nvidia_gpu_temperature_celsius",
        "nvidia_gpu_process_gpu_memory_bytes",
        "nvidia_gpu_process_cpu_percent",
        "nvidia_gpu_process_memory_percent",
    },
    "gpu-metrics": {
        "gpu_metrics_gpu_utilization",
        "gpu_metrics_used_memory",
        "gpu_metrics_total_memory",
        "gpu_metrics_free_memory",
        "gpu_metrics_temperature",
        "gpu_metrics_cpu_utilization",
        "gpu_metrics_memory_utilization",
        "gpu_process_gpu_memory",
    },
    "dcgm": {
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_FB_RESERVED",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_SM_CLOCK",
    },
    "dcgm-old": {
        "dcgm_gpu_info",
        "dcgm_gpu_utilization",
        "dcgm_mem_copy_utilization",
        "dcgm_fb_used",
        "dcgm_fb_free",
        "dcgm_gpu_temp",
        "dcgm_power_usage",
        "dcgm_sm_clock",
    },
    "nvidia-smi": {
        "nvidia_smi_gpu_info",
        "nvidia_smi_utilization_gpu_ratio",
        "nvidia_smi_utilization_memory_ratio",
        "nvidia_smi_memory_used_bytes",
        "nvidia_smi_memory_total_bytes",
        "nvidia_smi_memory_free_bytes",
        "nvidia_smi_temperature_gpu",
        "nvidia_smi_power_draw_watts",
        "nvidia_smi_compute_app_used_memory_bytes",
    },
    "nvitop": {
        "gpu_utilization_Percentage",
        "gpu_memory_used_MiB",
        "gpu_memory_total_MiB",
        "gpu_memory_free_MiB",
        "gpu_temperature_C",
        "gpu_power_usage_W",
        "process_gpu_memory_MiB",
        "process_cpu_percent_Percentage",
        "process_memory_percent_Percentage",
        "process_running_time_Second",
        "process_info_info",
    },
}
EXPECTED_NAMES["legacy-hostname"] = EXPECTED_NAMES["legacy-node"]
EXPECTED_NAMES["dcgm-hostname"] = EXPECTED_NAMES["dcgm"]
EXPECTED_NAMES["dcgm-single-pod"] = EXPECTED_NAMES["dcgm"]
EXPECTED_NAMES["dcgm-pod-hostname"] = EXPECTED_NAMES["dcgm"]
EXPECTED_NAMES["dcgm-no-gpu-util"] = EXPECTED_NAMES["dcgm"] - {"DCGM_FI_DEV_GPU_UTIL"}
# The health counters of dcgm-exporter's default CSV, and every optional one.
DEFAULT_HEALTH = {"DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
                  "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
                  "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE"}
EXPECTED_NAMES["dcgm-health"] = EXPECTED_NAMES["dcgm"] | DEFAULT_HEALTH
# DCGM_EXP_XID_ERRORS_COUNT has a series only for an XID of the last few steps.
EXPECTED_NAMES["dcgm-health-all"] = EXPECTED_NAMES["dcgm-health"] | {
    "DCGM_FI_DEV_ROW_REMAP_PENDING", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "DCGM_EXP_GPU_HEALTH_STATUS"}
EXPECTED_NAMES["nvidia-smi-1.2"] = EXPECTED_NAMES["nvidia-smi"] | {"nvidia_smi_index"}
EXPECTED_NAMES["kube-state-metrics"] = {"kube_pod_info"}


def parse(text: str) -> dict[str, list[Sample]]:
    """Parse exposition text into samples per metric name (fails on malformed text)."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def plain_rows(rows: list[SimGpu]) -> list[SimGpu]:
    return [gpu for gpu in rows if gpu.mig_instance is None]


# --- the cluster model ---------------------------------------------------------------------


def test_snapshot_is_a_pure_function_of_spec_and_step() -> None:
    assert snapshot(SPEC, 4) == snapshot(SPEC, 4)
    other_seed = snapshot(dataclasses.replace(SPEC, seed=8), 4)
    assert {g.uuid for g in other_seed}.isdisjoint({g.uuid for g in snapshot(SPEC, 4)})


def test_snapshot_moves_with_step_but_keeps_every_identity() -> None:
    before, after = snapshot(SPEC, 0), snapshot(SPEC, 1)

    def identity(gpu: SimGpu) -> tuple[object, ...]:
        pids = tuple(p.pid for p in gpu.processes)
        return (gpu.node, gpu.index, gpu.uuid, gpu.name, gpu.mig_instance, gpu.pods, pids)

    assert [identity(g) for g in before] == [identity(g) for g in after]
    for field in ("utilization", "temperature", "power_w", "memory_used_bytes"):
        assert any(
            getattr(a, field) != getattr(b, field) for a, b in zip(before, after, strict=True)
        )
    procs = [
        (p, q)
        for a, b in zip(before, after, strict=True)
        for p, q in zip(a.processes, b.processes, strict=True)
    ]
    assert any(p.cpu_percent != q.cpu_percent for p, q in procs)
    assert any(p.memory_percent != q.memory_percent for p, q in procs)


def test_values_use_canonical_units_and_precision() -> None:
    for gpu in snapshot(SPEC, 3):
        assert UUID_RE.match(gpu.uuid)
        assert gpu.utilization.is_integer() and 0 <= gpu.utilization <= 100
        assert gpu.temperature.is_integer()
        assert round(gpu.power_w, 2) == gpu.power_w
        for proc in gpu.processes:
            assert round(proc.cpu_percent, 1) == proc.cpu_percent
            assert round(proc.memory_percent, 1) == proc.memory_percent


def test_memory_adds_up_in_whole_mib() -> None:
    for gpu in snapshot(SPEC, 2):
        parts = (gpu.memory_used_bytes, gpu.memory_free_bytes, gpu.memory_reserved_bytes)
        assert sum(parts) == gpu.memory_total_bytes
        assert all(value % MIB == 0 and value >= 0 for value in (*parts, gpu.memory_total_bytes))
        assert all(p.gpu_memory_bytes % MIB == 0 and p.gpu_memory_bytes > 0 for p in gpu.processes)
        if gpu.processes:
            assert sum(p.gpu_memory_bytes for p in gpu.processes) == gpu.memory_used_bytes


def test_shares_sum_exactly_and_idle_gpus_have_no_pods() -> None:
    rows = snapshot(SPEC, 5)
    for gpu in rows:
        assert len(gpu.util_shares) == len(gpu.memory_shares) == len(gpu.pods)
        if gpu.pods:
            assert sum(gpu.util_shares) == gpu.utilization
            assert sum(gpu.memory_shares) == gpu.memory_used_bytes
        else:
            assert gpu.utilization == 0 and gpu.memory_used_bytes == 0 and not gpu.processes
    assert any(not gpu.pods for gpu in rows), "the spec's idle_fraction should leave idle GPUs"
    shared = [(gpu.node, gpu.index) for gpu in rows if len(gpu.pods) > 1]
    assert shared == shared_gpu_slots(SPEC) and len(shared) == SPEC.shared_gpus


def test_mig_nodes_split_every_gpu_into_instances_of_the_same_device() -> None:
    rows = snapshot(SPEC, 0)
    assert mig_node_names(SPEC) == ["gpu-node-003"]
    by_device: dict[tuple[str, int], list[SimGpu]] = defaultdict(list)
    for gpu in rows:
        by_device[gpu.node, gpu.index].append(gpu)
    for (node, _), parts in by_device.items():
        if node in mig_node_names(SPEC):
            assert len(parts) > 1
            assert all(p.mig_instance is not None and p.mig_profile for p in parts)
            assert len({(p.uuid, p.temperature, p.power_w) for p in parts}) == 1
            assert len({p.mig_instance for p in parts}) == len(parts)
        else:
            assert [p.mig_instance for p in parts] == [None]


def test_node_names_and_step_clock() -> None:
    assert node_names(SPEC) == ["gpu-node-001", "gpu-node-002", "gpu-node-003"]
    assert current_step(0) == 0
    before = int(time.time() // 10)
    assert before <= current_step(10) <= int(time.time() // 10)


@pytest.mark.parametrize(
    "changes",
    [{"mig_nodes": 4}, {"shared_gpus": 9}, {"idle_fraction": 1.5}, {"processes_per_busy_gpu": 51}],
)
def test_spec_rejects_shapes_the_model_cannot_build(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(ClusterSpec(nodes=3, gpus_per_node=4, mig_nodes=1), **changes)


# --- dialects ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_parses_with_help_type_and_expected_names(dialect: str) -> None:
    families = list(text_string_to_metric_families(render(snapshot(SPEC, 1), dialect)))
    assert EXPECTED_NAMES[dialect] <= {f.name for f in families}
    for family in families:
        assert family.type == "gauge" and family.documentation and family.samples


@pytest.mark.parametrize("dialect", NODELESS_DIALECTS)
def test_nodeless_dialects_carry_no_node_label(dialect: str) -> None:
    for samples in parse(render(snapshot(SPEC, 0), dialect)).values():
        for sample in samples:
            assert NODE_LABELS.isdisjoint(sample.labels), sample


def dcgm_series(metrics: dict[str, list[Sample]], name: str, gpu: SimGpu) -> list[Sample]:
    """Return the series of one GPU row (one per pod on a shared GPU)."""
    instance = None if gpu.mig_instance is None else str(gpu.mig_instance)
    return [
        s
        for s in metrics.get(name, [])
        if (s.labels["Hostname"], s.labels["gpu"], s.labels.get("GPU_I_ID"))
        == (gpu.node, str(gpu.index), instance)
    ]


def test_dcgm_reports_framebuffer_in_mib_and_no_gpu_util_on_mig() -> None:
    rows = snapshot(SPEC, 2)
    metrics = parse(render(rows, "dcgm"))
    for gpu in rows:
        copies = len(gpu.pods) or 1

        def values(name: str, gpu: SimGpu = gpu) -> list[float]:
            return [s.value for s in dcgm_series(metrics, name, gpu)]

        # A shared GPU is written once per pod with the device's whole values (copy shape).
        assert values("DCGM_FI_DEV_FB_USED") == [gpu.memory_used_bytes / 2**20] * copies
        assert values("DCGM_FI_DEV_FB_FREE") == [gpu.memory_free_bytes / 2**20] * copies
        assert values("DCGM_FI_DEV_FB_RESERVED") == [gpu.memory_reserved_bytes / 2**20] * copies
        assert values("DCGM_FI_PROF_GR_ENGINE_ACTIVE") == [gpu.utilization / 100] * copies
        labels = dcgm_series(metrics, "DCGM_FI_DEV_GPU_TEMP", gpu)[0].labels
        assert labels["UUID"] == gpu.uuid and labels["device"] == f"nvidia{gpu.index}"
        assert labels["modelName"] == gpu.name and labels["pci_bus_id"] == gpu.pci_bus_id
        assert labels["DCGM_FI_DRIVER_VERSION"] == gpu.driver_version
        if gpu.mig_instance is None:
            assert values("DCGM_FI_DEV_GPU_UTIL") == [gpu.utilization] * copies
        else:
            assert values("DCGM_FI_DEV_GPU_UTIL") == []
            assert labels["GPU_I_PROFILE"] == gpu.mig_profile


# One time-shared L4 held by two pods, written by hand: 46 % busy (30 + 16 per pod),
# 10000 MiB used (6000 + 4000), 12000 MiB free, 500 MiB reserved, 61 degrees, 72.5 W.
SHARED_L4 = SimGpu(
    node="n1", index=0, uuid="GPU-11111111-2222-3333-4444-555555555555", name="NVIDIA L4",
    pci_bus_id="00000000:07:00.0", driver_version="580.105.08", utilization=46.0,
    memory_copy_utilization=20.0, memory_total_bytes=22500 * MIB,
    memory_used_bytes=10000 * MIB, memory_reserved_bytes=500 * MIB,
    memory_free_bytes=12000 * MIB, temperature=61.0, power_w=72.5, sm_clock_mhz=2040.0,
    mig_instance=None, mig_profile=None,
    pods=(SimPod("infer-a", "team-a", "server"), SimPod("infer-b", "team-b", "server")),
    util_shares=(30.0, 16.0), memory_shares=(6000 * MIB, 4000 * MIB), processes=(),
    host_cpu_percent=10.0, host_memory_percent=20.0,
)


def series_by_pod(text: str, name: str) -> dict[str | None, float]:
    return {s.labels.get("pod"): s.value for s in parse(text).get(name, [])}


def test_dcgm_copy_shape_writes_every_family_once_per_pod_with_whole_values() -> None:
    text = render([SHARED_L4], "dcgm")

    assert series_by_pod(text, "DCGM_FI_DEV_GPU_UTIL") == {"infer-a": 46, "infer-b": 46}
    assert series_by_pod(text, "DCGM_FI_DEV_FB_USED") == {"infer-a": 10000, "infer-b": 10000}
    assert series_by_pod(text, "DCGM_FI_DEV_POWER_USAGE") == {"infer-a": 72.5, "infer-b": 72.5}
    assert {s.labels["vgpu"] for s in parse(text)["DCGM_FI_DEV_GPU_TEMP"]} == {"0", "1"}


def test_dcgm_per_process_shape_adds_a_podless_device_series_to_util_and_fb_used() -> None:
    text = render([SHARED_L4], "dcgm-hostname")

    assert series_by_pod(text, "DCGM_FI_DEV_GPU_UTIL") == {None: 46, "infer-a": 30, "infer-b": 16}
    assert series_by_pod(text, "DCGM_FI_DEV_FB_USED") == {
        None: 10000, "infer-a": 6000, "infer-b": 4000}
    # Every other family is copied per pod, with no pod-less series.
    assert series_by_pod(text, "DCGM_FI_DEV_FB_FREE") == {"infer-a": 12000, "infer-b": 12000}
    assert series_by_pod(text, "DCGM_FI_DEV_GPU_TEMP") == {"infer-a": 61, "infer-b": 61}
    assert all(s.labels["pod_uid"] for s in parse(text)["DCGM_FI_DEV_FB_USED"]
               if "pod" in s.labels)


def test_dcgm_without_virtual_gpus_names_one_pod_per_gpu() -> None:
    text = render([SHARED_L4], "dcgm-single-pod")

    assert series_by_pod(text, "DCGM_FI_DEV_GPU_UTIL") == {"infer-a": 46}
    assert series_by_pod(text, "DCGM_FI_DEV_FB_USED") == {"infer-a": 10000}


def test_dcgm_without_node_name_writes_the_exporter_pod_as_hostname() -> None:
    text = render([SHARED_L4], "dcgm-pod-hostname")

    hostnames = {s.labels["Hostname"] for s in parse(text)["DCGM_FI_DEV_GPU_TEMP"]}
    assert hostnames == {exporter_pod("n1")} and exporter_pod("n1") != "n1"
    assert exporter_pod("n1").startswith("nvidia-dcgm-exporter-")
    assert exporter_pod("n1") != exporter_pod("n2")
    ksm = parse(render([SHARED_L4], "kube-state-metrics"))["kube_pod_info"]
    assert {(s.labels["pod"], s.labels["node"]) for s in ksm} == {
        (exporter_pod("n1"), "n1"), ("infer-a", "n1"), ("infer-b", "n1")}


def test_dcgm_custom_counter_set_without_gpu_util_keeps_engine_activity() -> None:
    metrics = parse(render([SHARED_L4], "dcgm-no-gpu-util"))

    assert "DCGM_FI_DEV_GPU_UTIL" not in metrics
    assert {s.value for s in metrics["DCGM_FI_PROF_GR_ENGINE_ACTIVE"]} == {0.46}


def test_nvidia_smi_before_1_3_has_no_index_label_on_gpu_info() -> None:
    metrics = parse(render([SHARED_L4], "nvidia-smi-1.2"))

    assert "index" not in metrics["nvidia_smi_gpu_info"][0].labels
    assert [s.value for s in metrics["nvidia_smi_index"]] == [0]


def test_dcgm_hostname_variant_spells_the_node_label_in_lower_case() -> None:
    samples = parse(render(snapshot(SPEC, 0), "dcgm-hostname"))["DCGM_FI_DEV_GPU_TEMP"]
    assert {s.labels["hostname"] for s in samples} == set(node_names(SPEC))
    assert all("Hostname" not in s.labels for s in samples)


def test_nvidia_smi_uses_ratios_bytes_and_bare_lowercase_uuids() -> None:
    rows = snapshot(SPEC, 3)
    metrics = parse(render(rows, "nvidia-smi"))
    info = {s.labels["uuid"]: s.labels for s in metrics["nvidia_smi_gpu_info"]}
    util = {s.labels["uuid"]: s.value for s in metrics["nvidia_smi_utilization_gpu_ratio"]}
    used = {s.labels["uuid"]: s.value for s in metrics["nvidia_smi_memory_used_bytes"]}
    total = {s.labels["uuid"]: s.value for s in metrics["nvidia_smi_memory_total_bytes"]}
    for gpu in rows:
        uuid = smi_uuid(gpu.uuid)
        assert uuid == gpu.uuid.lower().removeprefix("gpu-") and not uuid.startswith("gpu")
        assert info[uuid]["name"] == gpu.name and info[uuid]["index"] == str(gpu.index)
        if gpu.mig_instance is None:
            assert util[uuid] == gpu.utilization / 100
            assert used[uuid] == gpu.memory_used_bytes and total[uuid] == gpu.memory_total_bytes
        else:
            # NVML sees one MIG-mode device: memory summed over instances, no utilization.
            parts = [g for g in rows if (g.node, g.index) == (gpu.node, gpu.index)]
            assert uuid not in util
            assert used[uuid] == sum(p.memory_used_bytes for p in parts)
    for name, samples in metrics.items():
        if name not in ("nvidia_smi_gpu_info", "nvidia_smi_compute_app_used_memory_bytes"):
            assert all(set(s.labels) == {"uuid"} for s in samples), name
    apps = metrics["nvidia_smi_compute_app_used_memory_bytes"]
    assert all(set(s.labels) == {"uuid", "pid", "process_name"} for s in apps)
    assert len(apps) == sum(len(g.processes) for g in rows)


def test_legacy_dialects_report_bytes_percent_and_process_labels() -> None:
    rows = snapshot(SPEC, 1)
    by_device = {(g.node, g.index): g for g in plain_rows(rows)}
    node_style = parse(render(rows, "legacy-node"))
    for sample in node_style["nvidia_gpu_memory_utilization_percent"]:
        assert set(sample.labels) == {"node", "gpu", "gpu_name"}
        gpu = by_device.get((sample.labels["node"], int(sample.labels["gpu"])))
        if gpu is not None:
            assert sample.value == gpu.memory_used_bytes / gpu.memory_total_bytes * 100
    process_labels = {"node", "gpu", "pid", "process_name", "user", "command"}
    assert all(
        set(s.labels) == process_labels for s in node_style["nvidia_gpu_process_cpu_percent"]
    )
    hostname_style = parse(render(rows, "legacy-hostname"))
    sample = hostname_style["nvidia_gpu_temperature_celsius"][0]
    assert set(sample.labels) == {"hostname", "gpu_id", "gpu_name"}


def test_gpu_metrics_reports_node_cpu_and_numeric_uids() -> None:
    rows = snapshot(SPEC, 1)
    metrics = parse(render(rows, "gpu-metrics"))
    cpu = {s.labels["hostname"]: s.value for s in metrics["gpu_metrics_cpu_utilization"]}
    assert cpu == {g.node: g.host_cpu_percent for g in rows}
    processes = metrics["gpu_process_gpu_memory"]
    assert processes and all(s.labels["uid"].isdigit() for s in processes)
    assert {"hostname", "gpu_id", "pid", "process_name", "uid", "command"} == set(
        processes[0].labels
    )


def test_nvitop_reports_mib_and_the_process_table() -> None:
    rows = snapshot(SPEC, 1)
    metrics = parse(render(rows, "nvitop"))
    used = {
        (s.labels["hostname"], s.labels["index"]): s.value for s in metrics["gpu_memory_used_MiB"]
    }
    for gpu in plain_rows(rows):
        assert used[gpu.node, str(gpu.index)] == gpu.memory_used_bytes // MIB
    mig_util = [s for s in metrics["gpu_utilization_Percentage"] if ":" in s.labels["index"]]
    assert mig_util and all(math.isnan(s.value) for s in mig_util)
    info = metrics["process_info_info"]
    assert len(info) == sum(len(g.processes) for g in rows)
    commands = {p.command for g in rows for p in g.processes}
    assert {s.labels["command"] for s in info} == commands
    assert {"hostname", "index", "devicename", "uuid", "pid", "username"} <= set(info[0].labels)


def test_dcgm_old_uses_1x_names_pod_labels_and_no_node_label() -> None:
    rows = snapshot(dataclasses.replace(SPEC, mig_nodes=0, idle_fraction=0.0), 0)
    metrics = parse(render(rows, "dcgm-old"))
    used = {s.labels["uuid"]: s for s in metrics["dcgm_fb_used"]}
    free = {s.labels["uuid"]: s.value for s in metrics["dcgm_fb_free"]}
    for gpu in rows:
        sample = used[gpu.uuid]
        # 1.x has no reserved field: used + free is the whole framebuffer.
        assert sample.value + free[gpu.uuid] == gpu.memory_total_bytes / 2**20
        assert sample.labels["pod_name"] == gpu.pods[-1].pod
        assert {"gpu", "uuid", "pod_name", "pod_namespace", "container_name"} == set(sample.labels)


def test_label_values_are_escaped() -> None:
    rows = snapshot(SPEC, 0)
    nasty = 'bash -c "echo C:\\tmp\\x"\nsecond line'
    position, gpu = next((i, g) for i, g in enumerate(rows) if g.processes and g.pods)
    changed = dataclasses.replace(
        gpu,
        processes=tuple(dataclasses.replace(p, command=nasty) for p in gpu.processes),
        pods=tuple(dataclasses.replace(p, pod=nasty) for p in gpu.pods),
    )
    rows[position] = changed
    assert '\\"echo C:\\\\tmp\\\\x\\"\\nsecond' in render(rows, "legacy-node")
    commands = {
        dialect: {s.labels["command"] for s in parse(render(rows, dialect))[name]}
        for dialect, name in (
            ("legacy-node", "nvidia_gpu_process_cpu_percent"),
            ("gpu-metrics", "gpu_process_gpu_memory"),
            ("nvitop", "process_info_info"),
        )
    }
    assert all(nasty in values for values in commands.values()), commands
    pods = {s.labels.get("pod") for s in parse(render(rows, "dcgm"))["DCGM_FI_DEV_FB_USED"]}
    assert nasty in pods


def test_render_for_one_node_keeps_only_its_rows() -> None:
    rows = snapshot(SPEC, 0)
    samples = parse(render(rows, "dcgm", node="gpu-node-002"))["DCGM_FI_DEV_GPU_TEMP"]
    assert {s.labels["Hostname"] for s in samples} == {"gpu-node-002"}
    assert render(rows, "dcgm", node="no-such-node") == ""
    with pytest.raises(ValueError, match="unknown dialect"):
        render(rows, "collectd")


def test_render_cache_reuses_text_per_step_dialect_and_node() -> None:
    cache = RenderCache(SPEC, max_texts=4)
    first = cache.render(0, "dcgm", "gpu-node-001")
    assert cache.render(0, "dcgm", "gpu-node-001") is first
    assert first == render(snapshot(SPEC, 0), "dcgm", "gpu-node-001")
    assert cache.render(1, "dcgm", "gpu-node-001") == render(
        snapshot(SPEC, 1), "dcgm", "gpu-node-001"
    )
    for node in node_names(SPEC):
        cache.render(1, "nvitop", node)
    assert cache.render(0, "dcgm", "gpu-node-001") is not first  # evicted, rebuilt


# --- the HTTP exporter and the Prometheus helper -------------------------------------------


def test_exporter_serves_metrics_per_node_truth_and_health() -> None:
    with ExporterServer(SPEC, "nvidia-smi") as exporter:
        assert requests.get(f"{exporter.url}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{exporter.url}/metrics/gpu-node-999", timeout=5).status_code == 404
        one = requests.get(f"{exporter.url}/metrics/gpu-node-001", timeout=5)
        assert one.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert one.text == render(snapshot(SPEC, 0), "nvidia-smi", "gpu-node-001")
        everything = requests.get(f"{exporter.url}/metrics", timeout=5).text
        assert everything == render(snapshot(SPEC, 0), "nvidia-smi")
        truth = requests.get(f"{exporter.url}/truth", timeout=5).json()
    assert truth["step"] == 0
    assert truth["spec"] == json.loads(json.dumps(dataclasses.asdict(SPEC)))
    assert truth["gpus"] == json.loads(
        json.dumps([dataclasses.asdict(g) for g in snapshot(SPEC, 0)])
    )
    assert [n["name"] for n in truth["nodes"]] == node_names(SPEC)


def test_missing_prometheus_binary_is_an_error_naming_the_debian_package() -> None:
    assert find_prometheus_binary()  # this machine has one, so the e2e test below must run
    server = PrometheusServer([], binary="/nonexistent/prometheus")
    with pytest.raises(PrometheusNotInstalledError, match="apt-get install prometheus"):
        server.start()


@pytest.mark.integration
def test_prometheus_stores_what_the_exporters_publish() -> None:
    dcgm_spec = ClusterSpec(nodes=2, gpus_per_node=2, seed=11, idle_fraction=0.0, shared_gpus=1)
    smi_spec = ClusterSpec(nodes=2, gpus_per_node=2, seed=12)
    exporter_pod = {"pod": "dcgm-exporter-7x2lq", "namespace": "gpu-operator"}
    with ExporterServer(dcgm_spec, "dcgm") as dcgm, ExporterServer(smi_spec, "nvidia-smi") as smi:
        targets = [ScrapeTarget(dcgm.address, "/metrics", exporter_pod)]
        targets += [
            ScrapeTarget(smi.address, f"/metrics/{node}", {"instance": f"{node}:9835"})
            for node in node_names(smi_spec)
        ]
        # honor_labels=False, as the dcgm-exporter chart's ServiceMonitor does.
        with PrometheusServer(targets, scrape_interval="1s", honor_labels=False) as prom:
            prom.wait_for("up == 1", min_count=len(targets))
            truth = requests.get(f"{dcgm.url}/truth", timeout=5).json()
            fb_used = prom.query("DCGM_FI_DEV_FB_USED")["data"]["result"]
            smi_used = prom.query("nvidia_smi_memory_used_bytes")["data"]["result"]

    # The dcgm renderer copies a shared GPU's whole value to every pod's series.
    expected_fb = {
        (gpu["node"], gpu["index"], pod["pod"], pod["namespace"]): gpu["memory_used_bytes"] // MIB
        for gpu in truth["gpus"]
        for pod in gpu["pods"]
    }
    stored_fb = {
        (m["Hostname"], int(m["gpu"]), m["exported_pod"], m["exported_namespace"]): float(v)
        for m, (_, v) in ((r["metric"], r["value"]) for r in fb_used)
    }
    assert stored_fb == expected_fb
    assert {(r["metric"]["pod"], r["metric"]["namespace"]) for r in fb_used} == {
        ("dcgm-exporter-7x2lq", "gpu-operator")
    }
    expected_smi = {
        (f"{g.node}:9835", smi_uuid(g.uuid)): g.memory_used_bytes for g in snapshot(smi_spec, 0)
    }
    stored_smi = {
        (r["metric"]["instance"], r["metric"]["uuid"]): float(r["value"][1]) for r in smi_used
    }
    assert stored_smi == expected_smi


# ------------------------------------------------------------------------ injected faults

FAULTY = ClusterSpec(nodes=2, gpus_per_node=2, seed=3, mig_nodes=1, faults=(
    Fault("gpu-node-001", 0, "xid", 2, value=13), Fault("gpu-node-001", 0, "xid", 5, value=79),
    Fault("gpu-node-001", 1, "ecc_dbe", 3, 6, value=2),
    Fault("gpu-node-002", 1, "throttle", 1, 3, value=0x40),
))


def health_of(step: int, node: str, index: int) -> list[SimHealth]:
    return [g.health for g in snapshot(FAULTY, step) if (g.node, g.index) == (node, index)]


def test_an_xid_stays_in_the_gauge_and_the_latest_code_wins() -> None:
    assert [health_of(s, "gpu-node-001", 0)[0].xid for s in (0, 1, 2, 4, 5, 50)] == [
        0, 0, 13, 13, 79, 79]
    # The 5-minute count of dcgm-exporter: ten steps per code.
    assert health_of(6, "gpu-node-001", 0)[0].xid_counts == ((13, 1), (79, 1))
    assert health_of(12, "gpu-node-001", 0)[0].xid_counts == ((79, 1),)
    assert health_of(20, "gpu-node-001", 0)[0].xid_counts == ()


def test_a_counter_fault_counts_while_on_and_keeps_its_count() -> None:
    totals = [health_of(s, "gpu-node-001", 1)[0].ecc_dbe_total for s in range(9)]
    assert totals == [0, 0, 0, 2, 4, 6, 6, 6, 6]
    assert all(h.ecc_dbe_total == 0 for h in health_of(5, "gpu-node-001", 0))


def test_a_fault_on_a_mig_gpu_is_on_every_instance() -> None:
    hot = health_of(1, "gpu-node-002", 1)
    assert len(hot) == 4 and all(h.clock_event_reasons & 0x40 for h in hot)
    assert not any(h.clock_event_reasons & 0x40 for h in health_of(3, "gpu-node-002", 1))


def test_clean_gpus_carry_only_idle_or_power_cap_bits() -> None:
    for gpu in snapshot(ClusterSpec(nodes=2, gpus_per_node=4, seed=9), 4):
        assert gpu.health.clock_event_reasons in (0, 0x1, 0x4)
        assert gpu.health.clock_event_reasons == (0x1 if gpu.utilization == 0 else
                                                  0x4 if gpu.utilization >= 90 else 0)


def test_faults_are_rendered_in_dcgm_exporter_health_counters() -> None:
    text = render(snapshot(FAULTY, 6), "dcgm-health-all", "gpu-node-001")
    assert re.search(r'DCGM_FI_DEV_XID_ERRORS\{gpu="0",[^}]*err_code="79",'
                     r'err_msg="GPU has fallen off the bus"\} 79\n', text)
    assert re.search(r'DCGM_EXP_XID_ERRORS_COUNT\{gpu="0",[^}]*xid="13"\} 1\n', text)
    assert re.search(r'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL\{gpu="1",[^}]*\} 6\n', text)
    default = render(snapshot(FAULTY, 6), "dcgm-health", "gpu-node-001")
    assert re.search(r'DCGM_FI_DEV_XID_ERRORS\{gpu="0",[^}]*DCGM_FI_DRIVER_VERSION="[^"]+"'
                     r'(,[a-z_]+="[^"]*")*\} 79\n', default)
    assert "err_code" not in default and "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" not in default
    assert "DCGM_FI_DEV_XID_ERRORS" not in render(snapshot(FAULTY, 6), "dcgm")


@pytest.mark.parametrize("text", ["gpu-node-001:1", "gpu-node-001:x:xid", "n:1:xid:zz",
                                  "gpu-node-001:1:melt"])
def test_a_bad_fault_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fault(text, 0)


def test_a_fault_on_a_gpu_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="no such GPU"):
        ClusterSpec(nodes=1, gpus_per_node=2, faults=(Fault("gpu-node-001", 2, "xid"),))
    assert parse_fault("gpu-node-001:1:throttle:0x40", 7) == Fault(
        "gpu-node-001", 1, "throttle", 7, value=0x40)
