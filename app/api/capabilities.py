"""What this deployment can tell, so a frontend can hide columns instead of showing nulls."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, Response, request

from app.api.envelope import ok
from app.api.openapi import UPSTREAM_ERRORS, Operation
from app.durations import format_duration
from app.schemas.args import NoArgsSchema, load_args
from app.schemas.capabilities import CapabilitiesSchema
from app.schemas.gpu import GpuProcessSchema, GpuSchema
from app.services.capabilities import describe_capabilities, fleet_capabilities
from app.services.fleet_queries import KSM_PRESENT
from app.state import get_state

bp = Blueprint("capabilities", __name__, url_prefix="/api/v1")

_schema = CapabilitiesSchema()
_no_args = NoArgsSchema()
_GPU_ORDER = tuple(GpuSchema().fields)
_PROCESS_ORDER = tuple(GpuProcessSchema().fields)


@bp.get("/capabilities")
@Operation("Exporters found, the fields they fill, and why others are missing",
           ok="Capabilities", data=CapabilitiesSchema, errors=("400", *UPSTREAM_ERRORS))
def capabilities() -> Response:
    """Report the detected exporter dialects, the fields they fill, and notes."""
    load_args(_no_args, request.args)
    state = get_state()
    detection = state.detection()
    report = describe_capabilities(detection, _GPU_ORDER, _PROCESS_ORDER)
    present = state.prometheus.query(KSM_PRESENT)
    config = state.config
    fleet = fleet_capabilities(detection, bool(present.series),
                               config.idle_utilization_percent,
                               format_duration(config.idle_window))
    report = dataclasses.replace(report, fleet=fleet, notes=report.notes + fleet.notes)
    return ok(_schema.dump(report), "Capabilities retrieved successfully")
