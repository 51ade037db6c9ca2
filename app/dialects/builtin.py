"""The dialects we know out of the box, described as data (see shared EXPORTERS notes)."""

from __future__ import annotations

from app.dialects.model import MIB, Dialect, GpuLabels, ProcessLabels, Source
from app.health.rules import HEALTH_METRICS

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

DCGM = Dialect(
    name="dcgm",
    description="NVIDIA dcgm-exporter (DCGM_FI_*), as installed by the GPU Operator",
    labels=GpuLabels(
        node=("Hostname", "hostname"),
        index=("gpu",),
        name=("modelName",),
        uuid=("UUID",),
        mig_instance=("GPU_I_ID",),
        mig_profile=("GPU_I_PROFILE",),
        # With the chart's default honorLabels: false, the workload's labels arrive as
        # exported_*, and plain pod/namespace name the exporter's own pod.
        pod=("exported_pod", "pod"),
        namespace=("exported_namespace", "namespace"),
        container=("exported_container", "container"),
    ),
    gpu_fields={
        # Time-shared GPUs: every family is copied to each pod's series; since 4.8,
        # utilization and memory used also come as each pod's own share (per_pod).
        # GPU_UTIL is absent on MIG instances and in custom counter sets that keep only
        # the engine activity NVIDIA recommends: there, PROF_GR_ENGINE_ACTIVE answers.
        "utilization": (
            Source("DCGM_FI_DEV_GPU_UTIL", per_pod=True, skip_on_mig=True),
            Source("DCGM_FI_PROF_GR_ENGINE_ACTIVE", scale=100.0),
        ),
        "memory_used": (Source("DCGM_FI_DEV_FB_USED", scale=MIB, per_pod=True),),
        "memory_free": (Source("DCGM_FI_DEV_FB_FREE", scale=MIB),),
        "memory_reserved": (Source("DCGM_FI_DEV_FB_RESERVED", scale=MIB),),
        "temperature": (Source("DCGM_FI_DEV_GPU_TEMP"),),
        "power_usage": (Source("DCGM_FI_DEV_POWER_USAGE"),),
    },
    health_metrics=HEALTH_METRICS,
    # mJ since the driver loaded (off in the default counters CSV; often enabled).
    energy_source=Source("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", scale=0.001),
)

DCGM_OLD = Dialect(
    name="dcgm-old",
    description="dcgm-exporter 1.x names (dcgm_*), or --use-old-namespace",
    labels=GpuLabels(
        # 1.x had no node label: detection falls back to the scrape target's instance.
        node=("Hostname", "hostname", "node"),
        index=("gpu",),
        name=("gpu_type", "modelName"),
        uuid=("uuid", "UUID"),
        pod=("exported_pod_name", "pod_name"),
        namespace=("exported_pod_namespace", "pod_namespace"),
        container=("exported_container_name", "container_name"),
    ),
    gpu_fields={
        "utilization": (Source("dcgm_gpu_utilization"),),
        "memory_used": (Source("dcgm_fb_used", scale=MIB, per_pod=True),),
        "memory_free": (Source("dcgm_fb_free", scale=MIB),),
        "temperature": (Source("dcgm_gpu_temp"),),
        "power_usage": (Source("dcgm_power_usage"),),
    },
    # The model name is only on dcgm_gpu_info{gpu_type}.
    gpu_info_metrics=("dcgm_gpu_info",),
    info_only_attributes=("name",),
)

NVIDIA_SMI = Dialect(
    name="nvidia-smi",
    description="utkuozdemir/nvidia_gpu_exporter (nvidia_smi_*)",
    labels=GpuLabels(
        # No node label by default: operators often relabel one in; else the scrape target.
        node=("node", "kubernetes_node", "nodename", "instance"),
        index=("index",),
        name=("name",),
        uuid=("uuid",),
    ),
    gpu_fields={
        "utilization": (Source("nvidia_smi_utilization_gpu_ratio", scale=100.0),),
        # nvidia_smi_utilization_memory_ratio is memory *bandwidth*, not memory used:
        # memory_utilization is derived from used / total instead.
        "memory_used": (Source("nvidia_smi_memory_used_bytes"),),
        "memory_total": (Source("nvidia_smi_memory_total_bytes"),),
        "memory_free": (Source("nvidia_smi_memory_free_bytes"),),
        "temperature": (Source("nvidia_smi_temperature_gpu"),),
        "power_usage": (Source("nvidia_smi_power_draw_watts"),),
    },
    gpu_info_metrics=("nvidia_smi_gpu_info",),
    # Before v1.3 gpu_info has no index label: the index is its own gauge.
    index_metrics=("nvidia_smi_index",),
    info_only_attributes=("index", "name"),
    uuid_without_prefix=True,
    process_labels=ProcessLabels(user=(), command=()),
    process_fields={"gpu_memory": (Source("nvidia_smi_compute_app_used_memory_bytes"),)},
)

NVITOP = Dialect(
    name="nvitop",
    description="nvitop-exporter (gpu_*_MiB, process_* with the full process table)",
    labels=GpuLabels(node=("hostname",), index=("index",), name=("devicename",),
                     uuid=("uuid",)),
    gpu_fields={
        "utilization": (Source("gpu_utilization_Percentage"),),
        "memory_used": (Source("gpu_memory_used_MiB", scale=MIB),),
        "memory_total": (Source("gpu_memory_total_MiB", scale=MIB),),
        "memory_free": (Source("gpu_memory_free_MiB", scale=MIB),),
        "temperature": (Source("gpu_temperature_C"),),
        "power_usage": (Source("gpu_power_usage_W"),),
    },
    # No process name label: it is derived from the command on process_info_info.
    process_labels=ProcessLabels(process_name=(), user=("username",)),
    process_name_from_command=True,
    # MIG devices: index "0:1", name "NVIDIA A100-SXM4-80GB MIG 3g.40gb".
    index_encodes_mig=True,
    name_encodes_mig_profile=True,
    process_fields={
        "gpu_memory": (Source("process_gpu_memory_MiB", scale=MIB),),
        "cpu": (Source("process_cpu_percent_Percentage"),),
        "memory": (Source("process_memory_percent_Percentage"),),
    },
    process_info_metrics=("process_info_info",),
)

# In order of preference: when one GPU shows up in two exporters, the first one wins.
BUILTIN_DIALECTS: dict[str, Dialect] = {
    d.name: d for d in (DCGM, DCGM_OLD, NVIDIA_SMI, NVITOP, GPU_METRICS, LEGACY)
}
