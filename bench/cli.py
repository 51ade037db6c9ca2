"""What every benchmark's command line does: check its tools, start a results document,
write it and say which targets were missed."""

from __future__ import annotations

import datetime
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import requests

from bench.run import cpu_snapshot, foreign_cpu
from bench.service import ROOT, ServiceError
from bench.world import prometheus_version
from tests.integration.history_world import HistoryWorldError


def missing_tools(*tools: str) -> list[str]:
    """The command-line tools (and the venv's gunicorn) that are not installed."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not (ROOT / ".venv" / "bin" / "gunicorn").exists():
        missing.append(".venv/bin/gunicorn (make venv)")
    return missing


def ready_to_run(*tools: str) -> bool:
    """Log to stderr with timestamps; False (after saying which) when a tool is missing."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    missing = missing_tools(*tools)
    if missing:
        print(f"error: missing {', '.join(missing)}", file=sys.stderr)
    return not missing


def new_document(module: str, argv: list[str] | None) -> dict[str, Any]:
    """The results document's header: when, which command, which Prometheus, how many cores."""
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([f".venv/bin/python -m {module}", *(argv or sys.argv[1:])]),
        "prometheus": prometheus_version(), "cores": psutil.cpu_count(),
    }


def finish(document: dict[str, Any], out: Path, missed: list[str], status: int) -> int:
    """Write the document, warn about a busy machine, list missed targets; the exit status."""
    document["missed"] = missed
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    load = document.get("machine_load")
    if load and not load["quiet"]:
        print(f"warning: other processes used {load['foreign_share']:.0%} of the machine's CPU "
              "meanwhile: the latencies are suspect", file=sys.stderr)
    print(f"wrote {out} ({document['elapsed_s']} s)")
    if status == 0 and missed:
        print(f"{len(missed)} target(s) missed:\n  " + "\n  ".join(missed), file=sys.stderr)
        status = 1
    return status


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind like Ctrl-C, so every finally block runs


def run_measured(module: str, argv: list[str] | None, prefix: str,
                 run: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """Run `run` in a temporary directory; the document (with the machine's load and the
    elapsed time, or the error) and the exit status so far (0, 1 failed, 130 interrupted)."""
    logger = logging.getLogger(module)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    document = new_document(module, argv)
    status = 0
    cpu_before = cpu_snapshot()
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        try:
            document.update(run(Path(work)))
            document["machine_load"] = foreign_cpu(cpu_before, cpu_snapshot(),
                                                   document.get("browser_cpu_s", 0.0))
        except KeyboardInterrupt:
            logger.error("interrupted; everything started was stopped")
            document["error"], status = "interrupted", 130
        except (ServiceError, HistoryWorldError, RuntimeError, requests.RequestException) as exc:
            logger.exception("the benchmark failed")
            document["error"], status = repr(exc), 1
    document["elapsed_s"] = round(time.monotonic() - started, 1)
    return document, status
