"""Run wrk against the service and read its report: throughput, latency, errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


class WrkMissingError(RuntimeError):
    """wrk is not installed."""


def find_wrk() -> str:
    """Return the path of wrk or raise WrkMissingError with the install hint."""
    found = shutil.which("wrk") or next(
        (path for path in ("/usr/bin/wrk", "/usr/local/bin/wrk") if os.access(path, os.X_OK)),
        None,
    )
    if not found:
        raise WrkMissingError(
            "wrk is not installed. It is the Debian package `wrk`: "
            "sudo apt-get install wrk (then run python -m bench again)."
        )
    return found


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    connections: int
    threads: int
    duration_s: float
    requests: int
    requests_per_s: float
    p50_ms: float | None
    p75_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    bytes_read: int
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    timeout_s: float | None

    @property
    def errors(self) -> int:
        """Non-2xx/3xx answers plus every kind of socket error."""
        return self.non_2xx_3xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the JSON report."""
        return {**asdict(self), "errors": self.errors}


def _ms(value: str, unit: str) -> float:
    return round(float(value) * _TIME_UNITS[unit], 3)


def parse(output: str, connections: int, threads: int, timeout_s: float | None) -> WrkResult:
    """Read wrk's text report (run with --latency)."""
    number = r"([\d.]+)"
    unit = r"(us|ms|s|m|h)\b"
    distribution = {
        int(q): _ms(v, u)
        for q, v, u in re.findall(rf"^\s+(50|75|90|99)(?:\.0+)?%\s+{number}{unit}", output, re.M)
    }
    latency_max = re.search(rf"^\s+Latency\s+\S+\s+\S+\s+{number}{unit}", output, re.M)
    total = re.search(rf"(\d+) requests in {number}{unit}, {number}([KMGT]?B) read", output)
    rps = re.search(rf"Requests/sec:\s+{number}", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if total is None or rps is None:
        raise RuntimeError(f"could not read wrk's report:\n{output}")
    return WrkResult(
        connections=connections,
        threads=threads,
        duration_s=round(_ms(total.group(2), total.group(3)) / 1000.0, 2),
        requests=int(total.group(1)),
        requests_per_s=float(rps.group(1)),
        p50_ms=distribution.get(50),
        p75_ms=distribution.get(75),
        p90_ms=distribution.get(90),
        p99_ms=distribution.get(99),
        max_ms=_ms(latency_max.group(1), latency_max.group(2)) if latency_max else None,
        bytes_read=int(float(total.group(4)) * _SIZE_UNITS[total.group(5)]),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"),
                               map(int, sockets.groups()), strict=True)) if sockets
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        timeout_s=timeout_s,
    )


def run(url: str, *, connections: int, duration_s: int, threads: int = 2,
        timeout_s: float | None = None) -> tuple[WrkResult, str]:
    """Run `wrk -t<threads> -c<connections> -d<duration>s --latency url`; return result, text.

    `timeout_s` None keeps wrk's own default (2 s: slower answers count as timeouts).
    """
    command = [find_wrk(), f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    if timeout_s is not None:
        command.append(f"--timeout={timeout_s:g}s")
    command.append(url)
    completed = subprocess.run(command, capture_output=True, text=True,
                               timeout=duration_s + 60, stdin=subprocess.DEVNULL)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse(completed.stdout, connections, threads, timeout_s), completed.stdout


def version() -> str:
    """wrk's version line (it prints it on -v)."""
    try:
        completed = subprocess.run([find_wrk(), "-v"], capture_output=True, text=True, timeout=10)
    except (WrkMissingError, OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (completed.stdout or completed.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
