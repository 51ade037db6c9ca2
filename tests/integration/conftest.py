"""Fixtures that start real servers: Prometheus, simulated exporters and the API."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from werkzeug.serving import make_server

from app import create_app
from demo.cluster import ClusterSpec
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer, ScrapeTarget
from demo.victoriametrics import VictoriaMetricsServer
from tests.integration.world import running_world

# One small dcgm cluster for tests that stop, restart or break their own Prometheus.
SMALL_SPEC = ClusterSpec(nodes=2, gpus_per_node=2, seed=21, node_prefix="out-")


@pytest.fixture(scope="session")
def world() -> Iterator[PrometheusServer]:
    """One Prometheus scraping every simulated dialect, shared by the session."""
    with running_world() as prometheus:
        yield prometheus


# The stores the end-to-end dialect tests run against: Prometheus, and a horizontally
# scalable one that speaks its API (VictoriaMetrics, under /prometheus).
STORE_SERVERS: dict[str, type[PrometheusServer]] = {
    "prometheus": PrometheusServer, "victoriametrics": VictoriaMetricsServer}
STORES = tuple(STORE_SERVERS)


@pytest.fixture(scope="session", params=STORES)
def store_world(request: pytest.FixtureRequest) -> Iterator[PrometheusServer]:
    """`world`, and the same clusters scraped by a real VictoriaMetrics."""
    if request.param == "prometheus":
        yield request.getfixturevalue("world")
        return
    with running_world(server=STORE_SERVERS[request.param]) as store:
        yield store


@contextmanager
def small_cluster(server: type[PrometheusServer] = PrometheusServer,
                  ) -> Iterator[tuple[ExporterServer, PrometheusServer]]:
    """A dcgm exporter of SMALL_SPEC (4 GPUs) and a `server` scraping only it."""
    with ExporterServer(SMALL_SPEC, "dcgm") as exporter:
        store = server([ScrapeTarget(exporter.address)]).start()
        try:
            store.wait_for("DCGM_FI_DEV_GPU_TEMP", min_count=4, timeout=60)
            yield exporter, store
        finally:
            store.stop()


@pytest.fixture
def small_world() -> Iterator[tuple[ExporterServer, PrometheusServer]]:
    """A dcgm exporter of SMALL_SPEC (4 GPUs) and a Prometheus of this test's own."""
    with small_cluster() as world:
        yield world


@pytest.fixture(params=STORES)
def small_store_world(request: pytest.FixtureRequest,
                      ) -> Iterator[tuple[ExporterServer, PrometheusServer]]:
    """small_world, in Prometheus and in VictoriaMetrics."""
    with small_cluster(STORE_SERVERS[request.param]) as world:
        yield world


class ApiServer:
    """The real app answering HTTP on a free loopback port, from a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        self.app = create_app(env)
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.session = requests.Session()

    def get(self, path: str, **kwargs: object) -> requests.Response:
        """GET a path of the API."""
        return self.session.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop serving and release the app's threads and sockets."""
        self._server.shutdown()
        self._server.server_close()
        self.session.close()
        self.app.extensions["gpu_monitor"].close()


@pytest.fixture
def api_server() -> Iterator[Callable[..., ApiServer]]:
    """Start API servers with environment overrides; all are stopped afterwards."""
    servers: list[ApiServer] = []

    def start(**env: str) -> ApiServer:
        server = ApiServer(env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
