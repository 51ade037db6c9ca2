"""What this worker process is doing: memory, threads, stacks, and a sampling profiler.

The debug endpoints (app/api/debug.py) serve these; they read only this process.
"""

from __future__ import annotations

import collections
import gc
import os
import resource
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

from app.state import RequestStats

SAMPLE_INTERVAL_S = 0.01
_FRAMES_LOCK = threading.Lock()


def current_frames() -> dict[int, FrameType]:
    """sys._current_frames() with the garbage collector held off.

    On CPython 3.11 a collection that starts inside it (any allocation can start one) may
    run a finalizer that releases the GIL while the runtime's thread list is locked, and
    the whole process deadlocks: CPython gh-106883, fixed by 3.12's collector timing only.
    The lock keeps two callers from re-enabling the collector under each other.
    """
    with _FRAMES_LOCK:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return sys._current_frames()
        finally:
            if enabled:
                gc.enable()


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def process_vars(stats: RequestStats) -> dict[str, Any]:
    """Memory, CPU, threads, uptime and request counts of this process (like /debug/vars)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "uptime_seconds": round(time.time() - stats.started, 3),
        "memstats": {"rss_bytes": _rss_bytes(), "max_rss_bytes": usage.ru_maxrss * 1024},
        "cpu_seconds": {"user": usage.ru_utime, "system": usage.ru_stime},
        "threads": threading.active_count(),
        "open_fds": _open_fds(),
        "requests_by_status": stats.snapshot(),
    }


def thread_stacks() -> dict[str, list[str]]:
    """The current stack of every thread, keyed by name and id (like a goroutine dump)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return {
        f"{names.get(ident, 'unknown')} ({ident})": traceback.format_stack(frame)
        for ident, frame in current_frames().items()
    }


def _count_stack(frame: FrameType | None, leaf: collections.Counter[str],
                 inclusive: collections.Counter[str]) -> None:
    """Count one stack: its innermost function as `leaf`, each function once as `inclusive`."""
    seen: set[str] = set()
    first = True
    while frame is not None:
        code = frame.f_code
        where = f"{code.co_filename}:{code.co_firstlineno} {code.co_qualname}"
        if first:
            leaf[where] += 1
            first = False
        if where not in seen:
            inclusive[where] += 1
            seen.add(where)
        frame = frame.f_back


def sample_profile(seconds: float, top: int) -> dict[str, Any]:
    """Sample every other thread's stack for `seconds`; the `top` functions by samples."""
    me = threading.get_ident()
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    samples = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for ident, frame in current_frames().items():
            if ident != me:
                _count_stack(frame, leaf, inclusive)
                samples += 1
        time.sleep(SAMPLE_INTERVAL_S)  # the sampling period, not a wait for a condition
    return {
        "seconds": seconds,
        "thread_samples": samples,
        "self": [{"function": f, "samples": n} for f, n in leaf.most_common(top)],
        "cumulative": [{"function": f, "samples": n} for f, n in inclusive.most_common(top)],
    }
