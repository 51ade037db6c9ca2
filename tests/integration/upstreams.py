"""Loopback upstreams that misbehave on purpose, and an authenticating proxy.

`MisbehavingPrometheus` speaks just enough of Prometheus' HTTP API for the app to detect the
legacy dialect and ask for its data, then answers the data queries (and the health probe)
with whatever `Reply` the test sets: a hang, a slow answer, an HTML error page, every
`errorType`, truncated or invalid JSON, warnings, NaN and absurd samples, or 50 MB.
`RefusingPort` is a port nothing listens on. `AuthProxy` puts a real Prometheus behind a
path prefix, a bearer token or basic auth, and a required tenant header, like the gateways
in front of Mimir, Cortex or Thanos.

Every server binds 127.0.0.1 on a free port, serves from daemon threads, caps its
concurrent connections, and on close() wakes and joins every handler it started.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import gzip as gzip_module
import http.client
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

# -- what an upstream sends back ------------------------------------------------------------

# Prometheus' HTTP status for each errorType (web/api/v1/api.go).
ERROR_TYPE_STATUS: Mapping[str, int] = {
    "bad_data": 400,
    "execution": 422,
    "timeout": 503,
    "canceled": 499,
    "internal": 500,
    "unavailable": 503,
}

LEGACY_GPU_METRICS = (
    "nvidia_gpu_utilization_percent",
    "nvidia_gpu_used_memory_bytes",
    "nvidia_gpu_total_memory_bytes",
    "nvidia_gpu_free_memory_bytes",
    "nvidia_gpu_memory_utilization_percent",
    "nvidia_gpu_temperature_celsius",
)
LEGACY_LABELS = {"hostname": "n", "gpu_id": "0", "gpu_name": "x"}

# One healthy GPU in the legacy dialect: what the app should serve when nothing misbehaves.
HEALTHY_SAMPLES: Mapping[str, str] = {
    "nvidia_gpu_utilization_percent": "42",
    "nvidia_gpu_used_memory_bytes": "1073741824",
    "nvidia_gpu_total_memory_bytes": "4294967296",
    "nvidia_gpu_free_memory_bytes": "3221225472",
    "nvidia_gpu_memory_utilization_percent": "25",
    "nvidia_gpu_temperature_celsius": "55",
}

_METRIC = re.compile(r"nvidia_gpu_[a-z_]+")


@dataclasses.dataclass(frozen=True)
class Reply:
    """One HTTP answer, or a way of not answering.

    `declared_length` above len(body) sends a Content-Length the body never reaches and
    then closes the connection. `stream_bytes` sends that many bytes of a valid-looking
    vector in chunks (with or without Content-Length) instead of `body`.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0
    hang: bool = False
    declared_length: int | None = None
    stream_bytes: int = 0
    declare_stream_length: bool = True
    content_encoding: str | None = None


def prometheus_json(payload: Mapping[str, Any], status: int = 200, delay: float = 0.0) -> Reply:
    """Answer with a JSON document."""
    return Reply(status=status, body=json.dumps(payload).encode(), delay=delay)


def vector(samples: Iterable[tuple[Mapping[str, str], str]],
           warnings: Iterable[str] = ()) -> dict[str, Any]:
    """A successful instant-vector payload from (labels, value) pairs."""
    now = round(time.time(), 3)
    payload: dict[str, Any] = {
        "status": "success",
        "data": {"resultType": "vector",
                 "result": [{"metric": dict(labels), "value": [now, value]}
                            for labels, value in samples]},
    }
    warnings = list(warnings)
    if warnings:
        payload["warnings"] = warnings
    return payload


def prometheus_error(error_type: str, detail: str | None = None) -> Reply:
    """Answer `status: error` with this errorType, at the HTTP status Prometheus uses."""
    return prometheus_json(
        {"status": "error", "errorType": error_type,
         "error": detail or f"simulated {error_type} failure"},
        status=ERROR_TYPE_STATUS.get(error_type, 500),
    )


