"""GPU endpoints: list GPUs and GPU processes."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from flask import Blueprint, Response, request

from app.api.envelope import cached_ok, envelope_bytes
from app.schemas.args import GpuFilterArgsSchema, load_args
from app.schemas.dump import compile_dumper
from app.schemas.gpu import GpuProcessSchema, GpuSchema
from app.services.gpus import list_gpus, list_processes
from app.state import get_state

bp = Blueprint("gpu", __name__, url_prefix="/api/v1/gpu")

_filter_args = GpuFilterArgsSchema()
# The schemas are the contract; these dump what they would, fast enough for 8,000 rows.
_gpus = compile_dumper(GpuSchema())
_processes = compile_dumper(GpuProcessSchema())


@bp.get("/metrics")
def gpu_metrics() -> Response:
    """List every GPU with its utilization, memory, temperature and workload."""
    filters = load_args(_filter_args, request.args)
    state = get_state()
    prom = state.prometheus

    def produce() -> bytes:
        gpus = list_gpus(prom, state.dialects.current(prom).dialects, filters)
        return envelope_bytes(_gpus(gpus), "GPU metrics retrieved successfully")

    return _cached(("metrics", filters), produce)


@bp.get("/processes")
def gpu_processes() -> Response:
    """List every process holding GPU memory."""
    filters = load_args(_filter_args, request.args)
    state = get_state()
    prom = state.prometheus

    def produce() -> bytes:
        processes = list_processes(prom, state.dialects.current(prom).dialects, filters)
        return envelope_bytes(_processes(processes), "GPU processes retrieved successfully")

    return _cached(("processes", filters), produce)


def _cached(key: Hashable, produce: Callable[[], bytes]) -> Response:
    """Answer from the response cache, stale-if-error as configured."""
    state = get_state()
    served = state.cache.get(key, produce, stale_if_error=state.config.cache_stale_if_error,
                             upstream=f"Prometheus at {state.prometheus.display_url}")
    return cached_ok(served, state.cache.ttl)
