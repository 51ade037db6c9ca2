"""The app as deployed: gunicorn with the shipped gunicorn.conf.py, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GunicornServer:
    """Start gunicorn with `env` on top of ours; `stop()` returns everything it printed."""

    def __init__(self, env: dict[str, str], ready_timeout: float = 30.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, "PORT": str(self.port), **env}
        self._ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.output = ""
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> GunicornServer:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self._process = subprocess.Popen(
            [str(gunicorn), "--config", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
            env=self._env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._ready_timeout
        while True:
            try:
                requests.get(f"{self.url}/api/livez", timeout=5)
                return self
            except requests.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start:\n" + self.stop()) from None
                time.sleep(0.1)

    def stop(self) -> str:
        """SIGTERM, wait for the graceful exit, and return the output."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            self.output = process.communicate(timeout=30)[0].decode()
            self.returncode = process.returncode
        return self.output

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
