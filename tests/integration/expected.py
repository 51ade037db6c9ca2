"""What the API must answer for a simulated cluster, derived from its ground truth.

Each exporter reports a different slice of the truth (MIG merged or not, units, labels):
these functions state, per exporter, what a correct reading of its series gives.
"""

from __future__ import annotations

import os
from typing import Any

from demo.cluster import SimGpu
from demo.dialects import smi_uuid
from tests.integration.world import Cluster, instance_of

Row = dict[str, Any]
ROW_PER_MIG_INSTANCE = ("dcgm", "dcgm-hostname", "dcgm-no-gpu-util", "dcgm-pod-hostname",
                        "nvitop")
# How each dcgm variant writes a pod's series (see demo/dialects.py SHARING_SHAPES):
# "copy" repeats the device's values, "per-process" also writes each pod's own share.
POD_SHARES = {"dcgm-hostname"}


def _devices(rows: list[SimGpu]) -> list[list[SimGpu]]:
    """Group MIG instances into their physical GPU, as NVML device queries see them."""
    groups: dict[tuple[str, int], list[SimGpu]] = {}
    for row in rows:
        groups.setdefault((row.node, row.index), []).append(row)
    return list(groups.values())


def _blank_gpu(node: str, gpu: SimGpu) -> Row:
    return {
        "node_name": node, "gpu_index": gpu.index, "gpu_name": gpu.name, "uuid": None,
        "utilization": None, "memory_used": None, "memory_total": None, "memory_free": None,
        "memory_utilization": None, "temperature": gpu.temperature, "power_usage": None,
        "pod": None, "namespace": None, "container": None, "mig_profile": None,
        "mig_instance": None, "pods": [],
    }


def _pods(gpu: SimGpu, kind: str) -> dict[str, Any]:
    """The pod fields of a GPU held by at most one pod (the world has no shared GPUs)."""
    assert len(gpu.pods) <= 1, "time-shared GPUs are tested with hand-written values"
    if not gpu.pods:
        return {"pod": None, "namespace": None, "container": None, "pods": []}
    (pod,) = gpu.pods
    shares = kind in POD_SHARES
    return {"pod": pod.pod, "namespace": pod.namespace, "container": pod.container,
            "pods": [{"pod": pod.pod, "namespace": pod.namespace, "container": pod.container,
                      "utilization": gpu.util_shares[0] if shares else None,
                      "memory_used": gpu.memory_shares[0] if shares else None}]}


def _percent(value: float) -> float:
    """Percentages are served to 3 decimals."""
    return round(value, 3)


def expected_gpus(cluster: Cluster, *, unshared_only: bool = False) -> list[Row]:
    """Every GPU row the API must return for this cluster, in canonical units.

    Time-shared GPUs have hand-written expectations (test_time_sharing.py): with
    `unshared_only`, they are left out here.
    """
    kind = cluster.exporter_dialect
    truth = [gpu for gpu in cluster.truth() if not (unshared_only and len(gpu.pods) > 1)]
    rows: list[Row] = []
    if kind in ROW_PER_MIG_INSTANCE:
        ordinals: dict[tuple[str, int], int] = {}
        for gpu in truth:
            row = _blank_gpu(gpu.node, gpu)
            mig = gpu.mig_instance is not None
            row.update(
                uuid=gpu.uuid, memory_used=gpu.memory_used_bytes,
                memory_total=gpu.memory_total_bytes, memory_free=gpu.memory_free_bytes,
                memory_utilization=_percent(gpu.memory_used_bytes / gpu.memory_total_bytes
                                            * 100),
                power_usage=gpu.power_w, mig_profile=gpu.mig_profile,
            )
            if kind == "nvitop":
                # nvitop has no utilization for MIG devices and numbers them "<gpu>:<n>".
                row["utilization"] = None if mig else gpu.utilization
                if mig:
                    ordinal = ordinals.get((gpu.node, gpu.index), -1) + 1
                    ordinals[gpu.node, gpu.index] = ordinal
                    row["mig_instance"] = ordinal
            else:
                row["utilization"] = gpu.utilization
                row["mig_instance"] = gpu.mig_instance
                row.update(_pods(gpu, kind))
            rows.append(row)
        return rows
    for parts in _devices(truth):
        gpu = parts[0]
        mig = gpu.mig_instance is not None
        used = sum(p.memory_used_bytes for p in parts)
        total = sum(p.memory_total_bytes for p in parts)
        free = sum(p.memory_free_bytes for p in parts)
        reserved = sum(p.memory_reserved_bytes for p in parts)
        node = gpu.node
        row = _blank_gpu(node, gpu)
        row.update(utilization=None if mig else gpu.utilization, memory_used=used,
                   memory_total=total, memory_free=free,
                   memory_utilization=_percent(used / total * 100))
        if kind == "dcgm-old":
            node = instance_of(cluster, gpu.node)
            # 1.x counts reserved memory as used; used + free is the total.
            row.update(node_name=node, uuid=gpu.uuid, memory_used=used + reserved,
                       memory_utilization=_percent((used + reserved) / total * 100),
                       power_usage=gpu.power_w)
            pods = [p for part in parts for p in part.pods]
            if pods:  # 1.x labelled the last allocation only
                row.update(pod=pods[-1].pod, namespace=pods[-1].namespace,
                           container=pods[-1].container,
                           pods=[{"pod": pods[-1].pod, "namespace": pods[-1].namespace,
                                  "container": pods[-1].container, "utilization": None,
                                  "memory_used": None}])
        if kind.startswith("nvidia-smi"):
            row.update(uuid="GPU-" + smi_uuid(gpu.uuid), power_usage=gpu.power_w)
        rows.append(row)
    return rows


def expected_processes(cluster: Cluster) -> list[Row]:
    """Every process row the API must return for this cluster."""
    kind = cluster.exporter_dialect
    rows: list[Row] = []
    if kind.startswith("dcgm"):
        return rows  # dcgm-exporter publishes no per-process series
    for gpu in cluster.truth():
        for proc in gpu.processes:
            row: Row = {
                "node_name": gpu.node, "gpu_index": gpu.index, "pid": proc.pid,
                "process_name": proc.process_name, "user": proc.user,
                "command": proc.command, "gpu_memory": proc.gpu_memory_bytes,
                "cpu": proc.cpu_percent, "memory": proc.memory_percent, "gpu_uuid": None,
                "pod": None, "namespace": None,
            }
            if kind == "gpu-metrics":
                row.update(user=str(proc.uid), cpu=None, memory=None)
            elif kind.startswith("nvidia-smi"):
                row.update(user=None, command=None, cpu=None, memory=None,
                           gpu_uuid="GPU-" + smi_uuid(gpu.uuid))
            elif kind == "nvitop":
                row.update(gpu_uuid=gpu.uuid,
                           process_name=os.path.basename(proc.command.split()[0]))
            rows.append(row)
    return rows


def sort_gpus(rows: list[Row]) -> list[Row]:
    """The API's order: node, numeric index, MIG instance (whole GPU first)."""
    return sorted(rows, key=lambda r: (r["node_name"], r["gpu_index"],
                                       -1 if r["mig_instance"] is None else r["mig_instance"],
                                       r["uuid"] or ""))


def sort_processes(rows: list[Row]) -> list[Row]:
    """The API's order: node, numeric GPU index, pid."""
    return sorted(rows, key=lambda r: (r["node_name"], r["gpu_index"], r["pid"]))
