"""The health endpoint's contract and the health part of the capabilities report."""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient

from tests.fakes import FakePrometheus

GPU = {"Hostname": "node-a", "gpu": "0", "UUID": "GPU-1", "modelName": "NVIDIA A100"}
# What dcgm-exporter's default counters CSV publishes of the health signals.
DEFAULT_CSV = ("DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
               "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE")


def publish_dcgm(prom: FakePrometheus, *health: str) -> None:
    prom.add("DCGM_FI_DEV_FB_USED", GPU, 1024)
    for metric in health:
        prom.add(metric, GPU, 0)


def test_capabilities_name_the_counters_to_enable_for_missing_signals(
        client: FlaskClient, fake_prometheus: FakePrometheus) -> None:
    publish_dcgm(fake_prometheus, *DEFAULT_CSV)
    data = client.get("/api/v1/capabilities").get_json()["data"]
    signals = {s["name"]: s for s in data["health_signals"]}
    assert {name for name, s in signals.items() if s["found"]} == {
        "xid", "pcie_replay", "uncorrectable_remapped_rows", "row_remap_failure"}
    assert signals["ecc_dbe"] == {"name": "ecc_dbe", "found": False,
                                  "metrics": ["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"],
                                  "default_counters": False}
    assert signals["throttle_hw_thermal"]["metrics"] == [
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"]
    notes = data["notes"]
    assert ("health: ecc_dbe is not checked; add DCGM_FI_DEV_ECC_DBE_VOL_TOTAL to "
            "dcgm-exporter's counters CSV (off in its default CSV)") in notes
    assert not any("health: xid " in note for note in notes)
    assert "health" in data["gpu_fields"]


def test_capabilities_without_a_health_capable_exporter_say_so(
        client: FlaskClient, fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.add("gpu_memory_used_MiB", {"hostname": "n", "index": "0", "uuid": "GPU-1"},
                        5)
    data = client.get("/api/v1/capabilities").get_json()["data"]
    assert not any(s["found"] for s in data["health_signals"])
    assert any("no exporter in use publishes health signals" in n for n in data["notes"])


def test_health_of_an_empty_cluster_counts_zero_of_every_status(client: FlaskClient) -> None:
    body = client.get("/api/v1/gpu/health").get_json()
    assert body["success"] is True and body["error"] is None
    assert body["message"] == "GPU health retrieved successfully"
    data = body["data"]
    assert data["counts"] == {"ok": 0, "warning": 0, "critical": 0, "unknown": 0}
    assert (data["total"], data["gpus"], data["window"], data["step"]) == (0, [], 3600, 30)


@pytest.mark.parametrize("query", ["window=0", "window=59s", "window=32d", "window=soon",
                                   "window=", "time=4102444800", "level=critical"])
def test_health_refuses_bad_parameters_with_a_400_envelope(client: FlaskClient,
                                                           query: str) -> None:
    response = client.get(f"/api/v1/gpu/health?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["success"] is False and body["data"] is None and body["message"] is None
    assert query.split("=")[0] in body["error"]


def test_health_window_and_time_reach_the_promql(client: FlaskClient,
                                                 fake_prometheus: FakePrometheus) -> None:
    publish_dcgm(fake_prometheus, "DCGM_FI_DEV_XID_ERRORS")
    at = int(time.time()) - 600
    response = client.get(f"/api/v1/gpu/health?window=10m&time={at}")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["window"] == 600
    xid = [q for q in fake_prometheus.queries if q.startswith("min_over_time(timestamp("
                                                              "count_values")]
    assert len(xid) == 1 and xid[0].endswith("[600s:15s])")
