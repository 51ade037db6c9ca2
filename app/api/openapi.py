"""The OpenAPI 3 document, generated from the marshmallow schemas, served as JSON."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app
from marshmallow import Schema, fields

from app import __version__
from app.schemas.args import GpuFilterArgsSchema
from app.schemas.capabilities import CapabilitiesSchema
from app.schemas.fields import Timestamp
from app.schemas.gpu import GpuProcessSchema, GpuSchema
from app.schemas.health import HealthSchema, LivenessSchema

bp = Blueprint("openapi", __name__, url_prefix="/api")

UPSTREAM_ERRORS = {
    "502": "Prometheus answered with an error or something that is not its API",
    "503": "Prometheus is unreachable or said it is unavailable",
    "504": "Prometheus did not answer in time",
}


def envelope(name: str, data: fields.Field) -> type[Schema]:
    """A success envelope whose `data` is `data`."""
    return Schema.from_dict(
        {
            "success": fields.Boolean(required=True, metadata={"enum": [True]}),
            "data": data,
            "message": fields.String(required=True, allow_none=True),
            "error": fields.String(required=True, allow_none=True,
                                   metadata={"enum": [None]}),
        },
        name=name,
    )


class ErrorEnvelopeSchema(Schema):
    """Every failure: no data, no message, an actionable error."""

    success = fields.Boolean(required=True, metadata={"enum": [False]})
    data = fields.Raw(required=True, allow_none=True, metadata={"enum": [None]})
    message = fields.String(required=True, allow_none=True, metadata={"enum": [None]})
    error = fields.String(required=True, metadata={"description": "What went wrong"})


def _response(description: str, schema: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: str) -> dict[str, Any]:
    """Error responses; every endpoint may also refuse an oversized request."""
    texts = {"400": "Invalid query parameters", **UPSTREAM_ERRORS,
             "414": "Query string too long", "431": "Request headers too large"}
    return {status: _response(texts[status], "ErrorEnvelope")
            for status in (*statuses, "414", "431")}


def build_spec() -> dict[str, Any]:
    """Describe every public endpoint, parameter and response, with the envelope."""
    marshmallow_plugin = MarshmallowPlugin()
    spec = APISpec(
        title="GPU monitoring API",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[marshmallow_plugin],
        info={"description": "NVIDIA GPU metrics from Prometheus, for dashboards. Every "
                             "response is a {success, data, message, error} envelope."},
    )
    marshmallow_plugin.map_to_openapi_type(Timestamp, "string", "date-time")
    spec.components.schema("Gpu", schema=GpuSchema)
    spec.components.schema("GpuProcess", schema=GpuProcessSchema)
    spec.components.schema("Health", schema=HealthSchema)
    spec.components.schema("Liveness", schema=LivenessSchema)
    spec.components.schema("Capabilities", schema=CapabilitiesSchema)
    spec.components.schema("ErrorEnvelope", schema=ErrorEnvelopeSchema)
    envelopes = {
        "GpuListEnvelope": fields.List(fields.Nested(GpuSchema), required=True),
        "GpuProcessListEnvelope": fields.List(fields.Nested(GpuProcessSchema), required=True),
        "HealthEnvelope": fields.Nested(HealthSchema, required=True),
        "LivenessEnvelope": fields.Nested(LivenessSchema, required=True),
        "CapabilitiesEnvelope": fields.Nested(CapabilitiesSchema, required=True),
    }
    for name, data in envelopes.items():
        spec.components.schema(name, schema=envelope(name, data))
    filters = [{"in": "query", "schema": GpuFilterArgsSchema}]
    list_headers = {
        "ETag": {"schema": {"type": "string"}, "description": "Validator of this body"},
        "Cache-Control": {"schema": {"type": "string"},
                          "description": "max-age minus Age: seconds left of CACHE_TTL"},
        "Age": {"schema": {"type": "integer"}, "description": "Seconds since the data was "
                                                            "fetched from Prometheus"},
        "Cache-Status": {"schema": {"type": "string"}, "description": (
            'RFC 9211; only on an answer served after Prometheus failed '
            '(CACHE_STALE_IF_ERROR_SECONDS), e.g. gpu-monitor-api; hit; ttl=-37; '
            'detail="stale-if-error". The message then says what failed and the data\'s age')},
    }
    spec.path(path="/api/healthz", operations={"get": {
        "summary": "Readiness: can the service reach Prometheus?",
        "responses": {"200": _response("Prometheus answers", "HealthEnvelope"),
                      "503": _response("Prometheus is unreachable, too slow or failing",
                                       "ErrorEnvelope"),
                      **_errors("400")},
    }})
    spec.path(path="/api/livez", operations={"get": {
        "summary": "Liveness: the process runs (Prometheus is not asked)",
        "responses": {"200": _response("Alive", "LivenessEnvelope"), **_errors("400")},
    }})
    spec.path(path="/api/v1/gpu/metrics", operations={"get": {
        "summary": "Every GPU (or MIG instance), sorted by node, index, MIG instance",
        "parameters": filters,
        "responses": {
            "200": {**_response("The GPUs", "GpuListEnvelope"), "headers": list_headers},
            "304": {"description": "Unchanged since the ETag sent in If-None-Match"},
            **_errors("400", "502", "503", "504"),
        },
    }})
    spec.path(path="/api/v1/gpu/processes", operations={"get": {
        "summary": "Every process holding GPU memory, sorted by node, GPU index, pid",
        "parameters": filters,
        "responses": {
            "200": {**_response("The processes", "GpuProcessListEnvelope"),
                    "headers": list_headers},
            "304": {"description": "Unchanged since the ETag sent in If-None-Match"},
            **_errors("400", "502", "503", "504"),
        },
    }})
    spec.path(path="/api/v1/capabilities", operations={"get": {
        "summary": "Exporters found, the fields they fill, and why others are missing",
        "responses": {"200": _response("Capabilities", "CapabilitiesEnvelope"),
                      **_errors("400", "502", "503", "504")},
    }})
    spec.path(path="/api/openapi.json", operations={"get": {
        "summary": "This document (served as is, not in the envelope)",
        "responses": {"200": {"description": "OpenAPI 3 document",
                              "content": {"application/json": {"schema": {
                                  "type": "object"}}}}, **_errors()},
    }})
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """Serve the OpenAPI document, built once per process."""
    document = current_app.extensions.setdefault("openapi_document", build_spec())
    return current_app.json.response(document)
