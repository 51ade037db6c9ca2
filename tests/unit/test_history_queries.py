"""The PromQL of history, per dialect: the parts that carry the snapshot's meaning.

Whole expressions are long; these tests pin the pieces that matter (which series, which
fallback, which join, which label) and leave the parenthesis layout free. That the
expressions mean what the snapshot means is checked against a real Prometheus in
test_history_promql.py and in the integration tests.
"""

from __future__ import annotations

import dataclasses

import pytest

from app.dialects.builtin import DCGM, DCGM_OLD, GPU_METRICS, LEGACY, NVIDIA_SMI, NVITOP
from app.services.history_queries import (
    aggregate_query,
    count_query,
    gpu_value,
    grouped,
    held,
    info_queries,
    listed,
    relabel,
)
from app.services.records import GpuFilters

DCGM_BY = "max by (Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName)"
NONE = GpuFilters()


def test_relabel_applies_the_preferred_label_last_and_clears_a_foreign_target() -> None:
    assert relabel("x", "node_name", ("Hostname", "hostname")) == (
        'label_replace(label_replace(label_replace(x, "node_name", "", "", ""), '
        '"node_name", "$1", "hostname", "(.+)"), "node_name", "$1", "Hostname", "(.+)")')
    # The target is one of the sources: nothing to clear, the others override it.
    assert relabel("x", "namespace", ("exported_namespace", "namespace")) == (
        'label_replace(label_replace(x, "namespace", "$1", "namespace", "(.+)"), '
        '"namespace", "$1", "exported_namespace", "(.+)")')


def test_a_plain_field_is_the_max_over_its_series_without_sentinels() -> None:
    assert gpu_value(LEGACY, "temperature", NONE) == (
        "((max by (node, hostname, gpu, gpu_id, gpu_name) "
        "(nvidia_gpu_temperature_celsius)) <= 1000000000000000.0 >= -1000000000000000.0)")


def test_dcgm_utilization_is_the_podless_series_else_the_max_of_the_copies() -> None:
    promql = gpu_value(DCGM, "utilization", NONE)
    assert promql is not None
    podless = f'{DCGM_BY} (DCGM_FI_DEV_GPU_UTIL{{exported_pod="", pod="", GPU_I_ID=""}}'
    assert promql.count(podless) == 2  # the device's value, and what the copies yield to
    assert f"{DCGM_BY} (((DCGM_FI_DEV_GPU_UTIL{{exported_pod!=\"\", GPU_I_ID=\"\"}}" in promql
    assert ") unless " + podless in promql
    # MIG instances and custom counter sets: engine activity, only where GPU_UTIL is absent.
    assert ("(DCGM_FI_PROF_GR_ENGINE_ACTIVE)) <= 1000000000000000.0 >= -1000000000000000.0)"
            " * 100.0 unless on (Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, "
            'modelName) (DCGM_FI_DEV_GPU_UTIL{GPU_I_ID=""})') in promql


def test_dcgm_memory_is_whole_bytes_and_its_total_is_used_plus_free_plus_reserved() -> None:
    used = gpu_value(DCGM, "memory_used", NONE)
    assert used is not None and used.startswith("round(") and used.endswith(" * 1048576)")
    total = gpu_value(DCGM, "memory_total", NONE)
    free = "round(((max by (Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, " \
           "modelName) (DCGM_FI_DEV_FB_FREE)) <= 1000000000000000.0 >= " \
           "-1000000000000000.0) * 1048576)"
    reserved = free.replace("FB_FREE", "FB_RESERVED")
    assert total == f"({used} + {free} + ({reserved} or {used} * 0))"
    assert gpu_value(DCGM, "memory_utilization", NONE) == (
        f"({used} / ({total} != 0) * 100)")
    # dcgm has free memory of its own: no derivation.
    assert gpu_value(DCGM, "memory_free", NONE) == free


