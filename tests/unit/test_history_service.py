"""The history service with a stub client: alignment, nulls, rounding, merging, bounds.

The stub answers each query from what the test wrote for the metric it names; the values
expected are written by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, TypeVar

import pytest

from app.dialects.builtin import GPU_METRICS, LEGACY
from app.prometheus.client import PrometheusClient, QueryResult, RangeResult, Window
from app.services.history import HistoryTooLargeError, gpu_history
from app.services.records import HistoryQuery

K = TypeVar("K", bound=Hashable)
T0 = 1_764_460_800.0
STEP = 15.0
Matrix = list[dict[str, Any]]


def points(*values: float | None) -> list[list[Any]]:
    """Samples at T0, T0 + 15 s, ...; None leaves a gap (no sample)."""
    return [[T0 + i * STEP, repr(v)] for i, v in enumerate(values) if v is not None]


class StubClient:
    """Answers range queries with `ranges(query)` and instant ones with `instants(query)`."""

    def __init__(self, ranges: Callable[[str], Matrix],
                 instants: Callable[[str], list[dict[str, Any]]] = lambda q: []) -> None:
        self.ranges = ranges
        self.instants = instants
        self.range_queries: list[tuple[str, Window]] = []
        self.instant_queries: list[tuple[str, float | None]] = []

    def query_range_each(self, queries: Mapping[K, str],
                         window: Window) -> Iterator[tuple[K, RangeResult]]:
        for key, promql in queries.items():
            self.range_queries.append((promql, window))
            yield key, RangeResult(series=self.ranges(promql))

    def query_many(self, queries: Mapping[K, str], *,
                   at: float | None = None) -> dict[K, QueryResult]:
        answers = {}
        for key, promql in queries.items():
            self.instant_queries.append((promql, at))
            answers[key] = QueryResult("vector", self.instants(promql))
        return answers


def query(*fields: str, group_by: str = "gpu", agg: str = "avg", count: int = 4,
          ) -> HistoryQuery:
    return HistoryQuery(start=T0, end=T0 + (count - 1) * STEP, step=STEP, fields=fields,
                        group_by=group_by, agg=agg)


def legacy(node: str, index: int, name: str = "Tesla T4") -> dict[str, str]:
    return {"hostname": node, "gpu_id": str(index), "gpu_name": name}


def by_metric(answers: dict[str, Matrix]) -> Callable[[str], Matrix]:
    """Answer a query with the series of the one metric in `answers` it names."""
    def answer(promql: str) -> Matrix:
        named = [m for m in answers if f"({m})" in promql or f"({m}{{" in promql]
        assert len(named) == 1, (named, promql)
        return answers[named[0]]
    return answer


def history(client: StubClient, dialects: list, q: HistoryQuery, **kwargs: Any) -> Any:
    prom: PrometheusClient = client  # type: ignore[assignment]
    return gpu_history(prom, dialects, q, **kwargs)


def test_gpu_series_share_the_timestamps_with_nulls_where_no_sample() -> None:
    client = StubClient(by_metric({
        "nvidia_gpu_temperature_celsius": [
            {"metric": legacy("b", 0), "values": points(40, None, 42, 43)},
            {"metric": legacy("a", 10), "values": points(None, 51.5, None, None)},
            {"metric": legacy("a", 2), "values": points(60, 61, 62, 63)},
        ],
        "nvidia_gpu_utilization_percent": [
            {"metric": legacy("a", 2), "values": points(100 / 3, None, 7.00000000001, 0)},
        ],
        "nvidia_gpu_used_memory_bytes": [
            {"metric": legacy("a", 2), "values": points(1073741824, 1.0e9 + 0.4, None, None)},
        ],
    }))
    found = history(client, [LEGACY], query("temperature", "utilization", "memory_used"),
                    series_hint=3)
    keys = [(s.key["node_name"], s.key["gpu_index"]) for s in found.series]
    assert keys == [("a", 2), ("a", 10), ("b", 0)]  # numeric index order
    assert found.series[0].key == {"node_name": "a", "gpu_index": 2, "uuid": None,
                                   "mig_instance": None, "gpu_name": "Tesla T4"}
    a2, a10, b0 = (s.values for s in found.series)
    assert a2 == {"temperature": [60, 61, 62, 63],
                  "utilization": [33.333, None, 7.0, 0.0],
                  "memory_used": [1073741824, 1000000000, None, None]}
    assert a10 == {"temperature": [None, 51.5, None, None],
                   "utilization": [None] * 4, "memory_used": [None] * 4}
    assert b0["temperature"] == [40, None, 42, 43]
    ((_, window), *_) = client.range_queries
    assert (window.start, window.end, window.step) == (T0, T0 + 45, STEP)
    assert client.instant_queries == []  # the hint said 3 GPUs fit: no count query


def test_a_gpu_two_exporters_report_takes_the_first_ones_values_where_it_has_them() -> None:
    client = StubClient(by_metric({
        "nvidia_gpu_temperature_celsius": [
            {"metric": legacy("a", 0), "values": points(40, 41, None, None)},
            {"metric": legacy("a", 5), "values": points(1, None, None, None)},
        ],
        "gpu_metrics_temperature": [
            {"metric": legacy("a", 0), "values": points(90, 91, 92, 93)},
            {"metric": legacy("a", 1), "values": points(70, None, 72, None)},
            # The same GPU named otherwise: its own line, where the first says nothing.
            {"metric": legacy("a", 5, "T4"), "values": points(80, 81, 82, None)},
        ],
    }))
    found = history(client, [LEGACY, GPU_METRICS], query("temperature"), series_hint=4)
    lines = {(s.key["gpu_index"], s.key["gpu_name"]): s.values["temperature"]
             for s in found.series}
    assert lines == {(0, "Tesla T4"): [40, 41, 92, 93], (1, "Tesla T4"): [70, None, 72, None],
                     (5, "Tesla T4"): [1, None, None, None], (5, "T4"): [None, 81, 82, None]}


def test_groups_of_several_dialects_combine_sums_counts_maxima() -> None:
    def halves(node: str, total: list[float | None], count: list[float | None]) -> Matrix:
        # Grouped by the exporters' own node labels: the first one set names the node.
        return [{"metric": {"hostname": node, "part": "sum"}, "values": points(*total)},
                {"metric": {"hostname": node, "part": "count"}, "values": points(*count)}]

    answers = {
        "nvidia_gpu_temperature_celsius": halves("a", [100, 90, None, 30], [2, 2, None, 1]),
        "gpu_metrics_temperature": halves("a", [50, None, 70, 30], [1, None, 1, 1])
        + halves("b", [10, 11, 12, 13], [1, 1, 1, 1]),
    }
    client = StubClient(by_metric(answers))
    found = history(client, [LEGACY, GPU_METRICS],
                    query("temperature", group_by="node"), series_hint=4)
    assert [(s.key, s.values["temperature"]) for s in found.series] == [
        ({"node_name": "a"}, [50, 45, 70, 30]),  # (100 + 50) / 3, 90 / 2, 70 / 1, 60 / 2
        ({"node_name": "b"}, [10, 11, 12, 13]),
    ]
    # The second dialect leaves out the GPUs the first lists, by node and index.
    later = [q for q, _ in client.range_queries if "gpu_metrics_temperature" in q]
    assert later and "unless on (node_name, gpu_index)" in later[0]

    maxima = StubClient(by_metric({
        "nvidia_gpu_temperature_celsius": [
            {"metric": {"node": "a"}, "values": points(40, None, 60, 1)}],
        "gpu_metrics_temperature": [
            {"metric": {"hostname": "a"}, "values": points(50, 45, 30, None)}],
    }))
    found = history(maxima, [LEGACY, GPU_METRICS],
                    query("temperature", group_by="node", agg="max"), series_hint=4)
    assert found.series[0].values["temperature"] == [50, 45, 60, 1]


def test_a_single_dialect_averages_in_prometheus_and_bytes_stay_fractional() -> None:
    client = StubClient(by_metric({
        "nvidia_gpu_used_memory_bytes": [
            {"metric": {"gpu_name": "Tesla T4"}, "values": points(1.5, 2.0, None, 3.25)}],
    }))
    found = history(client, [LEGACY], query("memory_used", group_by="gpu_name"),
                    series_hint=1)
    (promql, _), = client.range_queries
    assert promql.startswith("avg by (gpu_name) (")
    assert found.series[0].values["memory_used"] == [1.5, 2, None, 3.25]


def test_the_cluster_is_one_series_even_when_nothing_reports() -> None:
    found = history(StubClient(lambda q: []), [LEGACY],
                    query("temperature", group_by="cluster", agg="sum"), max_values=4)
    assert [(s.key, s.values) for s in found.series] == [({}, {"temperature": [None] * 4})]


def test_too_many_values_are_refused_before_any_range_query() -> None:
    # 500 GPUs x 2 fields x 4 timestamps = 4,000 values > 1,000.
    client = StubClient(lambda q: [], instants=lambda q: [{"metric": {}, "value": [T0, "500"]}])
    with pytest.raises(HistoryTooLargeError) as raised:
        history(client, [LEGACY], query("temperature", "utilization"), max_values=1000,
                series_hint=None)
    message = str(raised.value)
    assert "4,000 values (500 series x 2 fields x 4 points)" in message
    assert "HISTORY_MAX_VALUES" in message and "filters" in message
    assert "group_by=node" in message and "coarser step" in message
    assert client.range_queries == []
    ((count, at),) = client.instant_queries
    assert count.startswith("count(") and at == T0 + 45  # counted at the window's end


def test_an_answer_larger_than_estimated_is_refused_too() -> None:
    many = [{"metric": legacy("a", i), "values": points(1, 2, 3, 4)} for i in range(30)]
    client = StubClient(by_metric({"nvidia_gpu_temperature_celsius": many}))
    with pytest.raises(HistoryTooLargeError, match="30 series"):
        history(client, [LEGACY], query("temperature"), max_values=100, series_hint=2)


def test_a_coarser_step_that_fits_is_suggested() -> None:
    client = StubClient(lambda q: [], instants=lambda q: [{"metric": {}, "value": [T0, "10"]}])
    wide = HistoryQuery(start=T0 - 86400, end=T0, step=15, fields=("temperature",))
    with pytest.raises(HistoryTooLargeError, match=r"step=300 fits"):
        # 10 x 5,761 > 5,000; at 5 m, 10 x 289 fits.
        history(client, [LEGACY], wide, max_values=5000)
