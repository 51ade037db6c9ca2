"""Output schemas of the GPU endpoints: field names and meanings are the contract."""

from __future__ import annotations

from marshmallow import Schema, fields

from app.schemas.fields import Timestamp


class PodShareSchema(Schema):
    """A workload holding a GPU (or MIG instance), and its own share where reported."""

    pod = fields.String(required=True)
    namespace = fields.String(allow_none=True)
    container = fields.String(allow_none=True)
    utilization = fields.Float(
        allow_none=True,
        metadata={"description": "The pod's own share of the GPU's utilization, %; null "
                  "where the exporter only copies the device's value onto the pod's series"})
    memory_used = fields.Integer(
        allow_none=True,
        metadata={"description": "The pod's own GPU memory, bytes; null where the exporter "
                  "only copies the device's value"})


class HealthReasonSchema(Schema):
    """One reason a GPU is not ok: the rule that fired, what it means and what to do."""

    code = fields.String(required=True, metadata={
        "description": "The rule: xid_<code>, ecc_dbe, row_remap_failure, throttle_hw_thermal, "
                       "exporter_down, stale, … (see the README's rule table)",
        "example": "xid_79"})
    severity = fields.String(required=True, metadata={
        "description": "critical, unknown or warning", "example": "critical"})
    message = fields.String(required=True)
    since = Timestamp(allow_none=True, metadata={
        "description": "First instant of the window the rule held (to the rule step); for "
                       "a stopped exporter, the GPU's last sample"})
    action = fields.String(required=True, metadata={"description": "What to do"})


class GpuHealthSchema(Schema):
    """A GPU's verdict from its exporter's health signals."""

    status = fields.String(required=True, metadata={
        "description": "ok, warning, critical or unknown (the worst reason's severity)",
        "example": "ok"})
    reasons = fields.List(fields.Nested(HealthReasonSchema), metadata={
        "description": "Worst first (critical, unknown, warning), then oldest; empty when ok"})


class GpuSchema(Schema):
    """One GPU (or MIG instance). Units: bytes, percent 0-100, degrees C, watts."""

    node_name = fields.String(required=True, metadata={"description": "Kubernetes node"})
    gpu_index = fields.Integer(allow_none=True, metadata={"description": "Index on the node"})
    gpu_name = fields.String(allow_none=True, metadata={"description": "GPU model"})
    utilization = fields.Float(allow_none=True, metadata={"description": "GPU busy, %"})
    memory_used = fields.Integer(allow_none=True, metadata={"description": "Bytes"})
    memory_total = fields.Integer(allow_none=True, metadata={"description": "Bytes"})
    memory_free = fields.Integer(allow_none=True, metadata={"description": "Bytes"})
    memory_utilization = fields.Float(
        allow_none=True, metadata={"description": "GPU memory used / total, %"}
    )
    temperature = fields.Float(allow_none=True, metadata={"description": "Degrees Celsius"})
    timestamp = Timestamp(
        allow_none=True, metadata={"description": "Time of the samples, from Prometheus"}
    )
    uuid = fields.String(allow_none=True, metadata={"description": "NVIDIA UUID, GPU-…"})
    power_usage = fields.Float(allow_none=True, metadata={"description": "Watts"})
    pod = fields.String(
        allow_none=True,
        metadata={"description": "Pod holding the GPU; several are comma-separated "
                  "(see `pods`)"},
    )
    namespace = fields.String(allow_none=True, metadata={"description": "Namespace of the pod"})
    container = fields.String(allow_none=True, metadata={"description": "Container in the pod"})
    mig_profile = fields.String(allow_none=True, metadata={"description": "e.g. 3g.40gb"})
    mig_instance = fields.Integer(
        allow_none=True, metadata={"description": "MIG GPU instance id; null for a whole GPU"}
    )
    pods = fields.List(
        fields.Nested(PodShareSchema),
        metadata={"description": "Every workload holding the GPU, by namespace and pod; "
                  "empty when none does"},
    )
    state = fields.String(allow_none=True, metadata={
        "description": "allocated-busy, allocated-idle, free, unallocated-busy or unknown: "
                       "allocated when the exporter names a pod holding the GPU, idle when "
                       "utilization stayed below IDLE_UTILIZATION_PERCENT for IDLE_WINDOW",
        "enum": ["allocated-busy", "allocated-idle", "free", "unallocated-busy", "unknown"]})
    idle_seconds = fields.Float(allow_none=True, metadata={
        "description": "How long utilization has stayed below the idle threshold, looked "
                       "back over IDLE_WINDOW (at most its length); null when unknown"})
    health = fields.Nested(GpuHealthSchema, allow_none=True, metadata={
        "description": "The GPU's health verdict over the last hour (XID, ECC, row "
                       "remapping, throttling, a stale exporter)"})


class GpuProcessSchema(Schema):
    """One process holding GPU memory."""

    node_name = fields.String(required=True)
    gpu_index = fields.Integer(allow_none=True)
    pid = fields.Integer(required=True)
    process_name = fields.String(allow_none=True)
    user = fields.String(allow_none=True, metadata={"description": "User name, or numeric uid"})
    command = fields.String(allow_none=True)
    gpu_memory = fields.Integer(allow_none=True, metadata={"description": "Bytes"})
    cpu = fields.Float(allow_none=True, metadata={"description": "CPU use, %"})
    memory = fields.Float(allow_none=True, metadata={"description": "Host memory use, %"})
    timestamp = Timestamp(allow_none=True)
    gpu_uuid = fields.String(allow_none=True)
    pod = fields.String(allow_none=True)
    namespace = fields.String(allow_none=True)


class GpuHealthReportSchema(Schema):
    """The GPUs that are not ok, and how many GPUs have each status."""

    time = Timestamp(metadata={"description": "The instant the rules were evaluated at"})
    window = fields.Integer(metadata={"description": "Seconds event rules look back over"})
    step = fields.Integer(metadata={
        "description": "Seconds between the instants rules are evaluated at (the "
                       "precision of `since`)"})
    total = fields.Integer(metadata={"description": "GPUs (and MIG instances) judged"})
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "GPUs per status: ok, warning, critical, unknown (all four keys)"})
    gpus = fields.List(fields.Nested(GpuSchema), metadata={
        "description": "The GPUs that are not ok, as /api/v1/gpu/metrics lists them (a GPU "
                       "gone from its exporter within the window has null values), sorted "
                       "by node, index, MIG instance"})