def test_an_exporters_own_value_comes_first_and_the_derived_one_fills_in() -> None:
    promql = gpu_value(LEGACY, "memory_utilization", NONE)
    assert promql is not None
    assert promql.startswith("(((max by (node, hostname, gpu, gpu_id, gpu_name) "
                             "(nvidia_gpu_memory_utilization_percent))")
    assert ") or (round(" in promql and "nvidia_gpu_total_memory_bytes" in promql
    # nvidia_gpu_exporter: total and free are its own; utilization from them.
    smi = gpu_value(NVIDIA_SMI, "memory_utilization", NONE)
    assert smi is not None and "nvidia_smi_utilization_memory_ratio" not in smi
    assert "nvidia_smi_memory_total_bytes" in smi and "!= 0) * 100)" in smi
    # gpu-metrics has no memory utilization: derived alone.
    assert gpu_value(GPU_METRICS, "memory_utilization", NONE).startswith("(round(")  # type: ignore[union-attr]
    assert gpu_value(GPU_METRICS, "power_usage", NONE) is None


def test_dcgm_old_derives_its_total_without_reserved_memory() -> None:
    total = gpu_value(DCGM_OLD, "memory_total", NONE)
    assert total is not None and "dcgm_fb_free" in total and " * 0)" not in total


def test_pod_and_namespace_filters_keep_the_gpus_held_by_those_pods_at_each_instant() -> None:
    filters = GpuFilters(namespace=("ml",))
    promql = listed(DCGM, "temperature", filters)
    holders = held(DCGM, filters)
    assert promql is not None and holders is not None
    assert promql.endswith(f" and ({holders}))")
    assert 'exported_namespace="ml"' in holders and 'namespace="ml"' in holders
    assert holders.startswith("group by (Hostname, hostname, gpu, UUID, GPU_I_ID, "
                              "GPU_I_PROFILE, modelName) (")


def test_filters_a_dialect_cannot_match_leave_it_out() -> None:
    assert listed(NVITOP, "temperature", GpuFilters(namespace=("ml",))) is None  # no pods
    assert listed(LEGACY, "temperature", GpuFilters(uuid=("GPU-1",))) is None  # no UUIDs
    assert grouped(LEGACY, "temperature", GpuFilters(uuid=("GPU-1",)), "node") is None


def test_a_model_filter_on_nvidia_smi_matches_its_info_metric() -> None:
    promql = listed(NVIDIA_SMI, "temperature", GpuFilters(gpu_name=("Tesla T4",)))
    assert promql is not None
    assert promql.endswith(
        ' and on (node, kubernetes_node, nodename, instance, uuid) (group by (node, '
        'kubernetes_node, nodename, instance, uuid) (nvidia_smi_gpu_info{name="Tesla T4"})))')
    # The index gauge carries no model name: it is not filtered by one.
    queries = info_queries(NVIDIA_SMI, GpuFilters(gpu_name=("Tesla T4",)))
    assert queries[("index", "nvidia_smi_index")] == (
        "max by (node, kubernetes_node, nodename, instance, index, uuid, name) "
        "(nvidia_smi_index)")


def test_group_by_node_labels_the_first_node_label_that_is_set() -> None:
    promql = grouped(DCGM, "temperature", NONE, "node")
    assert promql is not None
    assert promql.startswith('label_replace(label_replace(label_replace(')
    assert promql.endswith('"node_name", "$1", "hostname", "(.+)"), '
                           '"node_name", "$1", "Hostname", "(.+)")')


def test_group_by_namespace_puts_a_gpu_in_each_namespace_of_its_pods() -> None:
    promql = grouped(DCGM, "memory_used", NONE, "namespace")
    assert promql is not None
    assert promql.startswith("(group by (Hostname, hostname, gpu, UUID, GPU_I_ID, "
                             "GPU_I_PROFILE, modelName, namespace) (")
    assert " * on (Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName) " \
           "group_left () " in promql
    # Without pod labels there is no namespace to group by.
    assert grouped(NVITOP, "memory_used", NONE, "namespace") is None


