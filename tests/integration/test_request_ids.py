"""X-Request-ID over real HTTP: returned to the client and sent on to Prometheus."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import ApiServer
from tests.integration.upstreams import MisbehavingPrometheus

pytestmark = pytest.mark.integration


def data_ids(upstream: MisbehavingPrometheus) -> set[str | None]:
    return {query.request_id for query in upstream.seen("data")}


def test_each_query_carries_the_id_of_the_request_it_serves(
        api_server: Callable[..., ApiServer]) -> None:
    with MisbehavingPrometheus() as upstream:
        api = api_server(PROMETHEUS_URL=upstream.url, METRICS_DIALECT="legacy", CACHE_TTL="0")
        response = api.get("/api/v1/gpu/metrics", headers={"X-Request-ID": "req-a"})
        assert response.status_code == 200 and response.headers["X-Request-ID"] == "req-a"
        assert data_ids(upstream) == {"req-a"}
        probe = api.get("/api/healthz", headers={"X-Request-ID": "req-b"})
        assert probe.headers["X-Request-ID"] == "req-b"
        assert [q.request_id for q in upstream.seen("probe")] == ["req-b"]


def test_a_background_refresh_carries_the_id_of_the_request_that_found_it_stale(
        api_server: Callable[..., ApiServer]) -> None:
    with MisbehavingPrometheus() as upstream:
        api = api_server(PROMETHEUS_URL=upstream.url, METRICS_DIALECT="legacy",
                         CACHE_TTL="1", CACHE_STALE_SECONDS="30")
        assert api.get("/api/v1/gpu/metrics", headers={"X-Request-ID": "first"}).ok
        deadline = time.monotonic() + 10
        # Poll until the answer is past its TTL: then it is served stale and refreshed.
        while "late" not in data_ids(upstream):
            stale = api.get("/api/v1/gpu/metrics", headers={"X-Request-ID": "late"})
            assert stale.status_code == 200 and stale.headers["X-Request-ID"] == "late"
            assert time.monotonic() < deadline, data_ids(upstream)
            time.sleep(0.1)
        assert data_ids(upstream) == {"first", "late"}
