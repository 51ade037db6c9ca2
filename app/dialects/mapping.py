"""Load custom exporter dialects from a YAML or JSON mapping file, validated at start-up.

Example (YAML):

    dialects:
      - name: my-exporter
        description: Our in-house exporter
        labels: {node: [host], index: [gpu], name: [model], uuid: [gpu_uuid]}
        gpu_fields:
          utilization: [{metric: my_gpu_busy_ratio, unit: ratio}]
          memory_used: [{metric: my_gpu_mem_used_mib, unit: MiB}]
          memory_total: [{metric: my_gpu_mem_total_mib, unit: MiB}]
          temperature: [{metric: my_gpu_temp_celsius}]

A source may say `per_pod: true` when the exporter writes that metric once per pod with each
pod's own share beside a pod-less device series (the GPU's value is the pod-less series,
else the max over the copies; never a sum). A field's later sources are read only where
the earlier ones have no series. `index_metrics` names gauges whose value is the GPU index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, post_load, validate

from app.dialects.model import (
    GPU_FIELDS,
    MIB,
    PROCESS_FIELDS,
    Dialect,
    GpuLabels,
    ProcessLabels,
    Source,
)

# How to reach the canonical unit (bytes, percent, degrees C, watts) from common ones.
UNIT_SCALES = {
    "bytes": 1.0, "KiB": 1024.0, "MiB": float(MIB), "GiB": float(1024**3),
    "percent": 1.0, "ratio": 100.0, "celsius": 1.0, "watts": 1.0, "milliwatts": 0.001,
}


class SourceSchema(Schema):
    """One metric for a field; `unit` or `scale` converts it."""

    metric = fields.String(required=True)
    unit = fields.String(validate=validate.OneOf(sorted(UNIT_SCALES)))
    scale = fields.Float(validate=validate.Range(min=0, min_inclusive=False))
    per_pod = fields.Boolean(load_default=False)
    skip_on_mig = fields.Boolean(load_default=False)

    @post_load
    def to_source(self, data: dict[str, Any], **_: Any) -> Source:
        """Build the Source; `unit` and `scale` are alternatives."""
        if "unit" in data and "scale" in data:
            raise ValidationError("give either unit or scale, not both")
        scale = data.get("scale", UNIT_SCALES[data.get("unit", "bytes")])
        try:
            return Source(data["metric"], scale=scale, per_pod=data["per_pod"],
                          skip_on_mig=data["skip_on_mig"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def _names() -> fields.List:
    return fields.List(fields.String(), load_default=())


def _field_map(allowed: tuple[str, ...]) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.OneOf(allowed)),
        values=fields.List(fields.Nested(SourceSchema), validate=validate.Length(min=1)),
        load_default=dict,
    )


class GpuLabelsSchema(Schema):
    """Candidate label names per GPU attribute."""

    node = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    index = _names()
    name = _names()
    uuid = _names()
    mig_instance = _names()
    mig_profile = _names()
    pod = _names()
    namespace = _names()
    container = _names()


class ProcessLabelsSchema(Schema):
    """Candidate label names per process attribute."""

    pid = fields.List(fields.String(), load_default=["pid"])
    process_name = fields.List(fields.String(), load_default=["process_name"])
    user = fields.List(fields.String(), load_default=["user"])
    command = fields.List(fields.String(), load_default=["command"])


class DialectSchema(Schema):
    """One custom dialect."""

    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9._-]*$"))
    description = fields.String(load_default="custom mapping")
    labels = fields.Nested(GpuLabelsSchema, required=True)
    gpu_fields = _field_map(GPU_FIELDS)
    process_labels = fields.Nested(ProcessLabelsSchema, load_default=dict)
    process_fields = _field_map(PROCESS_FIELDS)
    gpu_info_metrics = _names()
    index_metrics = _names()
    process_info_metrics = _names()
    info_only_attributes = fields.List(
        fields.String(validate=validate.OneOf(["index", "name"])), load_default=())
    uuid_without_prefix = fields.Boolean(load_default=False)
    index_encodes_mig = fields.Boolean(load_default=False)
    name_encodes_mig_profile = fields.Boolean(load_default=False)
    process_name_from_command = fields.Boolean(load_default=False)

    @post_load
    def to_dialect(self, data: dict[str, Any], **_: Any) -> Dialect:
        """Build the Dialect; its own checks (label and metric names) apply."""
        try:
            return Dialect(
                name=data["name"],
                description=data["description"],
                labels=GpuLabels(**{k: tuple(v) for k, v in data["labels"].items()}),
                gpu_fields={k: tuple(v) for k, v in data["gpu_fields"].items()},
                process_labels=ProcessLabels(
                    **{k: tuple(v) for k, v in data["process_labels"].items()}),
                process_fields={k: tuple(v) for k, v in data["process_fields"].items()},
                gpu_info_metrics=tuple(data["gpu_info_metrics"]),
                index_metrics=tuple(data["index_metrics"]),
                process_info_metrics=tuple(data["process_info_metrics"]),
                info_only_attributes=tuple(data["info_only_attributes"]),
                uuid_without_prefix=data["uuid_without_prefix"],
                index_encodes_mig=data["index_encodes_mig"],
                name_encodes_mig_profile=data["name_encodes_mig_profile"],
                process_name_from_command=data["process_name_from_command"],
            )
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class MappingFileSchema(Schema):
    """The whole file: a list of dialects."""

    dialects = fields.List(fields.Nested(DialectSchema), required=True,
                           validate=validate.Length(min=1))


def load_mapping_file(path: str) -> list[Dialect]:
    """Read and validate a mapping file; raise ValueError with where and what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                         f"{exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must contain a mapping with a `dialects` list")
    try:
        return MappingFileSchema().load(raw)["dialects"]
    except ValidationError as exc:
        raise ValueError(f"{path} is invalid: {_flatten(exc.messages)}") from None


def _flatten(messages: Any, prefix: str = "") -> str:
    if isinstance(messages, dict):
        return "; ".join(_flatten(v, f"{prefix}{k}.") for k, v in messages.items())
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return f"{prefix.rstrip('.')}: {' '.join(messages)}"
    if isinstance(messages, list):
        return "; ".join(_flatten(m, prefix) for m in messages)
    return f"{prefix.rstrip('.')}: {messages}"
