"""Output schema of the history endpoint, and the dump that writes it for large answers."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from app.schemas.fields import Timestamp, rfc3339
from app.services.records import History


class HistoryKeySchema(Schema):
    """What a series is: a GPU's identity, or its group's one label (none for cluster)."""

    node_name = fields.String(allow_none=True, metadata={
        "description": "group_by=gpu or node"})
    gpu_index = fields.Integer(allow_none=True, metadata={"description": "group_by=gpu"})
    uuid = fields.String(allow_none=True, metadata={"description": "group_by=gpu"})
    mig_instance = fields.Integer(allow_none=True, metadata={
        "description": "group_by=gpu; null for a whole GPU"})
    gpu_name = fields.String(allow_none=True, metadata={"description": "group_by=gpu or "
                                                                       "gpu_name"})
    namespace = fields.String(allow_none=True, metadata={"description": "group_by=namespace"})


class HistorySeriesSchema(Schema):
    """One chart line: each field's values, aligned to the shared timestamps."""

    key = fields.Nested(HistoryKeySchema, required=True)
    values = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.Float(allow_none=True)),
        required=True,
        metadata={"description": "Per field, one value per timestamp; null where "
                                 "Prometheus has no sample (never 0). Units as in /metrics"})


class HistorySchema(Schema):
    """GPU history over an aligned window: one timestamps array shared by every series."""

    start = Timestamp(required=True, metadata={"description": "First timestamp (aligned)"})
    end = Timestamp(required=True, metadata={"description": "Last timestamp (aligned)"})
    step = fields.Float(required=True, metadata={"description": "Seconds between timestamps"})
    timestamps = fields.List(Timestamp(), required=True)
    group_by = fields.String(required=True)
    agg = fields.String(required=True, metadata={
        "description": "How groups combine their GPUs (a GPU series is its own value)"})
    fields_ = fields.List(fields.String(), required=True, data_key="fields")
    series = fields.List(fields.Nested(HistorySeriesSchema), required=True, metadata={
        "description": "Sorted by key: GPUs by node, index, MIG instance"})


def dump_history(history: History) -> dict[str, Any]:
    """Write `history` as HistorySchema does, without walking every value through it."""
    query = history.query
    step: float | int = int(query.step) if float(query.step).is_integer() else query.step
    return {
        "start": rfc3339(query.start),
        "end": rfc3339(query.end),
        "step": step,
        "timestamps": [rfc3339(t) for t in query.timestamps()],
        "group_by": query.group_by,
        "agg": query.agg,
        "fields": list(query.fields),
        "series": [{"key": s.key, "values": s.values} for s in history.series],
    }