def html_error(status: int) -> Reply:
    """An HTML error page, as a load balancer or ingress sends it."""
    title = f"{status} {http.client.responses.get(status, 'Error')}"
    page = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")
    return Reply(status=status, body=page.encode(), content_type="text/html")


def slow(delay: float) -> Callable[[str], Reply]:
    """A valid answer (one healthy GPU) after `delay` seconds."""
    healthy = healthy_gpu_reply()

    def answer(promql: str) -> Reply:
        if promql.strip() == "vector(1)":
            return dataclasses.replace(probe_reply(), delay=delay)
        return dataclasses.replace(healthy(promql), delay=delay)

    return answer


def probe_reply() -> Reply:
    """Prometheus' answer to `vector(1)`."""
    return prometheus_json({"status": "success",
                            "data": {"resultType": "vector",
                                     "result": [{"metric": {}, "value": [time.time(), "1"]}]}})


def hang() -> Reply:
    """Accept the request and never answer, until the client gives up."""
    return Reply(hang=True)


def truncated_json() -> Reply:
    """A complete HTTP answer whose JSON body stops in the middle."""
    whole = json.dumps(vector([(LEGACY_LABELS, "42")])).encode()
    return Reply(body=whole[: len(whole) // 2])


def truncated_body() -> Reply:
    """Promise more bytes than are sent, then close the connection."""
    whole = json.dumps(vector([(LEGACY_LABELS, "42")])).encode()
    return Reply(body=whole[: len(whole) // 2], declared_length=len(whole))


def invalid_json() -> Reply:
    """Status 200, a JSON content type, and a body that is not JSON."""
    return Reply(body=b"{'status': 'success', data: [1, 2,")


def oversized(megabytes: int = 50, *, declare_length: bool = True, gzip: bool = False) -> Reply:
    """A well-formed vector far larger than any sane answer (gzip: small on the wire)."""
    if gzip:
        return Reply(body=_gzipped_vector(megabytes), content_encoding="gzip")
    return Reply(stream_bytes=megabytes << 20, declare_stream_length=declare_length)


_VECTOR_HEAD = b'{"status":"success","data":{"resultType":"vector","result":['
_VECTOR_TAIL = b"]}}"
_VECTOR_ITEM = (b'{"metric":{"hostname":"n","gpu_id":"0","gpu_name":"%s"},'
                b'"value":[1700000000,"1"]},' % (b"x" * 200))


@functools.lru_cache(maxsize=2)
def _gzipped_vector(megabytes: int) -> bytes:
    items = (megabytes << 20) // len(_VECTOR_ITEM)
    body = _VECTOR_HEAD + _VECTOR_ITEM * (items - 1) + _VECTOR_ITEM[:-1] + _VECTOR_TAIL
    return gzip_module.compress(body, compresslevel=1)


def healthy_gpu_reply(values: Mapping[str, str] | None = None,
                      warnings: Iterable[str] = ()) -> Callable[[str], Reply]:
    """Answer each data query with the sample of the metric it names."""
    chosen = dict(HEALTHY_SAMPLES if values is None else values)
    warnings = tuple(warnings)

    def answer(promql: str) -> Reply:
        found = _METRIC.search(promql)
        value = chosen.get(found.group(0)) if found else None
        samples = [(LEGACY_LABELS, value)] if value is not None else []
        return prometheus_json(vector(samples, warnings))

    return answer


# -- the servers ------------------------------------------------------------------------


class _BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server with a cap on live connections, which can wake them all."""

    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 64

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any,
                 max_connections: int) -> None:
        self.owner = owner
        self.stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        self._handlers: list[threading.Thread] = []
        super().__init__(("127.0.0.1", 0), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.stopping.is_set() or not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: refuse by closing at once
            return
        with self._live_lock:
            self._live.add(request)
            self._handlers = [t for t in self._handlers if t.is_alive()]
            thread = threading.Thread(target=self.process_request_thread,
                                      args=(request, client_address), daemon=True,
                                      name=f"{type(self.owner).__name__}-conn")
            self._handlers.append(thread)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.discard(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is what these servers are for

    def close_everything(self) -> None:
        """Stop accepting, wake every handler (hanging or idle) and wait for them."""
        self.stopping.set()
        self.shutdown()
        with self._live_lock:
            live = list(self._live)
            handlers = list(self._handlers)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in handlers:
            thread.join(timeout=5)
        self.server_close()


class _LoopbackServer:
    """Serve `handler` on a free loopback port from a daemon thread; close() stops it."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self, max_connections: int = 64) -> None:
        self._httpd = _BoundedServer(self.handler, self, max_connections)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"{type(self).__name__}-accept")
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL of the server, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def stopping(self) -> threading.Event:
        """Set once close() began; handlers that wait watch it."""
        return self._httpd.stopping

    def close(self) -> None:
        """Stop serving and join every thread this server started."""
        self._httpd.close_everything()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus does
    # Go servers set TCP_NODELAY; without it headers and body written apart wait 40 ms for
    # the client's delayed ACK on every keep-alive request.
    disable_nagle_algorithm = True
    timeout = 15  # an idle keep-alive connection is dropped after this long

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _params(self) -> tuple[str, dict[str, list[str]], bytes]:
        """Path, GET and POST parameters merged, and the raw body."""
        parts = urlsplit(self.path)
        params = parse_qs(parts.query)
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
            if self.headers.get("Content-Type", "").startswith(
                    "application/x-www-form-urlencoded"):
                for key, values in parse_qs(body.decode("utf-8", "replace")).items():
                    params.setdefault(key, []).extend(values)
        return parts.path, params, body

    def _send_simple(self, status: int, body: bytes, content_type: str,
                     extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@dataclasses.dataclass(frozen=True)
class SeenQuery:
    """One request the fake Prometheus received."""

    kind: str  # "probe", "names", "values", "detect", "labels", "data" or "other"
    method: str
    promql: str | None
    request_id: str | None = None  # the X-Request-ID it came with


class _FaultHandler(_QuietHandler):
    server: _BoundedServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        owner: MisbehavingPrometheus = self.server.owner
        path, params, _ = self._params()
        promql = (params.get("query") or [None])[0]
        kind = _classify(path, promql)
        owner._record(SeenQuery(kind, self.command, promql,
                                self.headers.get("X-Request-ID")))
        # A label-values lookup names its label in the path: that is what it asks.
        reply = owner._reply_for(kind, path.split("/")[4] if kind == "values" else promql or "")
        try:
            self._send(reply)
        except OSError:
            self.close_connection = True  # the client gave up on us: fine

    def _send(self, reply: Reply) -> None:
        stopping = self.server.stopping
        if reply.delay and stopping.wait(reply.delay):
            self.close_connection = True
            return
        if reply.hang:
            self._hang()
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if reply.content_encoding:
            self.send_header("Content-Encoding", reply.content_encoding)
        if reply.stream_bytes:
            self._stream(reply)
            return
        declared = reply.declared_length if reply.declared_length is not None else len(reply.body)
        self.send_header("Content-Length", str(declared))
        if declared != len(reply.body):
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)

    def _stream(self, reply: Reply) -> None:
        head, tail, item = _VECTOR_HEAD, _VECTOR_TAIL, _VECTOR_ITEM
        items = max(1, (reply.stream_bytes - len(head) - len(tail)) // len(item))
        last = item[:-1]
        total = len(head) + len(item) * (items - 1) + len(last) + len(tail)
        if reply.declare_stream_length:
            self.send_header("Content-Length", str(total))
        else:  # no length: the body runs until we close the connection
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(head)
        block = item * 1024
        remaining = items - 1
        while remaining and not self.server.stopping.is_set():
            count = min(remaining, 1024)
            self.wfile.write(block if count == 1024 else item * count)
            remaining -= count
        self.wfile.write(last + tail)

    def _hang(self) -> None:
        """Read nothing, say nothing, until the client closes or the server stops."""
        self.close_connection = True
        conn = self.connection
        deadline = time.monotonic() + self.server.owner.max_hang
        while not self.server.stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable and not conn.recv(65536):
                return  # the client hung up


def _classify(path: str, promql: str | None) -> str:
    if path == "/api/v1/labels":
        return "labels"
    if path == "/api/v1/label/__name__/values":
        return "names"
    if path.startswith("/api/v1/label/") and path.endswith("/values"):
        return "values"
    if path != "/api/v1/query" or promql is None:
        return "other"
    if promql.strip() == "vector(1)":
        return "probe"
    if promql.startswith("count by (__name__)"):
        return "detect"
    return "data"


ReplySource = Reply | Callable[[str], Reply]


class MisbehavingPrometheus(_LoopbackServer):
    """A fake Prometheus on loopback whose data queries and probe answer with `fault`.

    Dialect detection (the metric names, the `count by (__name__)` query and /api/v1/labels)
    is answered truthfully: the legacy GPU metrics exist, labelled hostname/gpu_id/gpu_name.
    Set `fault` to a Reply (or a function of the PromQL returning one) to misbehave, or to
    None for one healthy GPU. `fault_on` says which kinds of request misbehave.
    """

    handler = _FaultHandler

    def __init__(self, fault: ReplySource | None = None, *,
                 fault_on: Iterable[str] = ("data", "probe"), max_hang: float = 30.0,
                 max_connections: int = 64) -> None:
        self.fault = fault
        self.fault_on = frozenset(fault_on)
        self.max_hang = max_hang
        self._seen: list[SeenQuery] = []
        self._seen_lock = threading.Lock()
        super().__init__(max_connections)

    def seen(self, kind: str | None = None) -> list[SeenQuery]:
        """Requests received so far, optionally only of one kind."""
        with self._seen_lock:
            return [q for q in self._seen if kind is None or q.kind == kind]

    def _record(self, query: SeenQuery) -> None:
        with self._seen_lock:
            self._seen.append(query)
            del self._seen[:-1000]  # bounded: the leak tests send many

    def _reply_for(self, kind: str, promql: str) -> Reply:
        fault = self.fault
        if fault is not None and kind in self.fault_on:
            return fault(promql) if callable(fault) else fault
        if kind == "probe":
            return probe_reply()
        if kind == "detect":
            return prometheus_json(vector(({"__name__": name}, "1")
                                          for name in LEGACY_GPU_METRICS))
        if kind == "labels":
            return prometheus_json({"status": "success",
                                    "data": ["__name__", *sorted(LEGACY_LABELS)]})
        if kind == "names":
            return prometheus_json({"status": "success", "data": sorted(LEGACY_GPU_METRICS)})
        if kind == "values":  # a label's values: those of the one legacy GPU
            label = promql
            data = [LEGACY_LABELS[label]] if label in LEGACY_LABELS else []
            return prometheus_json({"status": "success", "data": data})
        if kind == "data":
            return healthy_gpu_reply()(promql)
        return Reply(status=404, body=b"404 page not found\n", content_type="text/plain")


class RefusingPort:
    """A loopback port bound by us but never listening: every connection is refused."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        """Base URL that nothing answers."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Release the port."""
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- an authenticating gateway in front of a real Prometheus -----------------------------


@dataclasses.dataclass(frozen=True)
class ProxiedRequest:
    """What the proxy saw; credentials themselves are never kept."""

    method: str
    path: str  # as forwarded, without the prefix
    tenant: str | None
    authorized: bool
    forwarded: bool


_UNAUTHORIZED_PAGE = (b"<html>\r\n<head><title>401 Authorization Required</title></head>\r\n"
                      b"<body>\r\n<center><h1>401 Authorization Required</h1></center>\r\n"
                      b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


class _ProxyHandler(_QuietHandler):
    server: _BoundedServer

    def do_GET(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        proxy: AuthProxy = self.server.owner
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        prefix = proxy.prefix
        if not (parts.path == prefix or parts.path.startswith(prefix + "/")):
            self._send_simple(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        path = parts.path[len(prefix):] or "/"
        tenant = self.headers.get("X-Scope-OrgID")
        authorized = proxy._authorized(self.headers.get("Authorization"))
        forward = authorized and tenant == proxy.tenant
        proxy._record(ProxiedRequest(self.command, path, tenant, authorized, forward))
        if not authorized:
            self._send_simple(401, _UNAUTHORIZED_PAGE, "text/html",
                              {"WWW-Authenticate": proxy._challenge()})
            return
        if tenant != proxy.tenant:
            self._send_simple(401, b"no org id\n", "text/plain; charset=utf-8")
            return
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                              timeout=30)
        try:
            headers = {name: value for name, value in self.headers.items()
                       if name.lower() in ("content-type", "accept", "accept-encoding")}
            target = path + (f"?{parts.query}" if parts.query else "")
            upstream.request(self.command, target, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            extra = {}
            if answer.getheader("Content-Encoding"):
                extra["Content-Encoding"] = answer.getheader("Content-Encoding")
            self._send_simple(answer.status, data,
                              answer.getheader("Content-Type", "application/octet-stream"),
                              extra)
        except OSError as exc:
            self._send_simple(502, f"upstream error: {exc}\n".encode(),
                              "text/plain; charset=utf-8")
        finally:
            upstream.close()


class AuthProxy(_LoopbackServer):
    """Forward `prefix`/... to a Prometheus, if the credentials and tenant header are right.

    Credentials are a set of accepted bearer tokens, or one basic-auth pair; change them
    while running with accept_tokens() / accept_basic(). A missing or wrong Authorization
    gets nginx's HTML 401 page; a missing or wrong X-Scope-OrgID gets Mimir's "no org id".
    """

    handler = _ProxyHandler

    def __init__(self, upstream_url: str, *, prefix: str = "/prometheus",
                 tenant: str = "team-a", tokens: Iterable[str] = (),
                 basic: tuple[str, str] | None = None) -> None:
        upstream = urlsplit(upstream_url)
        self.upstream_host = upstream.hostname or "127.0.0.1"
        self.upstream_port = upstream.port or 80
        self.prefix = prefix.rstrip("/")
        self.tenant = tenant
        self._lock = threading.Lock()
        self._tokens = frozenset(tokens)
        self._basic = basic
        self._seen: list[ProxiedRequest] = []
        super().__init__()

    @property
    def prefixed_url(self) -> str:
        """The URL to give the app as PROMETHEUS_URL."""
        return self.url + self.prefix

    def accept_tokens(self, *tokens: str) -> None:
        """From now on accept exactly these bearer tokens."""
        with self._lock:
            self._tokens = frozenset(tokens)
            self._basic = None

    def accept_basic(self, username: str, password: str) -> None:
        """From now on accept exactly this basic-auth pair."""
        with self._lock:
            self._basic = (username, password)
            self._tokens = frozenset()

    def seen(self) -> list[ProxiedRequest]:
        """Every request so far."""
        with self._lock:
            return list(self._seen)

    def clear(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self._seen.clear()

    def _record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self._seen.append(request)
            del self._seen[:-1000]

    def _challenge(self) -> str:
        return 'Basic realm="prometheus"' if self._basic else 'Bearer realm="prometheus"'

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, credentials = header.partition(" ")
        with self._lock:
            tokens, basic = self._tokens, self._basic
        if scheme.lower() == "bearer":
            return credentials in tokens
        if scheme.lower() == "basic" and basic is not None:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            return decoded == f"{basic[0]}:{basic[1]}"
        return False


def query_string(params: Mapping[str, str | Iterable[str]]) -> str:
    """Encode repeated query parameters (`?node=a&node=b`)."""
    pairs = [(key, value) for key, values in params.items()
             for value in ([values] if isinstance(values, str) else values)]
    return urlencode(pairs)
