"""Health rules: the PromQL they send, and verdicts from answers written by hand."""

from __future__ import annotations

import dataclasses

import pytest

from app.dialects.builtin import DCGM
from app.dialects.model import GpuLabels
from app.health.queries import (
    MAX_NARROWED,
    HealthWindow,
    followup_queries,
    health_queries,
    narrowing,
)
from app.health.rules import HEALTH_METRICS, RULES, XID_CLASSES, xid_class
from app.health.verdict import HealthJoin, verdict
from app.services.records import Gpu, GpuFilters, HealthReason
from tests.factories import result, series

LABELS = GpuLabels(node=("Hostname",), index=("gpu",), uuid=("UUID",),
                   mig_instance=("GPU_I_ID",))
ID = "Hostname, gpu, UUID, GPU_I_ID"
NOW = 1_800_000_000.0


def dialect(*metrics: str) -> object:
    return dataclasses.replace(DCGM, labels=LABELS, health_metrics=metrics)


def gpu_labels(gpu: str = "0", mig: str | None = None, **extra: str) -> dict[str, str]:
    labels = {"Hostname": "n1", "gpu": gpu, "UUID": f"GPU-{gpu}", **extra}
    if mig is not None:
        labels["GPU_I_ID"] = mig
    return labels


@pytest.mark.parametrize(("seconds", "step"), [(3600, 30), (300, 15), (60, 15),
                                               (86400, 720), (7 * 86400, 5040)])
def test_the_rule_step_is_a_120th_of_the_window_on_a_15_s_grid(seconds: int,
                                                                step: int) -> None:
    assert HealthWindow(seconds).step == step


def test_the_first_round_asks_each_group_of_rules_once_without_a_subquery() -> None:
    queries = health_queries(dialect("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
                                     "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"), GpuFilters(),
                             HealthWindow())
    # A counter: rose within the window.
    assert queries[("health", "rule_candidates")] == (
        f"label_replace(max by ({ID}) (increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[3600s])) > 0, "
        '"health_rule", "ecc_dbe", "", "") or '
        # The four throttle bits: one pass, from the lowest bit (0x8).
        f"label_replace(max by ({ID}) (max_over_time(DCGM_FI_DEV_CLOCKS_EVENT_REASONS"
        '[3600s])) >= 8, "health_rule", "throttle_hw_slowdown", "", "")')
    # No XID metric, no XID query; freshness is always asked, without a range for the list.
    assert set(queries) == {("health", "rule_candidates"), ("health", "seen"),
                            ("health", "targets")}
    assert queries[("health", "seen")] == (
        f"max by ({ID}, instance, job) (timestamp(DCGM_FI_DEV_FB_USED))")


def test_the_report_also_looks_for_gpus_gone_within_the_window() -> None:
    queries = health_queries(dialect(), GpuFilters(), HealthWindow(), vanished=True)
    assert "last_over_time(DCGM_FI_DEV_FB_USED[3600s])" in queries[("health", "seen")]
    assert '"gone"' in queries[("health", "seen")]
    assert "last_over_time(DCGM_FI_DEV_FB_USED[3600s])" in queries[("health", "targets")]


def test_a_group_candidate_is_asked_about_for_every_rule_of_its_group() -> None:
    join = HealthJoin(dialect("DCGM_FI_DEV_CLOCKS_EVENT_REASONS"), HealthWindow())
    join.add(("health", "rule_candidates"), result(
        series(gpu_labels("0", health_rule="throttle_hw_slowdown"), 64, NOW)))
    rules = join.followups(GpuFilters())[("health", "rules")]
    for code in ("throttle_hw_slowdown", "throttle_sw_thermal", "throttle_hw_thermal",
                 "throttle_power_brake"):
        assert f'"{code}"' in rules


def test_the_second_round_asks_the_first_rise_of_the_candidates_alone() -> None:
    rules = followup_queries(dialect("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"), GpuFilters(),
                             HealthWindow(), {"ecc_dbe": {("n1", "GPU-0", "")}})
    sel = 'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{UUID="GPU-0"}'
    assert rules == {("health", "rules"): (
        "label_replace(min_over_time(("
        f"timestamp(max by ({ID}) ({sel}) > max by ({ID}) ({sel} offset 30s)) "
        f"and on ({ID}) (max by ({ID}) (increase({sel}[3600s] @ end())) > 0))[3600s:30s]), "
        '"health_rule", "ecc_dbe", "", "")')}


def test_too_many_candidates_are_asked_about_without_a_matcher() -> None:
    many = {("n1", f"GPU-{i}", "") for i in range(MAX_NARROWED + 1)}
    assert narrowing(dialect(), many) == []
    assert narrowing(dialect(), {("n1", "GPU-2", ""), ("n1", "GPU-1", "1")}) == [
        (("UUID",), ["GPU-1", "GPU-2"])]


