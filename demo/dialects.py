"""Render a simulated snapshot in the exposition text of real GPU exporters.

Each dialect mimics one exporter's metric names, labels and units (see EXPORTERS.md).
Exporters built on NVML device queries (legacy, gpu-metrics, nvidia-smi, dcgm-old) see a
MIG-mode GPU as one device: memory summed over its instances and no utilization, because
NVML reports utilization as "not supported" in MIG mode.
"""

from __future__ import annotations

import dataclasses
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

from demo import cluster
from demo.cluster import MIB, ClusterSpec, SimGpu, SimPod, SimProcess

_HELP = {
    # 1. the original README's names ("legacy")
    "nvidia_gpu_utilization_percent": "GPU utilization (%).",
    "nvidia_gpu_used_memory_bytes": "GPU memory used (bytes).",
    "nvidia_gpu_total_memory_bytes": "GPU memory total (bytes).",
    "nvidia_gpu_free_memory_bytes": "GPU memory free (bytes).",
    "nvidia_gpu_memory_utilization_percent": "GPU memory used / total (%).",
    "nvidia_gpu_temperature_celsius": "GPU temperature (C).",
    "nvidia_gpu_process_gpu_memory_bytes": "GPU memory used by the process (bytes).",
    "nvidia_gpu_process_cpu_percent": "Host CPU used by the process (%).",
    "nvidia_gpu_process_memory_percent": "Host memory used by the process (%).",
    # 2. the original project's exporter
    "gpu_metrics_gpu_utilization": "GPU utilization (%).",
    "gpu_metrics_used_memory": "GPU memory used (bytes).",
    "gpu_metrics_total_memory": "GPU memory total (bytes).",
    "gpu_metrics_free_memory": "GPU memory free (bytes).",
    "gpu_metrics_temperature": "GPU temperature (C).",
    "gpu_metrics_cpu_utilization": "Node CPU utilization (%).",
    "gpu_metrics_memory_utilization": "Node memory utilization (%).",
    "gpu_process_gpu_memory": "GPU memory used by the process (bytes).",
    # 3. dcgm-exporter
    "DCGM_FI_DEV_SM_CLOCK": "SM clock frequency (in MHz).",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "Total energy consumption since boot (in mJ).",
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "Memory utilization (in %).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_DEV_FB_RESERVED": "Framebuffer memory reserved (in MiB).",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "Ratio of time the graphics engine is active.",
    # dcgm-exporter health counters (HELP texts of its counters CSV)
    "DCGM_FI_DEV_XID_ERRORS": "Value of the last XID error encountered.",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "Total number of PCIe retries.",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "Number of remapped rows for uncorrectable "
    "errors",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "Number of remapped rows for correctable errors",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "Whether remapping of rows has failed",
    "DCGM_FI_DEV_ROW_REMAP_PENDING": "Whether remapping of rows is pending",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "Total number of single-bit volatile ECC errors.",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "Total number of double-bit volatile ECC errors.",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "Current clock event reasons (bitmask).",
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": "Total number of NVLink flow-control "
    "CRC errors.",
    "DCGM_EXP_XID_ERRORS_COUNT": "reported XIDs during last window",
    "DCGM_EXP_GPU_HEALTH_STATUS": "DCGM reported health status",
    # dcgm-exporter 1.x
    "dcgm_gpu_info": "GPU identity (constant 1).",
    "dcgm_sm_clock": "SM clock frequency (in MHz).",
    "dcgm_gpu_temp": "GPU temperature (in C).",
    "dcgm_power_usage": "Power draw (in W).",
    "dcgm_gpu_utilization": "GPU utilization (in %).",
    "dcgm_mem_copy_utilization": "Memory utilization (in %).",
    "dcgm_fb_free": "Framebuffer memory free (in MiB).",
    "dcgm_fb_used": "Framebuffer memory used (in MiB).",
    # 4. utkuozdemir/nvidia_gpu_exporter (HELP texts say MiB/MHz/%: the exporter's own quirk)
    "nvidia_smi_gpu_info": "A metric with a constant '1' value labeled by gpu uuid, name, "
    "index, driver_version, pci_bus_id.",
    "nvidia_smi_index": "index",
    "nvidia_smi_utilization_gpu_ratio": "utilization.gpu [%]",
    "nvidia_smi_utilization_memory_ratio": "utilization.memory [%]",
    "nvidia_smi_memory_total_bytes": "memory.total [MiB]",
    "nvidia_smi_memory_used_bytes": "memory.used [MiB]",
    "nvidia_smi_memory_free_bytes": "memory.free [MiB]",
    "nvidia_smi_memory_reserved_bytes": "memory.reserved [MiB]",
    "nvidia_smi_temperature_gpu": "temperature.gpu",
    "nvidia_smi_power_draw_watts": "power.draw [W]",
    "nvidia_smi_clocks_current_sm_clock_hz": "clocks.current.sm [MHz]",
    "nvidia_smi_compute_app_used_memory_bytes": "GPU memory used by the process.",
    # 5. nvitop-exporter
    "host_cpu_percent_Percentage": "Host CPU percent (%).",
    "host_virtual_memory_percent_Percentage": "Host virtual memory percent (%).",
    "gpu_utilization_Percentage": "GPU utilization (%).",
    "gpu_memory_utilization_Percentage": "GPU memory utilization (%).",
    "gpu_memory_total_MiB": "GPU memory total (MiB).",
    "gpu_memory_used_MiB": "GPU memory used (MiB).",
    "gpu_memory_free_MiB": "GPU memory free (MiB).",
    "gpu_memory_percent_Percentage": "GPU memory percent (%).",
    "gpu_clock_sm_MHz": "GPU SM clock (MHz).",
    "gpu_power_usage_W": "GPU power usage (W).",
    "gpu_temperature_C": "GPU temperature (C).",
    "process_info_info": "Process information.",
    "process_running_time_Second": "Process running time (s).",
    "process_cpu_percent_Percentage": "Process CPU percent (%).",
    "process_memory_percent_Percentage": "Process memory percent (%).",
    "process_gpu_memory_MiB": "Process GPU memory (MiB).",
    # kube-state-metrics
    "kube_pod_info": "[STABLE] Information about pod.",
    "kube_pod_status_phase": "[STABLE] The pods current phase.",
    "kube_node_status_allocatable": "[STABLE] The allocatable for different resources of a "
                                    "node that are available for scheduling.",
    "kube_pod_container_resource_requests": "[STABLE] The number of requested request "
                                            "resource by a container. It is recommended to "
                                            "use the kube_pod_resource_requests metric "
                                            "exposed by kube-scheduler instead, as it is "
                                            "more precise.",
    "kube_pod_init_container_resource_requests": "The number of requested request resource "
                                                 "by an init container.",
}

