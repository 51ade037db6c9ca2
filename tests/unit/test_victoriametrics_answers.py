"""VictoriaMetrics' answers where they differ from Prometheus', mapped to the same errors.

The 422 and the 400 are what VictoriaMetrics 1.79 (the Debian package) answered to these
requests, copied by hand; the two 503 bodies are written for these tests in the same shape.
Its errorType is the HTTP status, and a path it does not serve is a plain-text 400 where
Prometheus says 404.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import responses

from app.prometheus.client import ClientSettings, PrometheusClient
from app.prometheus.errors import (
    PrometheusBadResponseError,
    PrometheusQueryError,
    PrometheusTimeoutError,
    PrometheusUnavailableError,
)

BASE = "http://vm.test:8428/prometheus"
PARSE_ERROR = {"status": "error", "errorType": "422", "error": (
    'error when executing query="foo{" for (time=1796424883985, step=300000): '
    'labelFilterExpr: unexpected token ""; want "ident"; unparsed data: ""')}
TOO_MANY = {"status": "error", "errorType": "503", "error": (
    "couldn't start executing the request in 30.000 seconds, since -search.maxConcurrentRequests"
    "=8 concurrent requests are executed. Possible solutions: to reduce query load; to add more "
    "compute resources to the server; to increase -search.maxConcurrentRequests")}
DEADLINE = {"status": "error", "errorType": "503", "error": (
    "cannot execute query: the query exceeded -search.maxQueryDuration=30s; "
    "timeout exceeded during query processing")}
UNSUPPORTED = ('remoteAddr: "127.0.0.1:58514"; requestURI: /api/v1/query; '
               'unsupported path requested: "/api/v1/query"\n')


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as stub:
        yield stub


@pytest.fixture
def client() -> Iterator[PrometheusClient]:
    prom = PrometheusClient(ClientSettings(base_url=BASE, timeout=2, deadline=3, retries=0))
    yield prom
    prom.close()


def answer(mock: responses.RequestsMock, status: int, body: str,
           content_type: str = "application/json") -> None:
    mock.add(responses.GET, f"{BASE}/api/v1/query", body=body, status=status,
             content_type=content_type)


def test_a_query_it_cannot_parse_is_a_query_error_quoting_its_reason(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    answer(mock, 422, json.dumps(PARSE_ERROR))
    with pytest.raises(PrometheusQueryError) as raised:
        client.query("foo{")
    assert raised.value.error_type == "422"
    assert "rejected the query (422): error when executing query=" in str(raised.value)


def test_too_many_concurrent_queries_is_unavailable(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    answer(mock, 503, json.dumps(TOO_MANY))
    with pytest.raises(PrometheusUnavailableError, match="maxConcurrentRequests"):
        client.query("up")


def test_a_query_past_its_deadline_is_a_timeout(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    answer(mock, 503, json.dumps(DEADLINE))
    with pytest.raises(PrometheusTimeoutError, match="maxQueryDuration"):
        client.query("up")


def test_a_path_it_does_not_serve_says_to_check_the_prefix(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    answer(mock, 400, UNSUPPORTED, content_type="text/plain")
    with pytest.raises(PrometheusBadResponseError) as raised:
        client.query("up")
    assert "answered HTTP 400 for /prometheus/api/v1/query" in str(raised.value)
    assert "/select/0/prometheus" in str(raised.value)


def test_an_instant_answer_with_whole_second_timestamps_parses(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "DCGM_FI_DEV_FB_USED"}, "value": [1796424811, "4"]}]}}
    answer(mock, 200, json.dumps(body))
    result = client.query('count by (__name__) ({__name__=~"DCGM_FI_DEV_FB_USED"})')
    assert result.series == body["data"]["result"]
