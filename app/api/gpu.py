"""GPU endpoints: list GPUs and GPU processes, answered from the response cache."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from flask import Blueprint, Response, request

from app.api.cached import cached_answer, cached_list
from app.api.openapi import UPSTREAM_ERRORS, Operation
from app.config import Config
from app.dialects.detect import Detection
from app.dialects.model import Dialect
from app.health.queries import HealthWindow
from app.prometheus.client import PrometheusClient
from app.schemas.args import (
    GpuFilterArgsSchema,
    GpuHealthArgsSchema,
    GpuMetricsArgsSchema,
    load_args,
)
from app.schemas.dump import compile_dumper
from app.schemas.gpu import GpuHealthReportSchema, GpuProcessSchema, GpuSchema
from app.services.fleet_queries import IdleRule
from app.services.gpu_health import gpu_health
from app.services.gpus import list_gpus, list_processes
from app.services.records import Gpu, GpuFilters, HealthQuery, SnapshotQuery
from app.state import get_state

bp = Blueprint("gpu", __name__, url_prefix="/api/v1/gpu")

_filter_args = GpuFilterArgsSchema()
_metrics_args = GpuMetricsArgsSchema()
_health_args = GpuHealthArgsSchema()
# Every row of the list carries its verdict over the default window.
ROW_HEALTH = HealthWindow()
# The schemas are the contract; these dump what they would, fast enough for 8,000 rows.
dump_gpus = compile_dumper(GpuSchema())
dump_processes = compile_dumper(GpuProcessSchema())
# The report's own fields through marshmallow; its rows through the fast dumper.
_report_schema = GpuHealthReportSchema(exclude=("gpus",))


@bp.get("/metrics")
@Operation("Every GPU (or MIG instance), sorted by node, index, MIG instance",
           ok="The GPUs", data=GpuSchema, many=True, args=_metrics_args,
           errors=("400", *UPSTREAM_ERRORS), cached=True)
def gpu_metrics() -> Response:
    """List every GPU with its utilization, memory, temperature and workload."""
    query: SnapshotQuery = load_args(_metrics_args, request.args)
    idle = idle_rule(get_state().config)
    if query.at is None:
        return cached_list("metrics", partial(_judged_gpus, idle=idle), query.filters,
                           dump_gpus, "GPU metrics retrieved successfully")

    def produce(prom: PrometheusClient, detection: Detection) -> object:
        return dump_gpus(list_gpus(prom, detection.dialects, query.filters, at=query.at,
                                   health=ROW_HEALTH, idle=idle))

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


def _judged_gpus(prom: PrometheusClient, dialects: Sequence[Dialect],
                 filters: GpuFilters, *, idle: IdleRule) -> list[Gpu]:
    return list_gpus(prom, dialects, filters, health=ROW_HEALTH, idle=idle)


def idle_rule(config: Config) -> IdleRule:
    """When a GPU counts as idle, as configured."""
    return IdleRule(config.idle_utilization_percent, config.idle_window)


@bp.get("/health")
@Operation("The GPUs that are not ok, with reasons and actions, and counts per status",
           ok="The health report", data=GpuHealthReportSchema, args=_health_args,
           errors=("400", *UPSTREAM_ERRORS), cached=True)
def gpu_health_report() -> Response:
    """Judge every GPU by its health signals; list those that are not ok."""
    query: HealthQuery = load_args(_health_args, request.args)

    def produce(prom: PrometheusClient, detection: Detection) -> object:
        report = gpu_health(prom, detection.dialects, query, now=time.time())
        data = _report_schema.dump(report)
        data["gpus"] = dump_gpus(report.gpus)
        return data

    return cached_answer(("gpu_health", query), produce,
                         "GPU health retrieved successfully")
