"""The floor: the service's own fan-out of PromQL, issued straight to Prometheus.

The queries come from the app itself (the state `build_state` wires, as for create_app;
auto-detection fitted to what Prometheus holds; then the list's own `list_queries`, with
the health window and idle rule the view uses),
so the floor moves with the app. The client is as small as it gets: a thread pool of
plain `requests.get` calls that read the body and do not parse it.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from app.api.gpu import ROW_HEALTH, idle_rule
from app.config import Config, load_config
from app.dialects.model import Dialect
from app.prometheus.client import PrometheusClient
from app.services.gpus import list_queries
from app.services.queries import QueryKey
from app.services.records import GpuFilters
from app.state import AppState, build_state


@dataclass
class Plan:
    """What the service asks Prometheus for on GET /api/v1/gpu/metrics."""

    state: AppState
    dialects: tuple[Dialect, ...]
    notes: tuple[str, ...]
    # Keyed like the service's own fan-out: (dialect name, *query key).
    queries: dict[tuple[str, ...], str] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        """The service's settings: every default but the Prometheus URL."""
        return self.state.config

    @property
    def client(self) -> PrometheusClient:
        """The service's Prometheus client, wired as create_app wires it."""
        return self.state.prometheus

    @property
    def fan_out(self) -> int:
        """Queries per uncached request."""
        return len(self.queries)

    def per_dialect(self, dialect: Dialect) -> dict[QueryKey, str]:
        """The queries of one dialect, keyed as `gpu_queries` keys them."""
        return {tuple(key[1:]): q for key, q in self.queries.items() if key[0] == dialect.name}


def plan_for(prometheus_url: str) -> Plan:
    """Detect dialects as the service does in auto mode and build its GPU-list fan-out."""
    # Only the URL: every other setting at its default, METRICS_DIALECT unset (auto).
    state = build_state(load_config({"PROMETHEUS_URL": prometheus_url}))
    detection = state.detection()
    plan = Plan(state=state, dialects=tuple(detection.dialects), notes=tuple(detection.notes))
    rule = idle_rule(state.config)
    for dialect in detection.dialects:
        for key, promql in list_queries(dialect, GpuFilters(), ROW_HEALTH, rule).items():
            plan.queries[(dialect.name, *key)] = promql
    return plan


class FloorClient:
    """Fan the queries out in parallel with plain requests.get; read bodies, parse nothing.

    `keep_alive` swaps requests.get (a new session and TCP connection per call) for one
    requests.Session per thread, as the service's client has: a variant that shows how
    much of a small floor is client set-up rather than Prometheus.
    """

    def __init__(self, prometheus_url: str, queries: Mapping[tuple[str, ...], str],
                 threads: int, *, keep_alive: bool = False,
                 accept_encoding: str | None = None) -> None:
        self._url = prometheus_url.rstrip("/") + "/api/v1/query"
        # By default the encoding the service asks for, so both make Prometheus do the same
        # work; `accept_encoding` measures another PROMETHEUS_COMPRESSION.
        self._headers = {"Accept-Encoding": accept_encoding or Config().prometheus_compression}
        self._queries = dict(queries)
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads),
                                        thread_name_prefix="floor")
        self._keep_alive = keep_alive
        self._local = threading.local()
        self.last_sizes: dict[tuple[str, ...], int] = {}  # decoded bodies
        self.last_wire_sizes: dict[tuple[str, ...], int] = {}  # as sent, compressed or not

    def _http_get(self) -> Callable[..., requests.Response]:
        if not self._keep_alive:
            return requests.get
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session.get

    def _get(self, promql: str) -> tuple[bytes, int]:
        """One answer's decoded body and the bytes its content took on the wire."""
        compressed = self._headers["Accept-Encoding"] != "identity"
        response = self._http_get()(self._url, params={"query": promql},
                                    headers=self._headers, timeout=(3.05, 60.0),
                                    stream=compressed)
        if compressed:
            # The body as sent (chunked framing removed), then decoded as requests would.
            with response:
                wire = response.raw.read(decode_content=False)
            encoded = response.headers.get("Content-Encoding") == "gzip"
            body = gzip.decompress(wire) if encoded else wire
        else:
            body = response.content
            wire = body
        if response.status_code != 200:
            raise RuntimeError(f"Prometheus answered HTTP {response.status_code} to "
                               f"{promql[:120]!r}: {body[:200]!r}")
        return body, len(wire)

    def fetch(self) -> dict[tuple[str, ...], bytes]:
        """Run one whole fan-out and return each answer's raw body."""
        futures = {key: self._pool.submit(self._get, q) for key, q in self._queries.items()}
        answers = {key: future.result(timeout=120) for key, future in futures.items()}
        self.last_sizes = {key: len(body) for key, (body, _) in answers.items()}
        self.last_wire_sizes = {key: wire for key, (_, wire) in answers.items()}
        return {key: body for key, (body, _) in answers.items()}

    def close(self) -> None:
        """Stop the thread pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)
