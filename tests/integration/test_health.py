"""GPU health against a real Prometheus holding two hours of backfilled faults.

The faults are injected by the simulator on GPUs chosen here (`FAULTS`); every expected
verdict below is written by hand from that list and from NVIDIA's meaning of each signal,
never computed with the service's rules. Times: the world's samples are 30 s apart, at
`first + 30 * step` (+7 s past the 30 s grid, see history_world.py); the report is read at
`T`, on that grid, so a rule's `since` (the first evaluation step of the window, 30 s apart
for the default hour, at which the rule held) is the sample's time + 23 s.

The labs: dcgm-exporter with every health counter (err_code-labelled XID gauge, a MIG
node, a time-shared GPU copied per pod, honorLabels false); dcgm-exporter with its
default counters only (the optional ones absent); an exporter stopped 10 minutes before T
(its GPUs gone from instant queries), one stopped 2 minutes before T (its samples still
in the lookback), and nvidia_gpu_exporter, which has no health signal at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from demo.cluster import ClusterSpec, Fault
from tests.integration.conftest import ApiServer
from tests.integration.history_world import (
    EXPORTER_POD,
    Exporter,
    HistoryCluster,
    HistoryWorld,
    Outage,
    backfilled_world,
)
from tests.integration.test_history import ok_data, unix

pytestmark = pytest.mark.integration

HEALTH = "/api/v1/gpu/health"
METRICS = "/api/v1/gpu/metrics"
STEPS = 240  # two hours of 30 s samples
F = Fault
FAULTS = (
    F("hf-001", 0, "xid", 200, value=79),      # the time-shared GPU: one series per pod
    F("hf-001", 1, "xid", 30, value=13),       # before the window: an old code, ok
    F("hf-001", 1, "throttle", 50, 60, value=0x20),  # throttled, but before the window
    F("hf-001", 2, "xid", 30, value=13),
    F("hf-001", 2, "xid", 180, value=48),      # the new code only
    F("hf-001", 3, "xid", 150, value=31),
    F("hf-002", 0, "ecc_dbe", 190),
    F("hf-002", 1, "ecc_sbe", 150),            # one a step: 120 an hour, over 10
    F("hf-002", 1, "xid", 210, value=155),     # a code the table does not know
    F("hf-002", 2, "row_remap_failure", 100),  # held since before the window
    F("hf-002", 3, "throttle", 210, 220, value=0x40 | 0x4),  # hw thermal + power cap
    F("hf-003", 0, "xid", 220, value=119),     # a MIG GPU: every instance
    F("hf-003", 1, "dcgm_health", 200, value=20, watch="PCIE"),
    F("hf-003", 2, "uncorrectable_remap", 160),
    F("hf-003", 2, "row_remap_pending", 160),
    F("hf-003", 3, "pcie_replay", 170),
    F("hf-003", 3, "nvlink_crc", 175),
)
DEFAULT_CSV_FAULTS = (
    F("hd-001", 0, "xid", 200, value=79),      # the gauge without err_code labels
    F("hd-001", 1, "ecc_dbe", 190),            # not exported by the default counters
    F("hd-001", 2, "pcie_replay", 190),
    F("hd-001", 3, "throttle", 200, value=0x40),  # not exported either
)
CLUSTERS = (
    HistoryCluster("faults", ClusterSpec(nodes=3, gpus_per_node=4, seed=50, mig_nodes=1,
                                         shared_gpus=1, node_prefix="hf-", faults=FAULTS),
                   (Exporter("dcgm-health-all", honor_labels=False,
                             target_labels=EXPORTER_POD),)),
    HistoryCluster("csv", ClusterSpec(nodes=1, gpus_per_node=4, seed=52, node_prefix="hd-",
                                      faults=DEFAULT_CSV_FAULTS),
                   (Exporter("dcgm-health"),)),
    HistoryCluster("stopped", ClusterSpec(nodes=1, gpus_per_node=2, seed=53, node_prefix="hx-"),
                   (Exporter("dcgm-health", outages=(Outage(110 * 60, 121 * 60),)),)),
    HistoryCluster("stopping", ClusterSpec(nodes=1, gpus_per_node=1, seed=54,
                                           node_prefix="hy-"),
                   (Exporter("dcgm-health", outages=(Outage(118 * 60, 121 * 60),)),)),
    HistoryCluster("smi", ClusterSpec(nodes=1, gpus_per_node=1, seed=55, node_prefix="hs-"),
                   (Exporter("nvidia-smi"),)),
)

Row = dict[str, Any]


@pytest.fixture(scope="module")
def world() -> Iterator[HistoryWorld]:
    with backfilled_world(CLUSTERS, duration_s=STEPS * 30, spacing_s=30) as lab:
        yield lab


@pytest.fixture(scope="module")
def api(world: HistoryWorld) -> Iterator[ApiServer]:
    server = ApiServer({"PROMETHEUS_URL": world.url})
    yield server
    server.close()


def rfc3339(t: int) -> str:
    """A whole-second instant as the API writes it (milliseconds, Z)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def report_at(api: ApiServer, t: float, **params: Any) -> dict[str, Any]:
    return dict(ok_data(api.get(HEALTH, params={"time": str(t), **params})))


