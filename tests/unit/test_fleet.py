"""The fleet view's PromQL, idle join and summaries, on hand-written answers."""

from __future__ import annotations

from typing import Any

from app.dialects.builtin import DCGM, NVIDIA_SMI
from app.prometheus.client import QueryResult
from app.services.fleet import (
    Allocation,
    FleetData,
    FleetQuery,
    Request,
    cluster_summary,
    namespace_rows,
    node_rows,
)
from app.services.fleet_queries import (
    MAX_NARROWED,
    IdleRule,
    allocation_queries,
    idle_queries,
    last_busy_queries,
    window_queries,
)
from app.services.idle import IdleJoin, judge_state
from app.services.records import Gpu, GpuFilters, GpuWindow, PodShare

SMI = NVIDIA_SMI
RULE = IdleRule(threshold=5.0, window=1800.0)


def result(*series: tuple[dict[str, str], float], at: float = 1000.0) -> QueryResult:
    return QueryResult("vector", [{"metric": labels, "value": [at, str(value)]}
                        for labels, value in series])


def gpu(uuid: str, **labels: str) -> dict[str, str]:
    return {"Hostname": "n1", "gpu": "0", "UUID": uuid, **labels}


# ------------------------------------------------------------------------------ PromQL

def test_idle_round_one_is_one_max_over_time_per_utilization_source() -> None:
    queries = idle_queries(DCGM, GpuFilters(node=("n1",)), RULE)
    assert list(queries) == [("idle", "max", "0"), ("idle", "max", "1")]
    assert queries[("idle", "max", "0")] == (
        "max by (Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName) "
        '(max_over_time(DCGM_FI_DEV_GPU_UTIL{Hostname="n1", GPU_I_ID=""}[1800s]) or '
        'max_over_time(DCGM_FI_DEV_GPU_UTIL{hostname="n1", GPU_I_ID=""}[1800s]))')
    # The engine activity is a 0-1 ratio: the query itself is unit-free. It is asked only
    # for the GPUs without GPU_UTIL now, as the list's utilization is.
    fallback = queries[("idle", "max", "1")]
    assert "DCGM_FI_PROF_GR_ENGINE_ACTIVE{Hostname=\"n1\"}[1800s]" in fallback
    assert fallback.endswith(
        ") unless on (Hostname, hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, modelName) "
        '(DCGM_FI_DEV_GPU_UTIL{Hostname="n1", GPU_I_ID=""} or '
        'DCGM_FI_DEV_GPU_UTIL{hostname="n1", GPU_I_ID=""})')


def test_round_two_names_the_gpus_and_keeps_the_busy_samples_own_time() -> None:
    queries = last_busy_queries(DCGM, GpuFilters(), RULE, ["GPU-b", "GPU-a", "GPU-a"])
    util = queries[("idle", "last_busy", "0")]
    assert 'UUID=~"GPU-a|GPU-b"' in util
    assert "timestamp(DCGM_FI_DEV_GPU_UTIL{" in util
    assert ">= 5.0)" in util and "[1800s:15s]" in util
    # 5 % of engine activity is 0.05 of its ratio.
    assert ">= 0.05)" in queries[("idle", "last_busy", "1")]
    many = [f"GPU-{n}" for n in range(MAX_NARROWED + 1)]
    assert "UUID=~" not in last_busy_queries(DCGM, GpuFilters(), RULE, many)[
        ("idle", "last_busy", "0")]


def test_window_queries_read_the_energy_counter_and_power_only_where_it_is_missing() -> None:
    queries = window_queries(DCGM, GpuFilters(), 3600.0, 5.0)
    assert queries[("window", "energy")] == (
        "increase((max by (Hostname, hostname, UUID, gpu) "
        "(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION))[3600s:15s])")
    assert "unless on (Hostname, hostname, UUID, gpu)" in queries[("window", "power")]
    assert queries[("window", "power")].endswith("[3600s:15s]) * 15")
    # (t - window, t]: one step short of the window, so its start is not evaluated.
    assert "[3599s:15s]" in queries[("window", "utilization", "0")]
    assert queries[("window", "idle", "0")].startswith("count_over_time((max by (")
    smi = window_queries(SMI, GpuFilters(), 86400.0, 5.0)
    assert ("window", "energy") not in smi
    assert smi[("window", "power")].endswith("[86400s:360s]) * 360")


def test_allocation_counts_containers_of_running_and_pending_pods_only() -> None:
    queries = allocation_queries(GpuFilters(node=("n1",), namespace=("ml",)))
    running = queries[("ksm", "running")]
    assert "kube_pod_container_resource_requests{" in running
    assert "init_container" not in running
    assert 'resource=~"nvidia_com_gpu|nvidia_com_gpu_shared|nvidia_com_mig_.+"' in running
    assert 'node="n1"' in running and 'namespace="ml"' in running
    assert 'kube_pod_status_phase{phase="Running"}' in running
    assert 'phase="Pending"' in queries[("ksm", "pending")]
    assert 'namespace="ml"' not in queries[("ksm", "allocatable")]


# ---------------------------------------------------------------------------- idle join

def _rows(*utilizations: float | None) -> dict[tuple[str, str, str], Gpu]:
    return {("n1", f"GPU-{i}", ""): Gpu("n1", 0, uuid=f"GPU-{i}", utilization=u)
            for i, u in enumerate(utilizations)}


