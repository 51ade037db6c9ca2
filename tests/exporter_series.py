"""Publish series the way each exporter writes them, into a CannedPrometheus."""

from __future__ import annotations

from collections.abc import Sequence

from tests.canned_prometheus import CannedPrometheus

MIB = 1024**2
A100 = "NVIDIA A100-SXM4-80GB"


def add_dcgm(prom: CannedPrometheus, node: str, gpu: int, uuid: str, *, temperature: float,
             used_mib: int, free_mib: int, pods: Sequence[tuple[str, str]] = (),
             mig: int | None = None) -> None:
    """One dcgm-exporter GPU; a held GPU's series are copied once per workload pod.

    The workload arrives as exported_* labels (honorLabels false). The plain pod label of
    the exporter's own pod is left out: CannedPrometheus does not apply `unless up`.
    """
    labels = {"Hostname": node, "gpu": str(gpu), "UUID": uuid, "modelName": A100}
    if mig is not None:
        labels |= {"GPU_I_ID": str(mig), "GPU_I_PROFILE": "3g.40gb"}
    holders = [{"exported_pod": pod, "exported_namespace": namespace,
                "exported_container": "main"} for pod, namespace in pods] or [{}]
    for holder in holders:
        series = {**labels, **holder}
        prom.add("DCGM_FI_DEV_GPU_TEMP", series, temperature)
        prom.add("DCGM_FI_DEV_FB_USED", series, used_mib)
        prom.add("DCGM_FI_DEV_FB_FREE", series, free_mib)


def add_nvitop(prom: CannedPrometheus, host: str, index: str, uuid: str, *,
               temperature: float, used_mib: int, total_mib: int,
               name: str = A100) -> None:
    """One nvitop-exporter GPU (index "<gpu>:<mig>" for a MIG device)."""
    labels = {"hostname": host, "index": index, "uuid": uuid, "devicename": name}
    prom.add("gpu_temperature_C", labels, temperature)
    prom.add("gpu_memory_used_MiB", labels, used_mib)
    prom.add("gpu_memory_total_MiB", labels, total_mib)


def add_nvitop_process(prom: CannedPrometheus, host: str, index: str, uuid: str, pid: int,
                       *, used_mib: int, command: str = "/usr/bin/python train.py") -> None:
    """A row of nvitop-exporter's process table: the command (so the name) on process_info."""
    labels = {"hostname": host, "index": index, "uuid": uuid, "devicename": A100,
              "pid": str(pid), "username": "alice"}
    prom.add("process_gpu_memory_MiB", labels, used_mib)
    prom.add("process_cpu_percent_Percentage", labels, 12.5)
    prom.add("process_info_info", {**labels, "command": command}, 1)


def add_smi_process(prom: CannedPrometheus, node: str, index: int, uuid: str, pid: int, *,
                    used_bytes: int, name: str = "python3") -> None:
    """nvidia_gpu_exporter: bare lower-case UUIDs; the index only on gpu_info."""
    device = {"node": node, "uuid": uuid.lower().removeprefix("gpu-")}
    prom.add("nvidia_smi_gpu_info", {**device, "name": A100, "index": str(index)}, 1)
    prom.add("nvidia_smi_compute_app_used_memory_bytes",
             {**device, "pid": str(pid), "process_name": name}, used_bytes)


def add_gpu_metrics(prom: CannedPrometheus, host: str, gpu: int, *,
                    temperature: float) -> None:
    """One GPU of the original project's exporter: no UUID, only hostname and gpu_id."""
    labels = {"hostname": host, "gpu_id": str(gpu), "gpu_name": A100}
    prom.add("gpu_metrics_temperature", labels, temperature)
    prom.add("gpu_metrics_used_memory", labels, 0)


def add_gpu_metrics_process(prom: CannedPrometheus, host: str, gpu: int, pid: int, *,
                            used_bytes: int) -> None:
    """A process of the original project's exporter: placed by hostname and gpu_id only."""
    prom.add("gpu_process_gpu_memory",
             {"hostname": host, "gpu_id": str(gpu), "gpu_name": A100, "pid": str(pid),
              "uid": "1000", "process_name": "python3"}, used_bytes)
