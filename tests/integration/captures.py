"""Serve real exporter captures, verbatim, to a real Prometheus.

Each `CaptureTarget` is one exporter: a fixed exposition text served at `/metrics` by a
loopback HTTP server, plus the target labels and `honor_labels` setting that Kubernetes
service discovery and a ServiceMonitor would give its scrape target. `serving()` starts the
servers and one Prometheus scraping them, and returns once every target's first scrape has
landed with every sample line of its text accepted. `serving_all()` starts one such
Prometheus per scenario, all at once: each waits ~5 s for its first scrape (Prometheus
hands discovered targets to the scraper at most every 5 s), so starting them one after
another would cost that wait per capture.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from demo.prometheus import PrometheusServer, ScrapeTarget

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "real_exporters"
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def capture_text(name: str) -> str:
    """Return a capture file's text exactly as stored (UTF-8: HELP texts may say °C)."""
    return (FIXTURES / name).read_bytes().decode("utf-8")


def sample_lines(text: str) -> int:
    """Count the sample lines of an exposition text (neither blank nor a comment)."""
    return sum(1 for line in text.splitlines() if line.strip() and not line.startswith("#"))


@dataclasses.dataclass(frozen=True)
class CaptureTarget:
    """One exporter serving `text`, scraped with these target labels."""

    text: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    honor_labels: bool = True

    @classmethod
    def from_file(cls, name: str, labels: Mapping[str, str] | None = None,
                  honor_labels: bool = True) -> CaptureTarget:
        """A target serving one capture file of the fixtures directory."""
        return cls(capture_text(name), dict(labels or {}), honor_labels)


class TextExporter:
    """Serve one fixed body at /metrics from a daemon thread; 404 elsewhere."""

    def __init__(self, text: str) -> None:
        self.body = text.encode("utf-8")
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self.body)
        self._thread = threading.Thread(
            # A short poll interval keeps close() quick.
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="capture-exporter", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """Return host:port, the form Prometheus targets take."""
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> TextExporter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 body: bytes) -> None:
        self.body = body
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            self._send(HTTPStatus.OK, self.server.body, EXPOSITION_CONTENT_TYPE)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape would only be noise


@contextmanager
def serving(targets: Sequence[CaptureTarget],
            timeout: float = 20.0) -> Iterator[PrometheusServer]:
    """Serve every target to one Prometheus; yield it once all were scraped in full.

    A text Prometheus cannot parse leaves its target down (the wait fails with the log);
    the sample count check catches lines a parser skipped.
    """
    with ExitStack() as stack:
        exporters = [stack.enter_context(TextExporter(t.text)) for t in targets]
        prometheus = stack.enter_context(PrometheusServer(
            [ScrapeTarget(exporter.address, labels=target.labels,
                          honor_labels=target.honor_labels)
             for exporter, target in zip(exporters, targets, strict=True)],
            scrape_interval="1s"))
        expected = sorted(sample_lines(t.text) for t in targets)

        def scraped_in_full(result: list[dict[str, Any]]) -> bool:
            return sorted(int(float(s["value"][1])) for s in result) == expected

        # `up` and the samples of a scrape are written together: once up == 1 for every
        # target, their series are queryable.
        prometheus.wait_for("up == 1", predicate=lambda r: len(r) == len(targets),
                            timeout=timeout)
        prometheus.wait_for("scrape_samples_scraped", predicate=scraped_in_full,
                            timeout=timeout)
        yield prometheus


@contextmanager
def serving_all(
    scenarios: Mapping[str, Sequence[CaptureTarget]], timeout: float = 30.0
) -> Iterator[dict[str, PrometheusServer]]:
    """Start one isolated Prometheus per scenario, concurrently; yield them by name."""

    def start(targets: Sequence[CaptureTarget]) -> tuple[
            AbstractContextManager[PrometheusServer], PrometheusServer]:
        context = serving(targets, timeout=timeout)
        return context, context.__enter__()

    with ExitStack() as stack:
        started: dict[str, PrometheusServer] = {}
        failures: list[tuple[str, BaseException]] = []
        with ThreadPoolExecutor(max_workers=len(scenarios) or 1) as pool:
            futures = {name: pool.submit(start, targets) for name, targets in scenarios.items()}
            for name, future in futures.items():
                try:
                    context, prometheus = future.result()
                except Exception as exc:  # stop the others, then report every failure
                    failures.append((name, exc))
                    continue
                stack.push(context.__exit__)
                started[name] = prometheus
        if failures:
            name, first = failures[0]
            raise RuntimeError(
                f"{len(failures)} capture scenario(s) did not start: "
                f"{', '.join(n for n, _ in failures)}; {name}: {first}") from first
        yield started
