"""The OpenAPI 3 document: each view declares its operation; the document is built once.

A view says what it is with `@Operation(...)` under its route decorator: a summary, what
its `data` holds (a marshmallow schema, wrapped in the envelope here), its query-argument
schema and the error statuses it can answer. `build_spec(app)` walks the app's URL rules
(apispec's Flask plugin turns each rule into a path) when `create_app` publishes the
document, so a route without `@Operation` is simply not in it (the debug endpoints).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, resolver
from apispec_webframeworks.flask import FlaskPlugin
from flask import Blueprint, Flask, Response, current_app
from marshmallow import Schema, fields

from app import __version__
from app.api.envelope import json_response
from app.schemas.fields import Timestamp

bp = Blueprint("openapi", __name__, url_prefix="/api")

DOCUMENT_KEY = "openapi_document"
_OPERATION_ATTR = "openapi_operation"

UPSTREAM_ERRORS = ("502", "503", "504")
ERROR_TEXTS = {
    "400": "Invalid query parameters",
    "502": "Prometheus answered with an error or something that is not its API",
    "503": "Prometheus is unreachable or said it is unavailable",
    "504": "Prometheus did not answer in time",
    "414": "Query string too long",
    "431": "Request headers too large",
}
# The request guards of create_app refuse an oversized request on every route.
GUARD_ERRORS = ("414", "431")
# What cached_ok (app/api/envelope.py) sends with a list answered from the cache.
CACHE_HEADERS: Mapping[str, Mapping[str, Any]] = {
    "ETag": {"schema": {"type": "string"}, "description": "Validator of this body"},
    "Cache-Control": {"schema": {"type": "string"},
                      "description": "max-age minus Age: seconds left of CACHE_TTL"},
    "Age": {"schema": {"type": "integer"},
            "description": "Seconds since the data was fetched from Prometheus"},
    "Cache-Status": {"schema": {"type": "string"}, "description": (
        'RFC 9211; only on an answer served after Prometheus failed '
        '(CACHE_STALE_IF_ERROR_SECONDS), e.g. gpu-monitor-api; hit; ttl=-37; '
        'detail="stale-if-error". The message then says what failed and the data\'s age')},
}
NOT_MODIFIED = {"description": "Unchanged since the ETag sent in If-None-Match"}
# Every answer names its request (create_app's access log hook), failures included.
REQUEST_ID_HEADERS: Mapping[str, Mapping[str, Any]] = {
    "X-Request-ID": {"schema": {"type": "string"}, "description": (
        "The X-Request-ID the client sent (at most 128 of A-Z a-z 0-9 ._:+/=-), else a new "
        "one; in our logs and sent on to Prometheus")},
}

View = TypeVar("View", bound=Callable[..., Any])


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


@dataclass(frozen=True)
class Operation:
    """How one view appears in the document; used as a decorator on the view.

    `data` is the schema of the envelope's `data` (a list of them with `many`); `body`
    replaces the envelope for a view that does not answer in it. `errors` are the failure
    statuses besides the guards' 414 and 431, described by ERROR_TEXTS or `error_texts`.
    `cached` views answer from the response cache: validators, Age, and 304.
    """

    summary: str
    ok: str
    data: type[Schema] | None = None
    many: bool = False
    body: Mapping[str, Any] | None = None
    args: Schema | None = None
    errors: tuple[str, ...] = ("400",)
    error_texts: Mapping[str, str] = field(default_factory=dict)
    cached: bool = False
    # The success body's media type (the envelope and `body` are JSON unless told).
    media_type: str = "application/json"

    def __call__(self, view: View) -> View:
        """Attach this operation to `view`, unchanged otherwise."""
        setattr(view, _OPERATION_ATTR, self)
        return view

    def to_openapi(self, spec: APISpec) -> dict[str, Any]:
        """The operation object, registering the envelope of its data in `spec` if new."""
        success: dict[str, Any] = _response(self.ok, self._success_schema(spec),
                                            self.media_type)
        responses: dict[str, Any] = {"200": success}
        if self.cached:
            success["headers"] = {name: dict(header) for name, header in CACHE_HEADERS.items()}
            responses["304"] = dict(NOT_MODIFIED)
        texts = {**ERROR_TEXTS, **self.error_texts}
        for status in (*self.errors, *GUARD_ERRORS):
            responses[status] = _response(texts[status], "ErrorEnvelope")
        for response in responses.values():
            response["headers"] = {**response.get("headers", {}), **{
                name: dict(header) for name, header in REQUEST_ID_HEADERS.items()}}
        described: dict[str, Any] = {"summary": self.summary, "responses": responses}
        if self.args is not None and self.args.fields:
            described["parameters"] = [{"in": "query", "schema": self.args}]
        return described

    def _success_schema(self, spec: APISpec) -> str | dict[str, Any]:
        if self.data is None:
            return dict(self.body or {"type": "object"})
        name = f"{resolver(self.data)}{'List' if self.many else ''}Envelope"
        if name not in spec.components.schemas:
            data: fields.Field = fields.Nested(self.data, required=True)
            if self.many:
                data = fields.List(fields.Nested(self.data), required=True)
            spec.components.schema(name, schema=envelope(name, data))
        return name


def _response(description: str, schema: str | dict[str, Any],
              media_type: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": schema}}}


def build_spec(app: Flask) -> dict[str, Any]:
    """Describe every route of `app` whose view carries an Operation, with the envelope."""
    marshmallow_plugin = MarshmallowPlugin()
    spec = APISpec(
        title="GPU monitoring API",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[FlaskPlugin(), marshmallow_plugin],
        info={"description": "NVIDIA GPU metrics from Prometheus, for dashboards. Every "
                             "response is a {success, data, message, error} envelope."},
    )
    marshmallow_plugin.map_to_openapi_type(Timestamp, "string", "date-time")
    spec.components.schema("ErrorEnvelope", schema=ErrorEnvelopeSchema)
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        described = getattr(view, _OPERATION_ATTR, None)
        if not isinstance(described, Operation):
            continue
        methods = sorted(m.lower() for m in rule.methods or () if m not in ("HEAD", "OPTIONS"))
        spec.path(view=view, app=app,
                  operations={method: described.to_openapi(spec) for method in methods})
    return spec.to_dict()


def publish_spec(app: Flask) -> None:
    """Build the document of `app` once, after its blueprints are registered."""
    app.extensions[DOCUMENT_KEY] = build_spec(app)


@bp.get("/openapi.json")
@Operation("This document (served as is, not in the envelope)", ok="OpenAPI 3 document",
           body={"type": "object"}, errors=())
def openapi_document() -> Response:
    """Serve the OpenAPI document that create_app built."""
    return json_response(current_app.extensions[DOCUMENT_KEY], 200)
