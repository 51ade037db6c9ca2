"""The PromQL planned for each dialect: exact text, filters pushed down and escaped."""

from __future__ import annotations

import pytest

from app.dialects.builtin import BUILTIN_DIALECTS, DCGM, GPU_METRICS, LEGACY, NVIDIA_SMI, NVITOP
from app.dialects.model import MIB, Dialect, GpuLabels, ProcessLabels, Source
from app.prometheus.promql import quote
from app.services.queries import (
    exporter_uuid,
    gpu_queries,
    identity_filters,
    pods_query,
    process_queries,
)
from app.services.records import GpuFilters

LEGACY_BY = "max by (node, hostname, gpu, gpu_id, gpu_name)"
LEGACY_PROCESS_BY = (
    "max by (node, hostname, gpu, gpu_id, gpu_name, pid, process_name, user, command)"
)
LEGACY_GPU_METRICS = {
    "utilization": "nvidia_gpu_utilization_percent",
    "memory_used": "nvidia_gpu_used_memory_bytes",
    "memory_total": "nvidia_gpu_total_memory_bytes",
    "memory_free": "nvidia_gpu_free_memory_bytes",
    "memory_utilization": "nvidia_gpu_memory_utilization_percent",
    "temperature": "nvidia_gpu_temperature_celsius",
}
LEGACY_PROCESS_METRICS = {
    "gpu_memory": "nvidia_gpu_process_gpu_memory_bytes",
    "cpu": "nvidia_gpu_process_cpu_percent",
    "memory": "nvidia_gpu_process_memory_percent",
}

# Shaped like dcgm-exporter behind the GPU Operator: MIG, pods, two spellings of each.
DCGM_LIKE = Dialect(
    name="dcgm-like",
    description="test dialect",
    labels=GpuLabels(
        node=("Hostname", "hostname"),
        index=("gpu",),
        uuid=("UUID",),
        name=("modelName",),
        mig_instance=("GPU_I_ID",),
        mig_profile=("GPU_I_PROFILE",),
        pod=("exported_pod", "pod"),
        namespace=("exported_namespace", "namespace"),
        container=("exported_container", "container"),
    ),
    gpu_fields={
        "utilization": (
            Source("DCGM_FI_DEV_GPU_UTIL", per_pod=True, skip_on_mig=True),
            Source("DCGM_FI_PROF_GR_ENGINE_ACTIVE", scale=100),
        ),
        "memory_used": (Source("DCGM_FI_DEV_FB_USED", scale=MIB, per_pod=True),),
    },
)
DCGM_BY = "(Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName)"

# Shaped like nvidia_gpu_exporter: bare lower-case UUIDs, name and index only on an info metric.
SMI_LIKE = Dialect(
    name="smi-like",
    description="test dialect",
    labels=GpuLabels(node=("node",), index=("index",), uuid=("uuid",), name=("name",)),
    gpu_fields={"memory_used": (Source("nvidia_smi_memory_used_bytes"),)},
    process_labels=ProcessLabels(user=()),
    process_fields={"gpu_memory": (Source("nvidia_smi_compute_app_used_memory_bytes"),)},
    gpu_info_metrics=("nvidia_smi_gpu_info",),
    info_only_attributes=("index", "name"),
    uuid_without_prefix=True,
)


# -- the legacy dialect, exactly ----------------------------------------------------------


def test_legacy_gpu_queries_without_filters_read_every_series() -> None:
    assert gpu_queries(LEGACY, GpuFilters()) == {
        ("field", "utilization", "0"): f"{LEGACY_BY} (nvidia_gpu_utilization_percent)",
        ("field", "memory_used", "0"): f"{LEGACY_BY} (nvidia_gpu_used_memory_bytes)",
        ("field", "memory_total", "0"): f"{LEGACY_BY} (nvidia_gpu_total_memory_bytes)",
        ("field", "memory_free", "0"): f"{LEGACY_BY} (nvidia_gpu_free_memory_bytes)",
        ("field", "memory_utilization", "0"):
            f"{LEGACY_BY} (nvidia_gpu_memory_utilization_percent)",
        ("field", "temperature", "0"): f"{LEGACY_BY} (nvidia_gpu_temperature_celsius)",
    }


