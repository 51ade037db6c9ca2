"""Fleet labs: simulated clusters in the fleet scenario, backfilled into a real Prometheus
with kube-state-metrics (or without it), and their ground truth.

The truth is read off the simulator's model, step by step: which pods hold each GPU, its
utilization and power at every sample, its energy counter, what each pod requested and
each node offers. It follows the issue's definitions, written out here, never the
service's PromQL:

- idle_seconds at t: 0 when the GPU's utilization at t is at or above the threshold;
  else t minus the time of its latest sample at or above the threshold within the idle
  window; the window's length when there is none.
- state: allocated when the exporter names a pod holding it; idle when idle_seconds is the
  whole window; unknown for an exporter without pod labels.
- window figures at t over w: the samples an evaluation every 15 s in (t - w, t] sees
  (one each: samples are 15 s apart); average utilization; seconds below the threshold
  (15 s per sample); energy: the counter's increments between the samples seen at t - w
  and at t (a restart counts its new value), else the power samples times 15 s. A MIG
  instance carries an even share of its device's energy, a shared GPU's energy is split
  among its pods by their own utilization where the exporter writes it, else evenly.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from demo.cluster import ClusterSpec, SimGpu, pending_pods
from demo.dialects import allocation
from tests.integration.history_world import (
    EXPORTER_POD,
    HONORED_EXPORTER_POD,
    Exporter,
    HistoryCluster,
    HistoryWorld,
    Target,
    backfilled_world,
)

SPACING_S = 15
DURATION_S = 2 * 3600
KSM = "kube-state-metrics"
IDLE_THRESHOLD = 5.0
IDLE_WINDOW_S = 1800
# What dcgm-exporter writes for a shared GPU, per dialect: per-process shares or copies.
OWN_SHARES = {"dcgm-hostname"}
WITH_PODS = {"dcgm", "dcgm-hostname", "dcgm-single-pod"}

Key = tuple[str, int, int | None]  # node, GPU index, MIG instance


def _clusters(with_ksm: bool) -> tuple[HistoryCluster, ...]:
    ksm = (Exporter(KSM),) if with_ksm else ()
    return (
        # The GPU Operator's default: honorLabels false, shared GPUs copied per pod, MIG.
        HistoryCluster("copy", ClusterSpec(nodes=4, gpus_per_node=4, seed=61, mig_nodes=1,
                                           shared_gpus=1, node_prefix="fc-", fleet=True),
                       (Exporter("dcgm", honor_labels=False, target_labels=EXPORTER_POD),
                        *ksm)),
        # dcgm-exporter 4.8: each pod's own share of a shared GPU, honorLabels true.
        HistoryCluster("shares", ClusterSpec(nodes=3, gpus_per_node=3, seed=62,
                                             shared_gpus=2, node_prefix="fh-", fleet=True),
                       (Exporter("dcgm-hostname", target_labels=HONORED_EXPORTER_POD),
                        *ksm)),
        # nvidia_gpu_exporter: no pods (states unknown), no energy counter (power).
        HistoryCluster("smi", ClusterSpec(nodes=1, gpus_per_node=2, seed=63,
                                          node_prefix="fs-", fleet=True),
                       (Exporter("nvidia-smi"),)),
    )


@contextmanager
def fleet_world(with_ksm: bool = True) -> Iterator[HistoryWorld]:
    """Two hours of the fleet clusters at 15 s, in a running Prometheus."""
    with backfilled_world(_clusters(with_ksm), duration_s=DURATION_S,
                          spacing_s=SPACING_S) as world:
        yield world


# -------------------------------------------------------------------------------- truth

@dataclasses.dataclass
class TrueGpu:
    """One GPU row as the truth sees it at t."""

    cluster: str
    dialect: str
    gpu: SimGpu
    idle_seconds: float
    state: str
    utilization_avg: float
    window_idle_s: float
    energy_j: float


def _gpu_targets(world: HistoryWorld, t: float) -> list[tuple[Target, int, list[SimGpu]]]:
    return [seen for seen in world.truth_at(t) if seen[0].exporter.dialect != KSM]


def _rows_at(world: HistoryWorld, t: float) -> dict[tuple[str, Key], tuple[str, SimGpu]]:
    return {(target.cluster.name, (g.node, g.index, g.mig_instance)):
            (target.exporter.dialect, g)
            for target, _, rows in _gpu_targets(world, t) for g in rows}


@lru_cache(maxsize=4096)
def _cached_rows(world_id: int, t: float) -> dict[tuple[str, Key], tuple[str, SimGpu]]:
    return _rows_at(_WORLDS[world_id], t)


_WORLDS: dict[int, HistoryWorld] = {}


def _rows(world: HistoryWorld, t: float) -> dict[tuple[str, Key], tuple[str, SimGpu]]:
    _WORLDS[id(world)] = world
    return _cached_rows(id(world), t)


def _points(t: float, seconds: float) -> list[float]:
    """The 15 s evaluation instants in (t - seconds, t]."""
    count = int(seconds // SPACING_S)
    return [t - seconds + SPACING_S * (k + 1) for k in range(count)]


def _increments(values: Sequence[float]) -> float:
    total = 0.0
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total


def truth(world: HistoryWorld, t: float, window_s: float = 3600.0,
          threshold: float = IDLE_THRESHOLD, idle_window_s: float = IDLE_WINDOW_S
          ) -> list[TrueGpu]:
    """Every GPU row at t with its idle time, state and window figures."""
    now = _rows(world, t)
    # Each sample is seen by the evaluation 8 s after it: sample time = point - 8.
    idle_points = _points(t, idle_window_s)
    window_points = _points(t, window_s)
    result = []
    for (cluster, key), (dialect, gpu) in now.items():
        history = [_rows(world, p).get((cluster, key)) for p in idle_points]
        if gpu.utilization >= threshold:
            idle = 0.0
        else:
            busy = [p - 8 for p, seen in zip(idle_points, history, strict=True)
                    if seen is not None and seen[1].utilization >= threshold]
            idle = float(idle_window_s) if not busy else t - max(busy)
        if dialect not in WITH_PODS:
            state = "unknown"
        else:
            whole = idle >= idle_window_s
            state = ("allocated-idle" if whole else "allocated-busy") if gpu.pods else \
                ("free" if whole else "unallocated-busy")
        seen = [s[1] for p in window_points if (s := _rows(world, p).get((cluster, key)))]
        util = sum(g.utilization for g in seen) / len(seen)
        idle_s = SPACING_S * sum(1 for g in seen if g.utilization < threshold)
        if gpu.energy_mj is not None and dialect in WITH_PODS:
            start = _rows(world, t - window_s).get((cluster, key))
            counters = ([start[1].energy_mj] if start else []) + [g.energy_mj for g in seen]
            energy = _increments([c for c in counters if c is not None]) / 1000.0
        else:
            energy = sum(g.power_w for g in seen) * SPACING_S
        instances = sum(1 for (c, k) in now if c == cluster and k[:2] == key[:2])
        result.append(TrueGpu(cluster, dialect, gpu, idle, state, util, idle_s,
                              energy / instances))
    return result


def pods_of(row: TrueGpu) -> list[tuple[str, str, float | None]]:
    """(namespace, pod, own utilization share or None) as the exporter names them."""
    if row.dialect not in WITH_PODS:
        return []
    pods = row.gpu.pods[:1] if row.dialect == "dcgm-single-pod" else row.gpu.pods
    own = row.dialect in OWN_SHARES
    return [(p.namespace, p.pod, row.gpu.util_shares[i] if own else None)
            for i, p in enumerate(pods)]


def energy_parts(row: TrueGpu) -> dict[str, float]:
    """Each namespace's part of the row's energy (see the module doc)."""
    pods = pods_of(row)
    if not pods:
        return {}
    shares = [s for _, _, s in pods]
    total = sum(s for s in shares if s is not None)
    by_share = all(s is not None for s in shares) and total > 0
    parts: dict[str, float] = {}
    for namespace, _, share in pods:
        part = (share or 0.0) / total if by_share else 1 / len(pods)
        parts[namespace] = parts.get(namespace, 0.0) + part * row.energy_j
    return parts


def ksm_truth(world: HistoryWorld, t: float) -> dict[str, Any]:
    """Allocatable and requested GPU resource units, and pending requests, at t."""
    allocatable = requested = pending = 0
    per_namespace: dict[str, dict[str, Any]] = {}
    per_node: dict[str, dict[str, int]] = {}
    for target, _, rows in world.truth_at(t):
        if target.exporter.dialect != KSM:
            continue
        spec = target.cluster.spec
        offered, asked = allocation(rows, spec)
        allocatable += sum(offered.values())
        requested += sum(asked.values())
        for (node, _), units in offered.items():
            per_node.setdefault(node, {"allocatable": 0, "requested": 0})
            per_node[node]["allocatable"] += units
        for (namespace, pod, node, _), units in asked.items():
            per_node.setdefault(node, {"allocatable": 0, "requested": 0})
            per_node[node]["requested"] += units
            book = per_namespace.setdefault(namespace, {"requested": 0, "pending": 0,
                                                        "pods": set()})
            book["requested"] += units
            book["pods"].add(pod)
        for pod, units in pending_pods(spec):
            pending += units
            book = per_namespace.setdefault(pod.namespace, {"requested": 0, "pending": 0,
                                                            "pods": set()})
            book["pending"] += units
            book["pods"].add(pod.pod)
    return {"allocatable": allocatable, "requested": requested, "pending": pending,
            "namespaces": per_namespace, "nodes": per_node}
