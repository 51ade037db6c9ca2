"""Each GPU's figures over a fleet window, from the answers of `window_queries`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.dialects.model import Dialect
from app.prometheus.client import QueryResult
from app.services.fleet_queries import utilization_sources, window_queries
from app.services.labels import GpuKey, GpuLabelReader
from app.services.queries import QueryKey
from app.services.records import Gpu, GpuFilters, GpuWindow
from app.services.samples import PERCENT_DECIMALS, number


@dataclass(frozen=True)
class FleetWindow:
    """The window of a fleet answer (seconds) and the idle threshold (%) it counts by."""

    seconds: float = 3600.0
    threshold: float = 5.0


class WindowJoin:
    """Reads one dialect's window answers; gives each row its GpuWindow."""

    def __init__(self, dialect: Dialect, window: FleetWindow) -> None:
        self.dialect = dialect
        self.window = window
        self.key = GpuLabelReader(dialect).key
        self.sources = utilization_sources(dialect)
        power = dialect.gpu_fields.get("power_usage", ())
        self.power_scale = power[0].scale if power else 1.0
        self.energy_scale = dialect.energy_source.scale if dialect.energy_source else 1.0
        # ("utilization"|"idle", source position) -> GPU -> value.
        self.per_gpu: dict[tuple[str, int], dict[GpuKey, float]] = {}
        # Physical GPU (node, UUID or index) -> joules.
        self.energy: dict[tuple[str, str], float] = {}

    def queries(self, filters: GpuFilters) -> dict[QueryKey, str]:
        """The dialect's window queries."""
        return window_queries(self.dialect, filters, self.window.seconds,
                              self.window.threshold)

    def add(self, key: QueryKey, result: QueryResult) -> None:
        """Take one window answer."""
        what = key[1]
        if what in ("energy", "power"):
            scale = self.energy_scale if what == "energy" else self.power_scale
            for series in result.series:
                gpu = self.key(series["metric"])
                value = number(series["value"][1])
                if gpu is not None and value is not None:
                    self.energy.setdefault(gpu[:2], value * scale)
            return
        position = int(key[2])
        scale = self.sources[position].scale if what == "utilization" else 1.0
        values = self.per_gpu.setdefault((what, position), {})
        for series in result.series:
            gpu = self.key(series["metric"])
            value = number(series["value"][1])
            if gpu is not None and value is not None:
                values[gpu] = value * scale

    def _first(self, what: str, gpu: GpuKey) -> float | None:
        for position in range(len(self.sources)):
            found = self.per_gpu.get((what, position), {}).get(gpu)
            if found is not None:
                return found
        return None

    def finish(self, rows: Mapping[GpuKey, Gpu]) -> None:
        """Attach each row's window figures. A MIG instance gets an even share of its
        device's energy (the counter and the power gauge belong to the device)."""
        per_device: dict[tuple[str, str], int] = {}
        for key in rows:
            per_device[key[:2]] = per_device.get(key[:2], 0) + 1
        for key, row in rows.items():
            average = self._first("utilization", key)
            idle = None
            if average is not None:
                # A GPU never below the threshold has no idle samples: 0 s, not unknown.
                idle = self._first("idle", key) or 0.0
                average = round(average, PERCENT_DECIMALS)
            energy = self.energy.get(key[:2])
            if energy is not None:
                energy = round(energy / per_device[key[:2]], 3)
            row.window = GpuWindow(utilization_avg=average, idle_seconds=idle,
                                   energy_joules=energy)
