"""The Prometheus HTTP client against a stubbed server (`responses`): answers, errors, limits."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from app.prometheus.client import (
    MAX_GET_QUERY_CHARS,
    ClientSettings,
    PrometheusClient,
    QueryResult,
    redact_url,
)
from app.prometheus.errors import (
    PrometheusBadResponseError,
    PrometheusError,
    PrometheusQueryError,
    PrometheusTimeoutError,
    PrometheusUnavailableError,
)
from app.prometheus.watch import UpstreamWatch, watching
from tests.factories import api_body, series

BASE = "http://prometheus.test:9090"
QUERY_URL = f"{BASE}/api/v1/query"
LABELS_URL = f"{BASE}/api/v1/labels"
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
# Short enough that a test never waits on it; long enough that a busy CI box still answers.
TIMEOUT_S = 2.0
DEADLINE_S = 3.0

MakeClient = Callable[..., PrometheusClient]


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    """Stub HTTP; a request that matches nothing fails as 'connection refused'."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stub:
        yield stub


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """Build clients (no retries unless asked) and close their thread pools afterwards."""
    built: list[PrometheusClient] = []

    def factory(base_url: str = BASE, **overrides: Any) -> PrometheusClient:
        options: dict[str, Any] = {"timeout": TIMEOUT_S, "deadline": DEADLINE_S, "retries": 0}
        options.update(overrides)
        client = PrometheusClient(ClientSettings(base_url=base_url, **options))
        built.append(client)
        return client

    yield factory
    for client in built:
        client.close()


@pytest.fixture
def client(make_client: MakeClient) -> PrometheusClient:
    """A client of BASE with no retries."""
    return make_client()


def sent_params(request: requests.PreparedRequest) -> dict[str, list[str]]:
    """The query parameters of a request, from its URL and (for POST) its form body."""
    params = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
    if request.body:
        body = request.body if isinstance(request.body, str) else request.body.decode()
        for key, values in parse_qs(body, keep_blank_values=True).items():
            params.setdefault(key, []).extend(values)
    return params


def one_vector(value: str = "1") -> dict[str, Any]:
    """A successful answer holding one series."""
    return api_body(series({"__name__": "up", "job": "node"}, value))


def error_body(error_type: str, error: str = "something went wrong") -> dict[str, Any]:
    """Prometheus' JSON body for a failed query."""
    return {"status": "error", "errorType": error_type, "error": error}


def prometheus_duration_seconds(text: str) -> float:
    """Parse `text` the way Prometheus' API parses its `timeout` parameter, or raise ValueError.

    Prometheus accepts a float number of seconds ("9.5"), or a duration made of integer
    amounts with units ("9s", "9500ms", "1m30s"); a fraction with a unit ("9.5s") is rejected
    with `bad_data` (web/api/v1 parseDuration -> strconv.ParseFloat, then model.ParseDuration).
    """
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    units = {"y": 31_536_000.0, "w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0,
             "s": 1.0, "ms": 0.001}
    match = re.fullmatch(
        r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?"
        r"(?:([0-9]+)s)?(?:([0-9]+)ms)?",
        text,
    )
    if not text or match is None:
        raise ValueError(f"Prometheus cannot parse {text!r} as a duration")
    return sum(
        int(amount) * factor
        for amount, factor in zip(match.groups(), units.values(), strict=True)
        if amount
    )


