"""GPU history for charts: the window rules, the fan-out of range queries, and the merge.

Prometheus does the work: per dialect and field one `query_range` of the expression that
means, at each instant, what the snapshot means (history_queries.py), aggregated there for
groups. Python only aligns the answers to one shared timestamps array, merges what several
exporters say (as the snapshot's merge does, at each instant) and rounds as the snapshot
rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.dialects.detect import Detection
from app.dialects.model import DERIVED_ONLY_FIELDS, GPU_FIELDS, Dialect
from app.prometheus.client import PrometheusClient, RangeResult, Window
from app.schemas.fields import rfc3339
from app.services.gpu_join import gpu_sort_key
from app.services.gpu_rows import GpuRows
from app.services.history_queries import (
    PART,
    GroupPlan,
    aggregate_query,
    count_query,
    grouped,
    info_queries,
    listed,
)
from app.services.labels import GpuLabelReader, first_label
from app.services.merge import gpu_identities
from app.services.records import Gpu, GpuFilters, History, HistoryQuery, HistorySeries
from app.services.samples import MEMORY_FIELDS, PERCENT_DECIMALS, PERCENT_FIELDS, number
from app.services.samples import reading_samples as reading

# The steps a default is chosen from, in seconds: the finest that fits `points` wins.
STEPS = (15, 30, 60, 300, 900, 1800, 3600, 21600, 86400)
DEFAULT_POINTS = 240
# Prometheus refuses a range query of more timestamps than this.
MAX_POINTS = 11000
DEFAULT_RANGE_S = 3600.0
MIN_STEP_S = 0.001  # Prometheus' resolution
# Every numeric GPU field; memory_reserved is read only to derive the total.
HISTORY_FIELDS = tuple(f for f in GPU_FIELDS if f not in DERIVED_ONLY_FIELDS)
DEFAULT_FIELDS = ("utilization", "memory_used", "memory_utilization", "temperature",
                  "power_usage")
GROUP_BY = ("gpu", "node", "namespace", "gpu_name", "cluster")
AGGREGATES = ("avg", "max", "min", "sum")
DEFAULT_MAX_VALUES = 2_000_000
GPU_KEY = ("node_name", "gpu_index", "uuid", "mig_instance", "gpu_name")

Column = list[float | None]


class WindowError(ValueError):
    """A window or step Prometheus would refuse (or that makes no sense): a 400."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


class HistoryTooLargeError(ValueError):
    """The answer would hold more values than HISTORY_MAX_VALUES allows: a 400."""


# -- the window -------------------------------------------------------------------------------


def align(t: float, step: float) -> float:
    """The multiple of `step` at or before `t` (to Prometheus' millisecond)."""
    return round(math.floor(t / step) * step, 3)


def count_points(start: float, end: float, step: float) -> int:
    """How many timestamps the window aligned to `step` holds, both ends included."""
    return math.floor(end / step) - math.floor(start / step) + 1


def resolve_window(*, start: float | None, end: float | None, range_s: float | None,
                   step: float | None, points: int, now: float) -> tuple[float, float, float]:
    """Return the aligned (start, end, step) of a request, or raise WindowError.

    Defaults: end now, start an hour (or `range_s`) before it, and the finest of STEPS
    giving at most `points` timestamps (the coarsest when none does).
    """
    if end is None:
        end = now
    elif end > now:
        raise WindowError("end", f"{rfc3339(end)} is in the future (now is {rfc3339(now)})")
    if start is not None and range_s is not None:
        raise WindowError("range", "give start or range, not both")
    if start is None:
        start = end - (DEFAULT_RANGE_S if range_s is None else range_s)
    if start > end:
        raise WindowError("start", f"start {rfc3339(start)} is after end {rfc3339(end)}")
    if step is None:
        step = next((s for s in STEPS if count_points(start, end, s) <= points), STEPS[-1])
    elif step < MIN_STEP_S:
        raise WindowError("step", f"must be at least {MIN_STEP_S:g} seconds")
    total = count_points(start, end, step)
    if total > MAX_POINTS:
        raise WindowError("step", (
            f"a step of {step:g}s from {rfc3339(start)} to {rfc3339(end)} gives {total} "
            f"timestamps; Prometheus answers at most {MAX_POINTS}: use a coarser step or a "
            "shorter window"))
    return align(start, step), align(end, step), step