def test_idle_seconds_from_both_rounds() -> None:
    join = IdleJoin(DCGM, RULE)
    rows = _rows(40.0, 0.0, 0.0, None, 2.0)
    join.add(("idle", "max", "0"), result((gpu("GPU-0"), 90), (gpu("GPU-1"), 3),
                                          (gpu("GPU-2"), 60), (gpu("GPU-4"), 4.9)))
    followups = join.followups(rows, GpuFilters())
    # Only GPU-2 is below now and was busy within the window.
    assert 'UUID="GPU-2"' in followups[("idle", "last_busy", "0")]
    join.add(("idle", "last_busy", "0"), result((gpu("GPU-2"), 1000 - 437.5)))
    join.finish(rows)
    seconds = [row.idle_seconds for row in rows.values()]
    assert seconds == [0.0, 1800.0, 437.5, None, 1800.0]


def test_states() -> None:
    held = Gpu("n1", 0, utilization=0, idle_seconds=1800.0, pods=[PodShare("p")])
    assert judge_state(held, RULE, attributes_pods=True) == "allocated-idle"
    held.idle_seconds = 1799.0
    assert judge_state(held, RULE, attributes_pods=True) == "allocated-busy"
    free = Gpu("n1", 1, utilization=0, idle_seconds=1800.0)
    assert judge_state(free, RULE, attributes_pods=True) == "free"
    free.idle_seconds = 0.0
    assert judge_state(free, RULE, attributes_pods=True) == "unallocated-busy"
    assert judge_state(free, RULE, attributes_pods=False) == "unknown"
    free.idle_seconds = None
    assert judge_state(free, RULE, attributes_pods=True) == "unknown"


# ---------------------------------------------------------------------------- summaries

def _fleet(rows: list[Gpu], allocation: Allocation, **filters: Any) -> FleetData:
    return FleetData(rows, allocation, FleetQuery(GpuFilters(**filters), 3600.0, RULE))


def _row(node: str, uuid: str, state: str, *, pods: list[PodShare] | None = None,
         energy: float | None = 100.0, mig: int | None = None,
         power: float | None = 50.0) -> Gpu:
    return Gpu(node, 0, gpu_name="T4", uuid=uuid, power_usage=power, memory_used=10,
               state=state, pods=pods or [], mig_instance=mig,
               window=GpuWindow(utilization_avg=20.0, idle_seconds=60.0,
                                energy_joules=energy))


SHARED = [PodShare("a", "ml", utilization=30.0), PodShare("b", "web", utilization=10.0)]
COPIED = [PodShare("a", "ml"), PodShare("b", "web")]


def test_namespaces_split_a_shared_gpus_energy_by_share_else_evenly() -> None:
    rows = [_row("n1", "GPU-1", "allocated-busy", pods=SHARED),
            _row("n1", "GPU-2", "allocated-busy", pods=COPIED)]
    allocation = Allocation(True, {}, [Request("ml", "a", "n1", "nvidia_com_gpu", 1),
                                       Request("ml", "q", None, "nvidia_com_gpu", 2)],
                            [Request("ml", "q", None, "nvidia_com_gpu", 2)])
    by_name = {n["namespace"]: n for n in namespace_rows(_fleet(rows, allocation))}
    assert by_name["ml"]["energy_joules"] == 75.0 + 50.0
    assert by_name["web"]["energy_joules"] == 25.0 + 50.0
    assert by_name["ml"]["energy_split"] == "mixed"
    assert by_name["ml"]["pods"] == 2  # a, and q (pending)
    assert by_name["ml"]["pending_requests"] == 2
    assert by_name["web"]["gpus_requested"] == 0


def test_without_kube_state_metrics_allocation_is_null_and_sums_skip_missing_values() -> None:
    rows = [_row("n1", "GPU-1", "free", energy=None, power=None),
            _row("n1", "GPU-1", "allocated-idle", mig=1, pods=[PodShare("p", "ml")]),
            _row("n1", "GPU-1", "allocated-idle", mig=2, pods=[PodShare("p", "ml")])]
    summary = cluster_summary(_fleet(rows, Allocation()))
    allocation = summary["allocation"]
    assert isinstance(allocation, dict)
    assert (allocation["allocatable"], allocation["requested"],
            allocation["pending_requests"]) == (None, None, None)
    assert allocation["held"] == 2
    # One physical GPU; its power once; energy only from the rows that have it.
    assert summary["gpus"] == {"total": 1, "mig_instances": 2,
                               "by_state": {"allocated-busy": 0, "allocated-idle": 2,
                                            "free": 1, "unallocated-busy": 0,
                                            "unknown": 0},
                               "by_model": {"T4": 1}}
    assert summary["power_usage"] == 50.0
    assert summary["energy_joules"] == 200.0
    (node,) = node_rows(_fleet(rows, Allocation()))
    assert node["allocatable"] is None and node["idle"] == 3


def test_a_namespace_filter_leaves_allocatable_null() -> None:
    allocation = Allocation(True, {("n1", "nvidia_com_gpu"): 8}, [], [])
    summary = cluster_summary(_fleet([], allocation, namespace=("ml",)))
    assert summary["allocation"]["allocatable"] is None  # type: ignore[index]
    assert cluster_summary(_fleet([], allocation))["allocation"]["allocatable"] == 8  # type: ignore[index]
