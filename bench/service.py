"""The service under gunicorn as deployed, a keep-alive HTTP client, and a memory sampler."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import psutil

ROOT = Path(__file__).resolve().parent.parent
# Settings the app reads: cleared so each run uses the shipped defaults, not the caller's.
_APP_VARIABLES = (
    "METRICS_DIALECT", "METRICS_MAPPING_FILE", "CACHE_TTL", "CACHE_STALE_SECONDS",
    "CACHE_MAX_MB", "QUERY_THREADS", "GUNICORN_THREADS", "WEB_CONCURRENCY", "PORT",
    "REQUEST_DEADLINE", "HISTORY_DEADLINE", "HISTORY_MAX_VALUES", "PROMETHEUS_TIMEOUT",
    "NODE_LABEL", "DIALECT_REFRESH_SECONDS", "LOG_LEVEL",
    "ENABLE_DEBUG_ENDPOINTS", "CORS_ORIGINS", "FORWARDED_ALLOW_IPS",
)
_START_ATTEMPTS = 3


class ServiceError(RuntimeError):
    """gunicorn did not start, or stopped answering."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, fully read."""

    status: int
    headers: dict[str, str]
    body: bytes


class HttpClient:
    """One keep-alive connection; reconnects once if the server closed it while idle."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self._port = port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        """GET `path` and read the whole body (no decoding of any Content-Encoding)."""
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self._port,
                                                        timeout=self._timeout)
            try:
                self._conn.request("GET", path, headers=headers or {})
                response = self._conn.getresponse()
                body = response.read()
                reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                              body)
                if response.will_close:
                    self.close()
                return reply
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                # gunicorn drops idle keep-alive connections after 5 s: reconnect once.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @property
    def local_port(self) -> int | None:
        """The client-side port of the open connection (to find the worker holding it)."""
        sock = self._conn.sock if self._conn is not None else None
        return int(sock.getsockname()[1]) if sock is not None else None

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RssSampler:
    """Sample the RSS of every worker of a gunicorn master every `interval` seconds."""

    def __init__(self, master_pid: int, interval: float = 0.5) -> None:
        self._master = psutil.Process(master_pid)
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.peak_by_pid: dict[int, int] = {}
        self.samples = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        """Begin sampling in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (waits for the thread, at most a few seconds)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        # Bounded: one sample per interval until stopped, and at most a day of samples.
        for _ in range(int(86400 / self._interval)):
            self.sample()
            if self._stop.wait(self._interval):
                return

    def sample(self) -> dict[int, int]:
        """Read every worker's RSS now; remember each one's peak."""
        current: dict[int, int] = {}
        try:
            children = self._master.children()
        except psutil.Error:
            return current
        for child in children:
            try:
                current[child.pid] = child.memory_info().rss
            except psutil.Error:
                continue  # a worker exiting between listing and reading
        with self._lock:
            self.samples += 1
            for pid, rss in current.items():
                self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), rss)
        return current


