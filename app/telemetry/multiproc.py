"""The directory where gunicorn's workers keep their metric values (multiprocess mode).

Used by gunicorn.conf.py in the master, before any worker imports prometheus-client:
the client decides at import time whether it counts in files. Nothing here imports it
before that, and nothing needs a writable root filesystem: without
PROMETHEUS_MULTIPROC_DIR a private directory is made in memory (/dev/shm) or, failing
that, in the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# tmpfs in every container runtime; the temporary directory may be read-only with it.
_CANDIDATES = ("/dev/shm",)


class MultiprocDirError(RuntimeError):
    """No directory can hold the metric files; the message names the variable."""


def prepare(environ: MutableMapping[str, str]) -> tuple[Path, bool]:
    """Return the directory to count in, and whether we made it (then we remove it).

    A directory named by PROMETHEUS_MULTIPROC_DIR must exist and be writable (it is
    created if only its parent exists). The chosen path is put into `environ`, so the
    workers forked later inherit it.
    """
    named = environ.get(MULTIPROC_ENV)
    if named:
        path = Path(named)
        try:
            if not path.exists():
                path.mkdir()
        except OSError as exc:
            raise MultiprocDirError(f"{MULTIPROC_ENV}={named!r} cannot be created: "
                                    f"{exc.strerror}") from None
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            raise MultiprocDirError(f"{MULTIPROC_ENV}={named!r} is not a writable directory")
        return path, False
    for parent in (*_CANDIDATES, tempfile.gettempdir()):
        if os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
            path = Path(tempfile.mkdtemp(prefix="gpu-monitor-metrics-", dir=parent))
            environ[MULTIPROC_ENV] = str(path)
            return path, True
    raise MultiprocDirError(f"no writable directory for the workers' metrics: set "
                            f"{MULTIPROC_ENV} to one (an emptyDir volume, for instance)")


def clear(path: Path) -> None:
    """Remove the files of processes that ran before (a restarted container's volume).

    Counters must start at zero when the server does, as Prometheus expects of a
    restarted target; files left from a previous run would resurrect old counts.
    """
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def mark_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def remove(path: Path) -> None:
    """Remove a directory `prepare` made."""
    shutil.rmtree(path, ignore_errors=True)
