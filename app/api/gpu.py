"""GPU endpoints: list GPUs and GPU processes, answered from the response cache."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.api.cached import cached_answer, cached_list
from app.api.openapi import UPSTREAM_ERRORS, Operation
from app.dialects.detect import Detection
from app.prometheus.client import PrometheusClient
from app.schemas.args import GpuFilterArgsSchema, GpuMetricsArgsSchema, load_args
from app.schemas.dump import compile_dumper
from app.schemas.gpu import GpuProcessSchema, GpuSchema
from app.services.gpus import list_gpus, list_processes
from app.services.records import SnapshotQuery

bp = Blueprint("gpu", __name__, url_prefix="/api/v1/gpu")

_filter_args = GpuFilterArgsSchema()
_metrics_args = GpuMetricsArgsSchema()
# The schemas are the contract; these dump what they would, fast enough for 8,000 rows.
dump_gpus = compile_dumper(GpuSchema())
dump_processes = compile_dumper(GpuProcessSchema())


@bp.get("/metrics")
@Operation("Every GPU (or MIG instance), sorted by node, index, MIG instance",
           ok="The GPUs", data=GpuSchema, many=True, args=_metrics_args,
           errors=("400", *UPSTREAM_ERRORS), cached=True)
def gpu_metrics() -> Response:
    """List every GPU with its utilization, memory, temperature and workload."""
    query: SnapshotQuery = load_args(_metrics_args, request.args)
    if query.at is None:
        return cached_list("metrics", list_gpus, query.filters, dump_gpus,
                           "GPU metrics retrieved successfully")

    def produce(prom: PrometheusClient, detection: Detection) -> object:
        return dump_gpus(list_gpus(prom, detection.dialects, query.filters, at=query.at))

    # The snapshot of an instant is its own question: the instant is part of the key.
    return cached_answer(("metrics", query.filters, query.at), produce,
                         "GPU metrics retrieved successfully")


@bp.get("/processes")
@Operation("Every process holding GPU memory, sorted by node, GPU index, pid",
           ok="The processes", data=GpuProcessSchema, many=True, args=_filter_args,
           errors=("400", *UPSTREAM_ERRORS), cached=True)
def gpu_processes() -> Response:
    """List every process holding GPU memory."""
    filters = load_args(_filter_args, request.args)
    return cached_list("processes", list_processes, filters, dump_processes,
                       "GPU processes retrieved successfully")