def end(world: HistoryWorld) -> int:
    """T: the instant on the 30 s grid just before the last sample."""
    return world.timeline.last - 7


def sample(world: HistoryWorld, step: int) -> int:
    return world.timeline.first + 30 * step


def since(world: HistoryWorld, step: int) -> str:
    """The first evaluation step that sees the sample of `step`."""
    return rfc3339(sample(world, step) + 23)


def verdicts(data: dict[str, Any]) -> dict[tuple[str, int, int | None], Row]:
    return {(g["node_name"], g["gpu_index"], g["mig_instance"]): g["health"]
            for g in data["gpus"]}


def codes(health: Row) -> list[str]:
    return [reason["code"] for reason in health["reasons"]]


MIG = (2, 3, 9, 10)  # the simulator's MIG layout: GPU instance ids per GPU


def test_counts_every_gpu_by_status_and_lists_only_those_not_ok(
        world: HistoryWorld, api: ApiServer) -> None:
    data = report_at(api, end(world))
    assert data["time"] == rfc3339(end(world))
    assert data["window"] == 3600 and data["step"] == 30
    # faults: hf-001 1 ok; 2 + 2 + 8 MIG rows critical, 1 + 2 + 8 warning.
    # csv: hd-001 1 and 3 ok (their faults are not exported), 0 critical, 2 warning.
    # stopped (2), stopping (1), smi (1): unknown.
    assert data["counts"] == {"ok": 3, "warning": 12, "critical": 13, "unknown": 4}
    assert data["total"] == 32
    listed = verdicts(data)
    assert len(listed) == 32 - 3
    for clean in (("hf-001", 1, None), ("hd-001", 1, None), ("hd-001", 3, None)):
        assert clean not in listed
    assert all(health["status"] != "ok" for health in listed.values())


def test_xid_events_are_classed_by_nvidia_catalog(world: HistoryWorld, api: ApiServer) -> None:
    listed = verdicts(report_at(api, end(world)))
    fell = listed[("hf-001", 0, None)]
    assert fell["status"] == "critical"
    (reason,) = fell["reasons"]
    assert reason["code"] == "xid_79" and reason["severity"] == "critical"
    assert "fallen off the bus" in reason["message"]
    assert "reboot the node" in reason["action"]
    assert reason["since"] == since(world, 200)
    # The old 13 held from before the window is not an event; the new 48 is.
    dbe = listed[("hf-001", 2, None)]
    assert (dbe["status"], codes(dbe)) == ("critical", ["xid_48"])
    assert dbe["reasons"][0]["since"] == since(world, 180)
    assert "reset" in dbe["reasons"][0]["action"]
    app = listed[("hf-001", 3, None)]
    assert (app["status"], codes(app)) == ("warning", ["xid_31"])
    assert "Application fault, not the GPU" in app["reasons"][0]["action"]
    for instance in MIG:  # a MIG GPU's XID is on every one of its instances
        gsp = listed[("hf-003", 0, instance)]
        assert (gsp["status"], codes(gsp)) == ("critical", ["xid_119"])
        assert gsp["reasons"][0]["since"] == since(world, 220)


def test_an_xid_code_not_in_the_table_is_a_warning_naming_it(
        world: HistoryWorld, api: ApiServer) -> None:
    health = verdicts(report_at(api, end(world)))[("hf-002", 1, None)]
    # Both warnings; the older (single-bit ECC, from step 150) first.
    assert (health["status"], codes(health)) == ("warning", ["ecc_sbe", "xid_155"])
    unknown = health["reasons"][1]
    assert "XID 155" in unknown["message"] and unknown["severity"] == "warning"
    assert "XID catalog" in unknown["action"]
    assert unknown["since"] == since(world, 210)
    assert health["reasons"][0]["since"] == since(world, 150)


def test_memory_signals(world: HistoryWorld, api: ApiServer) -> None:
    listed = verdicts(report_at(api, end(world)))
    dbe = listed[("hf-002", 0, None)]
    assert (dbe["status"], codes(dbe)) == ("critical", ["ecc_dbe"])
    assert dbe["reasons"][0]["since"] == since(world, 190)
    remap = listed[("hf-002", 2, None)]
    assert (remap["status"], codes(remap)) == ("critical", ["row_remap_failure"])
    assert "RMA" in remap["reasons"][0]["action"]
    # Failed since before the window: `since` is the window's first step.
    first_step = unix(remap["reasons"][0]["since"])
    assert end(world) - 3600 <= first_step <= end(world) - 3600 + 30
    for instance in MIG:
        pending = listed[("hf-003", 2, instance)]
        assert (pending["status"], sorted(codes(pending))) == (
            "warning", ["row_remap_pending", "uncorrectable_remapped_rows"])
        assert all("Reset the GPU" in r["action"] for r in pending["reasons"])
        assert {r["since"] for r in pending["reasons"]} == {since(world, 160)}


