"""Each GPU's idle time and state, from the two idle rounds (see fleet_queries).

A GPU is *idle* when its utilization stayed below the threshold for the whole idle
window, *allocated* when its exporter names a workload pod holding it. The states:
allocated-busy, allocated-idle, free (not allocated, idle), unallocated-busy (not
allocated, not idle: work outside Kubernetes, or a job that ended less than the window
ago) and unknown (no utilization, or an exporter that names no pods).
"""

from __future__ import annotations

from collections.abc import Mapping

from app.dialects.model import Dialect
from app.prometheus.client import QueryResult
from app.services.fleet_queries import IdleRule, last_busy_queries, utilization_sources
from app.services.labels import GpuKey, GpuLabelReader
from app.services.queries import QueryKey
from app.services.records import Gpu, GpuFilters
from app.services.samples import number

STATES = ("allocated-busy", "allocated-idle", "free", "unallocated-busy", "unknown")


class IdleJoin:
    """Reads one dialect's idle answers and gives its rows their idle time and state."""

    def __init__(self, dialect: Dialect, rule: IdleRule) -> None:
        self.dialect = dialect
        self.rule = rule
        self.key = GpuLabelReader(dialect).key
        self.sources = utilization_sources(dialect)
        # Per source position: GPU -> the window's maximum (%), or its last busy instant.
        self.maxima: dict[int, dict[GpuKey, float]] = {}
        self.last_busy: dict[int, dict[GpuKey, float]] = {}
        # The instant the first round was evaluated at (from its samples).
        self.now: float | None = None

    def add(self, key: QueryKey, result: QueryResult) -> None:
        """Take one answer of either round."""
        position = int(key[2])
        book = self.maxima if key[1] == "max" else self.last_busy
        values = book.setdefault(position, {})
        scale = self.sources[position].scale if key[1] == "max" else 1.0
        for series in result.series:
            gpu = self.key(series["metric"])
            value = number(series["value"][1])
            if gpu is None or value is None:
                continue
            if key[1] == "max" and self.now is None:
                self.now = float(series["value"][0])
            values[gpu] = value * scale

    def window_max(self, gpu: GpuKey) -> float | None:
        """The GPU's utilization maximum over the window, from its first source that has it."""
        for position in range(len(self.sources)):
            found = self.maxima.get(position, {}).get(gpu)
            if found is not None:
                return found
        return None

    def followups(self, rows: Mapping[GpuKey, Gpu], filters: GpuFilters) -> dict[QueryKey, str]:
        """Second round: the GPUs below the threshold now that were busy in the window."""
        devices = [key[1] for key, row in rows.items() if self._needs_last_busy(key, row)]
        if not devices:
            return {}
        return last_busy_queries(self.dialect, filters, self.rule, devices)

    def _needs_last_busy(self, key: GpuKey, row: Gpu) -> bool:
        peak = self.window_max(key)
        return (row.utilization is not None and row.utilization < self.rule.threshold
                and peak is not None and peak >= self.rule.threshold)

    def finish(self, rows: Mapping[GpuKey, Gpu]) -> None:
        """Set `idle_seconds` and `state` on every row."""
        attributes = bool(self.dialect.labels.pod)
        for key, row in rows.items():
            row.idle_seconds = self._idle_seconds(key, row)
            row.state = judge_state(row, self.rule, attributes)

    def _idle_seconds(self, key: GpuKey, row: Gpu) -> float | None:
        if row.utilization is None:
            return None
        if row.utilization >= self.rule.threshold:
            return 0.0
        peak = self.window_max(key)
        if peak is None:
            return None
        if peak < self.rule.threshold:
            return self.rule.window
        busy = next((found for position in range(len(self.sources))
                     if (found := self.last_busy.get(position, {}).get(key)) is not None), None)
        if busy is None or self.now is None:
            return None
        return round(min(max(self.now - busy, 0.0), self.rule.window), 3)


def judge_state(row: Gpu, rule: IdleRule, attributes_pods: bool) -> str:
    """The row's state from its pods and idle time (see the module doc)."""
    if not attributes_pods or row.idle_seconds is None:
        return "unknown"
    idle = row.idle_seconds >= rule.window
    if row.pods:
        return "allocated-idle" if idle else "allocated-busy"
    return "free" if idle else "unallocated-busy"
