"""The PromQL of history, per dialect: the parts that carry the snapshot's meaning.

Whole expressions are long; these tests pin the pieces that matter (which series, which
fallback, which join, which labels, which unit) and leave the parenthesis layout free.
That the expressions mean what the snapshot means is checked in Prometheus' own engine in
test_history_promql.py and against a real Prometheus in the integration tests.
"""

from __future__ import annotations

import dataclasses

from app.dialects.builtin import DCGM, DCGM_OLD, GPU_METRICS, LEGACY, NVIDIA_SMI, NVITOP
from app.dialects.model import MIB
from app.services.history_queries import (
    GroupPlan,
    Value,
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

DCGM_ID = "Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName"
DCGM_KEY = "Hostname, hostname, UUID, GPU_I_ID"
LIMIT = "1000000000000000.0"
NONE = GpuFilters()


def value(dialect: object, field: str, filters: GpuFilters = NONE) -> Value:
    found = gpu_value(dialect, field, filters)  # type: ignore[arg-type]
    assert found is not None
    return found


def plan(dialect: object, field: str, group_by: str, filters: GpuFilters = NONE,
         earlier: tuple = ()) -> GroupPlan:
    found = grouped(dialect, field, filters, group_by, earlier)  # type: ignore[arg-type]
    assert found is not None
    return found


def test_relabel_applies_the_preferred_label_last_and_clears_a_foreign_target() -> None:
    assert relabel("x", "node_name", ("Hostname", "hostname")) == (
        'label_replace(label_replace(label_replace(x, "node_name", "", "", ""), '
        '"node_name", "$1", "hostname", "(.+)"), "node_name", "$1", "Hostname", "(.+)")')
    # The target is one of the sources: nothing to clear, the others override it.
    assert relabel("x", "namespace", ("exported_namespace", "namespace")) == (
        'label_replace(label_replace(x, "namespace", "$1", "namespace", "(.+)"), '
        '"namespace", "$1", "exported_namespace", "(.+)")')


def test_a_plain_field_is_the_max_over_its_series_without_sentinels() -> None:
    assert value(LEGACY, "temperature") == Value(
        f"((max by (node, hostname, gpu, gpu_id, gpu_name) "
        f"(nvidia_gpu_temperature_celsius)) <= {LIMIT})")


def test_dcgm_utilization_is_the_podless_series_else_the_max_over_the_copies() -> None:
    found = value(DCGM, "utilization")
    assert found.scale == 1  # GPU_UTIL is in %; the engine activity is scaled inside
    podless = (f'max by ({DCGM_ID}) (DCGM_FI_DEV_GPU_UTIL{{exported_pod="", pod="", '
               f'GPU_I_ID=""}} or (DCGM_FI_DEV_GPU_UTIL{{exported_pod="", pod!="", '
               f'GPU_I_ID=""}} and on (instance, pod) up{{pod!=""}}))')
    assert f'({podless} or max by ({DCGM_ID}) (DCGM_FI_DEV_GPU_UTIL{{GPU_I_ID=""}}))' in (
        found.expression)
    # MIG instances and custom counter sets: engine activity, only for GPUs without
    # GPU_UTIL, left out before it is aggregated.
    assert (f"(max by ({DCGM_ID}) ((DCGM_FI_PROF_GR_ENGINE_ACTIVE unless on ({DCGM_ID}) "
            f'(DCGM_FI_DEV_GPU_UTIL{{GPU_I_ID=""}}))) * 100.0)') in found.expression
    assert found.expression.endswith(f") <= {LIMIT})")  # one sentinel check per field


def test_dcgm_memory_stays_in_mib_and_its_total_adds_free_and_reserved() -> None:
    used, free = value(DCGM, "memory_used"), value(DCGM, "memory_free")
    assert used.scale == free.scale == MIB
    total = value(DCGM, "memory_total")
    assert total.scale == MIB
    raw_used = used.expression.removeprefix("((").removesuffix(f") <= {LIMIT})")
    raw_free = f"max by ({DCGM_ID}) (DCGM_FI_DEV_FB_FREE)"
    raw_reserved = raw_free.replace("FB_FREE", "FB_RESERVED")
    # Reserved memory counts as 0 where it is not written.
    assert total.expression == (
        f"((({raw_used} + (({raw_free} + {raw_reserved}) or {raw_free}))) <= {LIMIT})")
    # used / total as the snapshot divides (a ratio, scaled to % after), for GPUs...
    rest = f"(({raw_free} + {raw_reserved}) or {raw_free})"
    utilization = value(DCGM, "memory_utilization")
    assert utilization.scale == 100
    assert utilization.expression == (
        f"((({raw_used} / (({raw_used} + {rest}) != 0))) <= {LIMIT})")
    # ... and for groups with the costly `used` (read per pod) once.
    grouped_utilization = plan(DCGM, "memory_utilization", "cluster").value
    assert grouped_utilization.scale == 100
    assert grouped_utilization.expression.startswith("(((1 / (1 + ((max by (")
    assert grouped_utilization.expression.count("DCGM_FI_DEV_FB_USED{") == 2  # one podless


def test_an_exporters_own_value_comes_first_and_the_derived_one_fills_in() -> None:
    legacy = value(LEGACY, "memory_utilization")
    # Its own percentage or the derived ratio: different units, so both in percent.
    assert legacy.scale == 1
    assert legacy.expression.startswith(
        "((((max by (node, hostname, gpu, gpu_id, gpu_name) "
        f"(nvidia_gpu_memory_utilization_percent))) <= {LIMIT}) or ((((")
    assert "nvidia_gpu_total_memory_bytes) or (max by" in legacy.expression
    assert legacy.expression.endswith(f"!= 0)) * 100.0)) <= {LIMIT}))")
    # nvidia_gpu_exporter: used over its own total; never its memory *bandwidth* ratio.
    smi = value(NVIDIA_SMI, "memory_utilization")
    assert "nvidia_smi_utilization_memory_ratio" not in smi.expression
    assert "nvidia_smi_memory_total_bytes" in smi.expression and smi.scale == 100
    assert gpu_value(GPU_METRICS, "power_usage", NONE) is None


def test_dcgm_old_derives_its_total_without_reserved_memory() -> None:
    total = value(DCGM_OLD, "memory_total")
    assert total.scale == MIB and "reserved" not in total.expression.lower()
    assert total.expression.endswith(
        " + max by (Hostname, hostname, node, gpu, uuid, UUID, gpu_type, modelName) "
        f"(dcgm_fb_free))) <= {LIMIT})")


def test_pod_and_namespace_filters_keep_the_gpus_held_by_those_pods_at_each_instant() -> None:
    filters = GpuFilters(namespace=("ml",))
    found = listed(DCGM, "temperature", filters)
    holders = held(DCGM, filters)
    assert found is not None and holders is not None
    assert found.expression.endswith(f" and ({holders}))")
    assert 'exported_namespace="ml"' in holders and 'namespace="ml"' in holders
    assert holders.startswith(f"group by ({DCGM_ID}) (")


def test_filters_a_dialect_cannot_match_leave_it_out() -> None:
    assert listed(NVITOP, "temperature", GpuFilters(namespace=("ml",))) is None  # no pods
    assert listed(LEGACY, "temperature", GpuFilters(uuid=("GPU-1",))) is None  # no UUIDs
    assert grouped(LEGACY, "temperature", GpuFilters(uuid=("GPU-1",)), "node") is None


def test_a_model_filter_on_nvidia_smi_matches_its_info_metric() -> None:
    found = listed(NVIDIA_SMI, "temperature", GpuFilters(gpu_name=("Tesla T4",)))
    assert found is not None
    assert found.expression.endswith(
        ' and on (node, kubernetes_node, nodename, instance, uuid) (group by (node, '
        'kubernetes_node, nodename, instance, uuid) (nvidia_smi_gpu_info{name="Tesla T4"})))')
    # The index gauge carries no model name: it is not filtered by one.
    queries = info_queries(NVIDIA_SMI, GpuFilters(gpu_name=("Tesla T4",)))
    assert queries[("index", "nvidia_smi_index")] == (
        "max by (node, kubernetes_node, nodename, instance, index, uuid, name) "
        "(nvidia_smi_index)")


def test_groups_keep_each_gpu_by_its_key_and_aggregate_by_the_exporters_labels() -> None:
    node = plan(DCGM, "temperature", "node")
    assert node == GroupPlan(Value(f"((max by ({DCGM_KEY}) (DCGM_FI_DEV_GPU_TEMP)) "
                                   f"<= {LIMIT})"), ("Hostname", "hostname"))
    model = plan(DCGM, "temperature", "gpu_name")
    assert model.by == ("modelName",)
    assert model.value.expression.startswith(f"((max by ({DCGM_KEY}, modelName) (")
    # MiB until aggregated: the scale is applied to the groups.
    memory = plan(DCGM, "memory_used", "cluster")
    assert memory.by == () and memory.value.scale == MIB
    assert aggregate_query(memory, "max", halves=False) == (
        f"max by () ({memory.value.expression}) * 1048576")


def test_group_by_namespace_puts_a_gpu_in_each_namespace_of_its_pods() -> None:
    found = plan(DCGM, "memory_used", "namespace")
    assert found.by == ("namespace",)
    assert found.value.expression.startswith(f"(group by ({DCGM_KEY}, namespace) (")
    assert f" * on ({DCGM_KEY}) group_left () " in found.value.expression
    # Without pod labels there is no namespace to group by.
    assert grouped(NVITOP, "memory_used", NONE, "namespace") is None


def test_group_by_gpu_name_joins_nvidia_smi_models_from_its_info_metric() -> None:
    found = plan(NVIDIA_SMI, "temperature", "gpu_name")
    keys = "node, kubernetes_node, nodename, instance, uuid"
    assert found.by == ("name",)
    assert f" * on ({keys}) group_left (name) topk by ({keys}) (1, " in found.value.expression
    assert f"unless on ({keys}) topk by" in found.value.expression  # no info: null model
    # nvitop's "<model> MIG <profile>" names are read by the service: grouped as written.
    assert plan(NVITOP, "temperature", "gpu_name").by == ("devicename",)


def test_a_later_dialect_leaves_out_the_gpus_an_earlier_one_lists() -> None:
    found = plan(NVIDIA_SMI, "temperature", "cluster", earlier=(DCGM,)).value.expression
    assert '"gpu_uuid", "GPU-$1", "uuid", "(.+)"' in found  # nvidia-smi drops the prefix
    assert (f'unless on (gpu_uuid) (label_replace(label_replace(group by ({DCGM_KEY}, gpu) '
            f'(DCGM_FI_DEV_FB_USED{{UUID!=""}}), "gpu_uuid", "", "", ""), "gpu_uuid", "$1", '
            f'"UUID", "(.+)"))') in found
    # Both carry node and index on every series: also matched by node and index.
    both = plan(NVITOP, "temperature", "cluster", earlier=(DCGM,)).value.expression
    assert "unless on (node_name, gpu_index)" in both
    assert '"gpu_index", "$1", "index", "([^:]+)(?::.*)?"' in both
    # The first dialect is never narrowed.
    assert "unless on (gpu_uuid)" not in plan(DCGM, "temperature", "cluster").value.expression


def test_exporter_pods_named_as_nodes_are_mapped_with_kube_pod_info() -> None:
    dialect = dataclasses.replace(DCGM, node_map_metric="kube_pod_info")
    found = plan(dialect, "temperature", "node")
    assert found.by == ("node_name",)
    assert "group by (pod, node) (kube_pod_info and on (pod)" in found.value.expression
    assert ("* on (exporter_pod) group_left (mapped_node) topk by (exporter_pod) (1, "
            in found.value.expression)
    assert "unless on (node_name)" in found.value.expression  # unknown pod: its name
    # The node filter cannot be pushed into the series: it is matched after mapping.
    filtered = plan(dialect, "temperature", "cluster", GpuFilters(node=('a"$1',)))
    assert filtered.value.expression.endswith(
        ' and on (node_name) (label_replace(vector(1), "node_name", "a\\"$$1", "", "")))')
    assert "Hostname=" not in filtered.value.expression
    # group_by=gpu maps the pods in Python, from the same pairs the snapshot reads.
    assert ("node_map",) in info_queries(dialect, NONE)


def test_averages_to_combine_come_as_sum_and_count_and_counts_have_no_unit() -> None:
    groups = GroupPlan(Value("X", MIB), ("a", "b"))
    assert aggregate_query(groups, "avg", halves=True) == (
        'label_replace(sum by (a, b) (X) * 1048576, "part", "sum", "", "") or '
        'label_replace(count by (a, b) (X), "part", "count", "", "")')
    assert aggregate_query(groups, "avg", halves=False) == "avg by (a, b) (X) * 1048576"
    assert aggregate_query(groups, "count", halves=False) == "count by (a, b) (X)"


def test_the_estimate_counts_one_field_per_gpu_or_group() -> None:
    found = listed(LEGACY, "memory_used", NONE)
    assert found is not None
    assert count_query(LEGACY, NONE, "gpu") == f"count({found.expression})"
    node = count_query(DCGM, NONE, "node")
    assert node is not None and node.startswith("count(count by (Hostname, hostname) (")
    assert "DCGM_FI_DEV_FB_USED" in node
