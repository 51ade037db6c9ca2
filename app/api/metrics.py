"""GET /metrics: the service's own metrics for Prometheus to scrape.

Not in the envelope (a scraper reads the exposition format) and never cached. With
METRICS_PORT set this view is not registered: gunicorn's master serves the same metrics
on that port instead.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.api.openapi import Operation
from app.state import get_state

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@Operation("The service's own metrics, in Prometheus' text format (not in the envelope)",
           ok="Prometheus text exposition (OpenMetrics when the Accept header asks for it)",
           body={"type": "string"}, errors=(), media_type="text/plain")
def metrics() -> Response:
    """The metrics of every worker process, in the format the scraper accepts."""
    body, content_type = get_state().telemetry.render(request.headers.get("Accept"))
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response
