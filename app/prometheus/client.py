"""Issue PromQL to Prometheus over HTTP, several queries in parallel, within one deadline."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning
from urllib3.util.retry import Retry

from app.prometheus.auth import BearerTokenAuth
from app.prometheus.errors import (
    PrometheusBadResponseError,
    PrometheusError,
    PrometheusQueryError,
    PrometheusTimeoutError,
    PrometheusUnavailableError,
)
from app.prometheus.promql import check_label_name
from app.prometheus.watch import upstream_call
from app.telemetry import request_id

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# Above this many characters of URL-encoded PromQL we POST the query as a form, because
# proxies and Prometheus itself refuse request lines that are too long.
MAX_GET_QUERY_CHARS = 4000
# Ask Prometheus to stop evaluating this much before we stop waiting, so it says "timeout".
SERVER_TIMEOUT_MARGIN_S = 0.5
CONNECT_TIMEOUT_S = 3.05


@dataclass(frozen=True)
class ClientSettings:
    """How to reach one Prometheus-compatible server."""

    base_url: str
    timeout: float = 10.0
    deadline: float = 20.0
    threads: int = 8
    retries: int = 2
    max_response_bytes: int = 256 * 1024 * 1024
    verify: bool | str = True
    client_cert: tuple[str, str] | None = None
    bearer_token: str | None = field(default=None, repr=False)
    bearer_token_file: str | None = None
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # "identity" spares Prometheus compressing large answers; "gzip" spares the network.
    accept_encoding: str = "identity"


@dataclass(frozen=True)
class QueryResult:
    """One instant query's answer: the raw `result` list and any warnings."""

    result_type: str
    series: list[dict[str, Any]]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RangeResult:
    """One range query's answer: a matrix, each series `{"metric", "values": [[t, v]...]}`."""

    series: list[dict[str, Any]]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Window:
    """The evaluation instants of a range query: `start`, `start + step`, ... up to `end`."""

    start: float
    end: float
    step: float


class QueryObserver(Protocol):
    """Told of every call to Prometheus' API: its endpoint, what it raised, how long."""

    def query_done(self, endpoint: str, exc: BaseException | None, seconds: float) -> None:
        ...


def endpoint_of(path: str) -> str:
    """The API endpoint of `path` as a low-cardinality name (a label's name is dropped)."""
    if path.startswith("/api/v1/label/"):
        return "label_values"
    return path.removeprefix("/api/v1/") or path