def test_a_bit_rule_tests_its_bit_and_a_fast_counter_scales_with_the_window() -> None:
    candidates = {"throttle_hw_thermal": {("n1", "GPU-0", "")},
                  "ecc_sbe": {("n1", "GPU-0", "")}}
    queries = followup_queries(dialect("DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
                                       "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"),
                               GpuFilters(node=("n1",)), HealthWindow(1800), candidates)
    text = queries[("health", "rules")]
    value = f'max by ({ID}) (DCGM_FI_DEV_CLOCKS_EVENT_REASONS{{Hostname="n1", UUID="GPU-0"}})'
    assert f"timestamp(floor({value} / 64) % 2 == 1)" in text
    # Only the candidates' rules: not the other throttle bits.
    assert '"throttle_hw_thermal"' in text and '"throttle_power_brake"' not in text
    # 10 an hour over half an hour: more than 5.
    assert ('increase(DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{Hostname="n1", UUID="GPU-0"}[1800s] '
            "@ end())) > 5)") in text
    assert "[1800s:15s]" in text


def test_the_xid_gauge_turns_codes_into_labels_and_remembers_the_hour_before() -> None:
    metric = dialect("DCGM_FI_DEV_XID_ERRORS")
    first = health_queries(metric, GpuFilters(), HealthWindow())
    assert "changes(DCGM_FI_DEV_XID_ERRORS[3600s] @ end())" in first[("health",
                                                                       "xid_candidates")]
    queries = followup_queries(metric, GpuFilters(), HealthWindow(),
                               {"xid": {("n1", "GPU-0", "")}})
    gauge = 'DCGM_FI_DEV_XID_ERRORS{UUID="GPU-0"}'
    events = queries[("health", "xid_gauge")]
    assert events.startswith(f'min_over_time(timestamp(count_values by ({ID}) ("xid", '
                             f"{gauge} and on ({ID}) (")
    assert events.endswith("))[3600s:30s])")
    before = queries[("health", "xid_before")]
    assert f"last_over_time({gauge}[3600s] offset 3600s)" in before


def test_every_rule_metric_is_a_health_metric_and_codes_are_unique() -> None:
    assert {m for rule in RULES for m in rule.metrics} <= set(HEALTH_METRICS)
    assert len({rule.code for rule in RULES}) == len(RULES)


@pytest.mark.parametrize(("code", "severity"), [(13, "warning"), (31, "warning"),
                                                (43, "warning"), (45, "warning"),
                                                (48, "critical"), (63, "warning"),
                                                (64, "critical"), (74, "critical"),
                                                (79, "critical"), (92, "warning"),
                                                (94, "warning"), (95, "critical"),
                                                (119, "critical"), (120, "critical")])
def test_xid_classes_follow_the_issue_and_nvidia_catalog(code: int, severity: str) -> None:
    assert xid_class(code).severity == severity


def test_an_unknown_xid_is_a_warning() -> None:
    assert 999 not in XID_CLASSES
    unknown = xid_class(999)
    assert unknown.severity == "warning" and "catalog" in unknown.action


def test_verdict_orders_critical_unknown_warning_then_oldest() -> None:
    reasons = [HealthReason("a", "warning", "", "", 10.0),
               HealthReason("b", "unknown", "", "", 30.0),
               HealthReason("c", "critical", "", "", 50.0),
               HealthReason("d", "critical", "", "", 20.0)]
    health = verdict(reasons)
    assert health.status == "critical"
    assert [r.code for r in health.reasons] == ["d", "c", "b", "a"]
    assert verdict([]).status == "ok"


def judge(join: HealthJoin, *keys: tuple[str, str]) -> dict[tuple[str, str], Gpu]:
    rows = {("n1", f"GPU-{g}", mig): Gpu(node_name="n1", gpu_index=int(g)) for g, mig in keys}
    join.judge(rows)
    return {(key[1], key[2]): row for key, row in rows.items()}


def test_an_xid_code_held_before_the_window_is_not_an_event() -> None:
    join = HealthJoin(dialect("DCGM_FI_DEV_XID_ERRORS"), HealthWindow())
    join.add(("health", "xid_gauge"), result(series(gpu_labels("0", xid="13"), NOW - 3000, NOW),
                                             series(gpu_labels("0", xid="79"), NOW - 600, NOW),
                                             series(gpu_labels("1", xid="0"), NOW - 3600, NOW)))
    join.add(("health", "xid_before"), result(series(gpu_labels("0", xid="13"), 1, NOW)))
    rows = judge(join, ("0", ""), ("1", ""))
    health = rows[("GPU-0", "")].health
    assert health is not None and health.status == "critical"
    assert [(r.code, r.since) for r in health.reasons] == [("xid_79", NOW - 600)]
    clean = rows[("GPU-1", "")].health
    assert clean is not None and (clean.status, clean.reasons) == ("ok", [])


