"""GET /api/v1/gpu/history and /metrics?time= through the test client, Prometheus stubbed.

The stub answers each range query with the series the test wrote for the metric the query
names (tests/range_prometheus.py); what the PromQL means is tested against Prometheus'
engine elsewhere (test_history_promql.py, the integration tests).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.factories import SAMPLE_TIME
from tests.fakes import FakePrometheus
from tests.range_prometheus import Matrix, RangePrometheus, range_series, request_params

HISTORY = "/api/v1/gpu/history"
METRICS = "/api/v1/gpu/metrics"
STEP = 15
# An hour ago, on a multiple of every step up to an hour.
T0 = float(math.floor(time.time() / 3600) * 3600 - 3600)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEGACY_METRICS = {"temperature": "nvidia_gpu_temperature_celsius",
                  "utilization": "nvidia_gpu_utilization_percent",
                  "memory_used": "nvidia_gpu_used_memory_bytes"}


def gpu(node: str, index: int) -> dict[str, str]:
    return {"hostname": node, "gpu_id": str(index), "gpu_name": "Tesla T4"}


def at(*values: float | None) -> list[tuple[float, float]]:
    """Samples at T0, T0 + 15 s, ...; None: no sample there."""
    return [(T0 + i * STEP, v) for i, v in enumerate(values) if v is not None]


@pytest.fixture
def ranges(fake_prometheus: FakePrometheus) -> RangePrometheus:
    """Range queries answered per metric; the legacy exporter's GPUs for detection."""
    for index in (0, 1):
        for metric in LEGACY_METRICS.values():
            fake_prometheus.add(metric, gpu("node-a", index), 1)
    return RangePrometheus(fake_prometheus)


def answer_by_metric(ranges: RangePrometheus, matrices: dict[str, Matrix]) -> None:
    def answer(query: str) -> Matrix:
        named = [m for m in matrices if m in query]
        assert len(named) == 1, (named, query)
        return matrices[named[0]]
    ranges.answer = answer


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"success", "data", "message", "error"} and body["success"] is True
    assert body["message"] == "GPU history retrieved successfully"
    return dict(body["data"])


def bad(response: Any) -> str:
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False and body["data"] is None and body["message"] is None
    return str(body["error"])


def unix(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text).timestamp()


def test_history_is_one_timestamps_array_and_aligned_values_with_nulls(
        client: FlaskClient, ranges: RangePrometheus) -> None:
    answer_by_metric(ranges, {
        "nvidia_gpu_temperature_celsius": [
            range_series(gpu("node-a", 1), at(50, None, 52, 53)),
            range_series(gpu("node-a", 0), at(None, 41, 42, None)),
        ],
        "nvidia_gpu_utilization_percent": [range_series(gpu("node-a", 0), at(12.34567))],
    })
    data = ok(client.get(HISTORY, query_string={
        "start": T0 + 3, "end": T0 + 3 * STEP + 14, "step": STEP,
        "fields": ["temperature", "utilization"]}))
    assert set(data) == {"start", "end", "step", "timestamps", "group_by", "agg", "fields",
                         "series"}
    assert (unix(data["start"]), unix(data["end"]), data["step"]) == (T0, T0 + 45, 15)
    assert [unix(t) for t in data["timestamps"]] == [T0, T0 + 15, T0 + 30, T0 + 45]
    assert all(RFC3339.match(t) for t in data["timestamps"])
    assert (data["group_by"], data["agg"], data["fields"]) == (
        "gpu", "avg", ["temperature", "utilization"])
    assert data["series"] == [
        {"key": {"node_name": "node-a", "gpu_index": 0, "uuid": None, "mig_instance": None,
                 "gpu_name": "Tesla T4"},
         "values": {"temperature": [None, 41, 42, None],
                    "utilization": [12.346, None, None, None]}},
        {"key": {"node_name": "node-a", "gpu_index": 1, "uuid": None, "mig_instance": None,
                 "gpu_name": "Tesla T4"},
         "values": {"temperature": [50, None, 52, 53], "utilization": [None] * 4}},
    ]
    # One range query per field, over the aligned window.
    assert sorted((c.start, c.end, c.step) for c in ranges.calls) == [(T0, T0 + 45, 15)] * 2
    assert {next(m for m in LEGACY_METRICS.values() if m in c.query) for c in ranges.calls} == {
        "nvidia_gpu_temperature_celsius", "nvidia_gpu_utilization_percent"}


