"""Start and stop a real Prometheus for tests, benchmarks and the demo.

Targets go into a file_sd JSON file, one group per target, each with its own
`__metrics_path__`: that is how many per-node paths on one exporter port become distinct
targets. Everything lives in a temporary directory that stop() removes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import requests

DEBIAN_PACKAGE = "prometheus"
BINARY_ENV = "PROMETHEUS_BINARY"
_DEFAULT_PATHS = ("/usr/bin/prometheus", "/usr/local/bin/prometheus")
_PORT_ATTEMPTS = 3


class PrometheusError(RuntimeError):
    """Base of every failure of the test Prometheus."""


class PrometheusNotInstalledError(PrometheusError):
    """The prometheus binary cannot be found."""


class PrometheusStartError(PrometheusError):
    """Prometheus exited or did not become ready in time."""


class PrometheusTimeoutError(PrometheusError, TimeoutError):
    """A wait_for() condition did not hold before its deadline."""


@dataclasses.dataclass(frozen=True)
class ScrapeTarget:
    """One scrape target: an exporter address, the path to scrape, and target labels."""

    address: str
    metrics_path: str = "/metrics"
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # None: the server's default. False reproduces a ServiceMonitor's honorLabels: false.
    honor_labels: bool | None = None


def find_prometheus_binary(binary: str | None = None) -> str:
    """Return the path of the prometheus binary, or raise PrometheusNotInstalledError.

    Looks at `binary`, then $PROMETHEUS_BINARY, then PATH, then the Debian location.
    """
    return find_binary("prometheus", DEBIAN_PACKAGE, BINARY_ENV, _DEFAULT_PATHS, binary)


def find_binary(name: str, package: str, env: str, default_paths: Sequence[str],
                binary: str | None = None) -> str:
    """Return the path of server binary `name`, or raise PrometheusNotInstalledError.

    Looks at `binary`, then $`env`, then PATH, then `default_paths`.
    """
    hint = (
        f"Install the Debian package (`apt-get install {package}`), "
        f"or set {env} to the binary's path."
    )
    explicit = binary or os.environ.get(env)
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise PrometheusNotInstalledError(
                f"{name} binary {explicit!r} is not executable. {hint}"
            )
        return found
    for candidate in (shutil.which(name), *default_paths):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise PrometheusNotInstalledError(
        f"{name} binary not found on PATH or in {', '.join(default_paths)}. {hint}"
    )


class PrometheusServer:
    """Run a real Prometheus that scrapes `targets`; use as a context manager.

    `workdir`, when given, is used as-is and left in place; otherwise a temporary
    directory holds the config, targets, TSDB and log, and stop() removes it.
    Another Prometheus-compatible server is a subclass: its binary, its command line,
    its readiness path and where its Prometheus API is (`api_prefix`).
    """

    # The Prometheus API root below the server's address (what PROMETHEUS_URL names).
    api_prefix = ""
    ready_path = "/-/ready"

    def __init__(
        self,
        targets: Sequence[ScrapeTarget],
        scrape_interval: str = "1s",
        honor_labels: bool = True,
        binary: str | None = None,
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        ready_timeout: float = 30.0,
        retention: str = "1h",
        query_log: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.targets = list(targets)
        # A throwaway instance keeps little; one serving backfilled blocks keeps them all.
        self.retention = retention
        # Prometheus' own log of every query it ran, with its parameters (one JSON a line).
        self.query_log = query_log
        self.extra_args = tuple(extra_args)
        self.scrape_interval = scrape_interval
        self.honor_labels = honor_labels
        self.ready_timeout = ready_timeout
        self._binary = binary
        self._requested_port = port
        self._requested_workdir = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._session = requests.Session()

    @property
    def url(self) -> str:
        """Return the URL of the running server's Prometheus API root."""
        return self.root_url + self.api_prefix

    @property
    def root_url(self) -> str:
        """Return the address of the running server."""
        if self._port is None:
            raise PrometheusError("Prometheus is not running; call start() first")
        return f"http://127.0.0.1:{self._port}"

    @property
    def workdir(self) -> Path:
        """Return the directory holding prometheus.yml, target files, data/ and the log."""
        if self._workdir is None:
            raise PrometheusError("Prometheus is not running; call start() first")
        return self._workdir

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (to read its CPU time)."""
        return self._process.pid if self._process is not None else None

    @property
    def session(self) -> requests.Session:
        """The HTTP session this object talks to the server with."""
        return self._session

    @property
    def query_log_path(self) -> Path | None:
        """Where Prometheus logs its queries, when `query_log` is on."""
        return self.workdir / "queries.jsonl" if self.query_log else None

    def start(self) -> Self:
        """Write the config, start Prometheus and wait until /-/ready answers."""
        binary = self.find_binary(self._binary)
        if self._requested_workdir is not None:
            self._requested_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = self._requested_workdir
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        try:
            self._write_config()
            # A port picked by us may be taken between picking and binding: pick again.
            attempts = 1 if self._requested_port else _PORT_ATTEMPTS
            for _ in range(attempts):
                self._port = self._requested_port or _free_port()
                if self._wait_ready(self._launch(binary)):
                    return self
                self._terminate()
            raise PrometheusStartError(
                f"Prometheus could not bind a port in {attempts} attempt(s).\n{self.log_tail()}"
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate Prometheus (kill it if it lingers) and remove the temporary directory."""
        self._terminate()
        self._session.close()
        if self._workdir is not None and self._requested_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def query(self, promql: str) -> dict[str, Any]:
        """Run an instant query and return Prometheus' JSON answer as is."""
        response = self._session.get(
            f"{self.url}/api/v1/query", params={"query": promql}, timeout=(2.0, 10.0)
        )
        try:
            return dict(response.json())
        except ValueError as exc:
            raise PrometheusError(
                f"query {promql!r} answered HTTP {response.status_code} with non-JSON: "
                f"{response.text[:200]!r}"
            ) from exc

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        min_count: int = 1,
        timeout: float = 30.0,
        poll_interval: float = 0.1,
    ) -> dict[str, Any]:
        """Poll `promql` until its result satisfies `predicate` (or has `min_count` series).

        Returns the last JSON answer; raises PrometheusTimeoutError at the deadline.
        """
        deadline = time.monotonic() + timeout
        answer: dict[str, Any] = {}
        while True:
            answer = self.query(promql)
            result = answer.get("data", {}).get("result", [])
            if answer.get("status") == "success" and (
                predicate(result) if predicate is not None else len(result) >= min_count
            ):
                return answer
            if time.monotonic() >= deadline:
                raise PrometheusTimeoutError(
                    f"{promql!r} did not reach the expected result within {timeout}s; "
                    f"last answer: {json.dumps(answer)[:500]}\n{self.log_tail()}"
                )
            time.sleep(poll_interval)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of Prometheus' log, for error messages."""
        if self._workdir is None:
            return "(no Prometheus log: not started)"
        log_path = self._workdir / "prometheus.log"
        if not log_path.exists():
            return "(no Prometheus log yet)"
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
        return "Prometheus log (tail):\n" + "\n".join(tail)

    def _write_config(self) -> None:
        workdir = self.workdir
        jobs = []
        for honor in (True, False):
            groups = [
                {
                    "targets": [target.address],
                    "labels": {"__metrics_path__": target.metrics_path, **target.labels},
                }
                for target in self.targets
                if (self.honor_labels if target.honor_labels is None
                    else target.honor_labels) == honor
            ]
            if not groups:
                continue
            name = "gpu-exporter" if honor else "gpu-exporter-no-honor"
            (workdir / f"{name}.json").write_text(json.dumps(groups, indent=1))
            jobs.append(
                {
                    "job_name": name,
                    "honor_labels": honor,
                    "file_sd_configs": [{"files": [str(workdir / f"{name}.json")]}],
                }
            )
        settings = {
            "scrape_interval": self.scrape_interval,
            # Prometheus refuses a timeout longer than the interval (default 10s).
            "scrape_timeout": self.scrape_interval,
            "evaluation_interval": self.scrape_interval,
        }
        if self.query_log_path is not None:
            settings["query_log_file"] = str(self.query_log_path)
        config = {"global": settings, "scrape_configs": jobs}
        # JSON is valid YAML, and writing it needs no YAML library.
        (workdir / "prometheus.yml").write_text(json.dumps(config, indent=1))

    def find_binary(self, binary: str | None) -> str:
        """The server binary to run."""
        return find_prometheus_binary(binary)

    def command(self, binary: str) -> list[str]:
        """The command line that serves on self._port from self.workdir."""
        workdir = self.workdir
        return [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self._port}",
            "--web.enable-lifecycle",
            f"--storage.tsdb.retention.time={self.retention}",
            # A throwaway instance never waits on remote storage.
            "--storage.remote.flush-deadline=1s",
            *self.extra_args,
        ]

    def _launch(self, binary: str) -> subprocess.Popen[bytes]:
        workdir = self.workdir
        self._log = (workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            self.command(binary),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        return self._process

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> bool:
        """Return True once ready, False if it died of a taken port; raise otherwise."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                if "address already in use" in self.log_tail(lines=50):
                    return False
                raise PrometheusStartError(
                    f"Prometheus exited with code {process.returncode}.\n{self.log_tail()}"
                )
            try:
                ready = self._session.get(self.root_url + self.ready_path, timeout=1.0)
                # Another server may hold the port we picked (ours then fails to bind and
                # exits): only our own server's answer counts.
                if ready.status_code == 200 and self._serves_our_workdir():
                    return True
            except requests.RequestException:
                pass  # not listening yet
            time.sleep(0.05)
        raise PrometheusStartError(
            f"Prometheus was not ready within {self.ready_timeout}s.\n{self.log_tail()}"
        )

    def _serves_our_workdir(self) -> bool:
        """Tell whether the server on our port is the one reading our workdir's config."""
        flags = self._session.get(f"{self.url}/api/v1/status/flags", timeout=1.0)
        return bool(flags.ok and flags.json().get("data", {}).get("config.file")
                    == str(self.workdir / "prometheus.yml"))

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
