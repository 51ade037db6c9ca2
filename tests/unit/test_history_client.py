"""The client's range queries and evaluation instants, against a stubbed server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from app.prometheus.client import MAX_GET_QUERY_CHARS, ClientSettings, PrometheusClient, Window
from app.prometheus.errors import (
    PrometheusBadResponseError,
    PrometheusQueryError,
    PrometheusTimeoutError,
)

BASE = "http://prometheus.test:9090"
RANGE_URL = f"{BASE}/api/v1/query_range"
QUERY_URL = f"{BASE}/api/v1/query"
WINDOW = Window(start=1_764_460_800.0, end=1_764_464_400.0, step=30.0)
MATRIX = {"status": "success", "data": {"resultType": "matrix", "result": [
    {"metric": {"gpu": "0"}, "values": [[1_764_460_800, "1"], [1_764_460_830, "2"]]}]}}


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stub:
        yield stub


@pytest.fixture
def client() -> Iterator[PrometheusClient]:
    made = PrometheusClient(ClientSettings(base_url=BASE, timeout=2.0, deadline=3.0, retries=0))
    yield made
    made.close()


def sent(request: requests.PreparedRequest) -> dict[str, str]:
    params = parse_qs(urlsplit(request.url or "").query)
    if request.body:
        body = request.body if isinstance(request.body, str) else request.body.decode()
        params.update(parse_qs(body))
    return {key: values[0] for key, values in params.items()}


def test_query_range_sends_the_window_and_reads_the_matrix(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    mock.get(RANGE_URL, json=MATRIX)
    answer = client.query_range("max(gpu_util)", WINDOW)
    assert answer.series == MATRIX["data"]["result"]  # type: ignore[index]
    params = sent(mock.calls[0].request)
    assert params["query"] == "max(gpu_util)"
    assert (params["start"], params["end"], params["step"]) == (
        "1764460800.000", "1764464400.000", "30.000")
    # Prometheus is asked to give up before our read timeout, so it says why.
    assert float(params["timeout"]) < 2.0


def test_a_long_range_query_is_posted_as_a_form(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    mock.post(RANGE_URL, json=MATRIX)
    long_query = "sum(" + " or ".join(f'gpu_util{{gpu="{i}"}}' for i in range(400)) + ")"
    assert len(long_query) > MAX_GET_QUERY_CHARS
    client.query_range(long_query, WINDOW)
    request = mock.calls[0].request
    assert request.method == "POST" and sent(request)["query"] == long_query
    assert urlsplit(request.url or "").query == ""


@pytest.mark.parametrize("body", [
    {"status": "success", "data": {"resultType": "vector", "result": []}},
    {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}}]}},
    {"status": "success", "data": {"resultType": "matrix",
                                   "result": [{"metric": {}, "values": [["x", "1"]]}]}},
    {"status": "success"},
])
def test_a_malformed_matrix_is_a_bad_response(mock: responses.RequestsMock,
                                              client: PrometheusClient,
                                              body: dict[str, Any]) -> None:
    mock.get(RANGE_URL, json=body)
    with pytest.raises(PrometheusBadResponseError, match="range query"
                       if "data" in body else "without data"):
        client.query_range("up", WINDOW)


def test_a_refused_range_query_keeps_prometheus_words(mock: responses.RequestsMock,
                                                      client: PrometheusClient) -> None:
    mock.get(RANGE_URL, status=400, json={
        "status": "error", "errorType": "bad_data",
        "error": "exceeded maximum resolution of 11,000 points per timeseries"})
    with pytest.raises(PrometheusQueryError, match="11,000 points"):
        client.query_range("up", WINDOW)


def test_range_queries_that_time_out_are_a_timeout(
        mock: responses.RequestsMock) -> None:
    slow = PrometheusClient(ClientSettings(base_url=BASE, timeout=0.5, deadline=0.5,
                                           retries=0))
    mock.get(RANGE_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    try:
        with pytest.raises(PrometheusTimeoutError):
            dict(slow.query_range_each({"a": "up", "b": "vector(1)"}, WINDOW))
    finally:
        slow.close()


def test_instant_queries_are_evaluated_at_the_time_asked(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1_764_460_800.5, "1"]}]}}
    mock.get(QUERY_URL, body=json.dumps(body))
    answers = client.query_many({"a": "up", "b": "vector(1)"}, at=1_764_460_800.5)
    assert set(answers) == {"a", "b"}
    assert [sent(c.request)["time"] for c in mock.calls] == ["1764460800.500"] * 2
    client.query("up")
    assert "time" not in sent(mock.calls[-1].request)  # now, as before
