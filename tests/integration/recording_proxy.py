"""A loopback proxy in front of a real Prometheus that records the PromQL it forwards.

Each instant query is kept with the number of series Prometheus answered, so a test can
show both that a filter reached Prometheus as a matcher and that Prometheus then sent less.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
from urllib.parse import urlsplit

from tests.integration.upstreams import _BoundedServer, _LoopbackServer, _QuietHandler


@dataclasses.dataclass(frozen=True)
class RecordedQuery:
    """One /api/v1/query as forwarded, and what came back."""

    promql: str
    status: int
    series: int | None  # None: not a successful vector answer


def _series_count(body: bytes) -> int | None:
    try:
        answer = json.loads(body)
        return len(answer["data"]["result"]) if answer.get("status") == "success" else None
    except (ValueError, KeyError, TypeError):
        return None


class _RecordingHandler(_QuietHandler):
    server: _BoundedServer

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        proxy: RecordingProxy = self.server.owner
        path, params, body = self._params()
        # Accept-Encoding is not passed on: the proxy reads the answer to count its series.
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() in ("content-type", "accept")}
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                              timeout=30)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        except OSError as exc:
            self._send_simple(502, f"upstream error: {exc}\n".encode(),
                              "text/plain; charset=utf-8")
            return
        finally:
            upstream.close()
        if path == "/api/v1/query" and params.get("query"):
            proxy._record(RecordedQuery(params["query"][0], answer.status, _series_count(data)))
        self._send_simple(answer.status, data,
                          answer.getheader("Content-Type", "application/octet-stream"))


class RecordingProxy(_LoopbackServer):
    """Forward every request to `upstream_url`; remember each instant query."""

    handler = _RecordingHandler

    def __init__(self, upstream_url: str) -> None:
        upstream = urlsplit(upstream_url)
        self.upstream_host = upstream.hostname or "127.0.0.1"
        self.upstream_port = upstream.port or 80
        self._lock = threading.Lock()
        self._seen: list[RecordedQuery] = []
        super().__init__()

    def take(self) -> list[RecordedQuery]:
        """The data queries since the last call (not dialect detection's series count)."""
        with self._lock:
            seen, self._seen = self._seen, []
        return [q for q in seen if not q.promql.startswith("count by (__name__)")]

    def _record(self, query: RecordedQuery) -> None:
        with self._lock:
            self._seen.append(query)
