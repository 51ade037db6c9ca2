"""The dialects we know out of the box, described as data (see shared EXPORTERS notes)."""

from __future__ import annotations

from app.dialects.model import Dialect, GpuLabels, ProcessLabels, Source

LEGACY = Dialect(
    name="legacy",
    description="Names from the original backend's README (nvidia_gpu_*), "
    "labelled node/gpu or hostname/gpu_id",
    labels=GpuLabels(node=("node", "hostname"), index=("gpu", "gpu_id"), name=("gpu_name",)),
    gpu_fields={
        "utilization": (Source("nvidia_gpu_utilization_percent"),),
        "memory_used": (Source("nvidia_gpu_used_memory_bytes"),),
        "memory_total": (Source("nvidia_gpu_total_memory_bytes"),),
        "memory_free": (Source("nvidia_gpu_free_memory_bytes"),),
        "memory_utilization": (Source("nvidia_gpu_memory_utilization_percent"),),
        "temperature": (Source("nvidia_gpu_temperature_celsius"),),
    },
    process_fields={
        "gpu_memory": (Source("nvidia_gpu_process_gpu_memory_bytes"),),
        "cpu": (Source("nvidia_gpu_process_cpu_percent"),),
        "memory": (Source("nvidia_gpu_process_memory_percent"),),
    },
)

GPU_METRICS = Dialect(
    name="gpu-metrics",
    description="The original project's own exporter (gpu_metrics_*, gpu_process_gpu_memory)",
    labels=GpuLabels(node=("hostname",), index=("gpu_id",), name=("gpu_name",)),
    gpu_fields={
        # Later releases renamed two metrics; whichever exists is read.
        "utilization": (
            Source("gpu_metrics_gpu_utilization"),
            Source("gpu_metrics_utilization_percent"),
        ),
        "memory_used": (Source("gpu_metrics_used_memory"),),
        "memory_total": (Source("gpu_metrics_total_memory"),),
        "memory_free": (Source("gpu_metrics_free_memory"),),
        "temperature": (
            Source("gpu_metrics_temperature"),
            Source("gpu_metrics_temperature_celsius"),
        ),
    },
    # `uid` is numeric: it stands in for the user name when nothing better exists.
    process_labels=ProcessLabels(user=("uid",)),
    process_fields={"gpu_memory": (Source("gpu_process_gpu_memory"),)},
)

BUILTIN_DIALECTS: dict[str, Dialect] = {d.name: d for d in (LEGACY, GPU_METRICS)}
