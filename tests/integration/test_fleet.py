"""The fleet view end to end: simulated clusters in the fleet scenario, backfilled into a
real Prometheus with kube-state-metrics (and again without it), against the truth of
tests/integration/fleet_world.py.

Every answer is read at an instant on the 15 s grid (`time=`), so the truth knows exactly
which samples Prometheus sees. Counts are exact; utilization and energy within 1 %.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import ApiServer
from tests.integration.fleet_world import (
    IDLE_WINDOW_S,
    TrueGpu,
    energy_parts,
    fleet_world,
    ksm_truth,
    pods_of,
    truth,
)
from tests.integration.history_world import HistoryWorld
from tests.integration.test_history import ok_data

pytestmark = pytest.mark.integration

STATES = ("allocated-busy", "allocated-idle", "free", "unallocated-busy", "unknown")


@pytest.fixture(scope="module")
def world() -> Iterator[HistoryWorld]:
    with fleet_world(with_ksm=True) as lab:
        yield lab


@pytest.fixture(scope="module")
def api(world: HistoryWorld) -> Iterator[ApiServer]:
    server = ApiServer({"PROMETHEUS_URL": world.url, "CACHE_TTL": "0"})
    yield server
    server.close()


@pytest.fixture(scope="module")
def bare_world() -> Iterator[HistoryWorld]:
    with fleet_world(with_ksm=False) as lab:
        yield lab


@pytest.fixture(scope="module")
def bare_api(bare_world: HistoryWorld) -> Iterator[ApiServer]:
    server = ApiServer({"PROMETHEUS_URL": bare_world.url, "CACHE_TTL": "0"})
    yield server
    server.close()


def instants(world: HistoryWorld) -> list[int]:
    """Two instants on the 15 s grid: the end, and 25 minutes before (other job phases)."""
    end = world.timeline.last - 7
    return [end, end - 25 * 60]


def get(api: ApiServer, path: str, t: int, **params: Any) -> Any:
    return ok_data(api.get(path, params={"time": str(t), **params}))


def close(got: float | None, want: float, relative: float = 0.01) -> bool:
    return got is not None and abs(got - want) <= relative * max(abs(want), 1e-9)


def key(row: dict[str, Any]) -> tuple[str, int, int | None]:
    return row["node_name"], row["gpu_index"], row["mig_instance"]


def true_key(gpu: TrueGpu) -> tuple[str, int, int | None]:
    return gpu.gpu.node, gpu.gpu.index, gpu.gpu.mig_instance


# ------------------------------------------------------------------------ the GPU rows

def test_the_lab_shows_every_state_and_a_counter_restart(world: HistoryWorld) -> None:
    """Preconditions: the scenario has what the tests below claim to check."""
    t = instants(world)[0]
    rows = truth(world, t)
    assert set(STATES) <= {g.state for g in rows}
    partly = [g for g in rows if 0 < g.idle_seconds < IDLE_WINDOW_S]
    assert partly, "a GPU idle for part of the window"
    assert any(g.gpu.mig_instance is not None and g.state == "allocated-idle" for g in rows)
    restarted = []
    for g in rows:
        if g.dialect != "dcgm" or g.gpu.energy_mj is None:
            continue
        start = truth_energy_at(world, t - 3600, g)
        if start is not None and start > g.gpu.energy_mj:
            restarted.append(g)
    assert restarted, "a driver reload (energy counter restart) within the window"


def truth_energy_at(world: HistoryWorld, t: float, gpu: TrueGpu) -> float | None:
    earlier = {true_key(g): g for g in truth(world, t) if g.cluster == gpu.cluster}
    found = earlier.get(true_key(gpu))
    return found.gpu.energy_mj if found else None


@pytest.mark.parametrize("which", [0, 1])
def test_every_gpu_has_its_state_and_idle_time(world: HistoryWorld, api: ApiServer,
                                               which: int) -> None:
    t = instants(world)[which]
    rows = {key(r): r for r in get(api, "/api/v1/gpu/metrics", t)}
    expected = truth(world, t)
    assert len(rows) == len(expected)
    for gpu in expected:
        row = rows[true_key(gpu)]
        assert row["state"] == gpu.state, (true_key(gpu), gpu.gpu.role)
        assert row["idle_seconds"] == pytest.approx(gpu.idle_seconds, abs=0.001), (
            true_key(gpu), gpu.gpu.role)


# ------------------------------------------------------------------------- the cluster

def test_the_cluster_counts_states_models_and_allocation(world: HistoryWorld,
                                                        api: ApiServer) -> None:
    t = instants(world)[0]
    data = get(api, "/api/v1/cluster", t)
    expected = truth(world, t)
    devices = {(g.gpu.node, g.gpu.uuid): g.gpu.name for g in expected}
    assert data["window"] == "1h"
    assert data["gpus"]["total"] == len(devices)
    assert data["gpus"]["mig_instances"] == sum(1 for g in expected
                                                if g.gpu.mig_instance is not None)
    assert data["gpus"]["by_state"] == {s: sum(1 for g in expected if g.state == s)
                                        for s in STATES}
    assert data["gpus"]["by_model"] == dict(Counter(devices.values()))
    ksm = ksm_truth(world, t)
    allocation = data["allocation"]
    assert allocation["kube_state_metrics"] is True
    assert allocation["allocatable"] == ksm["allocatable"]
    assert allocation["requested"] == ksm["requested"]
    assert allocation["pending_requests"] == ksm["pending"]
    assert allocation["held"] == sum(1 for g in expected if pods_of(g))


def test_the_cluster_window_figures_match_the_samples(world: HistoryWorld,
                                                     api: ApiServer) -> None:
    for t in instants(world):
        data = get(api, "/api/v1/cluster", t)
        expected = truth(world, t)
        average = sum(g.utilization_avg for g in expected) / len(expected)
        assert close(data["utilization_avg"], average)
        assert close(data["energy_joules"], sum(g.energy_j for g in expected))
        assert data["idle_gpu_seconds"] == sum(g.window_idle_s for g in expected)
        assert data["memory_used"] == sum(g.gpu.memory_used_bytes for g in expected)
        power = {(g.gpu.node, g.gpu.uuid): g.gpu.power_w for g in expected}
        assert data["power_usage"] == pytest.approx(sum(power.values()), abs=0.01)


def test_a_shorter_window_is_its_own_answer(world: HistoryWorld, api: ApiServer) -> None:
    t = instants(world)[0]
    data = get(api, "/api/v1/cluster", t, window="15m")
    expected = truth(world, t, window_s=900)
    assert data["window"] == "15m"
    assert close(data["energy_joules"], sum(g.energy_j for g in expected))
    assert data["idle_gpu_seconds"] == sum(g.window_idle_s for g in expected)


def test_filters_narrow_the_cluster(world: HistoryWorld, api: ApiServer) -> None:
    t = instants(world)[0]
    expected = truth(world, t)
    node = "fc-004"  # the MIG node
    data = get(api, "/api/v1/cluster", t, node=node)
    mine = [g for g in expected if g.gpu.node == node]
    assert data["gpus"]["mig_instances"] == len(mine)
    assert data["allocation"]["allocatable"] == ksm_truth(world, t)["nodes"][node]["allocatable"]
    assert close(data["energy_joules"], sum(g.energy_j for g in mine))
    namespace = "inference"
    data = get(api, "/api/v1/cluster", t, namespace=namespace)
    held = [g for g in expected if any(ns == namespace for ns, _, _ in pods_of(g))]
    assert data["allocation"]["held"] == len(held)
    assert data["allocation"]["allocatable"] is None
    assert data["allocation"]["requested"] == \
        ksm_truth(world, t)["namespaces"][namespace]["requested"]


# ---------------------------------------------------------------- nodes and namespaces

def test_every_node_row(world: HistoryWorld, api: ApiServer) -> None:
    t = instants(world)[0]
    nodes = {n["node_name"]: n for n in get(api, "/api/v1/nodes", t)}
    expected = truth(world, t)
    ksm = ksm_truth(world, t)["nodes"]
    assert set(nodes) == {g.gpu.node for g in expected}
    for name, node in nodes.items():
        mine = [g for g in expected if g.gpu.node == name]
        assert node["gpus"] == len({g.gpu.uuid for g in mine})
        assert node["held"] == sum(1 for g in mine if pods_of(g))
        assert node["busy"] == sum(1 for g in mine if g.state.endswith("-busy"))
        assert node["idle"] == sum(1 for g in mine if g.state in ("allocated-idle", "free"))
        assert close(node["energy_joules"], sum(g.energy_j for g in mine)), name
        if name in ksm:
            assert node["allocatable"] == ksm[name]["allocatable"], name
            assert node["requested"] == ksm[name]["requested"], name
        else:  # nvidia_gpu_exporter's node: kube-state-metrics does not know it here
            assert node["allocatable"] == 0 and node["requested"] == 0
    # The node nobody requested: GPUs on offer, none requested, none held.
    unrequested = nodes["fc-003"]
    assert unrequested["allocatable"] > 0
    assert unrequested["requested"] == 0 and unrequested["held"] == 0


def test_every_namespace_row(world: HistoryWorld, api: ApiServer) -> None:
    t = instants(world)[0]
    rows = {n["namespace"]: n for n in get(api, "/api/v1/namespaces", t)}
    expected = truth(world, t)
    ksm = ksm_truth(world, t)["namespaces"]
    assert set(rows) == set(ksm)
    splits = set()
    for name, row in rows.items():
        held = [g for g in expected if any(ns == name for ns, _, _ in pods_of(g))]
        assert row["pods"] == len(ksm[name]["pods"]), name
        assert row["gpus_requested"] == ksm[name]["requested"], name
        assert row["pending_requests"] == ksm[name]["pending"], name
        assert row["gpus_held"] == len(held), name
        energy = sum(energy_parts(g).get(name, 0.0) for g in held)
        if held:
            assert close(row["energy_joules"], energy), name
            assert row["idle_gpu_seconds"] == sum(g.window_idle_s for g in held), name
        else:  # only pending pods
            assert row["energy_joules"] is None and row["utilization_avg"] is None
        splits.add(row["energy_split"])
    # dcgm-exporter 4.8 gives pods' own shares; the copies of the default chart do not.
    assert {"utilization-share", "even"} <= splits | {
        s for r in rows.values() if r["energy_split"] == "mixed"
        for s in ("utilization-share", "even")}


# ----------------------------------------------------------- without kube-state-metrics

def test_without_kube_state_metrics_allocation_is_null(bare_world: HistoryWorld,
                                                      bare_api: ApiServer) -> None:
    t = instants(bare_world)[0]
    data = get(bare_api, "/api/v1/cluster", t)
    expected = truth(bare_world, t)
    allocation = data["allocation"]
    assert allocation["kube_state_metrics"] is False
    assert (allocation["allocatable"], allocation["requested"],
            allocation["pending_requests"]) == (None, None, None)
    # States come from the exporters' pod labels alone, as with kube-state-metrics.
    assert data["gpus"]["by_state"] == {s: sum(1 for g in expected if g.state == s)
                                        for s in STATES}
    assert allocation["held"] == sum(1 for g in expected if pods_of(g))
    nodes = get(bare_api, "/api/v1/nodes", t)
    assert all(n["allocatable"] is None and n["requested"] is None for n in nodes)
    namespaces = get(bare_api, "/api/v1/namespaces", t)
    assert namespaces and all(n["gpus_requested"] is None for n in namespaces)
    # Pending pods are known to kube-state-metrics only.
    assert all(not n["namespace"].startswith("queued") for n in namespaces)
    capabilities = ok_data(bare_api.get("/api/v1/capabilities"))
    assert "kube-state-metrics" in str(capabilities["fleet"])


def test_a_bad_window_is_a_400_in_the_envelope(api: ApiServer) -> None:
    for window in ("1m", "30d", "soon"):
        response = api.get("/api/v1/cluster", params={"window": window})
        assert response.status_code == 400
        body = response.json()
        assert body["success"] is False and "window" in body["error"]
