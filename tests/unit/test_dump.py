"""The fast dump gives exactly what the marshmallow schemas give."""

from __future__ import annotations

import pytest
from marshmallow import Schema, fields

from app.schemas.dump import compile_dumper
from app.schemas.gpu import GpuProcessSchema, GpuSchema
from app.services.records import Gpu, GpuHealth, GpuProcess, HealthReason, PodShare

GPUS = [
    Gpu(node_name="n1"),
    Gpu(node_name="n2", gpu_index=3, gpu_name="NVIDIA A100", uuid="GPU-1", utilization=12.5,
        memory_used=1 << 30, memory_total=80 << 30, memory_free=79 << 30,
        memory_utilization=1.25, temperature=40.0, power_usage=250.125,
        pods=[PodShare("a", "ml", "c", utilization=7.5, memory_used=1 << 20),
              PodShare("b", "ml", None)],
        mig_profile="3g.40gb", mig_instance=2, timestamp=1764460800.123),
    Gpu(node_name="n3", gpu_index=0, timestamp=0.0, health=GpuHealth()),
    Gpu(node_name="n4", gpu_index=1, health=GpuHealth("critical", [
        HealthReason("xid_79", "critical", "XID 79: GPU has fallen off the bus", "Reboot",
                     since=1764460800.5),
        HealthReason("stale", "unknown", "No sample", "Check", since=None)])),
]
PROCESSES = [
    GpuProcess(node_name="n", gpu_index=None, pid=1),
    GpuProcess(node_name="n", gpu_index=1, pid=99, process_name="python", user="1000",
               command="python x.py", gpu_memory=1 << 20, cpu=3.5, memory=0.1,
               gpu_uuid="GPU-1", pod="p", namespace="ns", timestamp=1764460800.9999),
]


@pytest.mark.parametrize(("schema", "rows"), [(GpuSchema(), GPUS),
                                              (GpuProcessSchema(), PROCESSES)])
def test_fast_dump_equals_marshmallow_dump(schema: Schema, rows: list) -> None:
    expected = schema.dump(rows, many=True)
    actual = compile_dumper(schema)(rows)
    assert actual == expected
    assert [list(row) for row in actual] == [list(row) for row in expected]  # same order
    # == takes 1.0 for 1 and True for 1: the JSON would differ, so compare types too.
    assert typed(actual) == typed(expected)


def typed(value: object) -> object:
    """The value with the type of every leaf beside it."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def test_typed_comparison_tells_an_int_from_a_float() -> None:
    assert typed([{"a": 1}]) != typed([{"a": 1.0}])


def test_fast_dump_refuses_field_types_it_does_not_reproduce() -> None:
    class Nested(Schema):
        # A single nested object is supported (a GPU's health); a many=True one is not.
        child = fields.Nested(GpuSchema, many=True)

    with pytest.raises(TypeError, match="Nested"):
        compile_dumper(Nested())
