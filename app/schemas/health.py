"""Output schemas of the health endpoints."""

from __future__ import annotations

from marshmallow import Schema, fields

from app.schemas.fields import Timestamp


class UpstreamStatusSchema(Schema):
    """How Prometheus answered the probe."""

    url = fields.String(metadata={"description": "Prometheus base URL, without credentials"})
    latency_ms = fields.Float(metadata={"description": "Time vector(1) took"})


class HealthSchema(Schema):
    """The service can reach Prometheus and answer."""

    status = fields.String(metadata={"example": "healthy"})
    timestamp = Timestamp(metadata={"description": "Server time of the check"})
    version = fields.String()
    prometheus = fields.Nested(UpstreamStatusSchema)


class LivenessSchema(Schema):
    """The process is alive; says nothing about Prometheus."""

    status = fields.String(metadata={"example": "alive"})
