"""Find out which exporter dialects a Prometheus holds, and fit them to the labels it has."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.dialects.model import Dialect, GpuLabels, Source
from app.prometheus.client import PrometheusClient
from app.prometheus.errors import PrometheusError
from app.prometheus.promql import quote, regex_literal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """What was found: the dialects to read (fitted to the data) and notes for humans."""

    dialects: tuple[Dialect, ...]
    series_counts: dict[str, int]
    label_names: dict[str, frozenset[str]]
    notes: tuple[str, ...]
    checked_at: float
    forced: bool


def count_series_query(metrics: Sequence[str]) -> str:
    """One cheap query counting the series of every metric name we might read."""
    pattern = "|".join(regex_literal(name) for name in sorted(set(metrics)))
    return f"count by (__name__) ({{__name__=~{quote(pattern)}}})"


def detect(
    prom: PrometheusClient,
    candidates: Sequence[Dialect],
    *,
    forced: bool,
    node_label: str | None = None,
) -> Detection:
    """Ask Prometheus which candidate dialects have series, and which labels they carry.

    Forced dialects are used even when no series exist yet; auto mode keeps those that do.
    """
    names = [m for d in candidates for m in d.gpu_metric_names() + d.process_metric_names()]
    counts: dict[str, int] = {}
    for series in prom.query(count_series_query(names)).series:
        name = series["metric"].get("__name__")
        try:
            counts[name] = int(float(series["value"][1]))
        except (TypeError, ValueError, IndexError):
            continue
    chosen: list[Dialect] = []
    label_names: dict[str, frozenset[str]] = {}
    notes: list[str] = []
    for dialect in candidates:
        present = [m for m in dialect.gpu_metric_names() if counts.get(m)]
        if not present and not forced:
            continue
        labels = frozenset(prom.label_names(present)) if present else frozenset()
        label_names[dialect.name] = labels
        fitted, fit_notes = fit(dialect, labels, counts, node_label=node_label)
        chosen.append(fitted)
        notes.extend(fit_notes)
        if not present:
            notes.append(f"{dialect.name}: no series of its metrics in Prometheus yet")
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
    )


def _present(candidates: tuple[str, ...], labels: frozenset[str]) -> tuple[str, ...]:
    return tuple(name for name in candidates if name in labels)


def _keep_present_sources(
    fields: dict[str, tuple[Source, ...]], counts: dict[str, int]
) -> dict[str, tuple[Source, ...]]:
    kept = {name: tuple(s for s in sources if counts.get(s.metric)) for name, sources in
            fields.items()}
    return {name: sources for name, sources in kept.items() if sources}


def fit(
    dialect: Dialect,
    labels: frozenset[str],
    counts: dict[str, int],
    *,
    node_label: str | None = None,
) -> tuple[Dialect, list[str]]:
    """Narrow a dialect to the labels and metrics that exist, and say what that implies."""
    notes: list[str] = []
    spec = dialect.labels
    node = ((node_label,) if node_label else ()) + spec.node
    if not labels:  # nothing to look at yet: keep every spelling
        return dataclasses.replace(dialect, labels=dataclasses.replace(spec, node=node)), notes
    node_found = _present(node, labels)
    if not node_found:
        node_found = ("instance",)
    if node_found[0] == "instance":
        notes.append(
            f"{dialect.name}: no node label on the series, using the scrape target's "
            "`instance` as node name; set NODE_LABEL to the label your relabeling adds"
        )
    exported = tuple(name for name in spec.pod if name.startswith("exported_"))
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
    gpu_fields = _keep_present_sources(dict(dialect.gpu_fields), counts) or dict(
        dialect.gpu_fields)
    process_fields = _keep_present_sources(dict(dialect.process_fields), counts)
    fitted = dataclasses.replace(
        dialect,
        labels=fitted_labels,
        gpu_fields=gpu_fields,
        process_fields=process_fields,
        gpu_info_metrics=tuple(m for m in dialect.gpu_info_metrics if counts.get(m)),
        process_info_metrics=tuple(m for m in dialect.process_info_metrics if counts.get(m)),
    )
    if dialect.process_fields and not process_fields:
        notes.append(f"{dialect.name}: no per-process series, so the process list is empty")
    return fitted, notes


class DialectSelector:
    """Hand out the current Detection, re-checking now and then; one check at a time."""

    def __init__(
        self,
        candidates: Sequence[Dialect],
        *,
        forced: bool,
        node_label: str | None = None,
        refresh_s: float = 300.0,
        retry_s: float = 15.0,
    ) -> None:
        self.candidates = tuple(candidates)
        self.forced = forced
        self.node_label = node_label
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._detection: Detection | None = None
        self._next_check = 0.0

    def current(self, prom: PrometheusClient) -> Detection:
        """Return the detection, refreshing it when due; keep the old one if Prometheus fails."""
        now = time.monotonic()
        detection = self._detection
        if detection is not None and now < self._next_check:
            return detection
        with self._lock:  # single flight: waiting callers reuse the fresh answer
            if self._detection is not None and time.monotonic() < self._next_check:
                return self._detection
            try:
                fresh = detect(prom, self.candidates, forced=self.forced,
                               node_label=self.node_label)
            except PrometheusError:
                if self._detection is None:
                    raise
                logger.warning("dialect re-detection failed; keeping the previous answer")
                self._next_check = time.monotonic() + self.retry_s
                return self._detection
            found = bool(fresh.dialects) and any(fresh.series_counts.values())
            self._next_check = time.monotonic() + (self.refresh_s if found else self.retry_s)
            if self._detection is None or _names(self._detection) != _names(fresh):
                logger.info("reading GPU metrics as: %s", ", ".join(_names(fresh)) or "nothing")
            self._detection = fresh
            return fresh


def _names(detection: Detection) -> list[str]:
    return [d.name for d in detection.dialects]
