"""Output schema of the capabilities endpoint."""

from __future__ import annotations

from marshmallow import Schema, fields

from app.schemas.fields import Timestamp


class DialectReportSchema(Schema):
    """One exporter dialect in use."""

    name = fields.String(metadata={"example": "dcgm"})
    description = fields.String()
    gpu_series = fields.Integer(metadata={"description": "Series of its main GPU metric"})
    node_label = fields.String(metadata={"description": "Label read as the node name"})
    pod_labels = fields.List(fields.String(), metadata={"description": "Pod labels read"})
    mig = fields.Boolean(metadata={"description": "MIG instances are reported"})
    processes = fields.Boolean(metadata={"description": "Per-process series exist"})


class HealthSignalSchema(Schema):
    """One health signal the verdicts use, and where it comes from."""

    name = fields.String(metadata={"description": "The signal: xid, ecc_dbe, throttle_hw_"
                                                  "thermal, … (the rule codes)"})
    found = fields.Boolean(metadata={"description": "An exporter in use publishes it"})
    metrics = fields.List(fields.String(), metadata={
        "description": "The dcgm-exporter counters that carry it (any one will do)"})
    default_counters = fields.Boolean(metadata={
        "description": "On in dcgm-exporter's default counters CSV"})


class DialectFleetSchema(Schema):
    """How the fleet view reads one dialect."""

    dialect = fields.String()
    states = fields.String(metadata={"description": "pod labels, or unknown (no pods named)"})
    energy = fields.String(metadata={
        "description": "The energy counter read, power integral (no counter), or none"})


class FleetCapabilitiesSchema(Schema):
    """What the fleet view can tell."""

    idle_utilization_percent = fields.Float(metadata={"description": "IDLE_UTILIZATION_PERCENT"})
    idle_window = fields.String(metadata={"description": "IDLE_WINDOW, e.g. 30m"})
    kube_state_metrics = fields.Boolean(metadata={
        "description": "Prometheus holds kube-state-metrics' series (allocation figures)"})
    dialects = fields.List(fields.Nested(DialectFleetSchema))
    notes = fields.List(fields.String(), metadata={"description": "What is missing and why"})


class CapabilitiesSchema(Schema):
    """What the GPU endpoints can fill in, and why something is missing."""

    mode = fields.String(metadata={"description": "auto (detected) or forced (configured)"})
    checked_at = Timestamp(metadata={"description": "When detection last ran"})
    dialects = fields.List(fields.Nested(DialectReportSchema))
    gpu_fields = fields.List(fields.String(), metadata={
        "description": "Fields of /api/v1/gpu/metrics that can be non-null"})
    process_fields = fields.List(fields.String(), metadata={
        "description": "Fields of /api/v1/gpu/processes that can be non-null"})
    pod_attribution = fields.Boolean()
    mig = fields.Boolean()
    processes = fields.Boolean()
    notes = fields.List(fields.String(), metadata={
        "description": "Why something users expect is missing, or read differently"})
    fleet = fields.Nested(FleetCapabilitiesSchema, allow_none=True)
    health_signals = fields.List(fields.Nested(HealthSignalSchema), metadata={
        "description": "The signals GPU health is judged by; a missing one says which "
                       "counter to enable"})