Label = tuple[str, str]


class _Exposition:
    """Collect samples grouped by family, in first-seen order, and print them."""

    def __init__(self) -> None:
        self._families: dict[str, list[str]] = {}

    def add(self, name: str, labels: str, value: float) -> None:
        lines = self._families.get(name)
        if lines is None:
            lines = self._families[name] = [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
        lines.append(f"{name}{{{labels}}} {_number(value)}")

    def text(self) -> str:
        return "".join(line + "\n" for lines in self._families.values() for line in lines)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Sequence[Label]) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    return str(int(value)) if value.is_integer() else repr(value)


@dataclasses.dataclass(frozen=True, slots=True)
class _Device:
    """A physical GPU as an NVML device query sees it (MIG instances merged)."""

    gpu: SimGpu
    utilization: float | None
    memory_copy_utilization: float | None
    total: int
    used: int
    reserved: int
    free: int
    pods: tuple[SimPod, ...]
    processes: tuple[SimProcess, ...]


def _devices(rows: Sequence[SimGpu]) -> list[_Device]:
    groups: dict[tuple[str, int], list[SimGpu]] = {}
    for row in rows:
        groups.setdefault((row.node, row.index), []).append(row)
    devices = []
    for parts in groups.values():
        first = parts[0]
        mig = first.mig_instance is not None
        devices.append(
            _Device(
                gpu=first,
                utilization=None if mig else first.utilization,
                memory_copy_utilization=None if mig else first.memory_copy_utilization,
                total=sum(p.memory_total_bytes for p in parts),
                used=sum(p.memory_used_bytes for p in parts),
                reserved=sum(p.memory_reserved_bytes for p in parts),
                free=sum(p.memory_free_bytes for p in parts),
                pods=tuple(pod for p in parts for pod in p.pods),
                processes=tuple(proc for p in parts for proc in p.processes),
            )
        )
    return devices