def test_a_device_wide_answer_covers_every_mig_instance() -> None:
    join = HealthJoin(dialect("DCGM_FI_DEV_ROW_REMAP_FAILURE"), HealthWindow())
    join.add(("health", "rules"), result(series(gpu_labels("0", health_rule="row_remap_failure"),
                                                NOW - 100, NOW)))
    rows = judge(join, ("0", "1"), ("0", "2"), ("1", ""))
    assert [rows[("GPU-0", m)].health.status for m in ("1", "2")] == ["critical"] * 2  # type: ignore[union-attr]
    assert rows[("GPU-1", "")].health.status == "ok"  # type: ignore[union-attr]


def test_a_down_target_is_unknown_and_a_silent_gpu_is_stale() -> None:
    join = HealthJoin(dialect("DCGM_FI_DEV_XID_ERRORS"), HealthWindow())
    target_a = {"instance": "10.0.0.1:9400", "job": "gpu"}
    target_b = {"instance": "10.0.0.2:9400", "job": "gpu"}
    join.add(("health", "seen"), result(
        series(gpu_labels("0", **target_a), NOW - 200, NOW),   # its target is down
        series(gpu_labels("1", **target_b), NOW - 100, NOW),   # up, but 100 s old
        series(gpu_labels("2", **target_b), NOW - 80, NOW)))   # up, 80 s: under 3 x 30 s
    join.add(("health", "targets"), result(
        series({**target_a, "health_stat": "up"}, 0, NOW),
        series({**target_b, "health_stat": "up"}, 1, NOW),
        series({**target_b, "health_stat": "samples"}, 120, NOW)))
    rows = judge(join, ("0", ""), ("1", ""), ("2", ""))
    down, stale, fresh = (rows[(f"GPU-{g}", "")].health for g in "012")
    assert down is not None and [(r.code, r.severity, r.since) for r in down.reasons] == [
        ("exporter_down", "unknown", NOW - 200)]
    assert "10.0.0.1:9400" in down.reasons[0].message
    assert stale is not None and [r.code for r in stale.reasons] == ["stale"]
    assert fresh is not None and fresh.status == "ok"


def test_a_gpu_seen_in_the_window_but_not_now_gets_a_row() -> None:
    join = HealthJoin(dialect("DCGM_FI_DEV_XID_ERRORS"), HealthWindow())
    labels = gpu_labels("3", instance="i", job="j", modelName="NVIDIA H100")
    join.add(("health", "seen"), result(series(labels, NOW - 900, NOW)))
    gone = join.vanished({})
    (row,) = gone.values()
    assert (row.node_name, row.gpu_index, row.uuid, row.utilization) == ("n1", 3, "GPU-3", None)
    join.judge(gone)
    assert row.health is not None and [r.code for r in row.health.reasons] == ["stale"]


def test_without_health_metrics_the_verdict_is_unknown() -> None:
    join = HealthJoin(dialect(), HealthWindow())
    rows = judge(join, ("0", ""))
    health = rows[("GPU-0", "")].health
    assert health is not None and health.status == "unknown"
    assert [r.code for r in health.reasons] == ["no_health_signals"]


def test_the_first_round_decides_what_the_second_asks() -> None:
    join = HealthJoin(dialect("DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_ROW_REMAP_FAILURE"),
                      HealthWindow())
    assert join.followups(GpuFilters()) == {}  # a healthy cluster: no second round
    join.add(("health", "rule_candidates"), result(
        series(gpu_labels("1", health_rule="row_remap_failure"), 1, NOW)))
    join.add(("health", "seen"), result(
        series(gpu_labels("2", instance="i", job="j", health_stat="gone"), 1, NOW)))
    follow = join.followups(GpuFilters())
    assert set(follow) == {("health", "rules"), ("health", "seen_gone")}
    assert 'UUID="GPU-1"' in follow[("health", "rules")]
    assert '"row_remap_failure"' in follow[("health", "rules")]
    assert follow[("health", "seen_gone")] == (
        f"max by ({ID}, instance, job) (max_over_time(timestamp("
        'DCGM_FI_DEV_FB_USED{UUID="GPU-2"})[3600s:30s]))')
    # A gone GPU gets its row from the second round's answer.
    assert join.vanished({}) == {}
    join.add(("health", "seen_gone"), result(
        series(gpu_labels("2", instance="i", job="j"), NOW - 600, NOW)))
    assert list(join.vanished({})) == [("n1", "GPU-2", "")]


def test_a_signal_on_a_gpu_and_on_its_mig_instances_is_one_reason_per_row() -> None:
    join = HealthJoin(dialect("DCGM_FI_DEV_XID_ERRORS"), HealthWindow())
    # dcgm-exporter 2.x writes the XID gauge on the parent and again on each instance.
    join.add(("health", "xid_gauge"), result(
        series(gpu_labels("0", xid="79"), NOW - 60, NOW),
        series(gpu_labels("0", mig="1", xid="79"), NOW - 60, NOW)))
    rows = judge(join, ("0", ""), ("0", "1"), ("0", "2"))
    for mig in ("", "1", "2"):
        health = rows[("GPU-0", mig)].health
        assert health is not None and [r.code for r in health.reasons] == ["xid_79"], mig
