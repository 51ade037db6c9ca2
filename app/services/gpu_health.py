"""The GPU health report: the GPUs that are not ok, and how many have each status."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from app.dialects.model import Dialect
from app.health.queries import HealthWindow
from app.health.rules import STATUSES
from app.prometheus.client import PrometheusClient
from app.services.gpu_join import gpu_sort_key
from app.services.gpus import read_gpus
from app.services.records import Gpu, HealthQuery


@dataclass(frozen=True)
class HealthReport:
    """What /api/v1/gpu/health answers."""

    time: float
    window: int
    step: int
    total: int
    counts: dict[str, int]
    gpus: list[Gpu]


def gpu_health(prom: PrometheusClient, dialects: Sequence[Dialect],
               query: HealthQuery, now: float) -> HealthReport:
    """Judge every GPU matching the filters; list those not ok (gone ones included).

    `now` stands for the evaluation instant when the query has none and no answer came
    back to say it (an empty cluster).
    """
    window = HealthWindow(query.window)
    snapshot = read_gpus(prom, dialects, query.filters, query.at, window, vanished=True)
    everyone = sorted([*snapshot.rows, *snapshot.vanished], key=gpu_sort_key)
    counts = Counter(row.health.status if row.health else "unknown" for row in everyone)
    return HealthReport(
        time=query.at if query.at is not None else snapshot.evaluated_at or now,
        window=round(window.seconds), step=window.step, total=len(everyone),
        counts={status: counts.get(status, 0) for status in STATUSES},
        gpus=[row for row in everyone if row.health is None or row.health.status != "ok"])

