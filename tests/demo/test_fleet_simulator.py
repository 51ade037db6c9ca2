"""The simulator's fleet scenario: roles, the energy counter, kube-state-metrics' series.

kube-state-metrics' shape is checked against the real capture in
tests/fixtures/kube_state_metrics/ (label names and order written out by hand from it).
"""

from __future__ import annotations

import re
from pathlib import Path

from demo.cluster import (
    CYCLE_STEPS,
    FLEET_ROLES,
    ClusterSpec,
    driver_loaded_at,
    node_names,
    pending_pods,
    snapshot,
    unrequested_node,
)
from demo.dialects import render
from tests.demo.test_simulator import parse

CAPTURE = (Path(__file__).parent.parent / "fixtures" / "kube_state_metrics"
           / "kube-state-metrics-v2.20-pod-gpu-requests-server-test.prom")
SPEC = ClusterSpec(nodes=6, gpus_per_node=8, seed=3, mig_nodes=1, shared_gpus=2, fleet=True)
_LABELS = re.compile(r'([A-Za-z_]+)="')


def label_names(text: str, metric: str) -> list[list[str]]:
    """The label names of each `metric` line, in the order they are written."""
    return [_LABELS.findall(line) for line in text.splitlines()
            if line.startswith(metric + "{")]


def test_the_scenario_shows_every_role_and_only_when_asked() -> None:
    rows = snapshot(SPEC, 40)
    assert {g.role for g in rows} == set(FLEET_ROLES)
    plain = snapshot(ClusterSpec(nodes=4, gpus_per_node=8, seed=3), 40)
    assert {g.role for g in plain} == {""} and {g.energy_mj for g in plain} == {None}
    held = [g for g in rows if g.role == "held-idle"]
    assert all(g.pods and g.utilization == 0 and not g.processes for g in held)
    outside = [g for g in rows if g.role == "outside"]
    assert all(not g.pods and g.utilization > 0 and g.processes for g in outside)
    node = unrequested_node(SPEC)
    assert node == node_names(SPEC)[4]  # the last node out of MIG mode
    assert all(g.role == "free" and not g.pods for g in rows if g.node == node)


def test_a_cycling_job_runs_half_of_each_cycle_and_keeps_its_pod() -> None:
    key = next((g.node, g.index) for g in snapshot(SPEC, 0) if g.role == "cycling")
    busy = []
    for step in range(CYCLE_STEPS):
        (gpu,) = [g for g in snapshot(SPEC, step) if (g.node, g.index) == key]
        assert gpu.pods
        busy.append(gpu.utilization > 0)
    assert sum(busy) == CYCLE_STEPS // 2


def test_the_energy_counter_adds_each_steps_mean_power_and_restarts_on_reload() -> None:
    # A held idle GPU draws its model's idle power: a Tesla T4's 10 W for 15 s is 150 J.
    gpus = [g for g in snapshot(SPEC, 0) if g.role == "held-idle" and g.name == "Tesla T4"]
    assert gpus
    node, index = gpus[0].node, gpus[0].index
    n = node_names(SPEC).index(node)
    reload = next(s for s in range(1, 2000) if driver_loaded_at(SPEC, n, index, s) == s)
    counters = []
    for step in (reload - 2, reload - 1, reload, reload + 1):
        (gpu,) = [g for g in snapshot(SPEC, step) if (g.node, g.index) == (node, index)]
        counters.append(gpu.energy_mj)
    assert counters[1] - counters[0] == 150_000.0
    assert counters[2] == 150_000.0  # the first step after the driver loaded
    assert counters[3] - counters[2] == 150_000.0
    # MIG instances repeat their device's counter.
    mig = [g for g in snapshot(SPEC, 5) if g.mig_instance is not None and g.index == 0]
    assert len({g.energy_mj for g in mig}) == 1


def test_kube_state_metrics_series_have_the_captures_labels_in_its_order() -> None:
    capture = CAPTURE.read_text()
    ours = render(snapshot(SPEC, 5), "kube-state-metrics", spec=SPEC)
    requests = ["namespace", "pod", "uid", "container", "node", "resource", "unit"]
    assert requests in label_names(capture, "kube_pod_container_resource_requests")
    assert {tuple(n) for n in label_names(ours, "kube_pod_container_resource_requests")} \
        == {tuple(requests)}
    assert {tuple(n) for n in label_names(ours, "kube_pod_init_container_resource_requests")} \
        == {tuple(requests)}
    phase = ["namespace", "pod", "uid", "phase"]
    assert label_names(capture, "kube_pod_status_phase") == [phase] * 5
    assert {tuple(n) for n in label_names(ours, "kube_pod_status_phase")} == {tuple(phase)}
    info = label_names(capture, "kube_pod_info")
    assert {tuple(n) for n in label_names(ours, "kube_pod_info")} == {tuple(info[0])}
    assert "nvidia_com_gpu" in capture and 'unit="integer"' in capture


def test_kube_state_metrics_phases_resources_and_pending_pods() -> None:
    rows = snapshot(SPEC, 5)
    metrics = parse(render(rows, "kube-state-metrics", spec=SPEC))
    phases: dict[str, list[float]] = {}
    for sample in metrics["kube_pod_status_phase"]:
        phases.setdefault(sample.labels["pod"], []).append(sample.value)
    assert all(sorted(values) == [0, 0, 0, 0, 1] for values in phases.values())
    requests = metrics["kube_pod_container_resource_requests"]
    resources = {s.labels["resource"] for s in requests}
    assert resources == {"nvidia_com_gpu", "nvidia_com_gpu_shared", "nvidia_com_mig_1g_10gb",
                         "nvidia_com_mig_2g_20gb", "nvidia_com_mig_3g_40gb"}
    pending = {p.pod for p, _ in pending_pods(SPEC)}
    assert {s.labels["pod"] for s in requests if "node" not in s.labels
            or not s.labels["node"]} == pending
    offered = {(s.labels["node"], s.labels["resource"]): s.value
               for s in metrics["kube_node_status_allocatable"]}
    # Time-sliced GPUs are offered as 4 replicas each; MIG nodes per profile.
    shared = sum(v for (_, r), v in offered.items() if r == "nvidia_com_gpu_shared")
    assert shared == 2 * 4
    assert offered[(node_names(SPEC)[5], "nvidia_com_mig_1g_10gb")] == 8 * 2
    assert metrics["kube_pod_init_container_resource_requests"]