# -- the answer -------------------------------------------------------------------------------


def gpu_history(prom: PrometheusClient, dialects: Sequence[Dialect], query: HistoryQuery,
                *, max_values: int = DEFAULT_MAX_VALUES,
                series_hint: int | None = None) -> History:
    """Every GPU's (or group's) fields over the query's window, aligned to its timestamps.

    `series_hint` is an upper bound of the series there are (detection's count), which
    spares the count query when even that many fit in `max_values`.
    """
    fits = series_hint is not None and _values(query, series_hint) <= max_values
    if not fits and query.group_by != "cluster":
        _check_size(query, _estimate(prom, dialects, query), max_values)
    window = Window(query.start, query.end, query.step)
    if query.group_by == "gpu":
        series = _gpu_series(prom, dialects, query, window)
    else:
        series = _group_series(prom, dialects, query, window)
    _check_size(query, len(series), max_values)  # the estimate was taken at the end
    return History(query=query, series=series)


def series_hint(detection: Detection, dialects: Sequence[Dialect]) -> int | None:
    """The live series of the dialects' pod metrics when detected: at least their GPUs."""
    counts = [detection.series_counts.get(d.pod_metric()) for d in dialects]
    return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


def _values(query: HistoryQuery, series: int) -> int:
    return series * len(query.fields) * query.points