class GunicornService:
    """`gunicorn --config gunicorn.conf.py wsgi:app` from the repository root, as shipped."""

    def __init__(self, name: str, prometheus_url: str, log_dir: Path, *,
                 cache_ttl: str | None = None, workers: int = 2,
                 ready_timeout: float = 60.0) -> None:
        self.name = name
        self.prometheus_url = prometheus_url
        self.log_path = log_dir / f"gunicorn-{name}.log"
        self.cache_ttl = cache_ttl
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.sampler: RssSampler | None = None
        self._log_file: BinaryIO | None = None
        self.seen_workers: set[int] = set()
        # time.monotonic() when gunicorn was started, and when /api/livez first answered.
        self.started_at: float | None = None
        self.live_at: float | None = None

    @property
    def url(self) -> str:
        """Base URL of the running service."""
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """The process environment: shipped defaults plus the few settings we choose."""
        env = {k: v for k, v in os.environ.items()
               if k not in _APP_VARIABLES and not k.startswith("PROMETHEUS_")}
        env.update(PROMETHEUS_URL=self.prometheus_url, PORT=str(self.port),
                   WEB_CONCURRENCY=str(self.workers))
        if self.cache_ttl is not None:
            env["CACHE_TTL"] = self.cache_ttl
        return env

    def __enter__(self) -> GunicornService:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start gunicorn and wait until every worker answers /api/livez."""
        gunicorn = ROOT / ".venv" / "bin" / "gunicorn"
        if not gunicorn.exists():
            raise ServiceError(f"{gunicorn} is missing: create the venv first (make venv)")
        self._log_file = self.log_path.open("ab")
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            self.started_at, self.live_at = time.monotonic(), None
            self.process = subprocess.Popen(
                [str(gunicorn), "--config", "gunicorn.conf.py", "wsgi:app"],
                cwd=ROOT, env=self.environment(), stdin=subprocess.DEVNULL,
                stdout=self._log_file, stderr=subprocess.STDOUT,
                # Its own process group, so a stuck worker can be killed with its master.
                start_new_session=True,
            )
            if self._wait_live():
                self.sampler = RssSampler(self.process.pid).start()
                return
            self._terminate()  # lost the port race: try another port
        raise ServiceError(f"gunicorn ({self.name}) could not bind a port.\n{self.log_tail()}")

    def _wait_live(self) -> bool:
        """Poll /api/livez every 0.1 s until it answers and every worker process exists."""
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "Address already in use" in self.log_tail():
                    return False
                raise ServiceError(f"gunicorn ({self.name}) exited with code "
                                   f"{self.process.returncode}.\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                reply = HttpClient(self.port, timeout=5).get("/api/livez")
                if reply.status == 200 and self.live_at is None:
                    self.live_at = time.monotonic()
                if reply.status == 200 and len(self.worker_pids()) >= self.workers:
                    return True
            except OSError:
                pass  # not listening yet
            time.sleep(0.1)
        raise ServiceError(f"gunicorn ({self.name}) not live within {self.ready_timeout}s.\n"
                           f"{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        """PIDs of the master's current children (the workers)."""
        if self.process is None:
            return []
        try:
            pids = [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.Error:
            return []
        self.seen_workers.update(pids)
        return pids

    def worker_holding(self, client_port: int) -> int | None:
        """The worker whose socket is connected to our client's `client_port`, if any."""
        for pid in self.worker_pids():
            try:
                connections = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            for conn in connections:
                if conn.raddr and conn.raddr.port == client_port and conn.laddr.port == self.port:
                    return pid
        return None

    def worker_rss(self) -> dict[int, int]:
        """RSS in bytes of each current worker."""
        sampler = self.sampler
        return sampler.sample() if sampler is not None else {}

    def worker_cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the current workers."""
        return cpu_seconds(self.worker_pids())

    def log_tail(self, lines: int = 30) -> str:
        """The end of gunicorn's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no gunicorn log)"
        return "gunicorn log (tail):\n" + "\n".join(text.splitlines()[-lines:])

    def count_in_log(self, needle: str) -> int:
        """How many lines of gunicorn's output contain `needle`."""
        try:
            with self.log_path.open("rb") as log:
                return sum(1 for line in log if needle.encode() in line)
        except OSError:
            return 0

    def statuses(self, path: str) -> dict[str, int]:
        """How many answers to GET `path` the access log shows, by status code."""
        pattern = re.compile(rb"GET " + re.escape(path.encode()) + rb" (\d{3}) ")
        try:
            with self.log_path.open("rb") as log:
                found = Counter(m.group(1).decode() for line in log
                                if (m := pattern.search(line)))
        except OSError:
            return {}
        return dict(sorted(found.items()))

    def problems(self, limit: int = 5) -> list[str]:
        """The first WARNING and ERROR lines of the log: why answers were not 200."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line[:300] for line in lines if " WARNING " in line or " ERROR " in line][:limit]

    def stop(self) -> None:
        """Stop sampling, then SIGTERM gunicorn; SIGKILL its process group if it lingers."""
        if self.sampler is not None:
            self.sampler.stop()
        self._terminate()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        leftover = self._children(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)  # graceful_timeout is 20 s
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the group we created
                process.wait(timeout=10)
        # Workers orphaned by a killed master: end them by pid.
        # psutil refuses to signal a pid that was reused by another process since.
        for child in leftover:
            try:
                if child.is_running():
                    child.terminate()
                    child.wait(timeout=5)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.Error:
                pass

    @staticmethod
    def _children(pid: int) -> list[psutil.Process]:
        try:
            return psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return []


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes still alive among `pids`."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