def redact_url(url: str) -> str:
    """Return the URL without user:password, safe to log and show."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class PrometheusClient:
    """Thread-safe client; one per worker process, its thread pool created lazily."""

    def __init__(self, settings: ClientSettings, *,
                 observer: QueryObserver | None = None) -> None:
        self.settings = settings
        self._observer = observer
        self.display_url = redact_url(settings.base_url)
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._owner_pid = 0
        self._local = threading.local()
        self._auth = (
            BearerTokenAuth(settings.bearer_token, settings.bearer_token_file)
            if settings.bearer_token or settings.bearer_token_file
            else None
        )

    # -- public API -------------------------------------------------------------------

    def query(self, promql: str, *, deadline: float | None = None,
              at: float | None = None) -> QueryResult:
        """Run one instant query, evaluated at Unix time `at` (default: now).

        `deadline` is a time.monotonic() instant.
        """
        if deadline is None:
            deadline = time.monotonic() + self.settings.deadline
        params = {"query": promql}
        if at is not None:
            params["time"] = _unix(at)
        payload = self._call("/api/v1/query", params, deadline, allow_post=True)
        return self.parse_result(payload)

    def query_many(self, queries: Mapping[K, str], *,
                   at: float | None = None) -> dict[K, QueryResult]:
        """Run several instant queries in parallel, all within one deadline."""
        return dict(self.query_each(queries, at=at))

    def query_each(self, queries: Mapping[K, str], *,
                   at: float | None = None) -> Iterator[tuple[K, QueryResult]]:
        """Run several instant queries in parallel; yield each answer as soon as it arrives.

        Every query is evaluated at Unix time `at` (default: now). The caller can work on
        early answers while Prometheus still evaluates the rest. The first failure, or
        the shared deadline passing, raises and cancels the rest.
        """
        call = self.query if at is None else functools.partial(self.query, at=at)
        return self._each(call, queries)

    def query_range(self, promql: str, window: Window, *,
                    deadline: float | None = None) -> RangeResult:
        """Run one range query over `window`; POSTed when long, within `deadline`."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.deadline
        params = {"query": promql, "start": _unix(window.start), "end": _unix(window.end),
                  "step": _unix(window.step)}
        payload = self._call("/api/v1/query_range", params, deadline, allow_post=True)
        return _parse_range_data(payload, self.display_url)

    def query_range_each(self, queries: Mapping[K, str],
                         window: Window) -> Iterator[tuple[K, RangeResult]]:
        """Run several range queries over one window in parallel, within one deadline;
        yield each answer as it arrives (failures and the deadline as in `query_each`)."""
        return self._each(functools.partial(self.query_range, window=window), queries)

    def query_raw(self, promql: str, *, deadline: float | None = None) -> bytes:
        """Run one instant query as `query` does; return the body as received.

        The HTTP layer alone (session, timeouts, size limit), neither parsed nor checked:
        the seam benchmarks time it through, apart from `parse_result`.
        """
        if deadline is None:
            deadline = time.monotonic() + self.settings.deadline
        _, body = self._exchange("/api/v1/query", {"query": promql}, deadline,
                                 allow_post=True)
        return body

    def query_many_raw(self, queries: Mapping[K, str]) -> dict[K, bytes]:
        """Run several instant queries as `query_many` does; return the bodies as received."""
        return dict(self._each(self.query_raw, queries))

    def parse_result(self, payload: dict[str, Any]) -> QueryResult:
        """Check Prometheus' parsed JSON answer to an instant query; return its result."""
        return _parse_query_data(payload, self.display_url)

    def probe(self) -> float:
        """Run the cheapest query there is (`vector(1)`) and return its latency in seconds."""
        started = time.monotonic()
        deadline = started + min(self.settings.timeout, self.settings.deadline)
        result = _parse_query_data(
            self._call("/api/v1/query", {"query": "vector(1)"}, deadline, allow_post=False),
            self.display_url,
        )
        if not result.series:
            raise PrometheusBadResponseError(
                f"Prometheus at {self.display_url} answered vector(1) with no sample"
            )
        return time.monotonic() - started

    def label_names(self, matchers: Sequence[str], *, lookback_s: float = 600,
                    deadline: float | None = None) -> list[str]:
        """List the label names of the series that the selectors match, recently.

        Prometheus reads the label index of the series matched: the cost grows with the
        series of the selectors, not with their samples.
        """
        params: dict[str, Any] = {"match[]": list(matchers), **_recent(lookback_s)}
        return self._string_list("/api/v1/labels", params, deadline, allow_post=True,
                                 what="names")

    def label_values(self, label: str, *, matchers: Sequence[str] = (),
                     lookback_s: float = 600, deadline: float | None = None) -> list[str]:
        """List the values `label` has had recently, optionally among the matched series.

        Without matchers this reads only the label index, e.g. every metric name for
        `__name__`; the time range keeps Prometheus to its most recent block(s). The
        endpoint is GET only, so long matcher lists are the caller's to avoid.
        """
        check_label_name(label)
        params: dict[str, Any] = {**_recent(lookback_s)}
        if matchers:
            params["match[]"] = list(matchers)
        return self._string_list(f"/api/v1/label/{label}/values", params, deadline,
                                 allow_post=False, what="values")

    def close(self) -> None:
        """Stop the thread pool (tests; gunicorn simply exits)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    # -- internals --------------------------------------------------------------------

    def _string_list(self, path: str, params: dict[str, Any], deadline: float | None, *,
                     allow_post: bool, what: str) -> list[str]:
        if deadline is None:
            deadline = time.monotonic() + self.settings.deadline
        payload = self._call(path, params, deadline, allow_post=allow_post)
        data = payload.get("data")
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise PrometheusBadResponseError(
                f"Prometheus at {self.display_url} answered {path} without a list of {what}"
            )
        return data


    def _get_executor(self) -> ThreadPoolExecutor:
        # Threads do not survive gunicorn's fork: a child builds its own pool.
        with self._lock:
            if self._executor is None or self._owner_pid != os.getpid():
                self._executor = ThreadPoolExecutor(
                    max_workers=self.settings.threads, thread_name_prefix="promql"
                )
                self._owner_pid = os.getpid()
                self._local = threading.local()
            return self._executor

    def _each(self, call: Callable[..., T], queries: Mapping[K, str]) -> Iterator[tuple[K, T]]:
        """Run `call(promql, deadline=...)` for every query in parallel, in one deadline."""
        deadline = time.monotonic() + self.settings.deadline
        if len(queries) == 1:
            ((key, promql),) = queries.items()
            yield key, call(promql, deadline=deadline)
            return
        executor = self._get_executor()
        # Each query runs in a copy of this context: the request id goes with it.
        futures: dict[Future[T], K] = {
            executor.submit(contextvars.copy_context().run, call, promql,
                            deadline=deadline): key
            for key, promql in queries.items()
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=max(0.0, deadline - time.monotonic()),
                                     return_when=FIRST_COMPLETED)
                if not done:
                    raise PrometheusTimeoutError(
                        f"Prometheus at {self.display_url} did not answer {len(pending)} of "
                        f"{len(futures)} queries within {self.settings.deadline:g}s"
                    )
                for future in done:
                    yield futures[future], future.result()
        finally:
            for future in pending:
                future.cancel()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._new_session()
            self._local.session = session
        return session

    def _new_session(self) -> requests.Session:
        settings = self.settings
        retry = Retry(
            total=settings.retries,
            connect=settings.retries,
            read=0,  # a slow answer is not retried: it would blow the deadline
            status=settings.retries,
            status_forcelist=(502, 503),
            allowed_methods=frozenset({"GET", "POST"}),  # every call here is a read
            backoff_factor=0.1,
            raise_on_status=False,
            respect_retry_after_header=False,
        )
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=4))
        session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=4))
        session.verify = settings.verify
        if settings.verify is False:
            # The app says so once at start-up; urllib3 would warn on every request.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        session.cert = settings.client_cert
        session.trust_env = False  # the URL we were given is the one we use
        if settings.basic_auth is not None:
            session.auth = settings.basic_auth
        elif self._auth is not None:
            session.auth = self._auth
        session.headers.update(settings.headers)
        session.headers["Accept"] = "application/json"
        session.headers["Accept-Encoding"] = settings.accept_encoding
        return session

    def _call(
        self, path: str, params: dict[str, Any], deadline: float, *, allow_post: bool
    ) -> dict[str, Any]:
        started = time.monotonic()
        failure: BaseException | None = None
        try:
            with upstream_call():
                response, body = self._exchange(path, params, deadline,
                                                allow_post=allow_post)
            return _decode(response, body, self.display_url)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if self._observer is not None:
                self._observer.query_done(endpoint_of(path), failure,
                                          time.monotonic() - started)

    def _exchange(
        self, path: str, params: dict[str, Any], deadline: float, *, allow_post: bool
    ) -> tuple[requests.Response, bytes]:
        """Send one request within `deadline`; return the answer and its whole body."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PrometheusTimeoutError(
                f"Prometheus at {self.display_url} did not answer within "
                f"{self.settings.deadline:g}s"
            )
        read_timeout = min(self.settings.timeout, remaining)
        if path in _EVALUATING_PATHS:
            server_timeout = max(0.1, read_timeout - SERVER_TIMEOUT_MARGIN_S)
            # Plain seconds: Prometheus parses "9.5" but not the Go-style "9.500s".
            params = {**params, "timeout": f"{server_timeout:.3f}"}
        url = self.settings.base_url + path
        use_post = allow_post and _encoded_length(params) > MAX_GET_QUERY_CHARS
        # Prometheus' query log and any proxy's access log can then be matched to ours.
        rid = request_id.current()
        headers = {request_id.HEADER: rid} if rid else None
        try:
            if use_post:
                response = self._session().post(
                    url, data=params, headers=headers,
                    timeout=(CONNECT_TIMEOUT_S, read_timeout), stream=True
                )
            else:
                response = self._session().get(
                    url, params=params, headers=headers,
                    timeout=(CONNECT_TIMEOUT_S, read_timeout), stream=True
                )
            with response:
                body = self._read_body(response)
        except requests.exceptions.ConnectTimeout as exc:
            raise PrometheusUnavailableError(
                f"Prometheus at {self.display_url} did not accept a connection within "
                f"{CONNECT_TIMEOUT_S:g}s"
            ) from exc
        except (requests.exceptions.Timeout, TimeoutError) as exc:
            raise PrometheusTimeoutError(
                f"Prometheus at {self.display_url} did not answer within {read_timeout:.1f}s"
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise PrometheusUnavailableError(
                f"TLS handshake with Prometheus at {self.display_url} failed: "
                f"{_short_reason(exc)}"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            if _is_read_timeout(exc):
                raise PrometheusTimeoutError(
                    f"Prometheus at {self.display_url} did not answer within "
                    f"{read_timeout:.1f}s"
                ) from exc
            raise PrometheusUnavailableError(
                f"Prometheus at {self.display_url} is unreachable: {_short_reason(exc)}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise PrometheusBadResponseError(
                f"Prometheus at {self.display_url} sent a broken HTTP answer: "
                f"{_short_reason(exc)}"
            ) from exc
        except (ValueError, UnicodeError):
            # http.client refuses a header it cannot send; its text may quote a secret.
            raise PrometheusUnavailableError(
                f"could not send a request to Prometheus at {self.display_url}: a configured "
                "header or credential holds characters HTTP cannot carry"
            ) from None
        return response, body

    def _read_body(self, response: requests.Response) -> bytes:
        limit = self.settings.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PrometheusBadResponseError(_too_large(self.display_url, limit))
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=256 * 1024):
            size += len(chunk)
            if size > limit:
                raise PrometheusBadResponseError(_too_large(self.display_url, limit))
            chunks.append(chunk)
        return b"".join(chunks)


# The endpoints that evaluate PromQL, and take Prometheus' own `timeout=`.
_EVALUATING_PATHS = frozenset({"/api/v1/query", "/api/v1/query_range"})


def _unix(seconds: float) -> str:
    """A Unix time (or a step) in seconds as Prometheus parses it, to the millisecond."""
    return f"{seconds:.3f}"


def _recent(lookback_s: float) -> dict[str, str]:
    """The `start`/`end` parameters of the last `lookback_s` seconds."""
    now = time.time()
    return {"start": f"{now - lookback_s:.3f}", "end": f"{now:.3f}"}


def _too_large(display_url: str, limit: int) -> str:
    size = f"{limit / (1024 * 1024):g} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"
    return (
        f"Prometheus at {display_url} sent more than {size} for one query; narrow the "
        "request with filters or raise PROMETHEUS_MAX_RESPONSE_MB"
    )


def _encoded_length(params: Mapping[str, Any]) -> int:
    return sum(len(str(value)) * 3 for value in params.values())


def _is_read_timeout(exc: BaseException) -> bool:
    text = repr(exc)
    return "ReadTimeout" in text or "timed out" in text


_USERINFO = re.compile(r"//[^/@\s]*@")


# TLS alerts and errors, by OpenSSL's reason code, in words that say what to fix.
_TLS_REASONS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server wants a client certificate "
                                         "(PROMETHEUS_CLIENT_CERT and PROMETHEUS_CLIENT_KEY)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the TLS handshake was refused (does the server want a "
                                     "client certificate?)",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust our client certificate's CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused our client certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the server refused our client certificate",
    "CERTIFICATE_VERIFY_FAILED": "certificate verify failed",
    "WRONG_VERSION_NUMBER": "the server does not speak TLS there (http:// instead?)",
}