def _legacy(rows: Sequence[SimGpu], node_label: str, gpu_label: str) -> str:
    out = _Exposition()
    for dev in _devices(rows):
        gpu = dev.gpu
        where: list[Label] = [(node_label, gpu.node), (gpu_label, str(gpu.index))]
        labels = _labels([*where, ("gpu_name", gpu.name)])
        if dev.utilization is not None:
            out.add("nvidia_gpu_utilization_percent", labels, dev.utilization)
        out.add("nvidia_gpu_used_memory_bytes", labels, dev.used)
        out.add("nvidia_gpu_total_memory_bytes", labels, dev.total)
        out.add("nvidia_gpu_free_memory_bytes", labels, dev.free)
        out.add("nvidia_gpu_memory_utilization_percent", labels, dev.used / dev.total * 100)
        out.add("nvidia_gpu_temperature_celsius", labels, gpu.temperature)
        for proc in dev.processes:
            proc_labels = _labels(
                [
                    *where,
                    ("pid", str(proc.pid)),
                    ("process_name", proc.process_name),
                    ("user", proc.user),
                    ("command", proc.command),
                ]
            )
            out.add("nvidia_gpu_process_gpu_memory_bytes", proc_labels, proc.gpu_memory_bytes)
            out.add("nvidia_gpu_process_cpu_percent", proc_labels, proc.cpu_percent)
            out.add("nvidia_gpu_process_memory_percent", proc_labels, proc.memory_percent)
    return out.text()


def _gpu_metrics(rows: Sequence[SimGpu]) -> str:
    out = _Exposition()
    seen_nodes: set[str] = set()
    for dev in _devices(rows):
        gpu = dev.gpu
        if gpu.node not in seen_nodes:
            seen_nodes.add(gpu.node)
            host = _labels([("hostname", gpu.node)])
            out.add("gpu_metrics_cpu_utilization", host, gpu.host_cpu_percent)
            out.add("gpu_metrics_memory_utilization", host, gpu.host_memory_percent)
        where: list[Label] = [("hostname", gpu.node), ("gpu_id", str(gpu.index))]
        labels = _labels([*where, ("gpu_name", gpu.name)])
        if dev.utilization is not None:
            out.add("gpu_metrics_gpu_utilization", labels, dev.utilization)
        out.add("gpu_metrics_used_memory", labels, dev.used)
        out.add("gpu_metrics_total_memory", labels, dev.total)
        out.add("gpu_metrics_free_memory", labels, dev.free)
        out.add("gpu_metrics_temperature", labels, gpu.temperature)
        for proc in dev.processes:
            proc_labels = _labels(
                [
                    *where,
                    ("pid", str(proc.pid)),
                    ("process_name", proc.process_name),
                    ("uid", str(proc.uid)),
                    ("command", proc.command),
                ]
            )
            out.add("gpu_process_gpu_memory", proc_labels, proc.gpu_memory_bytes)
    return out.text()


def exporter_pod(node: str) -> str:
    """The name of the dcgm-exporter DaemonSet pod on `node`, as Kubernetes would make it."""
    return f"nvidia-dcgm-exporter-{zlib.crc32(node.encode()) & 0xFFFFF:05x}"


# How dcgm-exporter writes a GPU that several pods share (EXPORTERS.md section 3):
# "single": the default (no --kubernetes-virtual-gpus), one series labelled with one pod;
# "copy": --kubernetes-virtual-gpus before 4.8, every family once per pod, whole values;
# "per-process": 4.8+, GPU_UTIL and FB_USED as one pod-less series with the device's value
#     plus one series per pod with its own share; every other family copied per pod.
SHARING_SHAPES = ("single", "copy", "per-process")
_PER_POD_SHARES = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED")


# Which health counters a dcgm-exporter writes (EXPORTERS.md, its default counters CSV):
# "none" (the older simulated shape), "default" (the CSV's: the XID gauge, PCIe replays,
# remapped rows, remap failure) or "all" (every optional one enabled, and the XID gauge
# labelled err_code/err_msg as newer releases write it).
HEALTH_SETS = ("none", "default", "all")
# DCGM's health watches that DCGM_EXP_GPU_HEALTH_STATUS reports (a few of them).
HEALTH_WATCHES = ("PCIE", "NVLINK", "MEM", "THERMAL", "POWER")
_XID_TEXT = {0: "No Error", 13: "Graphics Engine Exception", 31: "GPU memory page fault",
             48: "Double Bit ECC Error", 63: "ECC page retirement or row remapping recording "
             "event", 64: "ECC page retirement or row remapper recording failure",
             74: "NVLINK Error", 79: "GPU has fallen off the bus", 94: "Contained ECC error",
             95: "Uncontained ECC error", 119: "GSP RPC Timeout", 120: "GSP Error"}


