"""Every exporter dialect through a real Prometheus and the real app, field by field."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from demo.prometheus import PrometheusServer
from tests.integration.conftest import ApiServer
from tests.integration.expected import (
    expected_gpus,
    expected_processes,
    sort_gpus,
    sort_processes,
)
from tests.integration.world import API_DIALECT, CLUSTERS, DCGM_TARGET_LABELS

pytestmark = pytest.mark.integration

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def clusters_read_as(dialect: str) -> list[Any]:
    return [c for c in CLUSTERS if API_DIALECT[c.exporter_dialect] == dialect]


def assert_rows_match(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Compare field by field; floats within rounding of the unit conversions."""
    assert len(actual) == len(expected), (
        f"{len(actual)} rows, expected {len(expected)}: "
        f"{[(r['node_name'], r.get('gpu_index')) for r in actual]}")
    for got, want in zip(actual, expected, strict=True):
        for field, value in want.items():
            where = f"{got.get('node_name')}/{got.get('gpu_index')} {field}"
            if isinstance(value, float) and not isinstance(got[field], bool):
                assert got[field] is not None, where
                assert math.isclose(got[field], value, rel_tol=1e-9, abs_tol=1e-9), (
                    f"{where}: {got[field]} != {value}")
            else:
                assert got[field] == value, f"{where}: {got[field]!r} != {value!r}"
                if isinstance(value, int) and not isinstance(value, bool):
                    assert isinstance(got[field], int), where
        assert RFC3339.match(got["timestamp"]), got["timestamp"]


def sample_age(timestamp: str) -> float:
    """Seconds from an RFC 3339 UTC timestamp (`…Z`) to now; negative if it is ahead."""
    # fromisoformat reads the Z as UTC, whatever the local zone and its daylight saving.
    return time.time() - datetime.fromisoformat(timestamp).timestamp()


@pytest.mark.parametrize("dialect", ["legacy", "gpu-metrics", "dcgm", "dcgm-old",
                                     "nvidia-smi", "nvitop"])
def test_forced_dialect_serves_published_gpu_values(
        store_world: PrometheusServer, api_server: Callable[..., ApiServer], dialect: str) -> None:
    api = api_server(PROMETHEUS_URL=store_world.url, METRICS_DIALECT=dialect)
    response = api.get("/api/v1/gpu/metrics")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["error"] is None
    expected = sort_gpus([row for c in clusters_read_as(dialect) for row in expected_gpus(c)])
    assert_rows_match(body["data"], expected)
    # Prometheus' evaluation time: already past (milliseconds are truncated), and recent.
    assert 0 <= sample_age(body["data"][0]["timestamp"]) < 120


