"""Development-only introspection, like Go's /debug/vars and /debug/pprof.

Registered only when ENABLE_DEBUG_ENDPOINTS is true; otherwise these paths are plain 404s.
Not in the OpenAPI document: these views carry no Operation.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.api.envelope import ok
from app.introspection import process_vars, sample_profile, thread_stacks
from app.schemas.args import NoArgsSchema, ProfileArgsSchema, load_args
from app.state import get_state

bp = Blueprint("debug", __name__, url_prefix="/debug")

_no_args = NoArgsSchema()
_profile_args = ProfileArgsSchema()


@bp.get("/vars")
def debug_vars() -> Response:
    """Memory, threads, uptime and request counts of this worker process."""
    load_args(_no_args, request.args)
    return ok(process_vars(get_state().stats))


@bp.get("/pprof/threads")
def debug_threads() -> Response:
    """The current stack of every thread (like a goroutine dump)."""
    load_args(_no_args, request.args)
    return ok(thread_stacks())


@bp.get("/pprof/profile")
def debug_profile() -> Response:
    """Sample every thread's stack for a while; report where time was spent."""
    args = load_args(_profile_args, request.args)
    return ok(sample_profile(args["seconds"], args["top"]))