def _health_series(gpu: SimGpu, health: str) -> list[tuple[str, str, float]]:
    """(metric, extra labels, value) of a GPU's health counters in the `health` set."""
    if health == "none":
        return []
    h = gpu.health
    xid_labels = ""
    if health == "all":
        text = _XID_TEXT.get(h.xid, "Unknown Error")
        xid_labels = _labels([("err_code", str(h.xid)), ("err_msg", text)])
    out: list[tuple[str, str, float]] = [
        ("DCGM_FI_DEV_XID_ERRORS", xid_labels, h.xid),
        ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "", h.pcie_replay),
        ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "", h.uncorrectable_remapped_rows),
        ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "", 0),
        ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "", h.row_remap_failure),
    ]
    if health != "all":
        return out
    out += [
        ("DCGM_FI_DEV_ROW_REMAP_PENDING", "", h.row_remap_pending),
        ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "", h.ecc_sbe_total),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "", h.ecc_dbe_total),
        ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "", h.clock_event_reasons),
        ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "", h.nvlink_crc_flit),
    ]
    out += [("DCGM_EXP_XID_ERRORS_COUNT", _labels([("xid", str(code))]), count)
            for code, count in h.xid_counts]
    status = dict(h.health_status)
    for watch in HEALTH_WATCHES:
        value = status.get(watch, 0)
        code = "DCGM_FR_OK" if not value else "DCGM_FR_FIELD_THRESHOLD"
        labels = _labels([("health_watch", watch), ("health_error_code", code)])
        out.append(("DCGM_EXP_GPU_HEALTH_STATUS", labels, value))
    return out


def _dcgm(
    rows: Sequence[SimGpu],
    host_label: str,
    sharing: str = "copy",
    hostname: str = "node",
    counters: str = "default",
    health: str = "none",
) -> str:
    """dcgm-exporter's text. `hostname` "pod" writes the exporter pod's name as the node
    (no NODE_NAME given); `counters` "no-gpu-util" drops DCGM_FI_DEV_GPU_UTIL, as custom
    counter sets that keep only DCGM_FI_PROF_GR_ENGINE_ACTIVE do; `health` is one of
    HEALTH_SETS."""
    if health not in HEALTH_SETS:
        raise ValueError(f"health must be one of {HEALTH_SETS}, not {health!r}")
    if sharing not in SHARING_SHAPES:
        raise ValueError(f"sharing must be one of {SHARING_SHAPES}, not {sharing!r}")
    out = _Exposition()
    for gpu in rows:
        mig = gpu.mig_instance is not None
        host = exporter_pod(gpu.node) if hostname == "pod" else gpu.node
        # The label order of dcgm-exporter's own template; a MIG row keeps its parent's UUID.
        identity: list[Label] = [
            ("gpu", str(gpu.index)),
            ("UUID", gpu.uuid),
            ("pci_bus_id", gpu.pci_bus_id),
            ("device", f"nvidia{gpu.index}"),
            ("modelName", gpu.name),
        ]
        if gpu.mig_profile is not None:
            identity += [("GPU_I_PROFILE", gpu.mig_profile), ("GPU_I_ID", str(gpu.mig_instance))]
        identity += [(host_label, host), ("DCGM_FI_DRIVER_VERSION", gpu.driver_version)]
        base = _labels(identity)
        whole = {
            "DCGM_FI_DEV_SM_CLOCK": gpu.sm_clock_mhz,
            "DCGM_FI_DEV_GPU_TEMP": gpu.temperature,
            "DCGM_FI_DEV_POWER_USAGE": gpu.power_w,
            "DCGM_FI_DEV_GPU_UTIL": None if mig or counters == "no-gpu-util" else gpu.utilization,
            "DCGM_FI_DEV_MEM_COPY_UTIL": None if mig else gpu.memory_copy_utilization,
            "DCGM_FI_DEV_FB_FREE": gpu.memory_free_bytes // MIB,
            "DCGM_FI_DEV_FB_USED": gpu.memory_used_bytes // MIB,
            "DCGM_FI_DEV_FB_RESERVED": gpu.memory_reserved_bytes // MIB,
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE": gpu.utilization / 100,
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": gpu.energy_mj,
        }
        pods = gpu.pods[:1] if sharing == "single" else gpu.pods
        if pods and sharing == "per-process":
            for name in _PER_POD_SHARES:  # the device's own, pod-less series
                value = whole[name]
                if value is not None:
                    out.add(name, base, value)
        checks = _health_series(gpu, health)
        if not pods:
            for name, value in whole.items():
                if value is not None:
                    out.add(name, base, value)
            for name, extra, number in checks:
                out.add(name, f"{base},{extra}" if extra else base, number)
            continue
        for number, (pod, util, used) in enumerate(
                zip(pods, gpu.util_shares, gpu.memory_shares, strict=False)):
            labels = f"{base},{_pod_labels(pod, 'pod', 'namespace', 'container')}"
            own = dict(whole)
            if len(pods) > 1 and sharing == "copy":
                labels += f',vgpu="{number}"'  # GKE's label for each share of a GPU
            elif sharing == "per-process":  # each pod's series holds its own share
                labels += f',pod_uid="{zlib.crc32(pod.pod.encode()):08x}"'
                own["DCGM_FI_DEV_GPU_UTIL"] = None if whole["DCGM_FI_DEV_GPU_UTIL"] is None \
                    else util
                own["DCGM_FI_DEV_FB_USED"] = used // MIB
            for name, value in own.items():
                if value is not None:
                    out.add(name, labels, value)
            for name, extra, number in checks:
                out.add(name, f"{labels},{extra}" if extra else labels, number)
    return out.text()


