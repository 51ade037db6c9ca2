"""Prometheus misbehaving in every way we know of: the app answers honestly and leaks nothing.

Each test runs the real app over HTTP against `MisbehavingPrometheus` on loopback, which
answers dialect detection truthfully (legacy metrics) and then misbehaves on the data queries
and the health probe.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psutil
import pytest
import requests

from tests.integration.conftest import ApiServer
from tests.integration.upstreams import (
    LEGACY_GPU_METRICS,
    LEGACY_LABELS,
    MisbehavingPrometheus,
    RefusingPort,
    Reply,
    ReplySource,
    hang,
    healthy_gpu_reply,
    html_error,
    invalid_json,
    oversized,
    prometheus_error,
    prometheus_json,
    slow,
    truncated_body,
    truncated_json,
    vector,
)

pytestmark = pytest.mark.integration

# Tight budgets keep the suite fast; one retry exercises urllib3's retry path too.
FAST_ENV = {
    "PROMETHEUS_TIMEOUT": "1",
    "REQUEST_DEADLINE": "2",
    "PROMETHEUS_RETRIES": "1",
    "CACHE_TTL": "0",
    "METRICS_DIALECT": "legacy",
    "QUERY_THREADS": "4",
}
ENVELOPE_KEYS = {"success", "data", "message", "error"}
HEALTHY_GPU = {"node_name": "n", "gpu_index": 0, "gpu_name": "x", "utilization": 42.0,
               "temperature": 55.0, "memory_used": 1 << 30, "memory_total": 4 << 30,
               "memory_free": 3 << 30, "memory_utilization": 25.0}


@pytest.fixture
def upstream() -> Iterator[MisbehavingPrometheus]:
    """A fake Prometheus that behaves until the test sets a fault."""
    with MisbehavingPrometheus() as server:
        yield server


@pytest.fixture(scope="module")
def one_app() -> Iterator[tuple[MisbehavingPrometheus, ApiServer]]:
    """One app and one fake Prometheus that live through every fault in turn."""
    with MisbehavingPrometheus() as server:
        api = ApiServer({"PROMETHEUS_URL": server.url, **FAST_ENV})
        try:
            yield server, api
        finally:
            api.close()


@pytest.fixture
def long_lived(one_app: tuple[MisbehavingPrometheus, ApiServer]
               ) -> Iterator[tuple[MisbehavingPrometheus, ApiServer]]:
    """The module's app, its Prometheus behaving at the start and end of the test."""
    upstream, _ = one_app
    upstream.fault, upstream.fault_on = None, frozenset({"data", "probe"})
    yield one_app
    upstream.fault = None


def assert_failure_envelope(response: requests.Response, status: int, prometheus_url: str,
                            *fragments: str) -> str:
    """The envelope of an upstream failure: status, no data, an actionable error."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["success"] is False and body["data"] is None and body["message"] is None
    error = body["error"]
    assert isinstance(error, str)
    assert f"Prometheus at {prometheus_url}" in error, error
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    assert not re.search(r"<\s*/?\s*(html|head|body|title|center|h1|hr)\b", error, re.I), error
    assert "Traceback" not in error and 'File "' not in error, error
    assert "requests.exceptions" not in error and "urllib3" not in error, error
    return error


def gpu_view(gpu: dict[str, object]) -> dict[str, object]:
    """The fields the legacy fake serves."""
    return {key: gpu[key] for key in HEALTHY_GPU}


# -- status and message of each fault ---------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A misbehaviour and the answer the app owes its caller."""

    name: str
    reply: ReplySource
    status: int
    fragments: tuple[str, ...]


