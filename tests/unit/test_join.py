"""Joining series into GPU and process records: units, spellings, gaps and garbage."""

from __future__ import annotations

import dataclasses
import math

import pytest

from app.dialects.builtin import GPU_METRICS, LEGACY
from app.dialects.model import Source
from app.prometheus.errors import PrometheusBadResponseError
from app.services.gpu_join import join_gpus
from app.services.process_join import join_processes
from app.services.records import GpuFilters
from app.services.samples import number
from tests.factories import SAMPLE_TIME, result, series

GIB = 1024**3


def legacy_results(node_label: str = "hostname", gpu_label: str = "gpu_id", **overrides):
    """Answers for two GPUs on one node, keyed like gpu_queries() keys them."""
    def gpu(index: str, name: str = "NVIDIA A100-SXM4-80GB") -> dict[str, str]:
        return {node_label: "node-a", gpu_label: index, "gpu_name": name}

    values = {
        "utilization": [series(gpu("0"), 87.5), series(gpu("1"), 0)],
        "memory_used": [series(gpu("0"), 40 * GIB), series(gpu("1"), 0)],
        "memory_total": [series(gpu("0"), 80 * GIB), series(gpu("1"), 80 * GIB)],
        "memory_free": [series(gpu("0"), 40 * GIB), series(gpu("1"), 80 * GIB)],
        "memory_utilization": [series(gpu("0"), 50.0), series(gpu("1"), 0)],
        "temperature": [series(gpu("0"), 71), series(gpu("1"), 33)],
    }
    values.update(overrides)
    return {("field", name, "0"): result(*items) for name, items in values.items()}


@pytest.mark.parametrize(("node_label", "gpu_label"), [("hostname", "gpu_id"), ("node", "gpu")])
def test_join_gpus_reads_both_label_spellings(node_label: str, gpu_label: str) -> None:
    gpus = join_gpus(LEGACY, legacy_results(node_label, gpu_label), GpuFilters())
    assert [(g.node_name, g.gpu_index) for g in gpus] == [("node-a", 0), ("node-a", 1)]
    first = gpus[0]
    assert first.gpu_name == "NVIDIA A100-SXM4-80GB"
    assert first.utilization == 87.5
    assert first.memory_used == 40 * GIB and isinstance(first.memory_used, int)
    assert first.memory_total == 80 * GIB
    assert first.memory_free == 40 * GIB
    assert first.memory_utilization == 50.0
    assert first.temperature == 71.0
    assert first.timestamp == SAMPLE_TIME


def test_join_gpus_missing_series_is_none_not_zero() -> None:
    results = legacy_results(temperature=[series({"hostname": "node-a", "gpu_id": "1"}, 40)])
    gpus = join_gpus(LEGACY, results, GpuFilters())
    assert gpus[0].temperature is None
    assert gpus[1].temperature == 40.0


@pytest.mark.parametrize("raw", ["NaN", "+Inf", "-Inf", "9.223372036854776e+18", "garbage"])
def test_join_gpus_turns_nan_inf_sentinels_and_garbage_into_none(raw: str) -> None:
    results = legacy_results(
        utilization=[series({"hostname": "node-a", "gpu_id": "0"}, raw)],
    )
    gpu0 = join_gpus(LEGACY, results, GpuFilters())[0]
    assert gpu0.utilization is None
    assert gpu0.memory_used == 40 * GIB  # the other fields are untouched


def test_join_gpus_derives_memory_utilization_when_the_exporter_lacks_it() -> None:
    results = legacy_results(memory_utilization=[])
    gpus = join_gpus(LEGACY, results, GpuFilters())
    assert gpus[0].memory_utilization == pytest.approx(50.0)
    assert gpus[1].memory_utilization == 0.0


def test_join_gpus_derives_total_from_used_free_and_reserved() -> None:
    results = legacy_results(memory_total=[], memory_utilization=[])
    results[("field", "memory_reserved", "0")] = result(
        series({"hostname": "node-a", "gpu_id": "0"}, 1 * GIB)
    )
    with_reserved = dataclasses.replace(
        LEGACY, gpu_fields={**LEGACY.gpu_fields, "memory_reserved": (Source("reserved_bytes"),)})
    gpus = join_gpus(with_reserved, results, GpuFilters())
    assert gpus[0].memory_total == 81 * GIB  # used 40 + free 40 + reserved 1
    assert gpus[1].memory_total == 80 * GIB  # no reserved series: used + free


def test_join_gpus_sorts_by_node_then_numeric_index() -> None:
    items = [series({"hostname": node, "gpu_id": idx}, 1) for node, idx in
             [("node-b", "0"), ("node-a", "10"), ("node-a", "2"), ("node-a", "1")]]
    gpus = join_gpus(LEGACY, {("field", "utilization", "0"): result(*items)}, GpuFilters())
    assert [(g.node_name, g.gpu_index) for g in gpus] == [
        ("node-a", 1), ("node-a", 2), ("node-a", 10), ("node-b", 0)]


