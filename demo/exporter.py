"""Serve a simulated GPU cluster over HTTP the way a real exporter would.

Routes: /metrics (every node), /metrics/<node> (one node, 404 for an unknown one),
/truth (the snapshot behind the text, as JSON) and /healthz.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

from demo.cluster import ClusterSpec, current_step, node_names, node_stats
from demo.dialects import DIALECTS, RenderCache

logger = logging.getLogger(__name__)

EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ExporterServer:
    """Serve one dialect of a simulated cluster from a daemon thread.

    The socket is bound and served as soon as the object exists; use it as a context
    manager (or call close()) to stop it. `period_s` 0 freezes the cluster at step 0.
    """

    def __init__(
        self,
        spec: ClusterSpec,
        dialect: str,
        period_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; choose one of {', '.join(DIALECTS)}")
        self.spec = spec
        self.dialect = dialect
        self.period_s = period_s
        self._cache = RenderCache(spec)
        self._nodes = frozenset(node_names(spec))
        self._truth_lock = threading.Lock()
        self._truth: tuple[int, bytes] | None = None
        # Set by close(): a keep-alive connection's own thread outlives the accept loop.
        self.closed = threading.Event()
        self._httpd = _HTTPServer((host, port), _Handler, self)
        self._thread = threading.Thread(
            # A short poll interval keeps close() quick; the default makes it wait 0.5 s.
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"exporter-{dialect}",
            daemon=True,
        )
        self._thread.start()

    @property
    def host(self) -> str:
        """Return the address the server listens on."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """Return the bound TCP port (useful when constructed with port=0)."""
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        """Return host:port, the form Prometheus targets take."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Return the base URL, without a trailing slash."""
        return f"http://{self.address}"

    def step(self) -> int:
        """Return the step currently served."""
        return current_step(self.period_s)

    def wait(self) -> None:
        """Block until the server stops (for the command line)."""
        self._thread.join()

    def close(self) -> None:
        """Stop serving (kept-alive connections too) and release the socket."""
        self.closed.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> ExporterServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def metrics(self, node: str | None) -> bytes | None:
        """Return the exposition text for a node (all when None); None for an unknown node."""
        if node is not None and node not in self._nodes:
            return None
        return self._cache.render(self.step(), self.dialect, node).encode()

    def truth(self) -> bytes:
        """Return the current snapshot as JSON, computed once per step."""
        step = self.step()
        with self._truth_lock:
            if self._truth is None or self._truth[0] != step:
                rows = self._cache.snapshot(step)
                document = {
                    "step": step,
                    "dialect": self.dialect,
                    "spec": dataclasses.asdict(self.spec),
                    "nodes": [dataclasses.asdict(node) for node in node_stats(rows)],
                    "gpus": [dataclasses.asdict(gpu) for gpu in rows],
                }
                self._truth = (step, json.dumps(document).encode())
            return self._truth[1]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Prometheus opens one connection per target at once; 1000 per-node targets on one
    # port overflow the default backlog of 5 and get their connections refused.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        exporter: ExporterServer,
    ) -> None:
        self.exporter = exporter
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive lets Prometheus reuse one connection per target across scrapes.
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        exporter = self.server.exporter
        if exporter.closed.is_set():
            self.close_connection = True  # hang up unanswered, as a stopped exporter would
            return
        path = urlsplit(self.path).path
        if path == "/metrics" or path.startswith("/metrics/"):
            node = unquote(path.removeprefix("/metrics/")) if path != "/metrics" else None
            body = exporter.metrics(node)
            if body is None:
                self._send(HTTPStatus.NOT_FOUND, b"unknown node\n", "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.OK, body, EXPOSITION_CONTENT_TYPE)
        elif path == "/truth":
            self._send(HTTPStatus.OK, exporter.truth(), "application/json")
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Per-request lines would flood stderr at one scrape per node per interval.
        logger.debug("%s " + format, self.address_string(), *args)


def main(argv: list[str] | None = None) -> None:
    """Run the exporter from the command line until interrupted."""
    parser = argparse.ArgumentParser(description="Serve a simulated GPU cluster's metrics.")
    parser.add_argument("--dialect", choices=DIALECTS, default="dcgm")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--period", type=float, default=15.0, help="seconds per step; 0 freezes")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--mig-nodes", type=int, default=0)
    parser.add_argument("--shared-gpus", type=int, default=0)
    parser.add_argument("--idle-fraction", type=float, default=0.25)
    parser.add_argument("--processes", type=int, default=2, help="processes per busy GPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        spec = ClusterSpec(
            nodes=args.nodes,
            gpus_per_node=args.gpus,
            seed=args.seed,
            idle_fraction=args.idle_fraction,
            processes_per_busy_gpu=args.processes,
            mig_nodes=args.mig_nodes,
            shared_gpus=args.shared_gpus,
        )
    except ValueError as exc:
        parser.error(str(exc))
    server = ExporterServer(spec, args.dialect, args.period, args.host, args.port)
    logger.info("serving %s for %d nodes at %s/metrics", args.dialect, spec.nodes, server.url)
    # Containers and supervisors stop with SIGTERM: leave as cleanly as on Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        server.wait()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.close()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
