"""A simulated GPU cluster, its exporter and a real Prometheus scraping it, for one size."""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psutil
import requests

from demo.cluster import ClusterSpec, node_names, snapshot
from demo.dialects import NODELESS_DIALECTS
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer, ScrapeTarget, find_prometheus_binary
from demo.prometheus import PrometheusTimeoutError as DemoTimeoutError

_QUERY_HANDLER_LINE = re.compile(
    r'^prometheus_http_requests_total\{[^}]*handler="/api/v1/query"[^}]*\}\s+(\S+)', re.M
)


class WorldError(RuntimeError):
    """The exporter or Prometheus did not reach the expected state in time."""


@dataclass(frozen=True)
class Size:
    """A cluster shape given as NODESxGPUS, e.g. 1000x8."""

    nodes: int
    gpus_per_node: int

    @classmethod
    def parse(cls, text: str) -> Size:
        """Read `NxG`; raise ValueError on anything else."""
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"{text!r} is not NODESxGPUS, e.g. 100x8")
        nodes, gpus = int(match.group(1)), int(match.group(2))
        if nodes < 1 or gpus < 1:
            raise ValueError(f"{text!r}: nodes and GPUs must be at least 1")
        return cls(nodes, gpus)

    @property
    def label(self) -> str:
        """The NxG spelling."""
        return f"{self.nodes}x{self.gpus_per_node}"


def expected_series(exposition: bytes) -> Counter[str]:
    """Count the samples of each metric name in an exposition text."""
    counts: Counter[str] = Counter()
    for line in exposition.split(b"\n"):
        if not line or line.startswith(b"#"):
            continue
        end = len(line)
        for stop in (b"{", b" "):
            position = line.find(stop)
            if position != -1:
                end = min(end, position)
        counts[line[:end].decode()] += 1
    return counts


class World:
    """Exporter + Prometheus for one cluster size; a context manager that stops both."""

    def __init__(self, size: Size, dialect: str, scrape_interval_s: int,
                 seed: int = 0, processes_per_busy_gpu: int = 2, fleet: bool = False) -> None:
        self.size = size
        self.dialect = dialect
        self.scrape_interval_s = scrape_interval_s
        self.spec = ClusterSpec(nodes=size.nodes, gpus_per_node=size.gpus_per_node,
                                seed=seed, processes_per_busy_gpu=processes_per_busy_gpu,
                                fleet=fleet)
        # Rows are GPUs plus MIG instances; the default spec has no MIG, so rows = GPUs.
        self.expected_gpus = len(snapshot(self.spec, 0))
        self._stack = ExitStack()
        self.exporter: ExporterServer | None = None
        self.prometheus: PrometheusServer | None = None
        self.exposition_bytes = 0
        self.expected: Counter[str] = Counter()
        self.ready_after_s = 0.0

    def __enter__(self) -> World:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    def _start(self) -> None:
        started = time.monotonic()
        # period 0 freezes the values: every answer is the same at every scrape.
        self.exporter = self._stack.enter_context(
            ExporterServer(self.spec, self.dialect, period_s=0.0))
        body = requests.get(f"{self.exporter.url}/metrics", timeout=120).content
        self.exposition_bytes = len(body)
        self.expected = expected_series(body)
        prometheus = PrometheusServer(self._targets(),
                                      scrape_interval=f"{self.scrape_interval_s}s",
                                      ready_timeout=60.0)
        prometheus.start()
        self._stack.callback(prometheus.stop)
        self.prometheus = prometheus
        self._wait_for_series()
        self.ready_after_s = round(time.monotonic() - started, 1)

    def _targets(self) -> list[ScrapeTarget]:
        assert self.exporter is not None
        if self.dialect not in NODELESS_DIALECTS:
            # One target for the whole cluster, as a DaemonSet behind a Service would look
            # to Prometheus if it were a single pod: simple and enough for the query side.
            return [ScrapeTarget(self.exporter.address, labels={"namespace": "gpu-operator"})]
        return [
            ScrapeTarget(self.exporter.address, metrics_path=f"/metrics/{node}",
                         labels={"instance": f"{node}:9835", "kubernetes_node": node})
            for node in node_names(self.spec)
        ]

    def _wait_for_series(self) -> None:
        """Block until Prometheus holds as many series of every metric as were exposed."""
        assert self.prometheus is not None
        names = "|".join(sorted(self.expected))
        query = f'count by (__name__) ({{__name__=~"{names}"}})'

        def complete(result: list[dict[str, Any]]) -> bool:
            have = {r["metric"].get("__name__"): int(float(r["value"][1])) for r in result}
            return all(have.get(name, 0) >= n for name, n in self.expected.items())

        # The first scrape starts at a random offset within the interval, then takes time.
        timeout = 3 * self.scrape_interval_s + 60
        try:
            self.prometheus.wait_for(query, complete, timeout=timeout, poll_interval=0.5)
        except DemoTimeoutError as exc:
            raise WorldError(f"not every GPU series reached Prometheus: {exc}") from exc

    @property
    def prometheus_url(self) -> str:
        """The running Prometheus' base URL."""
        assert self.prometheus is not None
        return self.prometheus.url

    def scrape_health(self) -> dict[str, Any]:
        """Scrape duration, samples and up of the exporter's targets, as Prometheus saw them."""
        prometheus = self.prometheus
        assert prometheus is not None

        def scalar(promql: str) -> float | None:
            result = prometheus.query(promql).get("data", {}).get("result", [])
            return float(result[0]["value"][1]) if result else None

        job = 'job=~"gpu-exporter.*"'
        duration = scalar(f"max(scrape_duration_seconds{{{job}}})")
        return {
            "targets": int(scalar(f"count(up{{{job}}})") or 0),
            "targets_up": int(scalar(f"sum(up{{{job}}})") or 0),
            "scrape_duration_max_s": round(duration, 3) if duration is not None else None,
            "samples_scraped": int(scalar(f"sum(scrape_samples_scraped{{{job}}})") or 0),
            "scrape_interval_s": self.scrape_interval_s,
            "scrape_timeout_s": self.scrape_interval_s,  # PrometheusServer sets them equal
            "healthy": duration is not None and duration < self.scrape_interval_s,
        }

    def prometheus_process(self) -> psutil.Process | None:
        """The Prometheus server process (a child of this one), to read its CPU time."""
        for child in psutil.Process().children(recursive=True):
            try:
                if child.name() == "prometheus":
                    return child
            except psutil.Error:
                continue
        return None

    def query_requests_total(self) -> float:
        """Prometheus' own count of /api/v1/query requests, read from its /metrics page.

        Reading /metrics does not go through /api/v1/query, so it does not count itself.
        """
        text = requests.get(f"{self.prometheus_url}/metrics", timeout=10).text
        return sum(float(value) for value in _QUERY_HANDLER_LINE.findall(text))


def prometheus_version() -> str:
    """First line of `prometheus --version`."""
    try:
        result = subprocess.run([find_prometheus_binary(), "--version"], capture_output=True,
                                text=True, timeout=10)
    except Exception as exc:
        return f"unknown ({exc})"
    return (result.stdout or result.stderr).splitlines()[0] if (result.stdout or
                                                                 result.stderr) else "unknown"