def test_legacy_gpu_queries_with_a_node_filter_try_both_node_label_spellings() -> None:
    queries = gpu_queries(LEGACY, GpuFilters(node=("node-a",)))

    assert queries == {
        ("field", field, "0"):
            f'{LEGACY_BY} (({metric}{{node="node-a"}} or {metric}{{hostname="node-a"}}))'
        for field, metric in LEGACY_GPU_METRICS.items()
    }
    assert queries[("field", "temperature", "0")] == (
        "max by (node, hostname, gpu, gpu_id, gpu_name) "
        '((nvidia_gpu_temperature_celsius{node="node-a"} '
        'or nvidia_gpu_temperature_celsius{hostname="node-a"}))'
    )


def test_legacy_process_queries_without_filters_read_every_process_series() -> None:
    assert process_queries(LEGACY, GpuFilters()) == {
        ("field", "gpu_memory", "0"):
            f"{LEGACY_PROCESS_BY} (nvidia_gpu_process_gpu_memory_bytes)",
        ("field", "cpu", "0"): f"{LEGACY_PROCESS_BY} (nvidia_gpu_process_cpu_percent)",
        ("field", "memory", "0"): f"{LEGACY_PROCESS_BY} (nvidia_gpu_process_memory_percent)",
    }


def test_legacy_process_queries_with_a_node_filter_push_it_down() -> None:
    assert process_queries(LEGACY, GpuFilters(node=("node-a",))) == {
        ("field", field, "0"):
            f'{LEGACY_PROCESS_BY} (({metric}{{node="node-a"}} or {metric}{{hostname="node-a"}}))'
        for field, metric in LEGACY_PROCESS_METRICS.items()
    }


# -- the gpu-metrics dialect ----------------------------------------------------------------


def test_gpu_metrics_gpu_queries_read_each_alternative_metric_under_its_position() -> None:
    by = "max by (hostname, gpu_id, gpu_name)"

    assert gpu_queries(GPU_METRICS, GpuFilters(node=("n1",))) == {
        ("field", "utilization", "0"): f'{by} (gpu_metrics_gpu_utilization{{hostname="n1"}})',
        # A renamed metric is read only for the GPUs the first name says nothing about.
        ("field", "utilization", "1"):
            f'({by} (gpu_metrics_utilization_percent{{hostname="n1"}})) '
            'unless on (hostname, gpu_id, gpu_name) (gpu_metrics_gpu_utilization{hostname="n1"})',
        ("field", "memory_used", "0"): f'{by} (gpu_metrics_used_memory{{hostname="n1"}})',
        ("field", "memory_total", "0"): f'{by} (gpu_metrics_total_memory{{hostname="n1"}})',
        ("field", "memory_free", "0"): f'{by} (gpu_metrics_free_memory{{hostname="n1"}})',
        ("field", "temperature", "0"): f'{by} (gpu_metrics_temperature{{hostname="n1"}})',
        ("field", "temperature", "1"):
            f'({by} (gpu_metrics_temperature_celsius{{hostname="n1"}})) '
            'unless on (hostname, gpu_id, gpu_name) (gpu_metrics_temperature{hostname="n1"})',
    }


def test_gpu_metrics_process_queries_keep_the_uid_label() -> None:
    assert process_queries(GPU_METRICS, GpuFilters()) == {
        ("field", "gpu_memory", "0"): "max by (hostname, gpu_id, gpu_name, pid, process_name, "
                                      "uid, command) (gpu_process_gpu_memory)",
    }


def test_gpu_metrics_process_queries_do_not_require_gpu_name_on_process_series() -> None:
    # gpu_process_gpu_memory carries hostname, gpu_id, pid, process_name, uid, command and no
    # gpu_name (shared EXPORTERS notes, section 2): the model must be matched on the GPU list.
    queries = process_queries(GPU_METRICS, GpuFilters(gpu_name=("Tesla T4",)))

    assert "gpu_name=" not in queries[("field", "gpu_memory", "0")]
    assert 'gpu_name="Tesla T4"' in queries[("gpus",)]


# -- filters: pushed down, escaped, or left to the join -------------------------------------


