"""Hours of GPU history in a real Prometheus, backfilled from the simulator, with its truth.

The simulator is deterministic (`demo.cluster.snapshot(spec, step)`), so the past can be
written instead of waited for: every sample time gets one step of every cluster, rendered
in each exporter's text (`demo.dialects.render`), labelled as a scrape would label it
(target labels; under honorLabels false conflicting labels become `exported_*`), with an
`up` series per target, written as OpenMetrics with timestamps, turned into TSDB blocks by
`promtool tsdb create-blocks-from openmetrics`, and served by a Prometheus started on them.

Outages leave holes: no samples for that target (and `up` 0). `truth_at(t)` mirrors what an
instant query at `t` sees: for each target, its latest sample at most 5 minutes old
(Prometheus' lookback; a backfill has no staleness markers, so a vanished target lingers
for those 5 minutes). Sample times sit 7 s past a multiple of 15 s so that no evaluation
instant a test uses (multiples of 15 s) is ever on the edge of that window.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from demo.cluster import ClusterSpec, SimGpu, node_names, snapshot
from demo.dialects import PER_NODE_DIALECTS, render, smi_uuid
from demo.prometheus import PrometheusServer

Row = dict[str, Any]

LOOKBACK_S = 300  # Prometheus' default --query.lookback-delta
SAMPLE_OFFSET_S = 7  # sample times are k * spacing + 7 (spacing a multiple of 15)
PROMTOOL = "promtool"
HONOR_JOB, NO_HONOR_JOB = "gpu-exporter", "gpu-exporter-no-honor"
# Fields a history series carries by default (the list).
HISTORY_FIELDS = ("utilization", "memory_used", "memory_utilization", "temperature",
                  "power_usage")
PERCENT_FIELDS = frozenset({"utilization", "memory_utilization"})
# What dcgm-exporter writes for a GPU that several pods share (see demo/dialects.py).
SHARING = {"dcgm": "copy", "dcgm-hostname": "per-process"}
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class HistoryWorldError(RuntimeError):
    """The backfill or its Prometheus did not come out as intended."""


@dataclasses.dataclass(frozen=True)
class Outage:
    """An exporter (or, for per-node targets, one node's target) down: no samples.

    Offsets are seconds after the world's first sample time; `end_s` is excluded.
    """

    start_s: int
    end_s: int
    node: str | None = None


@dataclasses.dataclass(frozen=True)
class Exporter:
    """One exporter deployment on a cluster's GPUs and how Prometheus scrapes it."""

    dialect: str  # the simulator's name for what it renders
    honor_labels: bool = True
    target_labels: tuple[tuple[str, str], ...] = ()
    outages: tuple[Outage, ...] = ()


@dataclasses.dataclass(frozen=True)
class HistoryCluster:
    """Simulated GPUs and the exporters that read them, in the API's order of preference
    (dcgm before nvitop): a GPU both report is the first one's row."""

    name: str
    spec: ClusterSpec
    exporters: tuple[Exporter, ...]


@dataclasses.dataclass(frozen=True)
class Target:
    """One scrape target: an exporter, the node it covers (None: all) and its labels."""

    cluster: HistoryCluster
    exporter: Exporter
    node: str | None
    labels: tuple[tuple[str, str], ...]  # instance, job and the discovery labels

    def up_at(self, offset_s: float) -> bool:
        """Tell whether the target answered a scrape `offset_s` after the first sample."""
        return not any(o.start_s <= offset_s < o.end_s and o.node in (None, self.node)
                       for o in self.exporter.outages)


EXPORTER_POD = (("pod", "nvidia-dcgm-exporter-7x9k2"), ("namespace", "gpu-operator"),
                ("container", "nvidia-dcgm-exporter"))
HONORED_EXPORTER_POD = (("pod", "nvidia-dcgm-exporter-h4h4q"), ("namespace", "gpu-operator"))

# Minutes are offsets into the 3 hours. Seeds are chosen so that the time-shared GPUs are
# held both by pods of one namespace and by pods of several.
HISTORY_CLUSTERS: tuple[HistoryCluster, ...] = (
    # GPU Operator default: honorLabels false (exported_*), shared GPUs copied per pod;
    # a 20-minute outage: 5 minutes of lingering samples, then nothing.
    HistoryCluster("copy", ClusterSpec(nodes=3, gpus_per_node=4, seed=40, mig_nodes=1,
                                       shared_gpus=2, node_prefix="hc-"),
                   (Exporter("dcgm", honor_labels=False, target_labels=EXPORTER_POD,
                             outages=(Outage(60 * 60, 80 * 60),)),)),
    # dcgm-exporter 4.8 with per-pod shares, honorLabels true (idle GPUs carry the
    # exporter's pod); a 3-minute outage, shorter than the lookback: no hole at all.
    HistoryCluster("shares", ClusterSpec(nodes=3, gpus_per_node=3, seed=45, mig_nodes=1,
                                         shared_gpus=2, node_prefix="hh-"),
                   (Exporter("dcgm-hostname", target_labels=HONORED_EXPORTER_POD,
                             outages=(Outage(100 * 60, 103 * 60),)),)),
    # One target per node; the second node's target is down for 15 minutes.
    HistoryCluster("smi", ClusterSpec(nodes=2, gpus_per_node=2, seed=43, mig_nodes=1,
                                      node_prefix="hs-"),
                   (Exporter("nvidia-smi", outages=(Outage(30 * 60, 45 * 60, "hs-002"),)),)),
    HistoryCluster("nvitop", ClusterSpec(nodes=2, gpus_per_node=2, seed=44, mig_nodes=1,
                                         node_prefix="hn-"),
                   (Exporter("nvitop", outages=(Outage(120 * 60, 140 * 60),)),)),
    # dcgm-exporter and nvitop-exporter on the same GPUs: each GPU counted once.
    HistoryCluster("both", ClusterSpec(nodes=2, gpus_per_node=3, seed=47, shared_gpus=1,
                                       node_prefix="hb-"),
                   (Exporter("dcgm", honor_labels=False,
                             target_labels=(("pod", "dcgm-exporter-q1"),
                                            ("namespace", "gpu-operator"))),
                    Exporter("nvitop"))),
)


def targets_of(clusters: Sequence[HistoryCluster]) -> list[Target]:
    """Scrape targets as service discovery would make them: one per node for exporters
    without a node label (with the node relabeled into `kubernetes_node`), else one."""
    targets = []
    for c, cluster in enumerate(clusters):
        for e, exporter in enumerate(cluster.exporters):
            job = HONOR_JOB if exporter.honor_labels else NO_HONOR_JOB
            base = (("job", job), *exporter.target_labels)
            if exporter.dialect in PER_NODE_DIALECTS:
                for node in node_names(cluster.spec):
                    labels = (("instance", f"{node}:9835"), *base, ("kubernetes_node", node))
                    targets.append(Target(cluster, exporter, node, labels))
            else:
                labels = (("instance", f"10.42.{c}.{e + 1}:9400"), *base)
                targets.append(Target(cluster, exporter, None, labels))
    return targets


@lru_cache(maxsize=512)
def _snapshot(spec: ClusterSpec, step: int) -> tuple[SimGpu, ...]:
    return tuple(snapshot(spec, step))


def rows_of(target: Target, step: int) -> list[SimGpu]:
    """The simulator rows a target publishes at `step`."""
    rows = _snapshot(target.cluster.spec, step)
    return [r for r in rows if target.node is None or r.node == target.node]


# ---------------------------------------------------------------------------- the backfill

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def scraped_series(series: str, target_labels: Sequence[tuple[str, str]],
                   honor_labels: bool) -> str:
    """Relabel one exposition series (`name{a="b",...}`) as a scrape of the target would.

    honorLabels false: a label the target also sets is kept as `exported_<name>`, the
    target's value wins. honorLabels true: the exposition's labels win, the target's fill
    in. Empty values are dropped, as Prometheus drops them.
    """
    brace = series.find("{")
    name = series if brace == -1 else series[:brace]
    pairs = [] if brace == -1 else _LABEL.findall(series[brace + 1:-1])
    labels = {key: value for key, value in pairs if value != ""}
    for key, raw in target_labels:
        value = _escape(raw)
        if honor_labels:
            labels.setdefault(key, value)
            continue
        if key in labels:
            labels[f"exported_{key}"] = labels.pop(key)
        labels[key] = value
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


@dataclasses.dataclass
class BackfillStats:
    """What writing the history cost."""

    samples: int = 0
    lines_per_sample_time: int = 0
    openmetrics_bytes: int = 0
    render_s: float = 0.0
    promtool_s: float = 0.0
    blocks: int = 0


class Timeline:
    """The sample times: `count` of them, `spacing_s` apart, the last at or before `end`."""

    def __init__(self, duration_s: int, spacing_s: int, end: float | None = None) -> None:
        if spacing_s % 15 or duration_s % spacing_s:
            raise ValueError("spacing must be a multiple of 15 s dividing the duration")
        end = time.time() if end is None else end
        self.spacing_s = spacing_s
        self.last = math.floor((end - SAMPLE_OFFSET_S) / spacing_s) * spacing_s \
            + SAMPLE_OFFSET_S
        self.count = duration_s // spacing_s + 1
        self.first = self.last - (self.count - 1) * spacing_s

    def times(self) -> Iterator[tuple[int, int]]:
        """Every (step, unix time) in order."""
        for step in range(self.count):
            yield step, self.first + step * self.spacing_s

    def step_at(self, t: float, target: Target) -> int | None:
        """The step whose sample an instant query at `t` reads for `target`, if any."""
        step = min(math.floor((t - self.first) / self.spacing_s), self.count - 1)
        while step >= 0:
            sample = self.first + step * self.spacing_s
            if sample < t - LOOKBACK_S:
                return None
            if target.up_at(sample - self.first):
                return step
            step -= 1
        return None


def write_openmetrics(out: IO[str], targets: Sequence[Target], timeline: Timeline,
                      stats: BackfillStats) -> None:
    """Write every target's samples and `up`, time by time (each series in time order)."""
    relabeled: dict[tuple[int, str], str] = {}
    for step, at in timeline.times():
        lines = 0
        chunks: list[str] = []
        # Each cluster's rows once per step (not cached beyond it: 8,000 GPUs are big).
        steps: dict[ClusterSpec, list[SimGpu]] = {}
        for number, target in enumerate(targets):
            up = target.up_at(at - timeline.first)
            up_series = scraped_series("up", target.labels, honor_labels=False)
            chunks.append(f"{up_series} {1 if up else 0} {at}\n")
            lines += 1
            if not up:
                continue
            spec = target.cluster.spec
            rows = steps.get(spec)
            if rows is None:
                rows = steps[spec] = snapshot(spec, step)
            text = render(rows, target.exporter.dialect, target.node, spec=spec)
            for line in text.splitlines():
                if not line or line[0] == "#":
                    continue
                cut = line.rindex(" ")
                key = (number, line[:cut])
                series = relabeled.get(key)
                if series is None:
                    series = relabeled[key] = scraped_series(
                        line[:cut], target.labels, target.exporter.honor_labels)
                chunks.append(f"{series} {line[cut + 1:]} {at}\n")
                lines += 1
        out.write("".join(chunks))
        stats.samples += lines
        stats.lines_per_sample_time = max(stats.lines_per_sample_time, lines)
    out.write("# EOF\n")


def backfill(targets: Sequence[Target], timeline: Timeline, data_dir: Path) -> BackfillStats:
    """Write the OpenMetrics file next to `data_dir`, make TSDB blocks of it, delete it."""
    stats = BackfillStats()
    source = data_dir.parent / "history.om"
    started = time.monotonic()
    with source.open("w", encoding="utf-8", buffering=1 << 20) as out:
        write_openmetrics(out, targets, timeline, stats)
    stats.render_s = round(time.monotonic() - started, 2)
    stats.openmetrics_bytes = source.stat().st_size
    promtool = shutil.which(PROMTOOL) or "/usr/bin/promtool"
    started = time.monotonic()
    result = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        capture_output=True, text=True, timeout=1800, check=False)
    stats.promtool_s = round(time.monotonic() - started, 2)
    source.unlink()
    if result.returncode != 0:
        raise HistoryWorldError(f"promtool exited {result.returncode}: "
                                f"{(result.stderr or result.stdout)[-2000:]}")
    stats.blocks = sum(1 for p in data_dir.iterdir() if (p / "meta.json").exists())
    return stats


