"""Micro-benchmarks of the per-request path: parse, join, dump, serialize (8000 GPUs).

`make test` runs each once as a test (benchmarks disabled); `make bench-micro` times them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.dialects.builtin import DCGM
from app.dialects.detect import fit
from app.prometheus.client import QueryResult, _parse_query_data
from app.schemas.dump import compile_dumper
from app.schemas.gpu import GpuSchema
from app.services.gpu_join import join_gpus
from app.services.queries import gpu_queries
from app.services.records import GpuFilters
from demo.cluster import MIB, ClusterSpec, snapshot

SPEC = ClusterSpec(nodes=1000, gpus_per_node=8, seed=3)
LABELS = frozenset({"Hostname", "gpu", "UUID", "modelName", "pod", "namespace", "container",
                    "instance"})
METRICS = {"DCGM_FI_DEV_GPU_UTIL": 1, "DCGM_FI_PROF_GR_ENGINE_ACTIVE": 1,
           "DCGM_FI_DEV_FB_USED": 1, "DCGM_FI_DEV_FB_FREE": 1, "DCGM_FI_DEV_FB_RESERVED": 1,
           "DCGM_FI_DEV_GPU_TEMP": 1, "DCGM_FI_DEV_POWER_USAGE": 1}
DIALECT, _ = fit(DCGM, LABELS, METRICS)


def _answers() -> dict[tuple[str, ...], bytes]:
    """Prometheus' JSON answer to each query the service sends, for a 1000x8 cluster."""
    rows = snapshot(SPEC, 0)
    values = {
        "utilization": lambda g: g.utilization,
        "memory_used": lambda g: g.memory_used_bytes // MIB,
        "memory_free": lambda g: g.memory_free_bytes // MIB,
        "memory_reserved": lambda g: g.memory_reserved_bytes // MIB,
        "temperature": lambda g: g.temperature,
        "power_usage": lambda g: g.power_w,
    }
    answers = {}
    for key in gpu_queries(DIALECT, GpuFilters()):
        result: list[dict[str, Any]] = []
        for gpu in rows:
            labels = {"Hostname": gpu.node, "gpu": str(gpu.index), "UUID": gpu.uuid,
                      "modelName": gpu.name}
            if key[0] == "pods":
                for pod in gpu.pods:
                    result.append({"metric": {**labels, "pod": pod.pod,
                                              "namespace": pod.namespace,
                                              "container": pod.container},
                                   "value": [1.7e9, "1"]})
                continue
            value = values.get(key[1], lambda g: g.utilization / 100)(gpu)
            result.append({"metric": labels, "value": [1.7e9, str(value)]})
        answers[key] = orjson.dumps({"status": "success",
                                     "data": {"resultType": "vector", "result": result}})
    return answers


@pytest.fixture(scope="module")
def answers() -> dict[tuple[str, ...], bytes]:
    return _answers()


@pytest.fixture(scope="module")
def parsed(answers: dict[tuple[str, ...], bytes]) -> dict[tuple[str, ...], QueryResult]:
    return {k: _parse_query_data(orjson.loads(v), "test") for k, v in answers.items()}


def test_parse_answers(benchmark, answers) -> None:
    result = benchmark(lambda: {k: _parse_query_data(orjson.loads(v), "t")
                                for k, v in answers.items()})
    assert len(result[("field", "memory_used", "0")].series) == 8000


def test_join_gpus(benchmark, parsed) -> None:
    gpus = benchmark(join_gpus, DIALECT, parsed, GpuFilters())
    assert len(gpus) == 8000 and gpus[0].memory_total is not None


def test_dump_with_marshmallow(benchmark, parsed) -> None:
    gpus = join_gpus(DIALECT, parsed, GpuFilters())
    dumped = benchmark(GpuSchema(many=True).dump, gpus)
    assert len(dumped) == 8000


def test_fast_dump(benchmark, parsed) -> None:
    gpus = join_gpus(DIALECT, parsed, GpuFilters())
    dumped = benchmark(compile_dumper(GpuSchema()), gpus)
    assert dumped == GpuSchema(many=True).dump(gpus)


def test_serialize_envelope(benchmark, parsed) -> None:
    data = GpuSchema(many=True).dump(join_gpus(DIALECT, parsed, GpuFilters()))
    body = benchmark(orjson.dumps, {"success": True, "data": data, "message": "m",
                                    "error": None})
    assert body.startswith(b'{"success":true')