@pytest.mark.parametrize("dialect", list(BUILTIN_DIALECTS.values()), ids=list(BUILTIN_DIALECTS))
def test_every_query_of_a_builtin_dialect_escapes_a_hostile_node_filter(dialect: Dialect) -> None:
    hostile = 'x"} or vector(1) or {node=~".*'
    filters = GpuFilters(node=(hostile,))

    queries = {**gpu_queries(dialect, filters), **process_queries(dialect, filters)}

    assert queries
    for promql in queries.values():
        assert f"={quote(hostile)}" in promql
        assert promql.count('"} or vector(1)') == promql.count('\\"} or vector(1)')


def test_several_node_values_become_one_regex_of_escaped_literals() -> None:
    queries = gpu_queries(GPU_METRICS, GpuFilters(node=("n1", "n2.example")))

    assert queries[("field", "memory_used", "0")] == (
        "max by (hostname, gpu_id, gpu_name) "
        '(gpu_metrics_used_memory{hostname=~"n1|n2\\\\.example"})'
    )


def test_gpu_name_filter_is_pushed_down_with_the_node_filter() -> None:
    queries = gpu_queries(GPU_METRICS, GpuFilters(node=("n1",), gpu_name=('A100 "80GB"',)))

    assert queries[("field", "memory_used", "0")] == (
        "max by (hostname, gpu_id, gpu_name) "
        '(gpu_metrics_used_memory{hostname="n1", gpu_name="A100 \\"80GB\\""})'
    )


@pytest.mark.parametrize("dialect", [LEGACY, GPU_METRICS], ids=["legacy", "gpu-metrics"])
def test_filters_a_dialect_has_no_label_for_are_not_pushed_down(dialect: Dialect) -> None:
    filters = GpuFilters(uuid=("GPU-1234",), pod=("trainer-0",), namespace=("ml",))

    assert gpu_queries(dialect, filters) == gpu_queries(dialect, GpuFilters())


def test_process_queries_list_the_gpus_when_a_filter_needs_gpu_attributes() -> None:
    queries = process_queries(LEGACY, GpuFilters(gpu_name=("T4",)))

    assert queries[("gpus",)] == (
        "group by (node, hostname, gpu, gpu_id, gpu_name) "
        '(nvidia_gpu_used_memory_bytes{gpu_name="T4"})'
    )


def test_process_queries_do_not_list_the_gpus_for_a_node_filter_alone() -> None:
    assert ("gpus",) not in process_queries(LEGACY, GpuFilters(node=("n1",)))


# -- a dialect with MIG, pods and spellings (dcgm-exporter's shape) -------------------------


DEVICE_UTIL = (
    # The device's own value: no workload pod, or the scrape target's own pod.
    '(DCGM_FI_DEV_GPU_UTIL{exported_pod="", pod="", GPU_I_ID=""} '
    'or (DCGM_FI_DEV_GPU_UTIL{exported_pod="", pod!="", GPU_I_ID=""} '
    'and on (instance, pod) up{pod!=""}))'
)
POD_UTIL = (
    '(DCGM_FI_DEV_GPU_UTIL{exported_pod!="", GPU_I_ID=""} '
    'or (DCGM_FI_DEV_GPU_UTIL{pod!="", exported_pod="", GPU_I_ID=""} '
    'unless on (instance, pod) up{pod!=""}))'
)
DCGM_POD_BY = ("(Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName, "
               "exported_pod, pod, exported_namespace, namespace, exported_container, container)")


def test_a_per_pod_source_reads_the_device_series_and_each_pods_series() -> None:
    queries = gpu_queries(DCGM_LIKE, GpuFilters())

    assert queries[("field", "utilization", "0")] == (
        f"max by {DCGM_BY} {DEVICE_UTIL} or max by {DCGM_POD_BY} {POD_UTIL}"
    )


def test_a_fallback_source_asks_only_where_the_first_has_no_series() -> None:
    queries = gpu_queries(DCGM_LIKE, GpuFilters())

    # GPU_UTIL skips MIG instances, so they (and GPUs without GPU_UTIL) get engine activity.
    assert queries[("field", "utilization", "1")] == (
        f"(max by {DCGM_BY} (DCGM_FI_PROF_GR_ENGINE_ACTIVE)) "
        f'unless on {DCGM_BY} (DCGM_FI_DEV_GPU_UTIL{{GPU_I_ID=""}})'
    )