def test_defaults_are_the_last_hour_of_the_usual_fields_per_gpu(
        client: FlaskClient, ranges: RangePrometheus) -> None:
    data = ok(client.get(HISTORY))
    assert data["fields"] == ["utilization", "memory_used", "memory_utilization",
                              "temperature", "power_usage"]
    assert (data["step"], len(data["timestamps"]), data["group_by"], data["agg"]) == (
        30, 121, "gpu", "avg")
    assert unix(data["end"]) - unix(data["start"]) == 3600
    assert unix(data["end"]) % 30 == 0 and time.time() - 30 <= unix(data["end"]) <= time.time()
    assert data["series"] == []
    # Only utilization, memory used and temperature exist here: memory utilization needs
    # a total, and legacy has no power metric. Those fields are not asked for.
    assert len(ranges.calls) == 3 and all(c.step == 30 for c in ranges.calls)


def test_range_ending_at_end_and_a_duration_step(client: FlaskClient,
                                                 ranges: RangePrometheus) -> None:
    data = ok(client.get(HISTORY, query_string={"range": "6h", "end": T0, "step": "5m",
                                                "fields": "temperature"}))
    assert (unix(data["start"]), unix(data["end"]), data["step"]) == (T0 - 6 * 3600, T0, 300)
    assert len(data["timestamps"]) == 73


def test_groups_of_two_exporters_are_one_series_per_group(
        make_app: Callable[..., Flask], fake_prometheus: FakePrometheus) -> None:
    for metric in ("nvidia_gpu_temperature_celsius", "nvidia_gpu_used_memory_bytes"):
        fake_prometheus.add(metric, gpu("node-a", 0), 1)
    fake_prometheus.add("gpu_metrics_temperature", gpu("node-b", 0), 1)
    fake_prometheus.add("gpu_metrics_used_memory", gpu("node-b", 0), 1)
    ranges = RangePrometheus(fake_prometheus)

    def halves(node: str, total: list[float | None], count: list[float | None]) -> Matrix:
        return [range_series({"hostname": node, "part": "sum"}, at(*total)),
                range_series({"hostname": node, "part": "count"}, at(*count))]

    answer_by_metric(ranges, {
        "nvidia_gpu_temperature_celsius": halves("node-a", [80, None], [2, None]),
        "gpu_metrics_temperature": halves("node-a", [70, 60], [1, 1])
        + halves("node-b", [30, 31], [1, 1]),
    })
    data = ok(make_app().test_client().get(HISTORY, query_string={
        "start": T0, "end": T0 + STEP, "step": STEP, "fields": "temperature",
        "group_by": "node"}))
    assert data["series"] == [
        {"key": {"node_name": "node-a"}, "values": {"temperature": [50, 60]}},
        {"key": {"node_name": "node-b"}, "values": {"temperature": [30, 31]}},
    ]
    assert len(ranges.calls) == 2  # one per dialect and field


