"""What the history PromQL evaluates to, in Prometheus' own engine (`promtool test rules`).

Each case writes a few series by hand, the way an exporter and a scrape label them, and
the value each expression must have at an instant, also by hand: time-shared GPUs (copies
and 4.8's per-pod shares), MIG instances and the engine-activity fallback, sentinels,
derived memory, models from nvidia_gpu_exporter's info metric, exporter pods mapped to
nodes, and a GPU two exporters report counted once. promtool evaluates PromQL exactly as
the server does, with no server to start.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.dialects.builtin import DCGM, NVIDIA_SMI, NVITOP
from app.dialects.model import Dialect
from app.services.history_queries import (
    GroupPlan,
    Value,
    aggregate_query,
    gpu_value,
    grouped,
    listed,
)
from app.services.records import GpuFilters

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MIB = 1024 * 1024
NONE = GpuFilters()
# dcgm-exporter behind the GPU Operator (honorLabels false): its own pod is the target's.
TARGET = 'instance="x:9400", pod="nvidia-dcgm-exporter-1", namespace="gpu-operator"'
GPU_A = 'Hostname="n1", gpu="0", UUID="GPU-a", modelName="A100"'


def series(metric: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{metric}{{{labels}}}", "values": values}


def expect(expr: str | Value | None, at: str, *samples: tuple[str, float]) -> dict[str, Any]:
    assert expr is not None
    if isinstance(expr, Value):
        expr = expr.canonical()
    return {"expr": expr, "eval_time": at,
            "exp_samples": [{"labels": labels, "value": value} for labels, value in samples]}


def plan(dialect: Dialect, field: str, group_by: str) -> GroupPlan:
    found = grouped(dialect, field, NONE, group_by)
    assert found is not None
    return found


def run(tmp_path: Path, inputs: list[dict[str, str]], checks: list[dict[str, Any]]) -> None:
    """Evaluate every check over `inputs` (one sample a minute) with promtool."""
    case = {"tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": checks}]}
    path = tmp_path / "case.json"  # YAML reads JSON
    path.write_text(json.dumps(case))
    done = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_gpu_copied_to_each_pods_series_is_one_gpu_in_each_namespace(tmp_path: Path) -> None:
    copies = [series(metric, f'{GPU_A}, {TARGET}, exported_pod="{pod}", '
                             f'exported_namespace="{ns}"', value)
              for metric, value in (("DCGM_FI_DEV_GPU_UTIL", "40 40"),
                                    ("DCGM_FI_DEV_FB_USED", "1024 1024"))
              for pod, ns in (("p1", "a"), ("p2", "b"))]
    up = series("up", TARGET, "1 1")
    gpu = '{Hostname="n1", UUID="GPU-a", gpu="0", modelName="A100"}'
    memory = grouped(DCGM, "memory_used", NONE, "namespace")
    assert memory is not None
    run(tmp_path, [*copies, up], [
        expect(gpu_value(DCGM, "utilization", NONE), "1m", (gpu, 40)),  # not 80
        expect(aggregate_query(memory, "sum", halves=False), "1m",
               ('{namespace="a"}', 1024 * MIB), ('{namespace="b"}', 1024 * MIB)),
        expect(aggregate_query(plan(DCGM, "memory_used", "cluster"), "sum", halves=False),
               "1m", ("{}", 1024 * MIB)),
        expect(listed(DCGM, "utilization", GpuFilters(namespace=("a",))), "1m", (gpu, 40)),
        expect(listed(DCGM, "utilization", GpuFilters(namespace=("c",))), "1m"),
    ])


def test_per_pod_shares_leave_the_device_its_own_value(tmp_path: Path) -> None:
    # dcgm-exporter 4.8, honorLabels true: the pod-less series carries the target's pod.
    target = 'instance="y:9400", pod="exp-1", namespace="gpu-operator"'
    inputs = [series("up", target, "1 1")]
    for gpu, device, shares in (("GPU-b", ("70", "2048"), (("p1", "30", "1024"),
                                                           ("p2", "40", "1024"))),
                                ("GPU-c", ("0", "0"), ())):
        labels = f'Hostname="n2", gpu="{gpu[-1]}", UUID="{gpu}"'
        inputs += [series("DCGM_FI_DEV_GPU_UTIL", f"{labels}, {target}", device[0]),
                   series("DCGM_FI_DEV_FB_USED", f"{labels}, {target}", device[1])]
        for pod, util, used in shares:
            own = f'{labels}, instance="y:9400", pod="{pod}", namespace="a"'
            inputs += [series("DCGM_FI_DEV_GPU_UTIL", own, util),
                       series("DCGM_FI_DEV_FB_USED", own, used)]
    namespaces = grouped(DCGM, "memory_used", NONE, "namespace")
    assert namespaces is not None
    run(tmp_path, inputs, [
        expect(gpu_value(DCGM, "utilization", NONE), "0m",
               ('{Hostname="n2", UUID="GPU-b", gpu="b"}', 70),
               ('{Hostname="n2", UUID="GPU-c", gpu="c"}', 0)),
        expect(gpu_value(DCGM, "memory_used", NONE), "0m",
               ('{Hostname="n2", UUID="GPU-b", gpu="b"}', 2048 * MIB),
               ('{Hostname="n2", UUID="GPU-c", gpu="c"}', 0)),
        # The idle GPU's series name the exporter's own pod: it is in no namespace.
        expect(aggregate_query(namespaces, "count", halves=False), "0m",
               ('{namespace="a"}', 1)),
    ])


def test_mig_instances_sentinels_fallback_and_derived_memory(tmp_path: Path) -> None:
    whole = f"{GPU_A}, {TARGET}"
    mig = f'{GPU_A}, {TARGET}, GPU_I_ID="1", GPU_I_PROFILE="1g.10gb"'
    inputs = [
        series("up", TARGET, "1"),
        series("DCGM_FI_DEV_GPU_UTIL", whole, "50"),
        series("DCGM_FI_PROF_GR_ENGINE_ACTIVE", whole, "0.9"),  # GPU_UTIL wins
        series("DCGM_FI_DEV_GPU_TEMP", whole, "9223372036854775794"),  # a blank sentinel
        series("DCGM_FI_DEV_FB_USED", whole, "1024"),
        series("DCGM_FI_DEV_FB_FREE", whole, "3072"),  # no reserved memory: counts as 0
        series("DCGM_FI_DEV_GPU_UTIL", mig, "0"),  # misleading on MIG: never read
        series("DCGM_FI_PROF_GR_ENGINE_ACTIVE", mig, "0.25"),
        series("DCGM_FI_DEV_GPU_TEMP", mig, "40"),
        series("DCGM_FI_DEV_FB_USED", mig, "512"),
        series("DCGM_FI_DEV_FB_FREE", mig, "256"),
        series("DCGM_FI_DEV_FB_RESERVED", mig, "256"),
    ]
    gpu = '{Hostname="n1", UUID="GPU-a", gpu="0", modelName="A100"}'
    instance = ('{GPU_I_ID="1", GPU_I_PROFILE="1g.10gb", Hostname="n1", UUID="GPU-a", '
                'gpu="0", modelName="A100"}')
    run(tmp_path, inputs, [
        expect(gpu_value(DCGM, "utilization", NONE), "0m", (gpu, 50), (instance, 25)),
        expect(gpu_value(DCGM, "temperature", NONE), "0m", (instance, 40)),
        expect(gpu_value(DCGM, "memory_total", NONE), "0m",
               (gpu, 4096 * MIB), (instance, 1024 * MIB)),
        expect(gpu_value(DCGM, "memory_utilization", NONE), "0m", (gpu, 25), (instance, 50)),
    ])


def test_nvidia_smi_models_come_from_its_info_metric(tmp_path: Path) -> None:
    target = 'instance="h:9835"'
    inputs = [
        series("nvidia_smi_gpu_info", f'{target}, uuid="f1", name="Tesla T4", index="0"', "1"),
        series("nvidia_smi_temperature_gpu", f'{target}, uuid="f1"', "60"),
        series("nvidia_smi_temperature_gpu", f'{target}, uuid="f2"', "70"),  # no info yet
    ]
    by_model = grouped(NVIDIA_SMI, "temperature", NONE, "gpu_name")
    assert by_model is not None
    run(tmp_path, inputs, [
        # Grouped by the dialect's model label; the service reads it as gpu_name.
        expect(aggregate_query(by_model, "max", halves=False), "0m",
               ('{name="Tesla T4"}', 60), ("{}", 70)),
        expect(listed(NVIDIA_SMI, "temperature", GpuFilters(gpu_name=("Tesla T4",))), "0m",
               ('{instance="h:9835", uuid="f1"}', 60)),
    ])


def test_exporter_pods_named_as_nodes_count_under_their_node(tmp_path: Path) -> None:
    dialect: Dialect = dataclasses.replace(DCGM, node_map_metric="kube_pod_info")
    inputs = []
    for pod, uuid, temperature in (("dcgm-exporter-abc", "GPU-m", "50"),
                                   ("dcgm-exporter-zzz", "GPU-n", "60")):
        labels = f'Hostname="{pod}", gpu="0", UUID="{uuid}"'
        inputs += [series("DCGM_FI_DEV_GPU_TEMP", labels, temperature),
                   series("DCGM_FI_DEV_FB_USED", labels, "1")]
    inputs += [series("kube_pod_info", 'pod="dcgm-exporter-abc", node="real-1", '
                                       'namespace="gpu-operator", uid="u1"', "1"),
               series("kube_pod_info", 'pod="trainer", node="real-2", namespace="ml", '
                                       'uid="u2"', "1")]
    by_node = grouped(dialect, "temperature", NONE, "node")
    one_node = grouped(dialect, "temperature", GpuFilters(node=("real-1",)), "cluster")
    assert by_node is not None and one_node is not None
    run(tmp_path, inputs, [
        # A pod kube-state-metrics does not know keeps its name, as in the snapshot.
        expect(aggregate_query(by_node, "max", halves=False), "0m",
               ('{node_name="real-1"}', 50), ('{node_name="dcgm-exporter-zzz"}', 60)),
        expect(aggregate_query(one_node, "sum", halves=False), "0m", ("{}", 50)),
    ])


def test_a_gpu_two_exporters_report_counts_once_while_the_first_reports_it(
        tmp_path: Path) -> None:
    dcgm = 'Hostname="n1", gpu="0", UUID="GPU-aa"'
    inputs = [
        # dcgm-exporter stops reporting its GPU after two minutes.
        series("DCGM_FI_DEV_GPU_TEMP", dcgm, "50 50 stale stale"),
        series("DCGM_FI_DEV_FB_USED", dcgm, "1 1 stale stale"),
        # nvidia_gpu_exporter sees the same GPU (no prefix, lower case) and another one.
        series("nvidia_smi_temperature_gpu", 'instance="i", uuid="aa"', "51 51 51 51"),
        series("nvidia_smi_temperature_gpu", 'instance="i", uuid="bb"', "60 60 60 60"),
        # nvitop names GPU 0 of n1 with another UUID: the same GPU by node and index.
        series("gpu_temperature_C", 'hostname="n1", index="0", uuid="GPU-zz"',
               "55 55 55 55"),
    ]
    smi = grouped(NVIDIA_SMI, "temperature", NONE, "cluster", [DCGM])
    nvitop = grouped(NVITOP, "temperature", NONE, "cluster", [DCGM])
    assert smi is not None and nvitop is not None
    smi_sum = aggregate_query(smi, "sum", halves=False)
    nvitop_sum = aggregate_query(nvitop, "sum", halves=False)
    run(tmp_path, inputs, [
        expect(smi_sum, "1m", ("{}", 60)),
        expect(smi_sum, "3m", ("{}", 111)),
        expect(nvitop_sum, "1m"),
        expect(nvitop_sum, "3m", ("{}", 55)),
    ])