def _tls_reason(exc: BaseException) -> str | None:
    """Plain words for the TLS error at the root of `exc`, if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLEOFError):
            # The server hung up mid-handshake: most often, a client certificate it wanted.
            return ("the server closed the TLS handshake (does it want a client certificate? "
                    "PROMETHEUS_CLIENT_CERT and PROMETHEUS_CLIENT_KEY)")
        if isinstance(current, ssl.SSLError):
            reason = getattr(current, "reason", None) or ""
            return _TLS_REASONS.get(reason, f"TLS error ({reason or current})")
        # urllib3's MaxRetryError keeps its cause in .reason, not in __cause__.
        nested = getattr(current, "reason", None)
        current = nested if isinstance(nested, BaseException) else (
            current.__cause__ or current.__context__ or
            next((a for a in current.args if isinstance(a, BaseException)), None))
    return None


def _short_reason(exc: BaseException) -> str:
    # urllib3 wraps the root cause several times; the innermost words are the useful ones.
    # Its text may quote the URL: credentials in it are cut out.
    tls = _tls_reason(exc)
    if tls is not None:
        return tls
    text = _USERINFO.sub("//", str(exc))
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "Connection reset", "Remote end closed", "certificate verify failed",
                   "Temporary failure in name resolution"):
        if marker in text:
            return marker.lower()
    if "IncompleteRead" in text or "Connection broken" in text:
        return "the connection closed before the whole answer arrived"
    return text[:200]


def _decode(response: requests.Response, body: bytes, display_url: str) -> dict[str, Any]:
    """Turn an HTTP answer into Prometheus' JSON payload, or raise the matching error."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and payload.get("status") == "error":
        raise _api_error(payload, response.status_code, display_url)
    if response.status_code >= 300 or not isinstance(payload, dict):
        raise _http_error(response, body, display_url, payload is not None)
    if payload.get("status") != "success":
        raise PrometheusBadResponseError(
            f"Prometheus at {display_url} answered without status 'success'"
        )
    warnings = payload.get("warnings")
    if warnings:
        logger.warning("Prometheus at %s warned: %s", display_url, "; ".join(map(str, warnings)))
    return payload