def test_join_gpus_skips_series_without_node_or_index() -> None:
    items = [series({"gpu_id": "0"}, 1), series({"hostname": "n"}, 1),
             series({"hostname": "n", "gpu_id": "3"}, 1)]
    gpus = join_gpus(LEGACY, {("field", "utilization", "0"): result(*items)}, GpuFilters())
    assert [(g.node_name, g.gpu_index) for g in gpus] == [("n", 3)]


def test_join_gpus_of_an_empty_cluster_is_an_empty_list() -> None:
    assert join_gpus(LEGACY, {}, GpuFilters()) == []


def test_join_gpus_uses_the_first_source_that_answers() -> None:
    gpu = {"hostname": "n", "gpu_id": "0"}
    results = {
        ("field", "utilization", "0"): result(),
        ("field", "utilization", "1"): result(series(gpu, 42)),
        ("field", "temperature", "0"): result(series(gpu, 50)),
        ("field", "temperature", "1"): result(series(gpu, 99)),
    }
    (only,) = join_gpus(GPU_METRICS, results, GpuFilters())
    assert only.utilization == 42.0
    assert only.temperature == 50.0


def test_join_gpus_applies_node_and_model_filters_to_rows() -> None:
    gpus = join_gpus(LEGACY, legacy_results(), GpuFilters(node=("node-b",)))
    assert gpus == []
    gpus = join_gpus(LEGACY, legacy_results(), GpuFilters(gpu_name=("NVIDIA A100-SXM4-80GB",)))
    assert len(gpus) == 2


def test_join_gpus_pod_filter_matches_nothing_without_pod_labels() -> None:
    assert join_gpus(LEGACY, legacy_results(), GpuFilters(pod=("train-0",))) == []


def legacy_process_results():
    def proc(pid: str, gpu: str, **extra: str) -> dict[str, str]:
        return {"hostname": "node-a", "gpu_id": gpu, "pid": pid, "process_name": "python",
                "user": "alice", "command": "python train.py", **extra}

    return {
        ("field", "gpu_memory", "0"): result(series(proc("300", "1"), 2 * GIB),
                                             series(proc("200", "0"), 4 * GIB)),
        ("field", "cpu", "0"): result(series(proc("200", "0"), 12.5)),
        ("field", "memory", "0"): result(series(proc("200", "0"), "NaN")),
    }


def test_join_processes_joins_fields_by_node_gpu_and_pid() -> None:
    processes = join_processes(LEGACY, legacy_process_results(), GpuFilters())
    assert [(p.gpu_index, p.pid) for p in processes] == [(0, 200), (1, 300)]
    first = processes[0]
    assert (first.process_name, first.user, first.command) == ("python", "alice",
                                                               "python train.py")
    assert first.gpu_memory == 4 * GIB
    assert first.cpu == 12.5
    assert first.memory is None  # NaN
    assert processes[1].cpu is None  # no series at all


def test_join_processes_reads_numeric_uid_as_user_for_the_original_exporter() -> None:
    labels = {"hostname": "n", "gpu_id": "0", "pid": "7", "process_name": "p", "uid": "1000",
              "command": "c"}
    (proc,) = join_processes(
        GPU_METRICS, {("field", "gpu_memory", "0"): result(series(labels, 1024))}, GpuFilters())
    assert proc.user == "1000"
    assert proc.gpu_memory == 1024


def test_join_processes_filters_by_gpu_model_through_the_gpu_list() -> None:
    results = legacy_process_results()
    results[("gpus",)] = result(series({"hostname": "node-a", "gpu_id": "1",
                                        "gpu_name": "Tesla T4"}, 1))
    processes = join_processes(LEGACY, results, GpuFilters(gpu_name=("Tesla T4",)))
    assert [p.pid for p in processes] == [300]


@pytest.mark.parametrize(("raw", "expected"), [
    ("1.5", 1.5), ("0", 0.0), ("NaN", None), ("+Inf", None), ("-Inf", None),
    ("1e16", None), ("-1e16", None), (None, None), ("", None),
])
def test_number_parses_prometheus_sample_values(raw, expected) -> None:
    value = number(raw)
    assert value == expected or (expected is None and value is None)
    assert value is None or math.isfinite(value)


@pytest.mark.parametrize("bad", [
    {"metric": {"hostname": "n", "gpu_id": "0", "pid": "7"}},                  # no value
    {"metric": {"hostname": "n", "gpu_id": "0", "pid": "7"}, "value": [1.0]},  # too short
    {"metric": ["hostname", "n"], "value": [1.0, "1"]},                        # not a map
    {"metric": {"hostname": "n", "gpu_id": "0", "pid": "7"}, "value": ["x", "1"]},
])
def test_a_malformed_later_sample_is_a_bad_response_not_a_crash(bad) -> None:
    good = series({"hostname": "n", "gpu_id": "1", "pid": "8"}, 5)
    with pytest.raises(PrometheusBadResponseError, match="malformed sample"):
        join_gpus(LEGACY, {("field", "utilization", "0"): result(good, good, bad)},
                  GpuFilters())
    with pytest.raises(PrometheusBadResponseError, match="malformed sample"):
        join_processes(LEGACY, {("field", "gpu_memory", "0"): result(good, bad)}, GpuFilters())