def test_group_by_gpu_name_reads_nvidia_smi_models_from_its_info_metric() -> None:
    promql = grouped(NVIDIA_SMI, "temperature", NONE, "gpu_name")
    assert promql is not None
    keys = "node, kubernetes_node, nodename, instance, uuid"
    assert f" * on ({keys}) group_left (gpu_name) topk by ({keys}) (1, " in promql
    assert f"unless on ({keys}) topk by" in promql  # GPUs without info: a null model
    nvitop = grouped(NVITOP, "temperature", NONE, "gpu_name")
    assert nvitop is not None and nvitop.endswith(
        '"gpu_name", "$1", "gpu_name", "(.+?) MIG .*")')


def test_a_later_dialect_leaves_out_the_gpus_an_earlier_one_lists() -> None:
    promql = grouped(NVIDIA_SMI, "temperature", NONE, "cluster", [DCGM])
    assert promql is not None
    assert '"gpu_uuid", "GPU-$1", "uuid", "(.+)"' in promql  # nvidia-smi drops the prefix
    assert 'unless on (gpu_uuid) (label_replace(label_replace(group by (Hostname, ' \
           'hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName) ' \
           '(DCGM_FI_DEV_FB_USED{UUID!=""}), "gpu_uuid", "", "", ""), "gpu_uuid", "$1", ' \
           '"UUID", "(.+)"))' in promql
    # Both carry node and index on every series: also matched by node and index.
    both = grouped(NVITOP, "temperature", NONE, "cluster", [DCGM])
    assert both is not None and "unless on (node_name, gpu_index)" in both
    assert '"gpu_index", "$1", "index", "([^:]+)(?::.*)?"' in both
    # The first dialect is never narrowed.
    assert "unless on (gpu_uuid)" not in (grouped(DCGM, "temperature", NONE, "cluster")
                                          or "")


def test_exporter_pods_named_as_nodes_are_mapped_with_kube_pod_info() -> None:
    dialect = dataclasses.replace(DCGM, node_map_metric="kube_pod_info")
    promql = grouped(dialect, "temperature", NONE, "node")
    assert promql is not None
    assert "group by (pod, node) (kube_pod_info and on (pod)" in promql
    assert "* on (exporter_pod) group_left (mapped_node) topk by (exporter_pod) (1, " in promql
    assert "unless on (node_name)" in promql  # a pod kube_pod_info does not know: its name
    # The node filter cannot be pushed into the series: it is matched after mapping.
    filtered = grouped(dialect, "temperature", GpuFilters(node=('a"$1',)), "cluster")
    assert filtered is not None
    assert filtered.endswith(
        ' and on (node_name) (label_replace(vector(1), "node_name", "a\\"$$1", "", "")))')
    assert "Hostname=" not in filtered
    # group_by=gpu maps the pods in Python, from the same pairs the snapshot reads.
    assert ("node_map",) in info_queries(dialect, NONE)


@pytest.mark.parametrize("group_by", ["node", "namespace", "gpu_name", "cluster"])
def test_averages_of_several_dialects_come_as_sum_and_count(group_by: str) -> None:
    by = {"node": "node_name", "namespace": "namespace", "gpu_name": "gpu_name",
          "cluster": ""}[group_by]
    assert aggregate_query("X", group_by, "avg", halves=True) == (
        f'label_replace(sum by ({by}) (X), "part", "sum", "", "") or '
        f'label_replace(count by ({by}) (X), "part", "count", "", "")')
    assert aggregate_query("X", group_by, "avg", halves=False) == f"avg by ({by}) (X)"
    assert aggregate_query("X", group_by, "max", halves=True) == f"max by ({by}) (X)"


def test_the_estimate_counts_one_field_per_gpu_or_group() -> None:
    assert count_query(LEGACY, NONE, "gpu") == f"count({listed(LEGACY, 'memory_used', NONE)})"
    node = count_query(DCGM, NONE, "node")
    assert node is not None and node.startswith("count(count by (node_name) (")
    assert "DCGM_FI_DEV_FB_USED" in node
