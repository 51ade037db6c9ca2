"""Say what this Prometheus can tell: dialects found, fields available, and why not."""

from __future__ import annotations

from dataclasses import dataclass

from app.dialects.detect import Detection
from app.dialects.model import DERIVED_ONLY_FIELDS, Dialect
from app.health.rules import DEFAULT_CSV_METRICS, RULES, XID_COUNT, XID_GAUGE

ALWAYS_GPU_FIELDS = ("node_name", "timestamp", "health")
# Each health signal and the dcgm-exporter counters that carry it (alternatives).
HEALTH_SIGNALS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("xid", (XID_GAUGE,)), ("xid_count", (XID_COUNT,)),
    *((rule.code, rule.metrics) for rule in RULES),
)


@dataclass(frozen=True)
class DialectReport:
    """One dialect in use, as fitted to the data."""

    name: str
    description: str
    gpu_series: int
    node_label: str
    pod_labels: tuple[str, ...]
    mig: bool
    processes: bool


@dataclass(frozen=True)
class HealthSignal:
    """One health signal: whether it was found, and which counters give it."""

    name: str
    found: bool
    metrics: tuple[str, ...]
    default_counters: bool


@dataclass(frozen=True)
class Capabilities:
    """What the GPU endpoints can fill in, so a frontend can hide empty columns."""

    mode: str
    checked_at: float
    dialects: tuple[DialectReport, ...]
    gpu_fields: tuple[str, ...]
    process_fields: tuple[str, ...]
    pod_attribution: bool
    mig: bool
    processes: bool
    notes: tuple[str, ...]
    health_signals: tuple[HealthSignal, ...] = ()
    fleet: FleetCapabilities | None = None


@dataclass(frozen=True)
class DialectFleet:
    """How the fleet view reads one dialect: states from pod labels or unknown, energy."""

    dialect: str
    states: str  # "pod labels" or "unknown"
    energy: str  # the counter's name, or "power integral", or "none"


@dataclass(frozen=True)
class FleetCapabilities:
    """What the fleet view (states, /api/v1/cluster, /nodes, /namespaces) can tell."""

    idle_utilization_percent: float
    idle_window: str
    kube_state_metrics: bool
    dialects: tuple[DialectFleet, ...]
    notes: tuple[str, ...]


def gpu_fields_of(dialect: Dialect) -> set[str]:
    """Fields this dialect fills, including those derived from others."""
    labels = dialect.labels
    found = set(ALWAYS_GPU_FIELDS) | (set(dialect.gpu_fields) - DERIVED_ONLY_FIELDS)
    if labels.index:
        found.add("gpu_index")
    if labels.name:
        found.add("gpu_name")
    if labels.uuid:
        found.add("uuid")
    if labels.mig_instance:
        found.update(("mig_instance", "mig_profile") if labels.mig_profile else
                     ("mig_instance",))
    for attribute in ("pod", "namespace", "container"):
        if getattr(labels, attribute):
            found.add(attribute)
    memory = found & {"memory_used", "memory_total", "memory_free"}
    if {"memory_used", "memory_free"} <= memory:
        found.add("memory_total")
    if {"memory_used", "memory_total"} <= found:
        found.update(("memory_free", "memory_utilization"))
    return found


def process_fields_of(dialect: Dialect) -> set[str]:
    """Process fields this dialect fills."""
    if not dialect.process_fields:
        return set()
    labels = dialect.process_labels
    found = {"node_name", "gpu_index", "pid", "timestamp", *dialect.process_fields}
    for attribute in ("process_name", "user", "command"):
        if getattr(labels, attribute):
            found.add(attribute)
    if dialect.labels.uuid:
        found.add("gpu_uuid")
    if dialect.labels.pod:
        found.update(("pod", "namespace"))
    return found


def describe_capabilities(detection: Detection, gpu_order: tuple[str, ...],
                          process_order: tuple[str, ...]) -> Capabilities:
    """Summarize a detection; field lists follow the output schemas' order."""
    gpu: set[str] = set()
    process: set[str] = set()
    reports = []
    for dialect in detection.dialects:
        gpu |= gpu_fields_of(dialect)
        process |= process_fields_of(dialect)
        reports.append(DialectReport(
            name=dialect.name,
            description=dialect.description,
            gpu_series=detection.series_counts.get(dialect.pod_metric(), 0),
            node_label=dialect.labels.node[0],
            pod_labels=dialect.labels.pods(),
            mig=bool(dialect.labels.mig_instance),
            processes=bool(dialect.process_fields),
        ))
    signals, health_notes = health_signals(detection)
    return Capabilities(
        mode="forced" if detection.forced else "auto",
        checked_at=detection.checked_at,
        dialects=tuple(reports),
        gpu_fields=tuple(f for f in gpu_order if f in gpu),
        process_fields=tuple(f for f in process_order if f in process),
        pod_attribution="pod" in gpu,
        mig="mig_instance" in gpu,
        processes=any(r.processes for r in reports),
        notes=detection.notes + health_notes,
        health_signals=signals,
    )


def health_signals(detection: Detection) -> tuple[tuple[HealthSignal, ...], tuple[str, ...]]:
    """Which health signals the exporters in use publish, and how to turn on the others.

    dcgm-exporter publishes only the counters in its CSV; most health counters are off in
    the default one (etc/default-counters.csv), so each missing signal names the counter
    to add there.
    """
    found = {m for dialect in detection.dialects for m in dialect.health_metrics}
    signals = tuple(
        HealthSignal(name, found=bool(found.intersection(metrics)), metrics=metrics,
                     default_counters=bool(DEFAULT_CSV_METRICS.intersection(metrics)))
        for name, metrics in HEALTH_SIGNALS)
    can_publish = any(d.name.startswith("dcgm") and d.name != "dcgm-old"
                      for d in detection.dialects)
    if not detection.dialects:
        return signals, ()
    if not can_publish:
        return signals, ("health: no exporter in use publishes health signals; run "
                         "dcgm-exporter for XID, ECC, row remapping and throttling",)
    notes = tuple(
        f"health: {s.name} is not checked; add {' or '.join(s.metrics)} to dcgm-exporter's "
        f"counters CSV" + ("" if s.default_counters else " (off in its default CSV)")
        for s in signals if not s.found)
    return signals, notes


KSM_INSTALL = ("kube-state-metrics not found: allocation figures (allocatable, requested, "
               "pending_requests) are null; install it (kube-prometheus-stack does) and let "
               "Prometheus scrape it")


def fleet_capabilities(detection: Detection, kube_state_metrics: bool,
                       idle_percent: float, idle_window: str) -> FleetCapabilities:
    """How states and energy are found for each dialect in use, and what is missing."""
    reports, notes = [], []
    for dialect in detection.dialects:
        states = "pod labels" if dialect.labels.pod else "unknown"
        if not dialect.labels.pod:
            notes.append(f"fleet: {dialect.name} names no pods, so its GPUs' state is "
                         "unknown (whether a workload holds them); run dcgm-exporter with "
                         "its Kubernetes pod mapping beside it")
        if dialect.energy_source is not None:
            energy = dialect.energy_source.metric
        elif "power_usage" in dialect.gpu_fields:
            energy = "power integral"
        else:
            energy = "none"
        reports.append(DialectFleet(dialect.name, states, energy))
    if not kube_state_metrics:
        notes.append(KSM_INSTALL)
    return FleetCapabilities(idle_percent, idle_window, kube_state_metrics, tuple(reports),
                             tuple(notes))