# Words VictoriaMetrics uses for a query stopped by its deadline (its errorType is only the
# HTTP status, where Prometheus says "timeout").
_TIMEOUT_WORDS = ("timeout", "timed out", "deadline", "maxqueryduration")


def _api_error(payload: dict[str, Any], status: int, display_url: str) -> PrometheusError:
    error_type = str(payload.get("errorType") or "unknown")
    detail = str(payload.get("error") or "no detail given")[:300]
    message = f"Prometheus at {display_url} rejected the query ({error_type}): {detail}"
    # Prometheus names the kind of error; VictoriaMetrics (and some proxies) the status.
    numeric = error_type.isdigit()
    if error_type == "timeout" or (numeric and any(w in detail.lower()
                                                   for w in _TIMEOUT_WORDS)):
        return PrometheusTimeoutError(message)
    if error_type == "unavailable" or (status in (429, 503)
                                       and (numeric or error_type == "unknown")):
        return PrometheusUnavailableError(message)
    return PrometheusQueryError(message, error_type)


def _http_error(
    response: requests.Response, body: bytes, display_url: str, was_json: bool
) -> PrometheusError:
    status = response.status_code
    content_type = response.headers.get("Content-Type", "no content type").split(";")[0]
    what = "JSON that is not Prometheus' API" if was_json else f"a non-JSON body ({content_type})"
    if not body:
        what = "an empty body"
    prefix = f"Prometheus at {display_url} (or a proxy in front of it)"
    if status in (401, 403):
        return PrometheusBadResponseError(
            f"{prefix} refused our credentials with HTTP {status}; check the bearer token "
            "or basic-auth settings"
        )
    # VictoriaMetrics answers a path it does not serve with a plain-text 400.
    if status == 404 or (status == 400 and b"unsupported path requested" in body):
        return PrometheusBadResponseError(
            f"{prefix} answered HTTP {status} for {urlsplit(response.url).path}; is "
            "PROMETHEUS_URL the Prometheus API root (including any path prefix such as "
            "/prometheus or /select/0/prometheus)?"
        )
    if status == 503:
        return PrometheusUnavailableError(f"{prefix} answered HTTP 503 with {what}")
    if status == 504:
        return PrometheusTimeoutError(f"{prefix} answered HTTP 504 (gateway timeout)")
    return PrometheusBadResponseError(f"{prefix} answered HTTP {status} with {what}")


