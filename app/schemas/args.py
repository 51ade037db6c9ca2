"""Query-string schemas: validate and normalize what callers send."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate
from werkzeug.datastructures import MultiDict

from app.services.records import GpuFilters

MAX_VALUES_PER_FILTER = 50
# Printable text without control characters; escaping makes anything else safe in PromQL,
# but no real node, pod or model name contains them.
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")


def _filter_list(what: str) -> fields.List:
    value = fields.String(
        validate=[
            validate.Length(min=1, max=253),
            validate.Regexp(_PRINTABLE, error="must be printable text"),
        ]
    )
    return fields.List(
        value,
        load_default=(),
        validate=validate.Length(max=MAX_VALUES_PER_FILTER),
        metadata={"description": f"Only {what}; repeat the parameter for several values"},
    )


class GpuFilterArgsSchema(Schema):
    """Filters accepted by both list endpoints; every one may be repeated."""

    node = _filter_list("GPUs on these Kubernetes nodes")
    namespace = _filter_list("GPUs held by pods in these namespaces")
    pod = _filter_list("GPUs held by these pods")
    gpu_name = _filter_list("GPUs of these models, e.g. NVIDIA A100-SXM4-80GB")
    uuid = _filter_list("these GPUs, by NVIDIA UUID (GPU-…)")

    @post_load
    def to_filters(self, data: dict[str, Any], **_: Any) -> GpuFilters:
        """Return the filters as an immutable, de-duplicated, ordered record."""
        return GpuFilters(**{key: tuple(sorted(set(values))) for key, values in data.items()})


class NoArgsSchema(Schema):
    """An endpoint that takes no query parameters."""


class ProfileArgsSchema(Schema):
    """How long the debug profiler samples, and how many functions it reports."""

    seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=30))
    top = fields.Integer(load_default=30, validate=validate.Range(min=1, max=500))


def load_args(schema: Schema, args: MultiDict[str, str]) -> Any:
    """Load a query string whose parameters may repeat; raise ValidationError when bad."""
    list_fields = {name for name, f in schema.fields.items() if isinstance(f, fields.List)}
    unknown = sorted(set(args) - set(schema.fields))
    if unknown:
        raise ValidationError(
            {name: [f"unknown parameter; accepted: {', '.join(sorted(schema.fields))}"]
             for name in unknown}
        )
    raw = {key: args.getlist(key) if key in list_fields else args.get(key) for key in args}
    return schema.load(raw)
