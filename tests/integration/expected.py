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
ROW_PER_MIG_INSTANCE = ("dcgm", "dcgm-hostname", "nvitop")


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
        "mig_instance": None,
    }


def _pods(gpu: SimGpu) -> tuple[str | None, str | None, str | None]:
    pods = sorted(gpu.pods, key=lambda p: (p.namespace, p.pod, p.container))
    if not pods:
        return None, None, None

    def joined(values: list[str]) -> str:
        return ",".join(dict.fromkeys(values))

    return (joined([p.pod for p in pods]), joined([p.namespace for p in pods]),
            joined([p.container for p in pods]))


def expected_gpus(cluster: Cluster) -> list[Row]:
    """Every GPU row the API must return for this cluster, in canonical units."""
    kind = cluster.exporter_dialect
    truth = cluster.truth()
    rows: list[Row] = []
    if kind in ROW_PER_MIG_INSTANCE:
        ordinals: dict[tuple[str, int], int] = {}
        for gpu in truth:
            row = _blank_gpu(gpu.node, gpu)
            mig = gpu.mig_instance is not None
            row.update(
                uuid=gpu.uuid, memory_used=gpu.memory_used_bytes,
                memory_total=gpu.memory_total_bytes, memory_free=gpu.memory_free_bytes,
                memory_utilization=gpu.memory_used_bytes / gpu.memory_total_bytes * 100,
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
                row["pod"], row["namespace"], row["container"] = _pods(gpu)
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
                   memory_utilization=used / total * 100)
        if kind == "dcgm-old":
            node = instance_of(cluster, gpu.node)
            # 1.x counts reserved memory as used; used + free is the total.
            row.update(node_name=node, uuid=gpu.uuid, memory_used=used + reserved,
                       memory_utilization=(used + reserved) / total * 100,
                       power_usage=gpu.power_w)
            pods = [p for part in parts for p in part.pods]
            if pods:  # 1.x labelled the last allocation only
                row.update(pod=pods[-1].pod, namespace=pods[-1].namespace,
                           container=pods[-1].container)
        if kind == "nvidia-smi":
            row.update(uuid="GPU-" + smi_uuid(gpu.uuid), power_usage=gpu.power_w)
        rows.append(row)
    return rows


def expected_processes(cluster: Cluster) -> list[Row]:
    """Every process row the API must return for this cluster."""
    kind = cluster.exporter_dialect
    rows: list[Row] = []
    if kind in ("dcgm", "dcgm-hostname", "dcgm-old"):
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
            elif kind == "nvidia-smi":
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
