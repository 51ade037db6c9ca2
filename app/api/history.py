"""GPU history for charts: any field over any window, per GPU or rolled up."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.api.cached import cached_answer
from app.api.envelope import fail
from app.api.openapi import UPSTREAM_ERRORS, Operation
from app.dialects.detect import Detection
from app.prometheus.client import PrometheusClient
from app.schemas.args import HistoryArgsSchema, load_args
from app.schemas.history import HistorySchema, dump_history
from app.services.history import HistoryTooLargeError, gpu_history, series_hint
from app.services.records import HistoryQuery
from app.state import get_state

bp = Blueprint("history", __name__, url_prefix="/api/v1/gpu")

_history_args = HistoryArgsSchema()


@bp.get("/history")
@Operation("GPU fields over time, per GPU or per node, namespace, model or cluster",
           ok="One timestamps array and one series per GPU or group", data=HistorySchema,
           args=_history_args, errors=("400", *UPSTREAM_ERRORS), cached=True,
           error_texts={"400": "Invalid query parameters, a window Prometheus would refuse, "
                               "or an answer over HISTORY_MAX_VALUES values"})
def gpu_history_view() -> Response:
    """Chart-ready history: shared timestamps, null where Prometheus has no sample."""
    query: HistoryQuery = load_args(_history_args, request.args)
    max_values = get_state().config.history_max_values

    def produce(prom: PrometheusClient, detection: Detection) -> object:
        history = gpu_history(prom, detection.dialects, query, max_values=max_values,
                              series_hint=series_hint(detection, detection.dialects))
        return dump_history(history)

    # The aligned window is the key: every chart asking within one step shares it.
    return cached_answer(("history", query), produce, "GPU history retrieved successfully",
                         history=True)


@bp.errorhandler(HistoryTooLargeError)
def too_large(exc: HistoryTooLargeError) -> Response:
    """An answer too large to send is the caller's to narrow: a 400 saying how."""
    return fail(400, str(exc))
