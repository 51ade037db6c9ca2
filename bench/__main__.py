"""Benchmark the GPU monitoring API at cluster scale against a real Prometheus.

    .venv/bin/python -m bench [--sizes 2x8,100x8,1000x8] [--duration 30] [--dialect dcgm]
                              [--only first-request] [--out bench/results/latest.json]

For each size: a simulated exporter and a real Prometheus, the floor (the service's own
PromQL sent straight to Prometheus), the service under gunicorn as deployed (cold with
CACHE_TTL=0, warm with the default cache), the first request of freshly started
instances, wrk at 8 and 32 connections, the queries Prometheus received, and worker
memory. Prints a table per size; writes every number to the JSON file. Exits 0 when every
target checked was met, 1 when one was missed or a size failed, 2 when a tool is missing,
130 when interrupted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import cache_probe, report, wrk
from bench.run import ONLY_CHOICES, Budget
from bench.service import ROOT
from bench.world import Size, prometheus_version

logger = logging.getLogger("bench")
DEFAULT_OUT = ROOT / "bench" / "results" / "latest.json"
CHILD_TIMEOUT_S = 1800


def _sizes(text: str) -> list[Size]:
    try:
        return [Size.parse(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _machine() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil
        memory_gb = round(psutil.virtual_memory().total / (1 << 30), 1)
    except Exception:  # decoration only: never fail the run over it
        memory_gb = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": memory_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "prometheus": prometheus_version(),
        "wrk": wrk.version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_app": bool(_git("status", "--porcelain", "--", "app", "wsgi.py",
                                   "gunicorn.conf.py")),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _run_child(size: Size, args: argparse.Namespace, budget: Budget,
               work_dir: Path) -> dict[str, Any]:
    """Measure one size in a fresh interpreter (see bench/one_size.py); return its JSON."""
    out = work_dir / f"{size.label}.json"
    command = [sys.executable, "-m", "bench.one_size", "--size", size.label,
               "--dialect", args.dialect, "--scrape-interval", str(args.scrape_interval),
               "--duration", str(budget.duration_s), "--cold-duration", str(budget.cold_wrk_s),
               "--first-request-starts", str(budget.first_request_starts),
               "--log-dir", str(work_dir), "--out", str(out)]
    if args.only:
        command += ["--only", args.only]
    child = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        # Generous: a 1000x8 size takes about 3 minutes.
        child.wait(timeout=CHILD_TIMEOUT_S)
    except BaseException:
        # Ctrl-C reached the child too; SIGTERM or our own timeout did not: pass it on.
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=90)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        raise
    try:
        return dict(orjson.loads(out.read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return {"size": size.label, "error": f"the size's process exited {child.returncode} "
                                             "without results"}


def _terminate(signum: int, frame: object) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C, so every finally block runs.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=_sizes("2x8,100x8,1000x8"),
                        help="comma-separated NODESxGPUS (default 2x8,100x8,1000x8)")
    parser.add_argument("--duration", type=int, default=30,
                        help="seconds of each warm wrk run (default 30)")
    parser.add_argument("--cold-duration", type=int, default=10,
                        help="seconds of the cold-path wrk run (default 10, capped by "
                             "--duration)")
    parser.add_argument("--dialect", default="dcgm", help="simulated exporter (default dcgm)")
    parser.add_argument("--scrape-interval", type=int, default=15,
                        help="Prometheus scrape interval = timeout, seconds (default 15)")
    parser.add_argument("--first-request-starts", type=int, default=5,
                        help="fresh gunicorn starts whose first request is timed (default 5)")
    parser.add_argument("--only", choices=ONLY_CHOICES,
                        help="run only this measurement (first-request: a few minutes at "
                             "1000x8)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON results (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.cold_duration < 1 or args.scrape_interval < 1:
        parser.error("durations and the scrape interval must be at least 1 second")
    if args.first_request_starts < 1:
        parser.error("--first-request-starts must be at least 1")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if args.only is None:  # only the wrk runs need it
        try:
            wrk.find_wrk()
        except wrk.WrkMissingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    from demo.dialects import DIALECTS
    if args.dialect not in DIALECTS:
        parser.error(f"--dialect must be one of {', '.join(DIALECTS)}")

    signal.signal(signal.SIGTERM, _terminate)
    budget = Budget(duration_s=args.duration,
                    cold_wrk_s=min(args.cold_duration, args.duration),
                    first_request_starts=args.first_request_starts)
    document: dict[str, Any] = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python -m bench", *(argv or sys.argv[1:])]),
        "machine": _machine(),
        "settings": {"sizes": [s.label for s in args.sizes], "duration_s": args.duration,
                     "cold_duration_s": budget.cold_wrk_s, "dialect": args.dialect,
                     "scrape_interval_s": args.scrape_interval, "workers": 2,
                     "processes_per_busy_gpu": 2, "exporter_period_s": 0,
                     "only": args.only, "first_request_starts": budget.first_request_starts,
                     "first_request_delay_s": budget.first_request_delay_s},
        "sizes": [],
    }
    started = time.monotonic()
    status = 0
    missed: list[str] = []
    if args.only is None:
        document["cache_single_flight_probe"] = probe = cache_probe.probe()
        print(f"response cache in isolation ({probe['threads']} threads, TTL "
              f"{probe['ttl_s']} s): produces per expiry {probe['produces_per_expiry']} -> "
              f"single flight {'held' if probe['single_flight_held'] else 'NOT held'}\n",
              flush=True)
        if not probe["single_flight_held"]:
            missed.append("response cache single flight not held in isolation")
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as work_dir:
        for size in args.sizes:
            try:
                result = _run_child(size, args, budget, Path(work_dir))
            except KeyboardInterrupt:
                logger.error("interrupted; everything started was stopped")
                status = 130
                break
            document["sizes"].append(result)
            if result.get("error") == "interrupted":
                status = 130
                break
            missed.extend(report.missed(result))
            if "error" not in result:
                print(report.table(result), flush=True)
                print(flush=True)
    document["elapsed_s"] = round(time.monotonic() - started, 1)
    document["missed"] = missed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out} ({document['elapsed_s']} s)")
    if status == 0 and missed:
        print(f"{len(missed)} target(s) missed:\n  " + "\n  ".join(missed), file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