def _is_sample(item: Any) -> bool:
    """An instant-vector element: labels, and [timestamp as a number, value as text]."""
    if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
        return False
    value = item.get("value")
    return (isinstance(value, list) and len(value) == 2
            and isinstance(value[0], int | float) and not isinstance(value[0], bool))


def _parse_query_data(payload: dict[str, Any], display_url: str) -> QueryResult:
    data = payload.get("data")
    if not isinstance(data, dict):
        raise PrometheusBadResponseError(f"Prometheus at {display_url} answered without data")
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar" and isinstance(result, list):
        result = [{"metric": {}, "value": result}]
    # The first sample is checked here, cheaply; the services turn any later malformed one
    # into the same error while they read the samples anyway.
    if not isinstance(result, list) or (result and not _is_sample(result[0])):
        raise PrometheusBadResponseError(
            f"Prometheus at {display_url} answered with a malformed result"
        )
    warnings = tuple(str(w) for w in payload.get("warnings") or ())
    return QueryResult(result_type=str(result_type), series=result, warnings=warnings)


def _is_range_series(item: Any) -> bool:
    """A range-vector element: labels, and a list of [timestamp, value as text] pairs."""
    if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
        return False
    values = item.get("values")
    if not isinstance(values, list):
        return False
    return not values or (isinstance(values[0], list) and len(values[0]) == 2
                          and isinstance(values[0][0], int | float)
                          and not isinstance(values[0][0], bool))


def _parse_range_data(payload: dict[str, Any], display_url: str) -> RangeResult:
    data = payload.get("data")
    if not isinstance(data, dict):
        raise PrometheusBadResponseError(f"Prometheus at {display_url} answered without data")
    result = data.get("result")
    # As for instant queries, the first series is checked here; readers check the rest.
    if (data.get("resultType") != "matrix" or not isinstance(result, list)
            or (result and not _is_range_series(result[0]))):
        raise PrometheusBadResponseError(
            f"Prometheus at {display_url} answered a range query with a malformed result"
        )
    warnings = tuple(str(w) for w in payload.get("warnings") or ())
    return RangeResult(series=result, warnings=warnings)