def test_idle_time_comes_from_the_source_each_gpu_takes_its_utilization_from(
        store_world: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    # dc- nodes have GPU_UTIL; dg- nodes only the engine activity, which the idle maximum
    # then comes from. The store has held every value unchanged since it started, less
    # than the 30-minute idle window: a GPU below 5 % has been idle all along (1800 s).
    api = api_server(PROMETHEUS_URL=store_world.url, METRICS_DIALECT="dcgm")
    rows = api.get("/api/v1/gpu/metrics").json()["data"]
    for prefix in ("dc-", "dg-"):
        mine = [r for r in rows if r["node_name"].startswith(prefix)
                and r["utilization"] is not None]
        assert mine, prefix
        for row in mine:
            where = f"{row['node_name']}/{row['gpu_index']}/{row['mig_instance']}"
            want = 0.0 if row["utilization"] >= 5 else 1800.0
            assert row["idle_seconds"] == want, (where, row["utilization"])
        assert {r["utilization"] >= 5 for r in mine} == {True, False}, prefix
    # Written by hand from the lab (seed 30): dg-001's engine activity is 0.50, 0.00, 0.81.
    fallback = {r["gpu_index"]: (r["utilization"], r["idle_seconds"])
                for r in rows if r["node_name"] == "dg-001"}
    assert fallback == {0: (50.0, 0.0), 1: (0.0, 1800.0), 2: (81.0, 0.0)}


@pytest.mark.parametrize("dialect", ["legacy", "gpu-metrics", "nvidia-smi", "nvitop"])
def test_forced_dialect_serves_published_processes(
        store_world: PrometheusServer, api_server: Callable[..., ApiServer], dialect: str) -> None:
    api = api_server(PROMETHEUS_URL=store_world.url, METRICS_DIALECT=dialect)
    response = api.get("/api/v1/gpu/processes")
    assert response.status_code == 200, response.text
    expected = sort_processes(
        [row for c in clusters_read_as(dialect) for row in expected_processes(c)])
    assert expected, "the simulated clusters should have processes"
    assert_rows_match(response.json()["data"], expected)


def test_auto_detection_reads_every_dialect_at_once(
        store_world: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=store_world.url)
    gpus = api.get("/api/v1/gpu/metrics").json()["data"]
    expected = sort_gpus([row for c in CLUSTERS for row in expected_gpus(c)])
    assert_rows_match(gpus, expected)
    processes = api.get("/api/v1/gpu/processes").json()["data"]
    assert_rows_match(processes,
                      sort_processes([row for c in CLUSTERS for row in expected_processes(c)]))


def test_capabilities_report_dialects_fields_and_why(
        store_world: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=store_world.url)
    body = api.get("/api/v1/capabilities").json()
    assert body["success"] is True
    data = body["data"]
    assert data["mode"] == "auto"
    assert sorted(d["name"] for d in data["dialects"]) == sorted(set(API_DIALECT.values()))
    assert data["pod_attribution"] is True and data["mig"] is True and data["processes"]
    notes = " ".join(data["notes"])
    assert "exported_pod" in notes
    assert "dcgm-old: no node label" in notes and "instance" in notes
    # Hostname holds each exporter's pod in two clusters: the notes say how it was resolved.
    assert "holds the exporter's own pod name" in notes and "NODE_NAME" in notes
    assert "relabeled kubernetes_node label" in notes and "kube_pod_info" in notes
    by_name = {d["name"]: d for d in data["dialects"]}
    assert by_name["nvidia-smi"]["node_label"] == "kubernetes_node"
    assert by_name["dcgm-old"]["node_label"] == "instance"
    assert "power_usage" in data["gpu_fields"] and "uuid" in data["gpu_fields"]


def test_capabilities_of_one_dialect_without_pods_or_processes(
        store_world: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=store_world.url, METRICS_DIALECT="legacy")
    data = api.get("/api/v1/capabilities").json()["data"]
    assert data["mode"] == "forced"
    assert data["pod_attribution"] is False and data["mig"] is False
    assert data["processes"] is True
    assert "pod" not in data["gpu_fields"] and "power_usage" not in data["gpu_fields"]
    assert {"utilization", "memory_used", "temperature"} <= set(data["gpu_fields"])


def test_filters_narrow_results_through_promql(
        store_world: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=store_world.url, METRICS_DIALECT="dcgm")

    def without_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "timestamp"} for row in rows]

    everything = without_time(api.get("/api/v1/gpu/metrics").json()["data"])
    held = [g for g in everything if g["pod"] and "," not in g["pod"]]
    assert held, "the dcgm cluster should have GPUs held by one pod"
    target = held[0]

    def ask(query: str) -> list[dict[str, Any]]:
        response = api.get("/api/v1/gpu/metrics?" + query)
        assert response.status_code == 200, response.text
        return without_time(response.json()["data"])

    by_node = ask(f"node={target['node_name']}")
    assert by_node == [g for g in everything if g["node_name"] == target["node_name"]]
    assert ask(f"pod={target['pod']}") == [g for g in everything if g["pod"] and
                                           target["pod"] in g["pod"].split(",")]
    in_namespace = ask(f"namespace={target['namespace']}")
    assert target in in_namespace
    assert all(target["namespace"] in g["namespace"].split(",") for g in in_namespace)
    assert ask(f"uuid={target['uuid']}") == [g for g in everything if g["uuid"] ==
                                             target["uuid"]]
    assert ask(f"gpu_name={target['gpu_name']}&node={target['node_name']}") == [
        g for g in by_node if g["gpu_name"] == target["gpu_name"]]
    two = ask(f"node={everything[0]['node_name']}&node={everything[-1]['node_name']}")
    assert {g["node_name"] for g in two} == {everything[0]["node_name"],
                                             everything[-1]["node_name"]}
    # The exporter's own pod is not a workload, under either honorLabels setting.
    assert ask(f"pod={DCGM_TARGET_LABELS['pod']}") == []
    assert ask("pod=nvidia-dcgm-exporter-h4h4q") == []


@pytest.mark.parametrize("hostile", [
    '"}', '\\"', '=~".*"', 'x"} or vector(1) or {"', ".*", "a|b", "\\", "dc-001\"}"])
def test_hostile_filter_values_match_nothing_and_break_nothing(
        store_world: PrometheusServer, api_server: Callable[..., ApiServer], hostile: str) -> None:
    api = api_server(PROMETHEUS_URL=store_world.url, METRICS_DIALECT="dcgm")
    for name in ("node", "namespace", "pod", "gpu_name", "uuid"):
        response = api.get("/api/v1/gpu/metrics", params={name: hostile})
        assert response.status_code == 200, (name, hostile, response.text)
        assert response.json()["data"] == [], (name, hostile)