class BackfilledPrometheus(PrometheusServer):
    """A real Prometheus on a free loopback port serving an existing TSDB directory.

    It keeps every block (a one-hour retention would delete the older ones at start-up),
    scrapes nothing and, for benchmarks asking hours of 8,000 GPUs, lets a query run for
    longer than the default 2 minutes.
    """

    def __init__(self, workdir: Path, ready_timeout: float = 60.0,
                 query_log: bool = False) -> None:
        super().__init__([], workdir=workdir, ready_timeout=ready_timeout,
                         retention="3650d", query_log=query_log,
                         extra_args=["--query.timeout=10m"])

    def query_at(self, promql: str, at: float) -> list[dict[str, Any]]:
        """An instant query at unix time `at`; the result list."""
        response = self.session.get(f"{self.url}/api/v1/query",
                                    params={"query": promql, "time": str(at)}, timeout=60)
        body = response.json()
        if body.get("status") != "success":
            raise HistoryWorldError(f"{promql!r} at {at}: {body}")
        return list(body["data"]["result"])

    def query_range(self, promql: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        """A range query; the result list."""
        response = self.session.get(
            f"{self.url}/api/v1/query_range",
            params={"query": promql, "start": str(start), "end": str(end), "step": str(step)},
            timeout=120)
        body = response.json()
        if body.get("status") != "success":
            raise HistoryWorldError(f"{promql!r} over {start}..{end}: {body}")
        return list(body["data"]["result"])


# -------------------------------------------------------------------------------- the truth

def _pods(gpu: SimGpu, dialect: str) -> list[Row]:
    """The workload pods of a row, sorted by namespace and pod, as the API lists them."""
    shares = SHARING.get(dialect) == "per-process"
    mig = gpu.mig_instance is not None
    pods = [{"pod": p.pod, "namespace": p.namespace, "container": p.container,
             # 4.8's per-pod series hold each pod's own share (no GPU_UTIL on MIG).
             "utilization": gpu.util_shares[i] if shares and not mig else None,
             "memory_used": gpu.memory_shares[i] if shares else None}
            for i, p in enumerate(gpu.pods)]
    return sorted(pods, key=lambda p: (p["namespace"], p["pod"], p["container"]))


def _row(gpu: SimGpu, **values: Any) -> Row:
    used, total = gpu.memory_used_bytes, gpu.memory_total_bytes
    row: Row = {
        "node_name": gpu.node, "gpu_index": gpu.index, "uuid": gpu.uuid,
        "mig_instance": gpu.mig_instance, "gpu_name": gpu.name, "mig_profile": gpu.mig_profile,
        "utilization": gpu.utilization, "memory_used": used, "memory_total": total,
        "memory_free": gpu.memory_free_bytes,
        "memory_utilization": used / total * 100, "temperature": gpu.temperature,
        "power_usage": gpu.power_w, "pods": [],
    }
    row.update(values)
    return row


def canonical_rows(dialect: str, rows: Iterable[SimGpu]) -> list[Row]:
    """What a correct reading of one exporter's series gives, in the API's units.

Percentages are exact here; the API rounds them to 3 decimals (compare with that in mind).

    dcgm: a row per MIG instance (utilization from the engine activity), a time-shared
    GPU once with the device's values; nvitop: a row per MIG instance numbered 0.. per
    GPU, no utilization on MIG; nvidia-smi: a device per GPU (MIG memory summed, no
    utilization), its UUID re-prefixed.
    """
    if dialect in SHARING:
        return [_row(gpu, pods=_pods(gpu, dialect)) for gpu in rows]
    if dialect == "nvitop":
        result: list[Row] = []
        ordinals: dict[tuple[str, int], int] = {}
        for gpu in rows:
            if gpu.mig_instance is None:
                result.append(_row(gpu))
                continue
            ordinal = ordinals[gpu.node, gpu.index] = ordinals.get((gpu.node, gpu.index), -1) + 1
            result.append(_row(gpu, utilization=None, mig_instance=ordinal))
        return result
    if dialect == "nvidia-smi":
        devices: dict[tuple[str, int], list[SimGpu]] = {}
        for gpu in rows:
            devices.setdefault((gpu.node, gpu.index), []).append(gpu)
        result = []
        for parts in devices.values():
            first = parts[0]
            used = sum(p.memory_used_bytes for p in parts)
            total = sum(p.memory_total_bytes for p in parts)
            mig = first.mig_instance is not None
            result.append(_row(first, uuid="GPU-" + smi_uuid(first.uuid), mig_instance=None,
                               mig_profile=None, utilization=None if mig else first.utilization,
                               memory_used=used, memory_total=total,
                               memory_free=sum(p.memory_free_bytes for p in parts),
                               memory_utilization=used / total * 100))
        return result
    raise ValueError(f"no canonical reading for {dialect!r}")


def gpu_key(row: Row) -> tuple[Any, ...]:
    """A GPU's identity in history series keys: node, index, uuid, MIG instance, model."""
    return (row["node_name"], row["gpu_index"], row["uuid"], row["mig_instance"],
            row["gpu_name"])


class HistoryWorld:
    """The backfilled clusters, their Prometheus, and the truth at any instant."""

    def __init__(self, clusters: Sequence[HistoryCluster], timeline: Timeline,
                 prometheus: BackfilledPrometheus, stats: BackfillStats,
                 build_s: float) -> None:
        self.clusters = tuple(clusters)
        self.targets = targets_of(clusters)
        self.timeline = timeline
        self.prometheus = prometheus
        self.stats = stats
        self.build_s = build_s
        self._expected: dict[float, list[Row]] = {}

    @property
    def url(self) -> str:
        """Prometheus' base URL."""
        return self.prometheus.url

    def at(self, minutes: float) -> int:
        """The instant `minutes` after the first sample, on the 15 s grid."""
        return (self.timeline.first + int(minutes * 60)) // 15 * 15

    def truth_at(self, t: float) -> list[tuple[Target, int, list[SimGpu]]]:
        """For each target an instant query at `t` sees: (target, step, its rows)."""
        seen = []
        for target in self.targets:
            step = self.timeline.step_at(t, target)
            if step is not None:
                seen.append((target, step, rows_of(target, step)))
        return seen

    def expected_rows(self, t: float) -> list[Row]:
        """Every GPU row `/api/v1/gpu/metrics?time=t` must return, in the API's order.

        Within a cluster a GPU that an earlier exporter reported (same UUID, or same node
        and index) is not repeated; rows of one exporter never hide each other.
        """
        if t not in self._expected:
            self._expected[t] = self._expected_rows(t)
        return self._expected[t]

    def _expected_rows(self, t: float) -> list[Row]:
        by_cluster: dict[str, list[tuple[Target, list[SimGpu]]]] = {}
        for target, _, rows in self.truth_at(t):
            by_cluster.setdefault(target.cluster.name, []).append((target, rows))
        result: list[Row] = []
        for cluster in self.clusters:
            seen: set[tuple[Any, ...]] = set()
            for exporter in cluster.exporters:
                added: set[tuple[Any, ...]] = set()
                for target, rows in by_cluster.get(cluster.name, []):
                    if target.exporter != exporter:
                        continue
                    for row in canonical_rows(exporter.dialect, rows):
                        keys = {("uuid", row["uuid"].lower()),
                                ("index", row["node_name"], row["gpu_index"])}
                        if keys & seen:
                            continue
                        added |= keys
                        result.append(row)
                seen |= added
        return sorted(result, key=lambda r: (r["node_name"], r["gpu_index"],
                                             -1 if r["mig_instance"] is None
                                             else r["mig_instance"], r["uuid"]))

    def verify(self) -> None:
        """Check a few stored points against the truth, straight from Prometheus."""
        targets = len(self.targets)
        span = (self.timeline.last - self.timeline.first) / 60
        for minutes in (0.5, span / 2, span - 0.5):
            t = self.at(minutes)
            up = self.prometheus.query_at("count(up)", t)
            if not up or int(float(up[0]["value"][1])) != targets:
                raise HistoryWorldError(f"count(up) at {t}: {up}, expected {targets}")
            for target, _, rows in self.truth_at(t):
                if target.exporter.dialect not in SHARING or not rows:
                    continue
                host = "Hostname" if target.exporter.dialect == "dcgm" else "hostname"
                gpu = rows[0]
                got = self.prometheus.query_at(
                    f'max(DCGM_FI_DEV_POWER_USAGE{{{host}="{gpu.node}",UUID="{gpu.uuid}"}})', t)
                if not got or float(got[0]["value"][1]) != gpu.power_w:
                    raise HistoryWorldError(f"power of {gpu.uuid} at {t}: {got}, "
                                            f"expected {gpu.power_w}")


def build_world(clusters: Sequence[HistoryCluster], workdir: Path, duration_s: int,
                spacing_s: int, query_log: bool = False,
                ) -> tuple[Timeline, BackfillStats, BackfilledPrometheus]:
    """Backfill `duration_s` of history ending now into workdir/data; start Prometheus."""
    timeline = Timeline(duration_s, spacing_s)
    data = workdir / "data"
    data.mkdir(parents=True)
    stats = backfill(targets_of(clusters), timeline, data)
    return timeline, stats, BackfilledPrometheus(workdir, query_log=query_log).start()


@contextmanager
def backfilled_world(clusters: Sequence[HistoryCluster] = HISTORY_CLUSTERS,
                     duration_s: int = 3 * 3600,
                     spacing_s: int = 30) -> Iterator[HistoryWorld]:
    """Three hours (by default) of the clusters' history in a running Prometheus."""
    workdir = Path(tempfile.mkdtemp(prefix="history-world-"))
    prometheus: BackfilledPrometheus | None = None
    try:
        started = time.monotonic()
        timeline, stats, prometheus = build_world(clusters, workdir, duration_s, spacing_s)
        world = HistoryWorld(clusters, timeline, prometheus, stats,
                             round(time.monotonic() - started, 2))
        world.verify()
        yield world
    finally:
        if prometheus is not None:
            prometheus.stop()
        shutil.rmtree(workdir, ignore_errors=True)
