"""Build Prometheus API answers for tests, the way Prometheus writes them."""

from __future__ import annotations

from typing import Any

from app.prometheus.client import QueryResult

SAMPLE_TIME = 1764460800.123  # 2025-11-30T00:00:00.123Z


def series(labels: dict[str, str], value: str | float, ts: float = SAMPLE_TIME) -> dict[str, Any]:
    """One instant-vector element; values travel as strings, as Prometheus sends them."""
    return {"metric": dict(labels), "value": [ts, value if isinstance(value, str) else repr(value)]}


def result(*items: dict[str, Any]) -> QueryResult:
    """A parsed vector answer."""
    return QueryResult(result_type="vector", series=list(items))


def api_body(*items: dict[str, Any], warnings: list[str] | None = None) -> dict[str, Any]:
    """The JSON body of a successful /api/v1/query."""
    body: dict[str, Any] = {"status": "success",
                            "data": {"resultType": "vector", "result": list(items)}}
    if warnings:
        body["warnings"] = warnings
    return body