def _check_size(query: HistoryQuery, series: int, max_values: int) -> None:
    values = _values(query, series)
    if values <= max_values:
        return
    per_series = max(1, max_values // max(1, series * len(query.fields)))
    coarser = next((s for s in STEPS if s > query.step
                    and count_points(query.start, query.end, s) <= per_series), None)
    step_hint = f"a coarser step (step={coarser:g} fits)" if coarser else "a coarser step"
    raise HistoryTooLargeError(
        f"this history would hold about {values:,} values ({series} series x "
        f"{len(query.fields)} fields x {query.points} points), over the limit of "
        f"{max_values:,} (HISTORY_MAX_VALUES); narrow it with filters (node, namespace, "
        f"pod, gpu_name, uuid), fewer fields, {step_hint} or a shorter window, or a rollup "
        "(group_by=node, namespace, gpu_name or cluster)")


def _estimate(prom: PrometheusClient, dialects: Sequence[Dialect], query: HistoryQuery) -> int:
    """How many series the answer will have, counted at the end of the window."""
    queries = {}
    for position, dialect in enumerate(dialects):
        counted = count_query(dialect, query.filters, query.group_by, dialects[:position])
        if counted is not None:
            queries[dialect.name] = counted
    if not queries:
        return 0
    total = 0
    for name, result in prom.query_many(queries, at=query.end).items():
        with reading(f"{name} count"):
            total += sum(int(float(s["value"][1])) for s in result.series)
    return total


def _column(series: dict[str, Any], query: HistoryQuery, out: Column | None = None) -> Column:
    """A series' samples at their places among the query's timestamps; None elsewhere."""
    points = query.points
    column: Column = out if out is not None else [None] * points
    start, step = query.start, query.step
    for t, raw in series["values"]:
        i = round((float(t) - start) / step)
        if 0 <= i < points and column[i] is None:
            column[i] = number(raw)
    return column


def _served(field_name: str, value: float | None, *, whole: bool) -> float | int | None:
    """Round as the snapshot does: percentages to 3 decimals, bytes whole."""
    if value is None:
        return None
    if field_name in PERCENT_FIELDS:
        return round(value, PERCENT_DECIMALS)
    if field_name in MEMORY_FIELDS and (whole or value.is_integer()):
        return round(value)
    return value


# -- group_by=gpu -----------------------------------------------------------------------------


@dataclass
class _Line:
    """One GPU of one dialect and its fields' columns."""

    row: Gpu
    values: dict[str, Column] = field(default_factory=dict)

    def present(self, i: int) -> bool:
        return any(column[i] is not None for column in self.values.values())

    def key(self) -> tuple[Any, ...]:
        return tuple(getattr(self.row, name) for name in GPU_KEY)


def _gpu_series(prom: PrometheusClient, dialects: Sequence[Dialect], query: HistoryQuery,
                window: Window) -> list[HistorySeries]:
    queries: dict[tuple[str, ...], str] = {}
    for dialect in dialects:
        fields_asked = 0
        for name in query.fields:
            value = listed(dialect, name, query.filters)
            if value is not None:
                queries[(dialect.name, "field", name)] = value.canonical()
                fields_asked += 1
        if fields_asked:
            for key, promql in info_queries(dialect, query.filters).items():
                queries[(dialect.name, *key)] = promql
    answers = dict(prom.query_range_each(queries, window)) if queries else {}
    per_dialect = [_dialect_lines(d, answers, query) for d in dialects]
    lines = _merge_lines(per_dialect, query)
    lines.sort(key=lambda line: gpu_sort_key(line.row))
    return [HistorySeries(key={name: getattr(line.row, name) for name in GPU_KEY},
                          values={name: [_served(name, v, whole=True) for v in column]
                                  for name, column in line.values.items()})
            for line in lines]


def _dialect_lines(dialect: Dialect, answers: dict[tuple[str, ...], RangeResult],
                   query: HistoryQuery) -> list[_Line]:
    """One dialect's GPUs, keyed and described as the snapshot's join does."""
    table = GpuRows(GpuLabelReader(dialect))
    lines: dict[int, _Line] = {}
    for name in query.fields:
        result = answers.get((dialect.name, "field", name))
        if result is None:
            continue
        with reading(f"{dialect.name} {name}"):
            for series in result.series:
                row = table.get(series["metric"])
                if row is None:
                    continue
                line = lines.get(id(row))
                if line is None:
                    line = lines[id(row)] = _Line(row)
                line.values[name] = _column(series, query, line.values.get(name))
    node_of_pod: dict[str, str] = {}
    for key, result in answers.items():
        if key[0] != dialect.name or key[1] == "field":
            continue
        with reading(f"{dialect.name} {key[-1]}"):
            for series in result.series:
                labels = series["metric"]
                if key[1] == "node_map":
                    node_of_pod[labels.get("pod", "")] = labels.get("node", "")
                    continue
                row = table.get(labels, create=False, fill=True)
                if row is not None and key[1] == "index" and row.gpu_index is None:
                    last = _column(series, query)
                    index = next((v for v in reversed(last) if v is not None), None)
                    if index is not None and index.is_integer():
                        row.gpu_index = int(index)
    # The filters on what a GPU is (its node where mapped, the model from its info
    # metric, the UUID in any case) are checked on the rows, as the snapshot does; the
    # pod and namespace filters were applied per instant in PromQL.
    static = GpuFilters(node=query.filters.node, gpu_name=query.filters.gpu_name,
                        uuid=query.filters.uuid)
    kept = []
    for line in lines.values():
        line.row.node_name = node_of_pod.get(line.row.node_name) or line.row.node_name
        if static.is_empty() or static.matches(line.row):
            for name in query.fields:
                line.values.setdefault(name, [None] * query.points)
            kept.append(line)
    return kept


def _merge_lines(per_dialect: list[list[_Line]], query: HistoryQuery) -> list[_Line]:
    """Merge dialects as the snapshot's merge_rows does, at each instant.

    At an instant where an earlier dialect lists a GPU (same UUID, or same node and index),
    a later dialect's values for it are dropped; where the earlier one is silent, they
    stand, in the earlier line when both name the GPU alike, else in a line of their own.
    """
    if len(per_dialect) == 1:
        return per_dialect[0]
    merged: list[_Line] = []
    seen: dict[tuple[object, ...], list[_Line]] = {}
    points = range(query.points)
    for lines in per_dialect:
        added: dict[tuple[object, ...], list[_Line]] = {}
        for line in lines:
            identities = gpu_identities(line.row)
            earlier = list({id(e): e for k in identities for e in seen.get(k, ())}.values())
            if earlier:
                hidden = [i for i in points if any(e.present(i) for e in earlier)]
                for column in line.values.values():
                    for i in hidden:
                        column[i] = None
                same = next((e for e in earlier if e.key() == line.key()), None)
                if same is not None:
                    for name, column in line.values.items():
                        target = same.values[name]
                        for i in points:
                            if target[i] is None and column[i] is not None:
                                target[i] = column[i]
                    for k in identities:
                        added.setdefault(k, []).append(same)
                    continue
                if not any(line.present(i) for i in points):
                    continue
            merged.append(line)
            for k in identities:
                added.setdefault(k, []).append(line)
        for k, found in added.items():
            seen.setdefault(k, []).extend(found)
    return merged


# -- groups -----------------------------------------------------------------------------------


def _group_series(prom: PrometheusClient, dialects: Sequence[Dialect], query: HistoryQuery,
                  window: Window) -> list[HistorySeries]:
    plans: dict[tuple[str, str], GroupPlan] = {}
    for position, dialect in enumerate(dialects):
        for name in query.fields:
            plan = grouped(dialect, name, query.filters, query.group_by, dialects[:position])
            if plan is not None:
                plans[(dialect.name, name)] = plan
    by_name = {d.name: d for d in dialects}
    # An average is asked as a sum and a count wherever groups are combined in Python:
    # several dialects, or several label spellings (or MIG names) that make one group.
    halves = query.agg == "avg" and (
        len({dialect for dialect, _ in plans}) > 1
        or any(len(p.by) > 1 or _names_mig(by_name[d], query.group_by)
               for (d, _), p in plans.items()))
    queries = {key: aggregate_query(plan, query.agg, halves=halves)
               for key, plan in plans.items()}
    label = _GROUP_KEY[query.group_by]
    # Per group and field: the combined column, and for an average of halves the counts.
    totals: dict[str | None, dict[str, Column]] = {}
    counts: dict[str | None, dict[str, Column]] = {}
    if query.group_by == "cluster":
        totals[None] = {}
    for (dialect_name, name), result in (prom.query_range_each(queries, window)
                                         if queries else ()):
        group_of = _group_reader(by_name[dialect_name], plans[(dialect_name, name)],
                                 query.group_by)
        with reading(f"{dialect_name} {name}"):
            for series in result.series:
                metric = series["metric"]
                column = _column(series, query)
                into = counts if halves and metric.get(PART) == "count" else totals
                _combine(into.setdefault(group_of(metric), {}), name, column, query.agg)
    out = []
    for group in sorted(totals, key=lambda g: (g is not None, g or "")):
        values: dict[str, list[float | int | None]] = {}
        for name in query.fields:
            column = totals[group].get(name) or [None] * query.points
            if halves:
                count = counts.get(group, {}).get(name) or [None] * query.points
                column = [s / c if s is not None and c else None
                          for s, c in zip(column, count, strict=True)]
            values[name] = [_served(name, v, whole=query.agg != "avg") for v in column]
        key: dict[str, str | int | None] = {} if label is None else {label: group}
        out.append(HistorySeries(key=key, values=values))
    return out


# The key of a group's series: its one label (none for the cluster).
_GROUP_KEY = {"node": "node_name", "namespace": "namespace", "gpu_name": "gpu_name",
              "cluster": None}


def _names_mig(dialect: Dialect, group_by: str) -> bool:
    return group_by == "gpu_name" and dialect.name_encodes_mig_profile


def _group_reader(dialect: Dialect, plan: GroupPlan,
                  group_by: str) -> Callable[[dict[str, str]], str | None]:
    """Read a series' group from its labels as the snapshot reads the row's attribute."""
    if group_by == "cluster":
        return lambda labels: None
    first = first_label(plan.by)
    if not _names_mig(dialect, group_by):
        return first
    reader = GpuLabelReader(dialect)
    # nvitop names a MIG device "<model> MIG <profile>": its model is the GPU's name.
    return lambda labels: reader.model_and_profile(labels)[0]


def _combine(columns: dict[str, Column], name: str, column: Column, agg: str) -> None:
    """Fold one dialect's aggregate into the others': sums (and counts) add, max and min
    keep the larger or smaller."""
    current = columns.get(name)
    if current is None:
        columns[name] = column
        return
    for i, value in enumerate(column):
        if value is None:
            continue
        have = current[i]
        if have is None:
            current[i] = value
        elif agg == "max":
            current[i] = max(have, value)
        elif agg == "min":
            current[i] = min(have, value)
        else:
            current[i] = have + value
