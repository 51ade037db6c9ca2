"""Read Prometheus samples as the API serves them: numbers, units, rounding, timestamps."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from app.dialects.model import Source
from app.prometheus.client import QueryResult
from app.prometheus.errors import PrometheusBadResponseError
from app.services.queries import QueryKey

# Exporters emit ~9.2e18 blank sentinels for unsupported sensors; nothing real is this big.
SENTINEL_LIMIT = 1e15
MEMORY_FIELDS = frozenset({"memory_used", "memory_total", "memory_free", "memory_reserved",
                           "gpu_memory"})
# Percentages are served to 3 decimals: a ratio of 0.07 x 100 reads 7.0, not 7.000000000000001.
PERCENT_FIELDS = frozenset({"utilization", "memory_utilization", "cpu", "memory"})
PERCENT_DECIMALS = 3


@contextmanager
def reading_samples(what: str) -> Iterator[None]:
    """Turn a malformed sample met while joining into the upstream error it is (502)."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise PrometheusBadResponseError(
            f"Prometheus answered the {what} query with a malformed sample "
            f"({type(exc).__name__})"
        ) from exc


def number(text: Any) -> float | None:
    """Parse a sample value; NaN, infinities and blank sentinels become None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or abs(value) > SENTINEL_LIMIT:
        return None
    return value


def apply_value(row: Any, field: str, source: Source, raw_value: Any, *, as_int: bool) -> None:
    if getattr(row, field) is not None:
        return  # an earlier source (or an earlier series) already answered
    value = number(raw_value)
    if value is None:
        return
    setattr(row, field, canonical(field, value * source.scale, as_int=as_int))


def canonical(field: str, value: float, *, as_int: bool) -> float | int:
    """Round a value as the API serves it: whole bytes, percentages to PERCENT_DECIMALS."""
    if as_int:
        return round(value)
    if field in PERCENT_FIELDS:
        return round(value, PERCENT_DECIMALS)
    return value


def record_timestamp(row: Any, ts: Any) -> None:
    ts = float(ts)  # raises on garbage: see reading_samples
    if row.timestamp is None or ts > row.timestamp:
        row.timestamp = ts


def ordered_sources(
    fields: Mapping[str, tuple[Source, ...]],
) -> list[tuple[QueryKey, str, Source]]:
    return [
        (("field", name, str(position)), name, source)
        for name, sources in fields.items()
        for position, source in enumerate(sources)
    ]


def series_of(results: Mapping[QueryKey, QueryResult], key: QueryKey) -> list[dict[str, Any]]:
    result = results.get(key)
    return result.series if result is not None else []