def test_there_is_no_separate_pods_query_when_the_pod_source_carries_the_pods() -> None:
    queries = gpu_queries(DCGM_LIKE, GpuFilters())

    assert ("pods",) not in queries
    assert queries[("field", "memory_used", "0")].count(f"max by {DCGM_POD_BY}") == 1


def test_pods_query_reads_exported_pods_and_plain_pods_that_are_not_the_exporters_own() -> None:
    assert pods_query(DCGM_LIKE, GpuFilters()) == (
        "group by (Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName, "
        "exported_pod, pod, exported_namespace, namespace, exported_container, container) "
        '(DCGM_FI_DEV_FB_USED{exported_pod!=""} '
        'or (DCGM_FI_DEV_FB_USED{pod!="", exported_pod=""} unless on (instance, pod) up{pod!=""}))'
    )


def test_pods_query_matches_namespace_and_pod_within_the_same_spelling() -> None:
    promql = pods_query(DCGM_LIKE, GpuFilters(namespace=("ml",), pod=("trainer-0",)))

    assert promql is not None
    selectors = promql.split(") (", 1)[1]
    assert selectors == (
        'DCGM_FI_DEV_FB_USED{exported_pod!="", exported_namespace="ml", exported_pod="trainer-0"}'
        ' or (DCGM_FI_DEV_FB_USED{pod!="", exported_pod="", namespace="ml", pod="trainer-0"} '
        'unless on (instance, pod) up{pod!=""}))'
    )


def test_pods_query_is_left_out_when_the_filters_name_a_label_the_dialect_lacks() -> None:
    no_namespace = Dialect(
        name="no-namespace",
        description="test dialect",
        labels=GpuLabels(node=("node",), index=("gpu",), pod=("pod",)),
        gpu_fields={"memory_used": (Source("gpu_mem_bytes"),)},
    )

    assert pods_query(no_namespace, GpuFilters(namespace=("ml",))) is None
    # The GPU-level value is still asked for; only the pods' half is left out.
    assert gpu_queries(no_namespace, GpuFilters(namespace=("ml",))) == {
        ("field", "memory_used", "0"): 'max by (node, gpu) (gpu_mem_bytes{pod=""} '
        'or (gpu_mem_bytes{pod!=""} and on (instance, pod) up{pod!=""}))'}
    assert "group" not in gpu_queries(no_namespace, GpuFilters())[("field", "memory_used", "0")]


def test_pod_filters_narrow_only_the_pods_half_of_the_per_pod_queries() -> None:
    filters = GpuFilters(namespace=("ml",))

    queries = gpu_queries(DCGM_LIKE, filters)

    per_pod = [queries[("field", "utilization", "0")], queries[("field", "memory_used", "0")]]
    for promql in per_pod:
        device, pods = promql.split(f" or max by {DCGM_POD_BY} ")
        assert "ml" not in device  # the GPU's own value is never narrowed by its pods
        assert 'exported_namespace="ml"' in pods and 'namespace="ml"' in pods
    others = [promql for promql in queries.values() if promql not in per_pod]
    assert others and not any("ml" in promql for promql in others)


def test_uuid_filter_is_pushed_down_as_the_exporter_spells_it() -> None:
    queries = gpu_queries(DCGM_LIKE, GpuFilters(uuid=("GPU-ABCD-12",)))

    assert queries[("field", "utilization", "1")].startswith(
        f'(max by {DCGM_BY} (DCGM_FI_PROF_GR_ENGINE_ACTIVE{{UUID="GPU-ABCD-12"}}))'
    )
    assert 'DCGM_FI_DEV_FB_USED{exported_pod="", pod="", UUID="GPU-ABCD-12"}' in (
        queries[("field", "memory_used", "0")])


# -- info metrics and bare UUIDs (nvidia_gpu_exporter's shape) ------------------------------


@pytest.mark.parametrize(
    ("uuid", "expected"),
    [("GPU-ABCD-12ef", "abcd-12ef"), ("gpu-abcd", "abcd"), ("abcd-12ef", "abcd-12ef")],
)
def test_exporter_uuid_drops_the_prefix_and_lowercases_for_bare_uuid_exporters(
    uuid: str, expected: str
) -> None:
    assert exporter_uuid(SMI_LIKE, uuid) == expected