FAULTS = [
    Fault("hang", hang(), 504, ("did not answer",)),
    Fault("slow-over-timeout", slow(1.6), 504, ("did not answer",)),
    Fault("html-500", html_error(500), 502, ("HTTP 500", "non-JSON body (text/html)")),
    Fault("html-502", html_error(502), 502, ("HTTP 502", "non-JSON body (text/html)")),
    Fault("html-503", html_error(503), 503, ("HTTP 503", "non-JSON body (text/html)")),
    Fault("html-504", html_error(504), 504, ("HTTP 504",)),
    Fault("error-bad_data", prometheus_error("bad_data", "parse error at char 7"), 502,
          ("rejected the query (bad_data): parse error at char 7",)),
    Fault("error-execution", prometheus_error("execution"), 502,
          ("rejected the query (execution)",)),
    Fault("error-timeout", prometheus_error("timeout", "query timed out in expression eval"),
          504, ("rejected the query (timeout): query timed out",)),
    Fault("error-canceled", prometheus_error("canceled"), 502,
          ("rejected the query (canceled)",)),
    Fault("error-internal", prometheus_error("internal"), 502,
          ("rejected the query (internal)",)),
    Fault("error-unavailable", prometheus_error("unavailable"), 503,
          ("rejected the query (unavailable)",)),
    Fault("truncated-json", truncated_json(), 502, ("HTTP 200", "non-JSON body")),
    Fault("truncated-body", truncated_body(), 502, ("broken HTTP answer",)),
    Fault("invalid-json", invalid_json(), 502, ("HTTP 200", "non-JSON body")),
    Fault("empty-body", Reply(), 502, ("an empty body",)),
    Fault("json-not-the-api", prometheus_json({"hello": "world"}), 502,
          ("without status 'success'",)),
    Fault("json-array", prometheus_json([1, 2, 3]), 502,  # type: ignore[arg-type]
          ("JSON that is not Prometheus' API",)),
    Fault("success-without-data", prometheus_json({"status": "success"}), 502,
          ("without data",)),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_gives_honest_status_and_actionable_error_then_recovers(
        fault: Fault, long_lived: tuple[MisbehavingPrometheus, ApiServer]) -> None:
    upstream, api = long_lived
    upstream.fault = fault.reply
    data_queries = len(upstream.seen("data"))

    metrics = api.get("/api/v1/gpu/metrics")
    assert_failure_envelope(metrics, fault.status, upstream.url, *fault.fragments)
    assert len(upstream.seen("data")) > data_queries, "the data queries must meet the fault"
    # Readiness is binary: whatever the trouble, "not ready" is 503, with the same reason.
    assert_failure_envelope(api.get("/api/healthz"), 503, upstream.url, *fault.fragments)
    assert api.get("/api/livez").status_code == 200

    upstream.fault = None  # Prometheus behaves again: no restart needed
    recovered = api.get("/api/v1/gpu/metrics")
    assert recovered.status_code == 200, recovered.text
    assert [gpu_view(g) for g in recovered.json()["data"]] == [HEALTHY_GPU]
    assert api.get("/api/healthz").status_code == 200


@pytest.mark.parametrize(("kind", "reply", "status", "fragment"), [
    ("detect", prometheus_error("execution", "query processing would load too many samples"),
     502, "rejected the query (execution): query processing would load too many samples"),
    ("detect", hang(), 504, "did not answer"),
    ("labels", invalid_json(), 502, "non-JSON body"),
    ("labels", prometheus_json({"status": "success", "data": {"not": "a list"}}), 502,
     "without a list of names"),
    ("names", hang(), 504, "did not answer"),
    ("names", prometheus_json({"status": "success", "data": [1, 2]}), 502,
     "without a list of values"),
], ids=["detect-execution", "detect-hang", "labels-invalid-json", "labels-not-a-list",
        "names-hang", "names-not-a-list"])
def test_fault_during_dialect_detection_is_reported_the_same_way(
        kind: str, reply: Reply, status: int, fragment: str, upstream: MisbehavingPrometheus,
        api_server: Callable[..., ApiServer]) -> None:
    upstream.fault, upstream.fault_on = reply, frozenset({kind})
    api = api_server(PROMETHEUS_URL=upstream.url, **FAST_ENV)
    assert_failure_envelope(api.get("/api/v1/gpu/metrics"), status, upstream.url, fragment)
    assert upstream.seen(kind) and not upstream.seen("data")
    upstream.fault = None  # detection is tried again on the next request
    assert [gpu_view(g) for g in api.get("/api/v1/gpu/metrics").json()["data"]] == [HEALTHY_GPU]


def test_refused_connection_gives_503_naming_the_url(
        api_server: Callable[..., ApiServer]) -> None:
    with RefusingPort() as closed:
        api = api_server(PROMETHEUS_URL=closed.url, **FAST_ENV)
        for path in ("/api/v1/gpu/metrics", "/api/healthz", "/api/v1/capabilities"):
            assert_failure_envelope(api.get(path), 503, closed.url,
                                    "is unreachable: connection refused")
        assert api.get("/api/livez").status_code == 200


def test_answer_just_under_the_timeout_is_served(
        upstream: MisbehavingPrometheus, api_server: Callable[..., ApiServer]) -> None:
    # PROMETHEUS_TIMEOUT is 1 s; enough threads that the six data queries run at once.
    api = api_server(PROMETHEUS_URL=upstream.url, **{**FAST_ENV, "QUERY_THREADS": "8"})
    upstream.fault = slow(0.7)
    started = time.monotonic()
    response = api.get("/api/v1/gpu/metrics")
    assert response.status_code == 200, response.text
    assert time.monotonic() - started >= 0.7  # it really waited for the slow answers
    assert [gpu_view(g) for g in response.json()["data"]] == [HEALTHY_GPU]
    assert api.get("/api/healthz").status_code == 200


def test_answer_with_warnings_is_served_and_the_warning_logged(
        upstream: MisbehavingPrometheus, api_server: Callable[..., ApiServer],
        capsys: pytest.CaptureFixture[str]) -> None:
    warning = "PromQL info: metric might not be a counter, name does not end in _total"
    data = healthy_gpu_reply(warnings=[warning])

    def with_warning(promql: str) -> Reply:
        if promql == "vector(1)":
            return prometheus_json({**vector([({}, "1")]), "warnings": [warning]})
        return data(promql)

    upstream.fault = with_warning
    api = api_server(PROMETHEUS_URL=upstream.url, **FAST_ENV)
    response = api.get("/api/v1/gpu/metrics")
    assert response.status_code == 200, response.text
    assert [gpu_view(g) for g in response.json()["data"]] == [HEALTHY_GPU]
    assert api.get("/api/healthz").status_code == 200
    assert warning in capsys.readouterr().out  # logged, not lost (caplog: see secured tests)


ABSURD = {  # what exporters and broken recording rules really emit
    "nvidia_gpu_utilization_percent": "NaN",
    "nvidia_gpu_used_memory_bytes": "9.2e+18",
    "nvidia_gpu_total_memory_bytes": "1e+300",
    "nvidia_gpu_free_memory_bytes": "-Inf",
    "nvidia_gpu_memory_utilization_percent": "9223372036854775807",
    "nvidia_gpu_temperature_celsius": "+Inf",
}
SANE = {"nvidia_gpu_utilization_percent": "7", "nvidia_gpu_used_memory_bytes": "100",
        "nvidia_gpu_total_memory_bytes": "400", "nvidia_gpu_free_memory_bytes": "300",
        "nvidia_gpu_memory_utilization_percent": "25", "nvidia_gpu_temperature_celsius": "-5"}


def test_nan_infinities_and_absurd_values_become_null(
        long_lived: tuple[MisbehavingPrometheus, ApiServer]) -> None:
    upstream, api = long_lived

    def answer(promql: str) -> Reply:
        metric = next(m for m in LEGACY_GPU_METRICS if re.search(rf"\b{m}\b", promql))
        return prometheus_json(vector([
            (LEGACY_LABELS, ABSURD[metric]),
            ({**LEGACY_LABELS, "gpu_id": "1"}, SANE[metric]),
        ]))

    upstream.fault = answer
    upstream.fault_on = frozenset({"data"})
    response = api.get("/api/v1/gpu/metrics")
    assert response.status_code == 200, response.text
    assert "NaN" not in response.text and "Infinity" not in response.text
    absurd, sane = response.json()["data"]
    assert gpu_view(absurd) == {"node_name": "n", "gpu_index": 0, "gpu_name": "x",
                                "utilization": None, "temperature": None, "memory_used": None,
                                "memory_total": None, "memory_free": None,
                                "memory_utilization": None}
    assert gpu_view(sane) == {"node_name": "n", "gpu_index": 1, "gpu_name": "x",
                              "utilization": 7.0, "temperature": -5.0, "memory_used": 100,
                              "memory_total": 400, "memory_free": 300,
                              "memory_utilization": 25.0}


@pytest.mark.parametrize("reply", [
    oversized(50), oversized(50, declare_length=False), oversized(50, gzip=True),
], ids=["content-length", "streamed", "gzip-small-on-the-wire"])
def test_oversized_answer_gives_502_naming_the_setting(
        reply: Reply, upstream: MisbehavingPrometheus,
        api_server: Callable[..., ApiServer]) -> None:
    upstream.fault = reply
    upstream.fault_on = frozenset({"data"})
    api = api_server(PROMETHEUS_URL=upstream.url, PROMETHEUS_MAX_RESPONSE_MB="1", **FAST_ENV)
    error = assert_failure_envelope(api.get("/api/v1/gpu/metrics"), 502, upstream.url,
                                    "PROMETHEUS_MAX_RESPONSE_MB")
    assert "more than 1 MiB" in error
    assert api.get("/api/livez").status_code == 200
    upstream.fault = None
    assert api.get("/api/v1/gpu/metrics").status_code == 200


# -- nothing grows with the number of failed requests ---------------------------------------

LEAK_REQUESTS = 30
WARM_UP_REQUESTS = 6
# Fixed costs allowed between the two measurements: lazily started pool threads (QUERY_THREADS)
# with one keep-alive connection each, on both ends of the loopback.
QUERY_THREADS = 4
FD_SLACK = 2 * QUERY_THREADS + 4
THREAD_SLACK = 2 * QUERY_THREADS + 2
LEAK_ENV = {**FAST_ENV, "QUERY_THREADS": str(QUERY_THREADS), "PROMETHEUS_MAX_RESPONSE_MB": "1"}
# Faults that cost a full timeout per request get a tighter one, to keep the suite quick.
TIGHT = {"PROMETHEUS_TIMEOUT": "0.1", "REQUEST_DEADLINE": "0.2"}
LEAK_FAULTS = [
    Fault("refused", None, 503, ()),  # type: ignore[arg-type]
    Fault("hang", hang(), 504, ()),
    Fault("slow-over-timeout", slow(0.2), 504, ()),
    Fault("html-502", html_error(502), 502, ()),
    Fault("html-503", html_error(503), 503, ()),
    Fault("error-bad_data", prometheus_error("bad_data"), 502, ()),
    Fault("error-timeout", prometheus_error("timeout"), 504, ()),
    Fault("truncated-body", truncated_body(), 502, ()),
    Fault("invalid-json", invalid_json(), 502, ()),
    Fault("oversized", oversized(50), 502, ()),
    Fault("oversized-streamed", oversized(50, declare_length=False), 502, ()),
    Fault("oversized-gzip", oversized(50, gzip=True), 502, ()),
]
LEAK_NUMBERS: dict[str, dict[str, int]] = {}


def _resources() -> tuple[int, int]:
    return psutil.Process().num_fds(), threading.active_count()


def _steady(timeout: float = 2.0) -> tuple[int, int]:
    """The counts once they stop changing (warm-up leftovers finished), or at the deadline."""
    deadline = time.monotonic() + timeout
    last = _resources()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _resources()
        if now == last:
            return now
        last = now
    return last


def _settled(before: tuple[int, int], timeout: float = 5.0) -> tuple[int, int]:
    """Poll until closing sockets and ending threads are done, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        now = _resources()
        if (now[0] <= before[0] + FD_SLACK and now[1] <= before[1] + THREAD_SLACK) or \
                time.monotonic() >= deadline:
            return now
        time.sleep(0.05)


@pytest.mark.parametrize("fault", LEAK_FAULTS, ids=[f.name for f in LEAK_FAULTS])
def test_repeated_failures_leak_no_sockets_or_threads(
        fault: Fault, api_server: Callable[..., ApiServer],
        record_property: Callable[[str, object], None]) -> None:
    # A high connection cap: leaked client sockets must show up as fds, not as refusals.
    with RefusingPort() as closed, \
            MisbehavingPrometheus(fault.reply, max_connections=512) as upstream:
        url = closed.url if fault.reply is None else upstream.url
        tight = TIGHT if fault.name in ("hang", "slow-over-timeout") else {}
        api = api_server(PROMETHEUS_URL=url, **{**LEAK_ENV, **tight})
        paths = ("/api/v1/gpu/metrics", "/api/healthz")
        statuses: dict[str, set[int]] = {path: set() for path in paths}

        for i in range(WARM_UP_REQUESTS):  # starts the lazily created pools
            statuses[paths[i % 2]].add(api.get(paths[i % 2]).status_code)
        before = _steady()
        for i in range(LEAK_REQUESTS):
            statuses[paths[i % 2]].add(api.get(paths[i % 2]).status_code)
        after = _settled(before)
        alive = api.get("/api/livez").status_code
    LEAK_NUMBERS[fault.name] = {"fds_before": before[0], "fds_after": after[0],
                                "threads_before": before[1], "threads_after": after[1]}
    record_property("resources", LEAK_NUMBERS[fault.name])
    print(f"\n{fault.name}: fds {before[0]} -> {after[0]}, threads {before[1]} -> {after[1]}")
    assert after[0] - before[0] <= FD_SLACK, (
        f"{after[0] - before[0]} more open fds after {LEAK_REQUESTS} requests")
    assert after[1] - before[1] <= THREAD_SLACK, (
        f"{after[1] - before[1]} more threads after {LEAK_REQUESTS} requests")
    assert statuses == {paths[0]: {fault.status}, paths[1]: {503}}, statuses
    assert alive == 200