def _dcgm_old(rows: Sequence[SimGpu]) -> str:
    out = _Exposition()
    for dev in _devices(rows):
        gpu = dev.gpu
        labels = _labels([("gpu", str(gpu.index)), ("uuid", gpu.uuid)])
        if dev.pods:
            # 1.x kept one pod per device in a map: the last allocation wins.
            pod = _pod_labels(dev.pods[-1], "pod_name", "pod_namespace", "container_name")
            labels = f"{labels},{pod}"
        out.add("dcgm_gpu_info", f"{labels},{_labels([('gpu_type', gpu.name)])}", 1)
        out.add("dcgm_sm_clock", labels, gpu.sm_clock_mhz)
        out.add("dcgm_gpu_temp", labels, gpu.temperature)
        out.add("dcgm_power_usage", labels, gpu.power_w)
        if dev.utilization is not None and dev.memory_copy_utilization is not None:
            out.add("dcgm_gpu_utilization", labels, dev.utilization)
            out.add("dcgm_mem_copy_utilization", labels, dev.memory_copy_utilization)
        out.add("dcgm_fb_free", labels, dev.free // MIB)
        # 1.x predates FB_RESERVED: NVML's v1 memory info counted reserved memory as used.
        out.add("dcgm_fb_used", labels, (dev.used + dev.reserved) // MIB)
    return out.text()


def _nvidia_smi(rows: Sequence[SimGpu], info_index: bool = True) -> str:
    """nvidia_gpu_exporter's text; before v1.3 (`info_index` False) nvidia_smi_gpu_info had
    no `index` label: the index was only the nvidia_smi_index gauge."""
    out = _Exposition()
    for dev in _devices(rows):
        gpu = dev.gpu
        uuid = smi_uuid(gpu.uuid)
        info_labels: list[Label] = [("uuid", uuid), ("name", gpu.name)]
        if info_index:
            info_labels.append(("index", str(gpu.index)))
        info_labels += [("driver_version", gpu.driver_version), ("pci_bus_id", gpu.pci_bus_id)]
        info = _labels(info_labels)
        out.add("nvidia_smi_gpu_info", info, 1)
        labels = _labels([("uuid", uuid)])
        out.add("nvidia_smi_index", labels, gpu.index)
        if dev.utilization is not None and dev.memory_copy_utilization is not None:
            out.add("nvidia_smi_utilization_gpu_ratio", labels, dev.utilization / 100)
            out.add(
                "nvidia_smi_utilization_memory_ratio", labels, dev.memory_copy_utilization / 100
            )
        out.add("nvidia_smi_memory_total_bytes", labels, dev.total)
        out.add("nvidia_smi_memory_used_bytes", labels, dev.used)
        out.add("nvidia_smi_memory_free_bytes", labels, dev.free)
        out.add("nvidia_smi_memory_reserved_bytes", labels, dev.reserved)
        out.add("nvidia_smi_temperature_gpu", labels, gpu.temperature)
        out.add("nvidia_smi_power_draw_watts", labels, gpu.power_w)
        out.add("nvidia_smi_clocks_current_sm_clock_hz", labels, gpu.sm_clock_mhz * 1e6)
        for proc in dev.processes:
            proc_labels = _labels(
                [("pid", str(proc.pid)), ("process_name", proc.process_name), ("uuid", uuid)]
            )
            out.add("nvidia_smi_compute_app_used_memory_bytes", proc_labels, proc.gpu_memory_bytes)
    return out.text()


def smi_uuid(uuid: str) -> str:
    """Return a UUID the way nvidia_gpu_exporter labels it: lower case, no GPU- prefix."""
    return uuid.lower().removeprefix("gpu-")


def _nvitop(rows: Sequence[SimGpu]) -> str:
    # nvitop-exporter labels `hostname` with the host's IP unless started with --hostname;
    # this mimics a deployment that passes the node name.
    out = _Exposition()
    seen_nodes: set[str] = set()
    mig_ordinal: dict[tuple[str, int], int] = {}
    nan = float("nan")
    for gpu in rows:
        if gpu.node not in seen_nodes:
            seen_nodes.add(gpu.node)
            host = _labels([("hostname", gpu.node)])
            out.add("host_cpu_percent_Percentage", host, gpu.host_cpu_percent)
            out.add("host_virtual_memory_percent_Percentage", host, gpu.host_memory_percent)
        index, devicename = str(gpu.index), gpu.name
        util, copy_util = gpu.utilization, gpu.memory_copy_utilization
        if gpu.mig_profile is not None:
            # nvitop names MIG devices "<parent>:<n>"; NVML has no utilization for them.
            ordinal = mig_ordinal.get((gpu.node, gpu.index), -1) + 1
            mig_ordinal[gpu.node, gpu.index] = ordinal
            index, devicename = f"{gpu.index}:{ordinal}", f"{gpu.name} MIG {gpu.mig_profile}"
            util = copy_util = nan
        device: list[Label] = [
            ("hostname", gpu.node),
            ("index", index),
            ("devicename", devicename),
            ("uuid", gpu.uuid),
        ]
        labels = _labels(device)
        out.add("gpu_utilization_Percentage", labels, util)
        out.add("gpu_memory_utilization_Percentage", labels, copy_util)
        out.add("gpu_memory_total_MiB", labels, gpu.memory_total_bytes // MIB)
        out.add("gpu_memory_used_MiB", labels, gpu.memory_used_bytes // MIB)
        out.add("gpu_memory_free_MiB", labels, gpu.memory_free_bytes // MIB)
        percent = gpu.memory_used_bytes / gpu.memory_total_bytes * 100
        out.add("gpu_memory_percent_Percentage", labels, percent)
        out.add("gpu_clock_sm_MHz", labels, gpu.sm_clock_mhz)
        out.add("gpu_power_usage_W", labels, gpu.power_w)
        out.add("gpu_temperature_C", labels, gpu.temperature)
        for proc in gpu.processes:
            proc_labels = _labels([*device, ("pid", str(proc.pid)), ("username", proc.user)])
            info = _labels([("status", "running"), ("command", proc.command)])
            out.add("process_info_info", f"{proc_labels},{info}", 1)
            out.add("process_running_time_Second", proc_labels, proc.running_time_s)
            out.add("process_cpu_percent_Percentage", proc_labels, proc.cpu_percent)
            out.add("process_memory_percent_Percentage", proc_labels, proc.memory_percent)
            out.add("process_gpu_memory_MiB", proc_labels, proc.gpu_memory_bytes // MIB)
    return out.text()


def _pod_labels(pod: SimPod, pod_label: str, namespace_label: str, container_label: str) -> str:
    return _labels(
        [(pod_label, pod.pod), (namespace_label, pod.namespace), (container_label, pod.container)]
    )


def _pod_uid(namespace: str, pod: str) -> str:
    return f"{zlib.crc32(f'{namespace}/{pod}'.encode()):08x}-0000-4000-8000-000000000000"


# Time-slicing with renameByDefault: each shared GPU is advertised as this many replicas.
TIME_SLICING_REPLICAS = 4
# kube-state-metrics writes a pod's phase as one series per phase, 1 on the current one.
POD_PHASES = ("Failed", "Pending", "Running", "Succeeded", "Unknown")


def gpu_resource(gpu: SimGpu, shared: bool) -> str:
    """The extended resource a pod requests for this GPU, as kube-state-metrics spells it
    (Kubernetes' name with '.', '/' and '-' turned into '_')."""
    if gpu.mig_profile is not None:
        return "nvidia_com_mig_" + gpu.mig_profile.replace(".", "_").replace("-", "_")
    return "nvidia_com_gpu_shared" if shared else "nvidia_com_gpu"


def has_init_gpu(pod: str) -> bool:
    """Whether a workload's init container also requests its GPUs (it must not count)."""
    return zlib.crc32(pod.encode()) % 3 == 0


def allocation(rows: Sequence[SimGpu], spec: ClusterSpec
               ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str, str, str], int]]:
    """What kube-state-metrics would say of the fleet scenario's rows: each node's
    allocatable GPU resources, and each running pod's request (namespace, pod, node,
    resource) -> count. Pods hold what they were given: one resource unit per GPU or MIG
    instance they appear on."""
    shared_slots = set(cluster.shared_gpu_slots(spec))
    allocatable: dict[tuple[str, str], int] = {}
    requests: dict[tuple[str, str, str, str], int] = {}
    seen: set[tuple[str, int, int | None]] = set()
    for gpu in rows:
        shared = (gpu.node, gpu.index) in shared_slots
        resource = gpu_resource(gpu, shared)
        if (gpu.node, gpu.index, gpu.mig_instance) not in seen:
            seen.add((gpu.node, gpu.index, gpu.mig_instance))
            units = TIME_SLICING_REPLICAS if shared else 1
            allocatable[(gpu.node, resource)] = allocatable.get((gpu.node, resource), 0) + units
        for pod in gpu.pods:
            key = (pod.namespace, pod.pod, gpu.node, resource)
            requests[key] = requests.get(key, 0) + 1
    return allocatable, requests


def _kube_state_metrics(rows: Sequence[SimGpu], spec: ClusterSpec | None = None) -> str:
    """kube-state-metrics' kube_pod_info for the workload pods and each node's dcgm-exporter
    pod, in KSM's label order: what maps a pod to its node. In the fleet scenario also the
    allocation families: each node's allocatable GPUs, the pods' phases, and the GPU
    requests of their containers and init containers (pending pods have no node)."""
    out = _Exposition()
    pods: dict[tuple[str, str], str] = {}
    for gpu in rows:
        pods.setdefault(("gpu-operator", exporter_pod(gpu.node)), gpu.node)
        for pod in gpu.pods:
            pods.setdefault((pod.namespace, pod.pod), gpu.node)
    fleet = spec is not None and spec.fleet
    pending = cluster.pending_pods(spec) if fleet and spec is not None else []
    phases = dict.fromkeys(pods, "Running")
    for pod, _ in pending:
        pods[(pod.namespace, pod.pod)] = ""
        phases[(pod.namespace, pod.pod)] = "Pending"
    for (namespace, pod_name), node in pods.items():
        labels = _labels([("namespace", namespace), ("pod", pod_name),
                          ("uid", _pod_uid(namespace, pod_name)),
                          ("host_ip", "10.0.0.1" if node else ""),
                          ("pod_ip", "10.1.0.1" if node else ""), ("node", node),
                          ("created_by_kind", ""), ("created_by_name", ""),
                          ("priority_class", ""), ("host_network", "false")])
        out.add("kube_pod_info", labels, 1)
    if not fleet or spec is None:
        return out.text()
    for (namespace, pod_name), phase in phases.items():
        uid = _pod_uid(namespace, pod_name)
        for name in POD_PHASES:
            labels = _labels([("namespace", namespace), ("pod", pod_name), ("uid", uid),
                              ("phase", name)])
            out.add("kube_pod_status_phase", labels, 1 if name == phase else 0)
    allocatable, requests = allocation(rows, spec)
    for (node, resource), units in sorted(allocatable.items()):
        out.add("kube_node_status_allocatable",
                _labels([("node", node), ("resource", resource), ("unit", "integer")]), units)
    containers = {(p.namespace, p.pod): p.container for g in rows for p in g.pods}
    wanted = [(ns, pod, node, resource, count)
              for (ns, pod, node, resource), count in requests.items()]
    wanted += [(p.namespace, p.pod, "", "nvidia_com_gpu", count) for p, count in pending]
    containers.update({(p.namespace, p.pod): p.container for p, _ in pending})
    for namespace, pod_name, node, resource, count in wanted:
        uid = _pod_uid(namespace, pod_name)
        for family, container in (("kube_pod_container_resource_requests",
                                   containers[(namespace, pod_name)]),
                                  ("kube_pod_init_container_resource_requests", "init-weights")):
            if family.startswith("kube_pod_init") and not has_init_gpu(pod_name):
                continue
            labels = _labels([("namespace", namespace), ("pod", pod_name), ("uid", uid),
                              ("container", container), ("node", node),
                              ("resource", resource), ("unit", "integer")])
            out.add(family, labels, count)
    return out.text()


_RENDERERS: dict[str, Callable[[Sequence[SimGpu]], str]] = {
    "legacy-node": partial(_legacy, node_label="node", gpu_label="gpu"),
    "legacy-hostname": partial(_legacy, node_label="hostname", gpu_label="gpu_id"),
    "gpu-metrics": _gpu_metrics,
    # Shared GPUs copied per pod (--kubernetes-virtual-gpus before 4.8).
    "dcgm": partial(_dcgm, host_label="Hostname"),
    # dcgm-exporter built from master: lower-case hostname, 4.8's per-process shares.
    "dcgm-hostname": partial(_dcgm, host_label="hostname", sharing="per-process"),
    # Without --kubernetes-virtual-gpus: one pod per GPU at most.
    "dcgm-single-pod": partial(_dcgm, host_label="Hostname", sharing="single"),
    # No NODE_NAME given to the exporter: Hostname is its own pod's name.
    "dcgm-pod-hostname": partial(_dcgm, host_label="Hostname", hostname="pod"),
    # A custom counter set that keeps DCGM_FI_PROF_GR_ENGINE_ACTIVE but not GPU_UTIL.
    "dcgm-no-gpu-util": partial(_dcgm, host_label="Hostname", counters="no-gpu-util"),
    # The health counters of dcgm-exporter's default CSV (XID gauge, PCIe, row remapping).
    "dcgm-health": partial(_dcgm, host_label="Hostname", health="default"),
    # Every health counter enabled, the XID gauge labelled err_code/err_msg.
    "dcgm-health-all": partial(_dcgm, host_label="Hostname", health="all"),
    "dcgm-old": _dcgm_old,
    "nvidia-smi": _nvidia_smi,
    # Before v1.3: nvidia_smi_gpu_info has no index label.
    "nvidia-smi-1.2": partial(_nvidia_smi, info_index=False),
    "nvitop": _nvitop,
    "kube-state-metrics": _kube_state_metrics,
}

DIALECTS: tuple[str, ...] = tuple(_RENDERERS)
# Dialects scraped per node (/metrics/<node>): their series carry no node label, or (the
# exporter-pod hostname) each node's exporter is a target of its own.
NODELESS_DIALECTS: tuple[str, ...] = ("dcgm-old", "nvidia-smi", "nvidia-smi-1.2")
PER_NODE_DIALECTS: tuple[str, ...] = (*NODELESS_DIALECTS, "dcgm-pod-hostname")


def render(snapshot: Sequence[SimGpu], dialect: str, node: str | None = None,
           spec: ClusterSpec | None = None) -> str:
    """Render the rows of `node` (all nodes when None) in the exposition text of `dialect`.

    kube-state-metrics also needs the cluster's `spec` for what no GPU row shows (the
    fleet scenario's pending pods); the exporters read their rows alone."""
    renderer = _RENDERERS.get(dialect)
    if renderer is None:
        raise ValueError(f"unknown dialect {dialect!r}; choose one of {', '.join(DIALECTS)}")
    rows = snapshot if node is None else [gpu for gpu in snapshot if gpu.node == node]
    if dialect == "kube-state-metrics":
        return _kube_state_metrics(rows, spec)
    return renderer(rows)


class RenderCache:
    """Render one cluster's snapshots, keeping recent texts per (step, dialect, node).

    Thread-safe: an exporter answers many concurrent scrapes of per-node paths, and every
    one of them must not recompute the whole cluster.
    """

    def __init__(self, spec: ClusterSpec, max_texts: int = 2048) -> None:
        self.spec = spec
        self._max_texts = max_texts
        self._snapshot_lock = threading.Lock()
        self._step: int | None = None
        self._rows: list[SimGpu] = []
        self._by_node: dict[str, list[SimGpu]] = {}
        self._texts_lock = threading.Lock()
        self._texts: OrderedDict[tuple[int, str, str | None], str] = OrderedDict()

    def snapshot(self, step: int) -> list[SimGpu]:
        """Return the snapshot at `step`, computing it once per step."""
        return self._snapshot(step)[0]

    def render(self, step: int, dialect: str, node: str | None = None) -> str:
        """Return the text of `dialect` at `step` for one node (all when None)."""
        key = (step, dialect, node)
        with self._texts_lock:
            text = self._texts.get(key)
            if text is not None:
                self._texts.move_to_end(key)
                return text
        rows, by_node = self._snapshot(step)
        text = render(rows if node is None else by_node.get(node, []), dialect,
                      spec=self.spec)
        with self._texts_lock:
            self._texts[key] = text
            while len(self._texts) > self._max_texts:
                self._texts.popitem(last=False)
        return text

    def _snapshot(self, step: int) -> tuple[list[SimGpu], dict[str, list[SimGpu]]]:
        with self._snapshot_lock:
            if step != self._step:
                rows = cluster.snapshot(self.spec, step)
                by_node: dict[str, list[SimGpu]] = {}
                for gpu in rows:
                    by_node.setdefault(gpu.node, []).append(gpu)
                self._step, self._rows, self._by_node = step, rows, by_node
            return self._rows, self._by_node
