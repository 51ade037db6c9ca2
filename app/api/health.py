"""Health endpoints: readiness (needs Prometheus) and liveness (does not)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app import __version__
from app.api.envelope import ok
from app.api.openapi import Operation
from app.schemas.args import NoArgsSchema, load_args
from app.schemas.health import HealthSchema, LivenessSchema
from app.services.health import check_health
from app.state import get_state

bp = Blueprint("health", __name__, url_prefix="/api")

_health = HealthSchema()
_liveness = LivenessSchema()
_no_args = NoArgsSchema()


@bp.get("/healthz")
@Operation("Readiness: can the service reach Prometheus?", ok="Prometheus answers",
           data=HealthSchema, errors=("400", "503"),
           error_texts={"503": "Prometheus is unreachable, too slow or failing"})
def healthz() -> Response:
    """Report whether Prometheus answers; 503 when it does not."""
    load_args(_no_args, request.args)
    report = check_health(get_state().prometheus, __version__)
    return ok(_health.dump(report), "Service is healthy")


@bp.get("/livez")
@Operation("Liveness: the process runs (Prometheus is not asked)", ok="Alive",
           data=LivenessSchema)
def livez() -> Response:
    """Report that this process is alive, without asking Prometheus."""
    load_args(_no_args, request.args)
    return ok(_liveness.dump({"status": "alive"}), "Service is alive")