def test_throttle_bits_and_link_counters(world: HistoryWorld, api: ApiServer) -> None:
    listed = verdicts(report_at(api, end(world)))
    hot = listed[("hf-002", 3, None)]
    # 0x40 is a fault; the power cap (0x4) set with it is not.
    assert (hot["status"], codes(hot)) == ("warning", ["throttle_hw_thermal"])
    assert hot["reasons"][0]["since"] == since(world, 210)
    for instance in MIG:
        links = listed[("hf-003", 3, instance)]
        assert (links["status"], codes(links)) == ("warning", ["pcie_replay", "nvlink_crc"])
        assert [r["since"] for r in links["reasons"]] == [since(world, 170), since(world, 175)]
        dcgm = listed[("hf-003", 1, instance)]
        assert (dcgm["status"], codes(dcgm)) == ("critical", ["dcgm_health_fail"])
        assert "PCIE" in dcgm["reasons"][0]["message"]


def test_default_counters_only_give_what_they_can(world: HistoryWorld, api: ApiServer) -> None:
    listed = verdicts(report_at(api, end(world)))
    fell = listed[("hd-001", 0, None)]
    assert (fell["status"], codes(fell)) == ("critical", ["xid_79"])
    assert fell["reasons"][0]["since"] == since(world, 200)
    replay = listed[("hd-001", 2, None)]
    assert (replay["status"], codes(replay)) == ("warning", ["pcie_replay"])


def test_a_stopped_exporter_makes_its_gpus_unknown_never_ok(
        world: HistoryWorld, api: ApiServer) -> None:
    t = end(world)
    listed = verdicts(report_at(api, t))
    # Stopped 10 minutes ago: gone from the list, still judged, by the time of their last
    # sample (step 219, the one before the outage).
    for index in (0, 1):
        gone = listed[("hx-001", index, None)]
        assert (gone["status"], codes(gone)) == ("unknown", ["exporter_down"])
        assert gone["reasons"][0]["since"] == rfc3339(sample(world, 219))
    rows = ok_data(api.get(METRICS, params={"time": str(t), "node": "hx-001"}))
    assert rows == []
    report = report_at(api, t, node="hx-001")
    assert [g["utilization"] for g in report["gpus"]] == [None, None]  # not received: null
    assert [g["uuid"] is not None for g in report["gpus"]] == [True, True]
    # Stopped 2 minutes ago: its last samples are still within Prometheus' lookback.
    lingering = listed[("hy-001", 0, None)]
    assert (lingering["status"], codes(lingering)) == ("unknown", ["exporter_down"])
    assert lingering["reasons"][0]["since"] == rfc3339(sample(world, 235))
    (row,) = ok_data(api.get(METRICS, params={"time": str(t), "node": "hy-001"}))
    assert row["health"]["status"] == "unknown"


def test_an_exporter_without_health_signals_is_unknown(world: HistoryWorld,
                                                       api: ApiServer) -> None:
    health = verdicts(report_at(api, end(world)))[("hs-001", 0, None)]
    assert (health["status"], codes(health)) == ("unknown", ["no_health_signals"])


def test_metrics_rows_carry_the_same_verdicts(world: HistoryWorld, api: ApiServer) -> None:
    t = end(world)
    report = verdicts(report_at(api, t))
    rows = ok_data(api.get(METRICS, params={"time": str(t)}))
    assert len(rows) == 32 - 2  # the stopped exporter's two GPUs are not listed
    for row in rows:
        key = (row["node_name"], row["gpu_index"], row["mig_instance"])
        assert row["health"] == report.get(key, {"status": "ok", "reasons": []}), key


def test_the_window_and_the_instant_decide_what_is_an_event(
        world: HistoryWorld, api: ApiServer) -> None:
    t = end(world)
    # Five minutes: the XID 119 of 10 minutes ago is out, the held remap failure is not.
    short = verdicts(report_at(api, t, window="5m"))
    assert ("hf-003", 0, 2) not in short
    assert codes(short[("hf-002", 2, None)]) == ["row_remap_failure"]
    # At step 165 (sample + 23 s): XID 79 (step 200) has not happened yet, XID 31 has.
    earlier = sample(world, 165) + 23
    past = verdicts(report_at(api, earlier))
    assert ("hf-001", 0, None) not in past
    assert past[("hf-001", 3, None)]["reasons"][0]["since"] == since(world, 150)


def test_filters_narrow_the_report(world: HistoryWorld, api: ApiServer) -> None:
    data = report_at(api, end(world), node="hf-001")
    assert data["counts"] == {"ok": 1, "warning": 1, "critical": 2, "unknown": 0}
    assert [g["gpu_index"] for g in data["gpus"]] == [0, 2, 3]


def test_a_bad_window_is_a_400_envelope(api: ApiServer) -> None:
    for window in ("0", "10s", "40d", "soon"):
        response = api.get(HEALTH, params={"window": window})
        assert response.status_code == 400, (window, response.text[:300])
        body = response.json()
        assert body["success"] is False and body["data"] is None
        assert "window" in body["error"]

