"""Find out which exporter dialects a Prometheus holds, and fit them to the labels it has."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
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
from app.prometheus.errors import PrometheusError, PrometheusTimeoutError
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
    wanted = {m for d in candidates for m in d.gpu_metric_names() + d.process_metric_names()}
    every_name = frozenset(prom.label_values("__name__", lookback_s=DETECT_LOOKBACK_S,
                                             deadline=deadline))
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
    live: dict[str, frozenset[str]] = {}  # live dialect -> its metrics that exist
    for dialect in candidates:
        gpu_probe = probes[dialect.name][:1]
        if gpu_probe and counts.get(gpu_probe[0]):
            own = set(dialect.gpu_metric_names())
            process = [m for m in probes[dialect.name][1:] if counts.get(m)]
            if process:  # process names without live series say nothing
                own.update(dialect.process_metric_names())
            live[dialect.name] = frozenset(names & own)
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
        chosen.append(fitted)
        notes.extend(fit_notes)
        if dialect.name not in live:
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
    )
    if dialect.process_fields and not process_fields:
        notes.append(f"{dialect.name}: no per-process series, so the process list is empty")
    return fitted, notes


Detector = Callable[[PrometheusClient], Detection]
# A request that finds no detection yet waits for the one in flight: that is bounded by
# the client's deadline, and this margin covers connecting and the thread hand-over.
WAIT_MARGIN_S = 5.0


class DialectSelector:
    """Hand out the current Detection; detect in a background thread, one at a time.

    `start()` begins detecting when the worker starts. `current()` answers at once with
    the detection it has, and when that is due for a re-check it starts a background
    refresh (single flight). Only a caller that comes before any detection exists waits,
    for the one in flight. A failed refresh keeps the previous detection and is retried
    after `retry_s`; with no detection at all, every caller tries again (and gets the error).
    """

    def __init__(
        self,
        candidates: Sequence[Dialect],
        *,
        forced: bool,
        node_label: str | None = None,
        refresh_s: float = 300.0,
        retry_s: float = 15.0,
        detector: Detector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.candidates = tuple(candidates)
        self.forced = forced
        self.node_label = node_label
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self._detector: Detector = detector or self._detect
        self._clock = clock
        self._lock = threading.Lock()
        self._detection: Detection | None = None
        self._next_check = 0.0
        self._flight: Future[Detection] | None = None
        self._flight_pid = 0
        self._failures = 0  # in a row; the first of a streak is logged, not every retry

    @property
    def latest(self) -> Detection | None:
        """The current detection, if there is one, without starting anything."""
        return self._detection

    @property
    def detecting(self) -> bool:
        """Whether a detection is running in this process now."""
        with self._lock:
            return self._running() is not None

    def start(self, prom: PrometheusClient) -> Future[Detection]:
        """Begin a detection in a background thread unless one is running; return it."""
        with self._lock:
            return self._launch(prom)

    def current(self, prom: PrometheusClient) -> Detection:
        """Return the detection, refreshing it in the background when due.

        Before the first detection exists, wait for the one in flight (starting it if
        need be) and raise its PrometheusError if it fails.
        """
        detection = self._detection
        if detection is not None:
            if self._clock() >= self._next_check:
                with self._lock:
                    if self._clock() >= self._next_check:
                        self._launch(prom)
            return detection
        with self._lock:
            if self._detection is not None:  # finished while we took the lock
                return self._detection
            flight = self._launch(prom)
        wait_s = prom.settings.deadline + WAIT_MARGIN_S
        try:
            return flight.result(timeout=wait_s)
        except TimeoutError:
            raise PrometheusTimeoutError(
                f"dialect detection against Prometheus at {prom.display_url} did not finish "
                f"within {wait_s:g}s"
            ) from None

    # -- internals --------------------------------------------------------------------

    def _detect(self, prom: PrometheusClient) -> Detection:
        return detect(prom, self.candidates, forced=self.forced, node_label=self.node_label)

    def _running(self) -> Future[Detection] | None:
        # A flight started before a fork has no thread in this process: it never ends here.
        flight = self._flight
        if flight is None or flight.done() or self._flight_pid != os.getpid():
            return None
        return flight

    def _launch(self, prom: PrometheusClient) -> Future[Detection]:
        """Start a detection thread unless one runs; the caller holds the lock."""
        flight = self._running()
        if flight is not None:
            return flight
        flight = Future()
        self._flight, self._flight_pid = flight, os.getpid()
        threading.Thread(target=self._run, args=(prom, flight), name="dialect-detection",
                         daemon=True).start()
        return flight

    def _run(self, prom: PrometheusClient, flight: Future[Detection]) -> None:
        try:
            fresh = self._detector(prom)
        except Exception as exc:  # handed to the waiting callers, never lost in the thread
            try:
                self._failed(exc)
            finally:
                flight.set_exception(exc)
            return
        try:
            self._succeeded(fresh)
        finally:
            flight.set_result(fresh)

    def _succeeded(self, fresh: Detection) -> None:
        found = bool(fresh.dialects) and any(fresh.series_counts.values())
        with self._lock:
            previous, self._detection = self._detection, fresh
            self._next_check = self._clock() + (self.refresh_s if found else self.retry_s)
            failures, self._failures = self._failures, 0
            self._flight = None
        if failures and previous is not None:
            logger.info("dialect detection works again after %d failed attempt(s)", failures)
        if previous is None or _names(previous) != _names(fresh):
            took = f" (detected in {fresh.elapsed_s * 1000:.0f} ms)" if fresh.elapsed_s else ""
            logger.info("reading GPU metrics as: %s%s", ", ".join(_names(fresh)) or "nothing",
                        took)

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._failures += 1
            first = self._failures == 1
            kept = self._detection is not None
            if kept:
                self._next_check = self._clock() + self.retry_s
            self._flight = None
        if not isinstance(exc, PrometheusError):
            logger.error("dialect detection failed unexpectedly", exc_info=exc)
        elif not first:
            logger.debug("dialect detection failed again: %s", exc)
        elif kept:
            logger.warning("dialect re-detection failed; keeping the previous answer and "
                           "retrying every %gs: %s", self.retry_s, exc)
        else:
            logger.warning("dialect detection failed; the next request tries again: %s", exc)


def _names(detection: Detection) -> list[str]:
    return [d.name for d in detection.dialects]
