"""Query-string schemas: validate and normalize what callers send."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate
from werkzeug.datastructures import MultiDict

from app.durations import DURATION_PATTERN, parse_duration
from app.services.history import (
    AGGREGATES,
    DEFAULT_FIELDS,
    DEFAULT_POINTS,
    GROUP_BY,
    HISTORY_FIELDS,
    MAX_POINTS,
    WindowError,
    resolve_window,
)
from app.services.records import GpuFilters, HealthQuery, HistoryQuery, SnapshotQuery

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


FILTER_NAMES = ("node", "namespace", "pod", "gpu_name", "uuid")
# Unix seconds from 1970 up to the year 9999: what RFC 3339 can write back.
_LAST_INSTANT = 253402300799.0
# What Instant and Duration accept, also published in the OpenAPI document.
INSTANT_PATTERN = (r"^(\d+(\.\d+)?|\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?"
                   r"([Zz]|[+-]\d\d:\d\d))$")
# \Z, not $: a trailing newline is not part of the value.
_INSTANT = re.compile(INSTANT_PATTERN[:-1] + r"\Z", re.ASCII)


def _filters(data: dict[str, Any]) -> GpuFilters:
    """The filters among loaded arguments, as an immutable, de-duplicated, ordered record."""
    return GpuFilters(**{key: tuple(sorted(set(data.get(key, ())))) for key in FILTER_NAMES})


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
        return _filters(data)


class Instant(fields.Field[float]):
    """An instant as RFC 3339 (with a zone, e.g. 2026-01-02T03:04:05Z) or Unix seconds."""

    default_error_messages = {  # noqa: RUF012 - marshmallow's own convention
        "instant": "must be an RFC 3339 time with a zone (e.g. 2026-01-02T03:04:05Z) or "
                   "Unix seconds",
    }

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"type": "string", "pattern": INSTANT_PATTERN, **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        text = str(value) if isinstance(value, str | int | float) else ""
        if isinstance(value, bool) or not _INSTANT.match(text):
            raise self.make_error("instant")
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.upper())  # RFC 3339 allows t and z
            except ValueError:
                raise self.make_error("instant") from None
            if moment.tzinfo is None:
                raise self.make_error("instant") from None
            seconds = moment.timestamp()
        if not math.isfinite(seconds) or not 0 <= seconds <= _LAST_INSTANT:
            raise self.make_error("instant")
        return seconds


class Duration(fields.Field[float]):
    """A positive duration: seconds (`90`) or Prometheus units (`15s`, `5m`, `6h`, `7d`)."""

    default_error_messages = {  # noqa: RUF012 - marshmallow's own convention
        "duration": "must be a positive duration: seconds (e.g. 90) or a number with a "
                    "unit, ms s m h d w y (e.g. 5m, 6h, 7d, 1h30m)",
    }

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"type": "string", "pattern": DURATION_PATTERN,
                    **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        text = str(value) if isinstance(value, str | int | float) else ""
        seconds = None if isinstance(value, bool) else parse_duration(text)
        if seconds is None:
            raise self.make_error("duration")
        return seconds


class GpuMetricsArgsSchema(GpuFilterArgsSchema):
    """The GPU list's filters, and the instant to read it at."""

    time = Instant(metadata={
        "description": "Read the GPUs as they were at this instant (RFC 3339 or Unix "
                       "seconds; default now). Not in the future."})

    @post_load
    def to_filters(self, data: dict[str, Any], **_: Any) -> SnapshotQuery:
        """Return the filters and the instant; an instant in the future is refused."""
        at = data.get("time")
        if at is not None and at > time.time():
            raise ValidationError({"time": ["is in the future; Prometheus has no samples "
                                            "there yet"]})
        return SnapshotQuery(filters=_filters(data), at=at)


# The event window of GPU health: from a minute (a few scrapes) to a month.
HEALTH_WINDOW_MIN_S, HEALTH_WINDOW_MAX_S = 60.0, 31 * 86400.0


class GpuHealthArgsSchema(GpuMetricsArgsSchema):
    """The GPU list's filters and instant, and the window event rules look back over."""

    window = Duration(load_default=3600.0, metadata={
        "description": "How far back event rules (XID, rising counters, throttling) look: "
                       "seconds or a duration, 1m to 31d; default 1h"})

    @post_load
    def to_filters(self, data: dict[str, Any], **kwargs: Any) -> HealthQuery:
        """Return the filters, instant and window; a window outside 1m..31d is refused."""
        snapshot = super().to_filters(data, **kwargs)
        window = data["window"]
        if not HEALTH_WINDOW_MIN_S <= window <= HEALTH_WINDOW_MAX_S:
            raise ValidationError({"window": ["must be between 1m and 31d"]})
        return HealthQuery(filters=snapshot.filters, at=snapshot.at, window=window)