class Gate:
    """Hold stubbed answers until released, and tell when every held answer has gone out."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._held = 0
        self._finished = threading.Condition(self._lock)

    def hold(self) -> None:
        with self._lock:
            self._held += 1
        try:
            self.release.wait(timeout=10)
        finally:
            with self._lock:
                self._held -= 1
                self._finished.notify_all()

    def open_and_drain(self) -> None:
        """Release every held answer and wait (bounded) for the worker threads to finish."""
        self.release.set()
        with self._lock:
            self._finished.wait_for(lambda: self._held == 0, timeout=10)


# -- successful answers -------------------------------------------------------------------


def test_query_returns_the_vector_series_as_prometheus_sent_them(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    gpu0 = series({"__name__": "gpu_util", "gpu": "0"}, 87.5)
    gpu1 = series({"__name__": "gpu_util", "gpu": "1"}, "NaN")
    mock.get(QUERY_URL, json=api_body(gpu0, gpu1))

    answer = client.query("gpu_util")

    assert answer == QueryResult(result_type="vector", series=[gpu0, gpu1], warnings=())


def test_query_returns_an_empty_series_list_for_an_empty_vector(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json=api_body())

    assert client.query("absent_metric").series == []


def test_query_keeps_the_warnings_prometheus_attached(
    mock: responses.RequestsMock, client: PrometheusClient, caplog: pytest.LogCaptureFixture
) -> None:
    warnings = ["PromQL info: metric might not be a counter", "partial response"]
    mock.get(QUERY_URL, json=api_body(series({"gpu": "0"}, 1), warnings=warnings))

    answer = client.query("gpu_util")

    assert answer.warnings == tuple(warnings)
    assert len(answer.series) == 1
    assert any("partial response" in record.getMessage() for record in caplog.records)


def test_query_turns_a_scalar_answer_into_one_series_without_labels(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json={"status": "success",
                              "data": {"resultType": "scalar", "result": [1764460800.1, "42"]}})

    answer = client.query("scalar(42)")

    assert answer.result_type == "scalar"
    assert answer.series == [{"metric": {}, "value": [1764460800.1, "42"]}]


# -- transport failures -------------------------------------------------------------------


def test_query_raises_unavailable_error_when_the_connection_is_refused(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    refused = requests.ConnectionError(
        "HTTPConnectionPool(host='prometheus.test', port=9090): Max retries exceeded "
        "(Caused by NewConnectionError('[Errno 111] Connection refused'))"
    )
    mock.get(QUERY_URL, body=refused)

    with pytest.raises(PrometheusUnavailableError) as caught:
        client.query("up")

    assert str(caught.value) == f"Prometheus at {BASE} is unreachable: connection refused"
    assert caught.value.__cause__ is refused


def test_query_raises_timeout_error_on_a_read_timeout(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, body=requests.ReadTimeout("Read timed out. (read timeout=2.0)"))

    with pytest.raises(PrometheusTimeoutError, match=r"did not answer within 2\.0s") as caught:
        client.query("up")

    assert isinstance(caught.value.__cause__, requests.ReadTimeout)


def test_query_raises_timeout_error_when_the_body_stops_arriving_mid_stream(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    class StalledBody(io.BufferedReader):
        """A socket that times out after the headers: urllib3 turns this into ReadTimeoutError."""

        def __init__(self) -> None:
            super().__init__(io.BytesIO(b""))

        def read(self, *args: Any, **kwargs: Any) -> bytes:
            raise TimeoutError("The read operation timed out")

        read1 = readinto = read  # type: ignore[assignment]

    mock.get(QUERY_URL, body=StalledBody(), content_type="application/json")

    with pytest.raises(PrometheusTimeoutError, match="did not answer within"):
        client.query("up")


def test_query_raises_unavailable_error_on_a_connect_timeout(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, body=requests.ConnectTimeout("Connection to prometheus.test timed out"))

    with pytest.raises(PrometheusUnavailableError, match="did not accept a connection within"):
        client.query("up")


def test_query_raises_unavailable_error_when_the_tls_handshake_fails(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, body=requests.exceptions.SSLError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    ))

    with pytest.raises(PrometheusUnavailableError,
                       match=r"TLS handshake .* failed: certificate verify failed"):
        client.query("up")


def test_query_raises_bad_response_error_when_the_http_answer_is_broken(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, body=requests.exceptions.ChunkedEncodingError("InvalidChunkLength"))

    with pytest.raises(PrometheusBadResponseError, match="sent a broken HTTP answer"):
        client.query("up")


# -- Prometheus' own errors (JSON, status: error) ------------------------------------------


# The HTTP status is the one Prometheus sends with each errorType (web/api/v1 respondError).
@pytest.mark.parametrize(
    ("error_type", "http_status", "expected"),
    [
        ("bad_data", 400, PrometheusQueryError),
        ("execution", 422, PrometheusQueryError),
        ("timeout", 503, PrometheusTimeoutError),
        ("canceled", 499, PrometheusQueryError),
        ("internal", 500, PrometheusQueryError),
        ("unavailable", 500, PrometheusUnavailableError),
        ("not_found", 404, PrometheusQueryError),
    ],
)
def test_query_maps_each_prometheus_error_type_to_its_exception_class(
    mock: responses.RequestsMock,
    client: PrometheusClient,
    error_type: str,
    http_status: int,
    expected: type[PrometheusError],
) -> None:
    mock.get(QUERY_URL, json=error_body(error_type, "parse error at char 4"), status=http_status)

    with pytest.raises(PrometheusError) as caught:
        client.query("up{")

    assert type(caught.value) is expected
    assert str(caught.value) == (
        f"Prometheus at {BASE} rejected the query ({error_type}): parse error at char 4"
    )


def test_query_raises_timeout_error_when_prometheus_says_errortype_timeout(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, status=503, json=error_body(
        "timeout", "query timed out in expression evaluation"))

    with pytest.raises(PrometheusTimeoutError, match="query timed out in expression evaluation"):
        client.query("sum(rate(x[30d]))")


def test_query_error_keeps_the_error_type_for_callers(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, status=400, json=error_body("bad_data", "invalid parameter"))

    with pytest.raises(PrometheusQueryError) as caught:
        client.query("up{")

    assert caught.value.error_type == "bad_data"


def test_query_treats_a_json_error_without_type_on_http_503_as_unavailable(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, status=503, json={"status": "error", "error": "TSDB not ready"})

    with pytest.raises(PrometheusUnavailableError, match=r"\(unknown\): TSDB not ready"):
        client.query("up")


def test_query_error_message_cuts_a_very_long_prometheus_error(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, status=422, json=error_body("execution", "z" * 5000))

    with pytest.raises(PrometheusQueryError) as caught:
        client.query("up")

    assert str(caught.value).count("z") == 300


# -- HTTP errors without Prometheus' JSON (proxies, gateways) ------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, PrometheusBadResponseError),
        (502, PrometheusBadResponseError),
        (503, PrometheusUnavailableError),
    ],
)
def test_query_maps_an_html_error_page_to_its_class_and_says_non_json(
    mock: responses.RequestsMock,
    client: PrometheusClient,
    status: int,
    expected: type[PrometheusError],
) -> None:
    mock.get(QUERY_URL, status=status, body=HTML_502, content_type="text/html; charset=utf-8")

    with pytest.raises(PrometheusError) as caught:
        client.query("up")

    assert type(caught.value) is expected
    message = str(caught.value)
    assert f"HTTP {status}" in message
    assert "non-JSON body (text/html)" in message
    assert BASE in message


def test_query_raises_timeout_error_when_a_gateway_answers_504(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, status=504, body="<html>504 Gateway Time-out</html>",
             content_type="text/html")

    with pytest.raises(PrometheusTimeoutError) as caught:
        client.query("up")

    assert "HTTP 504" in str(caught.value)
    assert "gateway timeout" in str(caught.value)


def test_query_says_the_body_was_empty_when_a_proxy_sends_nothing(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, status=502, body="")

    with pytest.raises(PrometheusBadResponseError, match="HTTP 502 with an empty body"):
        client.query("up")


@pytest.mark.parametrize("status", [401, 403])
def test_query_says_the_credentials_were_refused_on_401_and_403(
    mock: responses.RequestsMock, client: PrometheusClient, status: int
) -> None:
    mock.get(QUERY_URL, status=status, body="Unauthorized", content_type="text/plain")

    with pytest.raises(PrometheusBadResponseError) as caught:
        client.query("up")

    message = str(caught.value)
    assert f"refused our credentials with HTTP {status}" in message
    assert "bearer token or basic-auth" in message


def test_query_on_404_names_the_path_and_points_at_the_prometheus_url_prefix(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client("http://gateway.test/select/0")
    mock.get("http://gateway.test/select/0/api/v1/query", status=404, body="404 page not found")

    with pytest.raises(PrometheusBadResponseError) as caught:
        client.query("up")

    message = str(caught.value)
    assert "HTTP 404 for /select/0/api/v1/query" in message
    assert "PROMETHEUS_URL" in message
    assert "/prometheus" in message


# -- malformed answers --------------------------------------------------------------------


def test_query_raises_bad_response_error_on_truncated_json(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    whole = json.dumps(one_vector())
    mock.get(QUERY_URL, body=whole[: len(whole) // 2], content_type="application/json")

    with pytest.raises(PrometheusBadResponseError, match="HTTP 200 with a non-JSON body"):
        client.query("up")


def test_query_raises_bad_response_error_when_a_200_answer_is_not_json(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, body="<html>Grafana login</html>", content_type="text/html")

    with pytest.raises(PrometheusBadResponseError, match=r"non-JSON body \(text/html\)"):
        client.query("up")


def test_query_raises_bad_response_error_when_the_json_is_not_an_object(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json=[1, 2, 3])

    with pytest.raises(PrometheusBadResponseError, match="JSON that is not Prometheus' API"):
        client.query("up")


def test_query_raises_bad_response_error_when_status_is_not_success(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json={"data": {"resultType": "vector", "result": []}})

    with pytest.raises(PrometheusBadResponseError, match="without status 'success'"):
        client.query("up")


@pytest.mark.parametrize("data", [None, [], "vector", 42])
def test_query_raises_bad_response_error_when_data_is_missing(
    mock: responses.RequestsMock, client: PrometheusClient, data: Any
) -> None:
    body: dict[str, Any] = {"status": "success"}
    if data is not None:
        body["data"] = data
    mock.get(QUERY_URL, json=body)

    with pytest.raises(PrometheusBadResponseError, match="answered without data"):
        client.query("up")


@pytest.mark.parametrize(
    "data",
    [
        {"resultType": "vector"},
        {"resultType": "vector", "result": {"metric": {}}},
        {"resultType": "vector", "result": ["up"]},
        {"resultType": "vector", "result": [{"value": [1, "1"]}]},
        {"resultType": "vector", "result": [{"metric": ["gpu", "0"], "value": [1, "1"]}]},
        {"resultType": "string", "result": [1764460800.1, "text"]},
    ],
    ids=["no-result", "result-object", "result-of-strings", "no-metric", "metric-list",
         "string-result"],
)
def test_query_raises_bad_response_error_on_a_malformed_result(
    mock: responses.RequestsMock, client: PrometheusClient, data: dict[str, Any]
) -> None:
    mock.get(QUERY_URL, json={"status": "success", "data": data})

    with pytest.raises(PrometheusBadResponseError, match="malformed result"):
        client.query("up")


# -- response size limit ------------------------------------------------------------------


def test_query_rejects_a_body_declared_larger_than_the_limit_without_reading_it(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(max_response_bytes=1000)
    small = json.dumps(one_vector())  # fits the limit: only the declared length is too big
    assert len(small) < 1000
    mock.get(QUERY_URL, body=small, headers={"Content-Length": "5000000"},
             content_type="application/json")

    with pytest.raises(PrometheusBadResponseError) as caught:
        client.query("up")

    assert "narrow the request with filters" in str(caught.value)


def test_query_rejects_a_streamed_body_larger_than_the_limit(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(max_response_bytes=1000)
    many = api_body(*(series({"gpu": str(i)}, i) for i in range(100)))
    mock.get(QUERY_URL, json=many)  # no Content-Length header: only counting can tell
    assert "Content-Length" not in requests.get(QUERY_URL, stream=True).headers

    with pytest.raises(PrometheusBadResponseError, match="narrow the request with filters"):
        client.query("up")


def test_query_accepts_a_body_exactly_as_large_as_the_limit(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    body = json.dumps(one_vector()).encode()
    client = make_client(max_response_bytes=len(body))
    mock.get(QUERY_URL, body=body, content_type="application/json",
             auto_calculate_content_length=True)

    assert len(client.query("up").series) == 1


def test_query_too_large_message_states_a_limit_below_one_mib_truthfully(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(max_response_bytes=64 * 1024)
    mock.get(QUERY_URL, body=b"x" * (128 * 1024), content_type="application/json")

    with pytest.raises(PrometheusBadResponseError) as caught:
        client.query("up")

    assert "narrow the request with filters" in str(caught.value)
    # A 64 KiB limit must not be reported as "more than 0 MiB".
    assert not re.search(r"\b0 MiB", str(caught.value)), str(caught.value)


# -- retries ------------------------------------------------------------------------------
# `responses` replays urllib3's Retry for *status* codes (it calls Retry.is_retry/increment on
# each stubbed answer, without the backoff sleep). It raises stubbed exceptions before that
# logic, so retries of *connection* failures cannot be exercised here: the adapter's Retry
# settings are checked directly instead.


@pytest.mark.parametrize("status", [502, 503])
def test_query_retries_a_502_or_503_and_succeeds_when_retries_allow(
    mock: responses.RequestsMock, make_client: MakeClient, status: int
) -> None:
    client = make_client(retries=1)
    mock.get(QUERY_URL, status=status, body=HTML_502, content_type="text/html")
    mock.get(QUERY_URL, json=one_vector("7"))

    answer = client.query("up")

    assert answer.series[0]["value"][1] == "7"
    assert len(mock.calls) == 2


def test_query_does_not_retry_a_503_when_retries_are_zero(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(retries=0)
    mock.get(QUERY_URL, status=503, body=HTML_502, content_type="text/html")
    mock.get(QUERY_URL, json=one_vector())

    with pytest.raises(PrometheusUnavailableError):
        client.query("up")
    assert len(mock.calls) == 1


def test_query_gives_up_after_the_configured_retries_and_reports_the_last_answer(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(retries=2)
    mock.get(QUERY_URL, status=503, body=HTML_502, content_type="text/html")

    with pytest.raises(PrometheusUnavailableError, match="HTTP 503"):
        client.query("up")
    assert len(mock.calls) == 3


@pytest.mark.parametrize(("status", "expected"), [(500, PrometheusBadResponseError),
                                                  (504, PrometheusTimeoutError)])
def test_query_does_not_retry_a_500_or_a_504(
    mock: responses.RequestsMock,
    make_client: MakeClient,
    status: int,
    expected: type[PrometheusError],
) -> None:
    client = make_client(retries=2)
    mock.get(QUERY_URL, status=status, body=HTML_502, content_type="text/html")
    mock.get(QUERY_URL, json=one_vector())

    with pytest.raises(expected):
        client.query("up")
    assert len(mock.calls) == 1


def test_query_retries_a_long_query_sent_by_post(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(retries=1)
    mock.post(QUERY_URL, status=503, body=HTML_502, content_type="text/html")
    mock.post(QUERY_URL, json=one_vector())

    client.query("up or " * 1000)

    assert [call.request.method for call in mock.calls] == ["POST", "POST"]


def test_session_retries_failed_connections_but_never_slow_reads(make_client: MakeClient) -> None:
    client = make_client(retries=3)
    # Private on purpose: connection retries cannot be driven through `responses` (see above).
    retry = client._session().get_adapter(QUERY_URL).max_retries

    assert (retry.total, retry.connect, retry.status, retry.read) == (3, 3, 3, 0)


# -- the deadline and parallel queries ------------------------------------------------------


def echo_query(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
    """Answer with one series whose label repeats the query it was asked."""
    query = sent_params(request)["query"][0]
    return 200, {"Content-Type": "application/json"}, json.dumps(
        api_body(series({"asked": query}, 1)))


def test_query_many_returns_each_answer_under_its_key(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.add_callback(responses.GET, QUERY_URL, callback=echo_query)
    queries = {("field", "utilization", "0"): "gpu_util", ("info", "gpu_info"): "gpu_info",
               ("pods",): "group by (pod) (gpu_mem)"}

    answers = client.query_many(queries)

    assert set(answers) == set(queries)
    for key, promql in queries.items():
        assert answers[key].series[0]["metric"] == {"asked": promql}


def test_every_request_of_a_fan_out_reports_to_the_productions_watch(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    # The fan-out's threads run in copies of the caller's context, so the cache can tell
    # a Prometheus that owes answers from a worker busy with the answers it has.
    clock = [100.0]
    watch = UpstreamWatch(lambda: clock[0])
    owed_during: list[float] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        with lock:
            clock[0] += 1.0
            owed_during.append(watch.silent_for())
        return 200, {}, json.dumps(one_vector())

    lock = threading.Lock()
    mock.add_callback(responses.GET, QUERY_URL, callback=answer)
    with watching(watch):
        client.query_many({("a",): "a", ("b",): "b", ("c",): "c"})
    assert len(owed_during) == 3 and all(owed > 0 for owed in owed_during)
    assert watch.silent_for() == 0.0  # every answer is in: nothing owed


def test_query_many_with_one_query_returns_it_under_its_key(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.add_callback(responses.GET, QUERY_URL, callback=echo_query)

    answers = client.query_many({"only": "up"})

    assert list(answers) == ["only"]
    assert answers["only"].series[0]["metric"] == {"asked": "up"}


def test_query_many_with_no_queries_returns_nothing_and_sends_nothing(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    assert client.query_many({}) == {}
    assert len(mock.calls) == 0


def test_query_many_raises_the_first_error_without_waiting_for_slower_queries(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(deadline=DEADLINE_S)
    gate = Gate()

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        if sent_params(request)["query"][0] == "slow":
            gate.hold()
            return echo_query(request)
        return 400, {"Content-Type": "application/json"}, json.dumps(
            error_body("bad_data", "unexpected end of input"))

    mock.add_callback(responses.GET, QUERY_URL, callback=answer)
    started = time.monotonic()
    try:
        with pytest.raises(PrometheusQueryError, match="unexpected end of input"):
            client.query_many({"slow": "slow", "broken": "up{"})
        waited = time.monotonic() - started
    finally:
        gate.open_and_drain()

    # The slow query is still held: waiting for it would have run into the deadline.
    assert waited < DEADLINE_S / 2


def test_query_many_raises_timeout_error_naming_the_pending_queries_at_the_deadline(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(deadline=0.3, timeout=0.3)
    gate = Gate()

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        if sent_params(request)["query"][0].startswith("slow"):
            gate.hold()
        return echo_query(request)

    mock.add_callback(responses.GET, QUERY_URL, callback=answer)
    try:
        with pytest.raises(PrometheusTimeoutError) as caught:
            client.query_many({"a": "fast", "b": "slow_1", "c": "slow_2"})
    finally:
        gate.open_and_drain()

    assert str(caught.value) == (
        f"Prometheus at {BASE} did not answer 2 of 3 queries within 0.3s"
    )


def test_query_raises_timeout_error_without_calling_when_the_deadline_has_passed(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json=one_vector())

    with pytest.raises(PrometheusTimeoutError, match="did not answer within"):
        client.query("up", deadline=time.monotonic() - 0.001)
    assert len(mock.calls) == 0


# -- request shape: GET or POST, Prometheus' own timeout -----------------------------------


def test_query_sends_a_short_query_by_get(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json=one_vector())

    client.query('gpu_util{node="a"}')

    request = mock.calls[0].request
    assert request.method == "GET"
    assert request.body is None
    assert sent_params(request)["query"] == ['gpu_util{node="a"}']


def test_query_asks_prometheus_to_give_up_a_little_before_the_read_timeout(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json=one_vector())

    client.query("up")

    sent = sent_params(mock.calls[0].request)["timeout"][0]
    seconds = float(sent.removesuffix("s"))
    assert TIMEOUT_S - 1.0 <= seconds < TIMEOUT_S


def test_query_sends_a_timeout_that_prometheus_can_parse(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json=one_vector())

    client.query("up")

    sent = sent_params(mock.calls[0].request)["timeout"][0]
    # Prometheus answers 400 bad_data to "1.500s": a fraction needs no unit, or integer ms.
    assert TIMEOUT_S - 1.0 <= prometheus_duration_seconds(sent) < TIMEOUT_S


def test_query_sends_a_query_longer_than_the_get_limit_as_a_post_form(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.post(QUERY_URL, json=one_vector())
    long_query = " or ".join(f'gpu_util{{node="node-{i:05d}"}}' for i in range(200))
    assert len(long_query) > MAX_GET_QUERY_CHARS

    client.query(long_query)

    request = mock.calls[0].request
    assert request.method == "POST"
    assert urlsplit(request.url).query == ""
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.body)
    assert form["query"] == [long_query]
    assert float(form["timeout"][0].removesuffix("s")) > 0


def test_query_posts_a_query_whose_url_encoding_would_exceed_the_get_limit(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.post(QUERY_URL, json=one_vector())
    braces = "{" * 1400  # 1,400 characters, 4,200 once percent-encoded
    assert len(braces) < MAX_GET_QUERY_CHARS

    client.query(braces)

    assert mock.calls[0].request.method == "POST"


def test_probe_runs_vector_1_by_get_and_returns_its_latency(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json=api_body({"metric": {}, "value": [1764460800.1, "1"]}))

    latency = client.probe()

    assert 0 <= latency < DEADLINE_S
    request = mock.calls[0].request
    assert request.method == "GET"
    assert sent_params(request)["query"] == ["vector(1)"]


def test_probe_raises_bad_response_error_when_vector_1_comes_back_empty(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, json=api_body())

    with pytest.raises(PrometheusBadResponseError, match="vector\\(1\\) with no sample"):
        client.probe()


def test_probe_raises_unavailable_error_when_prometheus_is_down(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(QUERY_URL, body=requests.ConnectionError("[Errno 111] Connection refused"))

    with pytest.raises(PrometheusUnavailableError):
        client.probe()


def test_label_names_returns_the_names_prometheus_lists(
    mock: responses.RequestsMock, client: PrometheusClient
) -> None:
    mock.get(LABELS_URL, json={"status": "success",
                               "data": ["Hostname", "UUID", "__name__", "gpu", "modelName"]})

    names = client.label_names(["DCGM_FI_DEV_GPU_UTIL", '{__name__=~"nvidia_smi_.*"}'],
                               lookback_s=300)

    assert names == ["Hostname", "UUID", "__name__", "gpu", "modelName"]
    params = sent_params(mock.calls[0].request)
    assert params["match[]"] == ["DCGM_FI_DEV_GPU_UTIL", '{__name__=~"nvidia_smi_.*"}']
    start, end = float(params["start"][0]), float(params["end"][0])
    assert end - start == pytest.approx(300, abs=0.01)
    assert "timeout" not in params


@pytest.mark.parametrize("data", [None, "gpu", {"names": ["gpu"]}, ["gpu", 3]])
def test_label_names_raises_bad_response_error_without_a_list_of_names(
    mock: responses.RequestsMock, client: PrometheusClient, data: Any
) -> None:
    mock.get(LABELS_URL, json={"status": "success", "data": data})

    with pytest.raises(PrometheusBadResponseError, match="without a list of names"):
        client.label_names(["up"])


# -- authentication, headers, URLs ----------------------------------------------------------


def test_query_sends_the_bearer_token_as_authorization_header(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(bearer_token="s3cr3t-token\n")
    mock.get(QUERY_URL, json=one_vector())

    client.query("up")

    assert mock.calls[0].request.headers["Authorization"] == "Bearer s3cr3t-token"


def test_query_sends_the_token_from_the_token_file_and_rereads_it_when_it_changes(
    mock: responses.RequestsMock, make_client: MakeClient, tmp_path: Any
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    client = make_client(bearer_token_file=str(token_file))
    mock.get(QUERY_URL, json=one_vector())

    client.query("up")
    # Kubernetes swaps projected tokens atomically: a new file (new inode) under the same name.
    replacement = tmp_path / "token.new"
    replacement.write_text("second-token\n")
    os.replace(replacement, token_file)
    client.query("up")
    # Rewritten in place: same inode, a later modification time (set explicitly: coarse clocks).
    before = token_file.stat().st_mtime_ns
    token_file.write_text("third-token\n")
    os.utime(token_file, ns=(before + 2_000_000_000, before + 2_000_000_000))
    client.query("up")

    assert [call.request.headers["Authorization"] for call in mock.calls] == [
        "Bearer first-token", "Bearer second-token", "Bearer third-token"]


def test_query_raises_unavailable_error_naming_a_missing_token_file(
    mock: responses.RequestsMock, make_client: MakeClient, tmp_path: Any
) -> None:
    missing = tmp_path / "no-such-token"
    client = make_client(bearer_token_file=str(missing))
    mock.get(QUERY_URL, json=one_vector())

    with pytest.raises(PrometheusUnavailableError, match="cannot read the Prometheus bearer token"
                       ) as caught:
        client.query("up")

    assert str(missing) in str(caught.value)
    assert len(mock.calls) == 0


def test_query_raises_unavailable_error_when_the_token_file_is_empty(
    mock: responses.RequestsMock, make_client: MakeClient, tmp_path: Any
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    client = make_client(bearer_token_file=str(token_file))
    mock.get(QUERY_URL, json=one_vector())

    with pytest.raises(PrometheusUnavailableError, match="is empty"):
        client.query("up")


def test_query_sends_basic_auth(mock: responses.RequestsMock, make_client: MakeClient) -> None:
    client = make_client(basic_auth=("grafana", "pa:ss"))
    mock.get(QUERY_URL, json=one_vector())

    client.query("up")

    expected = base64.b64encode(b"grafana:pa:ss").decode()
    assert mock.calls[0].request.headers["Authorization"] == f"Basic {expected}"


def test_query_sends_extra_headers_and_asks_for_json(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client(headers={"X-Scope-OrgID": "team-gpu"})
    mock.get(QUERY_URL, json=one_vector())

    client.query("up")

    headers = mock.calls[0].request.headers
    assert headers["X-Scope-OrgID"] == "team-gpu"
    assert headers["Accept"] == "application/json"
    assert "Authorization" not in headers


def test_query_and_label_names_keep_the_base_url_path_prefix(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client("http://vm.test:8481/select/0/prometheus")
    mock.get("http://vm.test:8481/select/0/prometheus/api/v1/query", json=one_vector())
    mock.get("http://vm.test:8481/select/0/prometheus/api/v1/labels",
             json={"status": "success", "data": ["gpu"]})

    client.query("up")
    client.label_names(["up"])

    assert [urlsplit(call.request.url).path for call in mock.calls] == [
        "/select/0/prometheus/api/v1/query", "/select/0/prometheus/api/v1/labels"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://prometheus.test:9090", "http://prometheus.test:9090"),
        ("https://alice:s3cret@prom.test:9443/prometheus", "https://prom.test:9443/prometheus"),
        ("http://alice@prom.test", "http://prom.test"),
        ("http://alice:p@ss@prom.test", "http://prom.test"),
    ],
)
def test_redact_url_drops_user_and_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_client_uses_credentials_in_the_url_as_basic_auth_but_never_displays_them(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    client = make_client("http://alice:s3cret@prom.test:9090")
    mock.get("http://alice:s3cret@prom.test:9090/api/v1/query", json=one_vector())

    client.query("up")

    assert client.display_url == "http://prom.test:9090"
    expected = base64.b64encode(b"alice:s3cret").decode()
    assert mock.calls[0].request.headers["Authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 502, "body": HTML_502, "content_type": "text/html"},
        {"status": 404, "body": "404 page not found"},
        {"status": 400, "json": error_body("bad_data", "parse error")},
        {"body": requests.ConnectionError("[Errno 111] Connection refused")},
        {"body": requests.ReadTimeout("Read timed out.")},
    ],
    ids=["502", "404", "bad_data", "refused", "read-timeout"],
)
def test_error_messages_never_show_the_credentials_of_the_url(
    mock: responses.RequestsMock, make_client: MakeClient, answer: dict[str, Any]
) -> None:
    client = make_client("http://alice:s3cret@prom.test:9090")
    mock.get("http://alice:s3cret@prom.test:9090/api/v1/query", **answer)

    with pytest.raises(PrometheusError) as caught:
        client.query("up")

    assert "s3cret" not in str(caught.value)
    assert "alice" not in str(caught.value)
    assert "http://prom.test:9090" in str(caught.value)


def test_error_message_hides_url_credentials_when_requests_rejects_the_url(
    mock: responses.RequestsMock, make_client: MakeClient
) -> None:
    # Port 99999 passes PROMETHEUS_URL validation but requests refuses it, quoting the full URL.
    client = make_client("http://alice:s3cret@prom.test:99999")

    with pytest.raises(PrometheusError) as caught:
        client.query("up")

    assert "s3cret" not in str(caught.value)
