"""Development-only introspection, like Go's /debug/vars and /debug/pprof.

Registered only when ENABLE_DEBUG_ENDPOINTS is true; otherwise these paths are plain 404s.
"""

from __future__ import annotations

import collections
import os
import resource
import sys
import threading
import time
import traceback

from flask import Blueprint, Response, request
from marshmallow import Schema, fields, validate

from app.api.envelope import ok
from app.schemas.args import NoArgsSchema, load_args
from app.state import get_state

bp = Blueprint("debug", __name__, url_prefix="/debug")

SAMPLE_INTERVAL_S = 0.01


class ProfileArgsSchema(Schema):
    """How long to sample, and how many functions to report."""

    seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=30))
    top = fields.Integer(load_default=30, validate=validate.Range(min=1, max=500))


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


@bp.get("/vars")
def debug_vars() -> Response:
    """Memory, threads, uptime and request counts of this worker process."""
    load_args(NoArgsSchema(), request.args)
    state = get_state()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return ok(
        {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "uptime_seconds": round(time.time() - state.stats.started, 3),
            "memstats": {"rss_bytes": _rss_bytes(), "max_rss_bytes": usage.ru_maxrss * 1024},
            "cpu_seconds": {"user": usage.ru_utime, "system": usage.ru_stime},
            "threads": threading.active_count(),
            "open_fds": _open_fds(),
            "requests_by_status": state.stats.snapshot(),
        }
    )


@bp.get("/pprof/threads")
def debug_threads() -> Response:
    """The current stack of every thread (like a goroutine dump)."""
    load_args(NoArgsSchema(), request.args)
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks = {
        f"{names.get(ident, 'unknown')} ({ident})": traceback.format_stack(frame)
        for ident, frame in sys._current_frames().items()
    }
    return ok(stacks)


@bp.get("/pprof/profile")
def debug_profile() -> Response:
    """Sample every thread's stack for a while; report where time was spent."""
    args = load_args(ProfileArgsSchema(), request.args)
    me = threading.get_ident()
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    samples = 0
    deadline = time.monotonic() + args["seconds"]
    while time.monotonic() < deadline:
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
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
            samples += 1
        time.sleep(SAMPLE_INTERVAL_S)
    top = args["top"]
    return ok(
        {
            "seconds": args["seconds"],
            "thread_samples": samples,
            "self": [{"function": f, "samples": n} for f, n in leaf.most_common(top)],
            "cumulative": [{"function": f, "samples": n} for f, n in inclusive.most_common(top)],
        }
    )
