"""Find out which exporter dialects a Prometheus holds, and fit them to the labels it has."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from app.dialects.model import (
    EXPORTED_PREFIX,
    TARGET_ADDRESS_LABEL,
    Dialect,
    GpuLabels,
    Source,
)
from app.dialects.nodes import fit_node_names
from app.prometheus.client import PrometheusClient
from app.prometheus.promql import quote, regex_literal

logger = logging.getLogger(__name__)


# Metric and label names are read from Prometheus' index over this window, which keeps
# it to its newest block(s) instead of every block on disk.
DETECT_LOOKBACK_S = 600.0


@dataclass(frozen=True)
class Detection:
    """What was found: the dialects to read (fitted to the data) and notes for humans.

    `series_counts` holds the live series of each dialect's probe metric (its pod metric
    when that exists), not of every metric: counting everything is the scan detection
    avoids. `metrics` are the candidate metric names of the live dialects.
    """

    dialects: tuple[Dialect, ...]
    series_counts: dict[str, int]
    label_names: dict[str, frozenset[str]]
    notes: tuple[str, ...]
    checked_at: float
    forced: bool
    metrics: frozenset[str] = frozenset()
    elapsed_s: float | None = None


def count_series_query(metrics: Sequence[str]) -> str:
    """One query counting the live series of each of a few metric names."""
    pattern = "|".join(regex_literal(name) for name in sorted(set(metrics)))
    return f"count by (__name__) ({{__name__=~{quote(pattern)}}})"


def probe_metrics(dialect: Dialect, names: Collection[str]) -> tuple[str, ...]:
    """The metrics whose series stand for a dialect: one GPU metric, one process metric.

    The pod metric comes first: it has a series per GPU and MIG instance, with its pods.
    A process metric is probed too, because process series come and go with workloads.
    """
    gpu = next((m for m in (dialect.pod_metric(), *dialect.gpu_metric_names()) if m in names),
               None)
    process = next((m for m in dialect.process_metric_names() if m in names), None)
    return tuple(m for m in (gpu, process) if m is not None)


def _live_dialects(
    prom: PrometheusClient, candidates: Sequence[Dialect], every_name: frozenset[str],
    deadline: float,
) -> tuple[dict[str, int], dict[str, frozenset[str]]]:
    """Count each dialect's probe metrics' live series; return the counts, and for every
    dialect with live GPU series, its metrics that exist."""
    wanted = {m for d in candidates
              for m in d.gpu_metric_names() + d.process_metric_names() + d.health_metrics}
    names = wanted & every_name
    probes = {d.name: probe_metrics(d, names) for d in candidates}
    counts: dict[str, int] = {}
    to_count = sorted({m for found in probes.values() for m in found})
    if to_count:
        result = prom.query(count_series_query(to_count), deadline=deadline)
        for series in result.series:
            name = series["metric"].get("__name__")
            try:
                counts[name] = int(float(series["value"][1]))
            except (TypeError, ValueError, IndexError):
                continue
    live: dict[str, frozenset[str]] = {}
    for dialect in candidates:
        gpu_probe = probes[dialect.name][:1]
        if gpu_probe and counts.get(gpu_probe[0]):
            own = set(dialect.gpu_metric_names() + dialect.health_metrics)
            if any(counts.get(m) for m in probes[dialect.name][1:]):
                own.update(dialect.process_metric_names())  # their series are live too
            live[dialect.name] = frozenset(names & own)
    return counts, live


def detect(
    prom: PrometheusClient,
    candidates: Sequence[Dialect],
    *,
    forced: bool,
    node_label: str | None = None,
    deadline: float | None = None,
) -> Detection:
    """Ask Prometheus which candidate dialects have series, and which labels they carry.

    A few index lookups whatever the cluster size, all within one deadline: the metric
    names that exist, one `count` of the probe metrics' live series (a name lingers in
    the index for hours after its series stopped), and the label names of each live
    dialect's GPU metrics. Forced dialects are used even when no series exist yet; auto
    mode keeps those that do.
    """
    started = time.monotonic()
    if deadline is None:
        deadline = started + prom.settings.deadline
    every_name = frozenset(prom.label_values("__name__", lookback_s=DETECT_LOOKBACK_S,
                                             deadline=deadline))
    counts, live = _live_dialects(prom, candidates, every_name, deadline)
    present = frozenset().union(*live.values())
    chosen: list[Dialect] = []
    label_names: dict[str, frozenset[str]] = {}
    notes: list[str] = []
    for dialect in candidates:
        if dialect.name not in live and not forced:
            continue
        labels: frozenset[str] = frozenset()
        if dialect.name in live:
            # Every GPU metric it has, not one: some label only some families carry
            # (dcgm 2.x writes a MIG instance's GPU_I_ID only on its PROF_* series).
            # Still one index lookup, of label names only.
            gpu_metrics = sorted(live[dialect.name] & set(dialect.gpu_metric_names()))
            labels = frozenset(prom.label_names(gpu_metrics, lookback_s=DETECT_LOOKBACK_S,
                                                deadline=deadline))
        label_names[dialect.name] = labels
        fitted, fit_notes = fit(dialect, labels, present, node_label=node_label)
        if dialect.name in live:
            fitted, node_notes = fit_node_names(prom, fitted, labels, every_name,
                                                node_label=node_label, deadline=deadline)
            fit_notes += node_notes
        else:
            fit_notes.append(f"{dialect.name}: no series of its metrics in Prometheus yet")
        chosen.append(fitted)
        notes.extend(fit_notes)
    if not chosen:
        notes.append(
            "no known GPU exporter metrics found; looked for "
            + ", ".join(d.name for d in candidates)
            + " (set METRICS_DIALECT, or describe your exporter in METRICS_MAPPING_FILE)"
        )
    return Detection(
        dialects=tuple(chosen),
        series_counts=counts,
        label_names=label_names,
        notes=tuple(notes),
        checked_at=time.time(),
        forced=forced,
        metrics=present,
        elapsed_s=time.monotonic() - started,
    )


def _present(candidates: tuple[str, ...], labels: frozenset[str]) -> tuple[str, ...]:
    return tuple(name for name in candidates if name in labels)


def _keep_present_sources(
    fields: dict[str, tuple[Source, ...]], present: Collection[str]
) -> dict[str, tuple[Source, ...]]:
    kept = {name: tuple(s for s in sources if s.metric in present) for name, sources in
            fields.items()}
    return {name: sources for name, sources in kept.items() if sources}


def fit(
    dialect: Dialect,
    labels: frozenset[str],
    present: Collection[str],
    *,
    node_label: str | None = None,
) -> tuple[Dialect, list[str]]:
    """Narrow a dialect to the labels and metrics that exist, and say what that implies.

    `present` holds the metric names that have series (a dict of counts works too).
    """
    notes: list[str] = []
    spec = dialect.labels
    node = ((node_label,) if node_label else ()) + spec.node
    if not labels:  # nothing to look at yet: keep every spelling
        return dataclasses.replace(dialect, labels=dataclasses.replace(spec, node=node)), notes
    node_found = _present(node, labels)
    if not node_found:
        node_found = (TARGET_ADDRESS_LABEL,)
    if node_found[0] == TARGET_ADDRESS_LABEL:
        notes.append(
            f"{dialect.name}: no node label on the series, using the scrape target's "
            "`instance` as node name; set NODE_LABEL to the label your relabeling adds"
        )
    exported = tuple(name for name in spec.pod if name.startswith(EXPORTED_PREFIX))
    if any(name in labels for name in exported):
        notes.append(
            f"{dialect.name}: pod labels arrive as {exported[0]} (ServiceMonitor honorLabels: "
            "false); reading exported_* labels, plain pod/namespace name the exporter itself"
        )
    pod, namespace, container = (_present(names, labels) for names in
                                 (spec.pod, spec.namespace, spec.container))
    if spec.pod and not pod:
        notes.append(f"{dialect.name}: no pod labels on the series, so no pod attribution")
    fitted_labels = GpuLabels(
        node=node_found,
        index=_present(spec.index, labels) or spec.index,
        name=_present(spec.name, labels) or spec.name,
        uuid=_present(spec.uuid, labels) or spec.uuid,
        mig_instance=_present(spec.mig_instance, labels),
        mig_profile=_present(spec.mig_profile, labels),
        pod=pod,
        namespace=namespace,
        container=container,
    )
    gpu_fields = _keep_present_sources(dict(dialect.gpu_fields), present) or dict(
        dialect.gpu_fields)
    process_fields = _keep_present_sources(dict(dialect.process_fields), present)
    fitted = dataclasses.replace(
        dialect,
        labels=fitted_labels,
        gpu_fields=gpu_fields,
        process_fields=process_fields,
        gpu_info_metrics=tuple(m for m in dialect.gpu_info_metrics if m in present),
        index_metrics=tuple(m for m in dialect.index_metrics if m in present),
        process_info_metrics=tuple(m for m in dialect.process_info_metrics if m in present),
        health_metrics=tuple(m for m in dialect.health_metrics if m in present),
    )
    if dialect.process_fields and not process_fields:
        notes.append(f"{dialect.name}: no per-process series, so the process list is empty")
    return fitted, notes