class _FieldList(fields.List):
    """Repeated `fields=a&fields=b`; a comma-separated `fields=a,b` is read the same."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list | tuple):
            value = [part.strip() for item in value for part in str(item).split(",")]
        return super()._deserialize(value, attr, data, **kwargs)


class HistoryArgsSchema(GpuFilterArgsSchema):
    """The window, step, fields and grouping of a history request, and the GPU filters."""

    start = Instant(metadata={
        "description": "First instant (RFC 3339 or Unix seconds); default end - 1h"})
    end = Instant(metadata={
        "description": "Last instant (RFC 3339 or Unix seconds); default now"})
    range_ = Duration(data_key="range", metadata={
        "description": "The window's length before end, e.g. 15m, 6h, 7d (instead of start)"})
    step = Duration(metadata={
        "description": "Seconds between timestamps, or a duration (5m); default: the "
                       "finest of 15s, 30s, 1m, 5m, 15m, 30m, 1h, 6h, 1d giving at most "
                       "`points` timestamps. start and end are aligned to multiples of it"})
    points = fields.Integer(
        load_default=DEFAULT_POINTS, validate=validate.Range(min=1, max=MAX_POINTS),
        metadata={"description": "Most timestamps the default step may give (both ends "
                                 f"included); at most {MAX_POINTS}"})
    fields_ = _FieldList(
        fields.String(validate=validate.OneOf(
            HISTORY_FIELDS, error="unknown field {input!r}; numeric GPU fields: {choices}")),
        data_key="fields", load_default=DEFAULT_FIELDS,
        validate=validate.Length(min=1, max=len(HISTORY_FIELDS)),
        metadata={"description": "GPU fields to chart; repeat for several. Default: "
                                 + ", ".join(DEFAULT_FIELDS)})
    group_by = fields.String(load_default="gpu", validate=validate.OneOf(GROUP_BY), metadata={
        "description": "One series per gpu (default), node, namespace, gpu_name, or one "
                       "for the whole cluster"})
    agg = fields.String(load_default="avg", validate=validate.OneOf(AGGREGATES), metadata={
        "description": "How a group's GPUs combine at each timestamp"})

    @post_load
    def to_filters(self, data: dict[str, Any], **_: Any) -> HistoryQuery:
        """Return the normalized query: aligned window, step, fields in the order asked."""
        try:
            start, end, step = resolve_window(
                start=data.get("start"), end=data.get("end"), range_s=data.get("range_"),
                step=data.get("step"), points=data["points"], now=time.time())
        except WindowError as exc:
            raise ValidationError({exc.argument: [str(exc)]}) from None
        return HistoryQuery(start=start, end=end, step=step,
                            fields=tuple(dict.fromkeys(data["fields_"])),
                            group_by=data["group_by"], agg=data["agg"],
                            filters=_filters(data))


class NoArgsSchema(Schema):
    """An endpoint that takes no query parameters."""


class ProfileArgsSchema(Schema):
    """How long the debug profiler samples, and how many functions it reports."""

    seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=30))
    top = fields.Integer(load_default=30, validate=validate.Range(min=1, max=500))


def load_args(schema: Schema, args: MultiDict[str, str]) -> Any:
    """Load a query string whose parameters may repeat; raise ValidationError when bad."""
    accepted = {f.data_key or name: f for name, f in schema.fields.items()}
    list_fields = {name for name, f in accepted.items() if isinstance(f, fields.List)}
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ValidationError(
            {name: [f"unknown parameter; accepted: {', '.join(sorted(accepted))}"]
             for name in unknown}
        )
    raw = {key: args.getlist(key) if key in list_fields else args.get(key) for key in args}
    return schema.load(raw)


# A fleet answer's window: from a few scrapes to a week (its subqueries stay <= 240 steps).
FLEET_WINDOW_MIN_S, FLEET_WINDOW_MAX_S = 300.0, 7 * 86400.0


@dataclass(frozen=True)
class FleetArgs:
    """The filters and window (s) of a fleet request."""

    filters: GpuFilters
    window: float
    at: float | None = None


class FleetArgsSchema(Schema):
    """Filters and window of /api/v1/cluster, /nodes and /namespaces."""

    node = _filter_list("GPUs (and allocation) of these Kubernetes nodes")
    namespace = _filter_list("GPUs held (and requested) by pods in these namespaces")
    gpu_name = _filter_list("GPUs of these models, e.g. NVIDIA A100-SXM4-80GB")
    window = Duration(load_default=3600.0, metadata={
        "description": "What the window figures (average utilization, idle seconds, "
                       "energy) cover: seconds or a duration, 5m to 7d; default 1h"})
    time = Instant(metadata={
        "description": "Read the fleet as it was at this instant, the window ending there "
                       "(RFC 3339 or Unix seconds; default now). Not in the future."})

    @post_load
    def to_args(self, data: dict[str, Any], **_: Any) -> FleetArgs:
        """Return the filters, window and instant; a window outside 5m..7d is refused."""
        window = data["window"]
        if not FLEET_WINDOW_MIN_S <= window <= FLEET_WINDOW_MAX_S:
            raise ValidationError({"window": ["must be between 5m and 7d"]})
        at = data.get("time")
        if at is not None and at > time.time():
            raise ValidationError({"time": ["is in the future; Prometheus has no samples "
                                            "there yet"]})
        return FleetArgs(filters=_filters(data), window=window, at=at)
