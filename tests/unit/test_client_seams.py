"""The Prometheus client's public seams for benchmarks: raw bodies, and the answer check."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
import responses

from app.prometheus.client import ClientSettings, PrometheusClient
from app.prometheus.errors import PrometheusBadResponseError, PrometheusUnavailableError
from tests.factories import api_body, series

BASE = "http://prometheus.test:9090"
QUERY_URL = f"{BASE}/api/v1/query"


@pytest.fixture
def client() -> Iterator[PrometheusClient]:
    prom = PrometheusClient(ClientSettings(base_url=BASE, retries=0, timeout=2, deadline=3))
    yield prom
    prom.close()


def test_query_raw_returns_the_body_as_sent_and_the_query_the_client_would_send(
        client: PrometheusClient) -> None:
    body = json.dumps(api_body(series({"gpu": "0"}, 7))).encode()
    with responses.RequestsMock() as mock:
        mock.get(QUERY_URL, body=body)
        assert client.query_raw("up") == body
        (call,) = mock.calls
    sent = requests.utils.urlparse(call.request.url).query
    assert "query=up" in sent and "timeout=" in sent  # Prometheus is told when to give up


def test_query_many_raw_answers_every_key_in_parallel(client: PrometheusClient) -> None:
    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        query = requests.utils.urlparse(request.url).query
        return 200, {}, f"body of {query.split('&')[0]}"

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, QUERY_URL, callback=answer)
        bodies = client.query_many_raw({"a": "up", "b": "down", "c": "left"})
    assert bodies == {"a": b"body of query=up", "b": b"body of query=down",
                      "c": b"body of query=left"}


def test_query_raw_maps_transport_failures_like_query(client: PrometheusClient) -> None:
    with responses.RequestsMock() as mock:
        mock.get(QUERY_URL, body=requests.ConnectionError("Connection refused"))
        with pytest.raises(PrometheusUnavailableError, match="connection refused"):
            client.query_raw("up")


def test_parse_result_checks_an_answer_as_query_does(client: PrometheusClient) -> None:
    result = client.parse_result(api_body(series({"gpu": "0"}, 7)))
    assert result.result_type == "vector" and len(result.series) == 1
    with pytest.raises(PrometheusBadResponseError, match="malformed result"):
        client.parse_result({"status": "success",
                             "data": {"resultType": "vector", "result": [{"value": 1}]}})