BAD_REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "start after end": ({"start": T0, "end": T0 - 60}, "start"),
    "end in the future": ({"end": time.time() + 3600}, "end: "),
    "start and range": ({"start": T0 - 60, "range": "1h"}, "range"),
    "step 0": ({"step": "0"}, "step"),
    "step negative": ({"step": "-15"}, "step"),
    "step in words": ({"step": "often"}, "step"),
    "11,001 timestamps": ({"start": T0 - 11000 * 15, "end": T0, "step": 15}, "11001"),
    "points 0": ({"points": 0}, "points"),
    "points over 11000": ({"points": 11001}, "points"),
    "unknown field": ({"fields": "bogus"}, "'bogus'"),
    "non-numeric field": ({"fields": ["temperature", "pods"]}, "'pods'"),
    "unknown group": ({"group_by": "pod"}, "group_by"),
    "unknown aggregate": ({"agg": "median"}, "agg"),
    "start in words": ({"start": "yesterday"}, "start"),
    "a date without a zone": ({"start": "2025-11-30T00:00:00"}, "start"),
    "range in words": ({"range": "5x"}, "range"),
    "unknown parameter": ({"resolution": "1m"}, "resolution"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_history_requests_are_400_before_any_query(
        client: FlaskClient, ranges: RangePrometheus, case: str) -> None:
    params, word = BAD_REQUESTS[case]
    error = bad(client.get(HISTORY, query_string=params))
    assert error.startswith("invalid query parameters: ") and word in error, error
    assert ranges.calls == [] and ranges.fake.data_queries() == []


def test_history_queries_have_the_history_budget_and_lists_keep_theirs(
        make_app: Callable[..., Flask], ranges: RangePrometheus) -> None:
    ranges.answer = lambda query: [range_series(gpu("node-a", 0), at(1, 2))]
    client = make_app(PROMETHEUS_TIMEOUT="4", REQUEST_DEADLINE="8",
                      HISTORY_DEADLINE="45").test_client()
    ok(client.get(HISTORY, query_string={"start": T0, "end": T0 + STEP, "step": STEP,
                                         "fields": "temperature"}))
    assert client.get(METRICS).status_code == 200

    def timeouts(path: str) -> set[str]:
        return {request_params(call.request)["timeout"] for call in ranges.fake.mock.calls
                if (call.request.url or "").split("?")[0].endswith(path)}

    # Prometheus is asked to give up half a second before we stop waiting.
    assert timeouts("/api/v1/query_range") == {"44.500"}
    assert timeouts("/api/v1/query") == {"3.500"}


def test_an_answer_over_the_limit_is_a_400_saying_how_to_narrow_it(
        make_app: Callable[..., Flask], ranges: RangePrometheus) -> None:
    ranges.answer = lambda query: [range_series(gpu("node-a", i), at(1, 2))
                                   for i in range(3)]
    client = make_app(HISTORY_MAX_VALUES="5").test_client()
    error = bad(client.get(HISTORY, query_string={"start": T0, "end": T0 + STEP,
                                                  "step": STEP, "fields": "temperature"}))
    assert "6 values (3 series x 1 fields x 2 points)" in error
    assert "over the limit of 5 (HISTORY_MAX_VALUES)" in error
    assert "filters" in error and "group_by=" in error and "step" in error
    # One cluster series fits.
    data = ok(client.get(HISTORY, query_string={"start": T0, "end": T0 + STEP, "step": STEP,
                                                "fields": "temperature",
                                                "group_by": "cluster"}))
    assert len(data["series"]) == 1


def test_one_aligned_window_is_one_cached_answer_with_its_etag(
        client: FlaskClient, ranges: RangePrometheus) -> None:
    answer_by_metric(ranges, {"nvidia_gpu_temperature_celsius": [
        range_series(gpu("node-a", 0), at(40, 41))]})
    params = {"start": T0 + 4, "end": T0 + STEP + 9, "step": STEP, "fields": "temperature"}
    first = client.get(HISTORY, query_string=params)
    ok(first)
    aligned = first.get_json()["data"]
    second = client.get(HISTORY, query_string={**params, "start": aligned["start"],
                                               "end": aligned["end"]})
    assert second.get_data() == first.get_data() and second.headers["ETag"] == first.headers[
        "ETag"]
    assert len(ranges.calls) == 1  # the second was the first's answer
    again = client.get(HISTORY, query_string=params,
                       headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_prometheus_refusing_a_range_query_is_a_502_envelope(
        client: FlaskClient, ranges: RangePrometheus) -> None:
    ranges.failure = (422, {"status": "error", "errorType": "execution",
                            "error": "query processing would load too many samples"})
    response = client.get(HISTORY, query_string={"fields": "temperature"})
    assert response.status_code == 502
    assert "too many samples" in response.get_json()["error"]


# -- /metrics?time= ---------------------------------------------------------------------


def test_metrics_at_a_time_evaluate_every_query_there(client: FlaskClient,
                                                      ranges: RangePrometheus) -> None:
    body = client.get(METRICS, query_string={"time": "2025-11-30T00:00:00.123Z"}).get_json()
    assert body["success"] is True and len(body["data"]) == 2
    # The rows carry the sample times Prometheus answered with.
    assert {row["timestamp"] for row in body["data"]} == {"2025-11-30T00:00:00.123Z"}
    data_times = [t for t, q in zip(ranges.instant_times(), ranges.fake.queries, strict=True)
                  if q in ranges.fake.data_queries()]
    assert data_times and set(data_times) == {f"{SAMPLE_TIME:.3f}"}
    asked = len(ranges.fake.data_queries())
    # The same instant in Unix seconds is the same question: answered from the cache.
    client.get(METRICS, query_string={"time": str(SAMPLE_TIME)})
    assert len(ranges.fake.data_queries()) == asked
    # Another instant, or now, is another question.
    client.get(METRICS, query_string={"time": str(SAMPLE_TIME - 60)})
    client.get(METRICS)
    assert len(ranges.fake.data_queries()) == 3 * asked
    assert ranges.instant_times()[-1] is None


@pytest.mark.parametrize(("value", "words"), [
    ("noon", "time: must be an RFC 3339 time"),
    ("2025-11-30", "time: must be an RFC 3339 time"),
    (str(time.time() + 600), "time: is in the future"),
])
def test_a_bad_or_future_time_is_a_400(client: FlaskClient, ranges: RangePrometheus,
                                       value: str, words: str) -> None:
    assert words in bad(client.get(METRICS, query_string={"time": value}))