def test_exporter_uuid_keeps_the_canonical_spelling_for_other_exporters() -> None:
    assert exporter_uuid(DCGM_LIKE, "GPU-ABCD-12ef") == "GPU-ABCD-12ef"


def test_info_only_attributes_are_matched_on_the_info_metric_alone() -> None:
    filters = GpuFilters(node=("n1",), gpu_name=("T4",), uuid=("GPU-AB",))

    assert identity_filters(SMI_LIKE, filters, on_info=False) == [
        (("node",), ("n1",)), (("uuid",), ("ab",))]
    assert identity_filters(SMI_LIKE, filters, on_info=True) == [
        (("node",), ("n1",)), (("name",), ("T4",)), (("uuid",), ("ab",))]


def test_gpu_queries_read_the_info_metric_with_its_own_filters() -> None:
    queries = gpu_queries(SMI_LIKE, GpuFilters(gpu_name=("T4",), uuid=("GPU-AB",)))

    assert queries == {
        ("field", "memory_used", "0"):
            'max by (node, index, uuid, name) (nvidia_smi_memory_used_bytes{uuid="ab"})',
        ("info", "nvidia_smi_gpu_info"):
            'max by (node, index, uuid, name) (nvidia_smi_gpu_info{name="T4", uuid="ab"})',
    }


def test_process_queries_read_the_gpu_info_metric_instead_of_listing_gpus() -> None:
    queries = process_queries(SMI_LIKE, GpuFilters(gpu_name=("T4",)))

    assert queries == {
        ("field", "gpu_memory", "0"): "max by (node, index, uuid, name, pid, process_name, "
                                      "command) (nvidia_smi_compute_app_used_memory_bytes)",
        ("info", "nvidia_smi_gpu_info"):
            'max by (node, index, uuid, name) (nvidia_smi_gpu_info{name="T4"})',
    }


def test_pods_query_drops_the_exporters_own_pod_when_only_a_plain_pod_label_exists() -> None:
    plain_pod = Dialect(
        name="plain-pod",
        description="test dialect",
        labels=GpuLabels(node=("node",), index=("gpu",), pod=("pod",), namespace=("namespace",)),
        gpu_fields={"memory_used": (Source("gpu_mem_bytes"),)},
    )

    assert pods_query(plain_pod, GpuFilters(pod=("trainer-0",))) == (
        "group by (node, gpu, pod, namespace) "
        '((gpu_mem_bytes{pod!="", pod="trainer-0"} unless on (instance, pod) up{pod!=""}))'
    )


# -- the other built-in dialects, on what sets each apart -----------------------------------


def test_dcgm_reads_whole_gpu_utilization_outside_mig_and_never_sums_pods() -> None:
    queries = gpu_queries(DCGM, GpuFilters(node=("n1",)))

    utilization = queries[("field", "utilization", "0")]
    assert utilization.startswith(
        f"max by {DCGM_BY} "
        '((DCGM_FI_DEV_GPU_UTIL{exported_pod="", pod="", Hostname="n1", GPU_I_ID=""} '
        'or DCGM_FI_DEV_GPU_UTIL{exported_pod="", pod="", hostname="n1", GPU_I_ID=""})')
    assert not any(promql.startswith("sum") or " sum " in promql for promql in queries.values())
    assert queries[("field", "temperature", "0")].startswith(f"max by {DCGM_BY} ")


def test_nvidia_smi_matches_bare_uuids_and_keeps_the_model_name_to_its_info_metric() -> None:
    queries = gpu_queries(NVIDIA_SMI, GpuFilters(gpu_name=("Tesla T4",), uuid=("GPU-AB12",)))
    by = "max by (node, kubernetes_node, nodename, instance, index, uuid, name)"

    assert queries[("field", "memory_used", "0")] == (
        f'{by} (nvidia_smi_memory_used_bytes{{uuid="ab12"}})'
    )
    assert queries[("info", "nvidia_smi_gpu_info")] == (
        f'{by} (nvidia_smi_gpu_info{{name="Tesla T4", uuid="ab12"}})'
    )


def test_nvitop_process_queries_read_the_process_info_metric() -> None:
    queries = process_queries(NVITOP, GpuFilters())

    assert queries[("process_info", "process_info_info")] == (
        "max by (hostname, index, uuid, devicename, pid, username, command) (process_info_info)"
    )
