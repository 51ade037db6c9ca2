"""History for charts, against a real Prometheus holding three hours of backfilled GPUs.

Every expected value comes from the simulator's ground truth at that instant
(`HistoryWorld.expected_rows`, see history_world.py) or is written by hand; none is computed
with the service's code. The world: dcgm-exporter with MIG and time-shared GPUs in both
shapes (copied per pod under honorLabels false; 4.8's per-pod shares under honorLabels
true), nvidia_gpu_exporter per node, nvitop-exporter, and dcgm + nvitop on the same GPUs;
with outages of 20, 3 (shorter than the lookback), 15 (one node) and 20 minutes.

How the contract is read where it leaves room:
- "at most `points` points" counts timestamps, both ends included: an aligned hour at 15 s
  is 241 timestamps, over the default 240, so its default step is 30 s (121 points);
  `points=241` gives 15 s.
- A group's value is the aggregate of the values its rows have at that instant (a row
  without the field does not count; a group with none is null); a GPU without a workload
  pod is in no namespace group (a `namespace: null` series is tolerated, and then must
  hold the aggregate of those GPUs).
- Percentages are compared within 0.001 (the API rounds to 3 decimals) except against the
  API's own snapshot, which must match exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tests.integration.conftest import ApiServer
from tests.integration.history_world import (
    HISTORY_FIELDS,
    PERCENT_FIELDS,
    HistoryWorld,
    Row,
    backfilled_world,
    gpu_key,
)

pytestmark = pytest.mark.integration

HISTORY = "/api/v1/gpu/history"
METRICS = "/api/v1/gpu/metrics"
STEPS = (15, 30, 60, 300, 900, 1800, 3600, 21600, 86400)
GPU_KEY = ("node_name", "gpu_index", "uuid", "mig_instance", "gpu_name")
SNAPSHOT_FIELDS = ("node_name", "gpu_index", "uuid", "mig_instance", "gpu_name", "mig_profile",
                   "utilization", "memory_used", "memory_total", "memory_free",
                   "memory_utilization", "temperature", "power_usage", "pods")
AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "avg": lambda values: sum(values) / len(values), "sum": sum, "max": max, "min": min,
}


@pytest.fixture(scope="module")
def history() -> Iterator[HistoryWorld]:
    with backfilled_world() as world:
        yield world


@pytest.fixture(scope="module")
def api(history: HistoryWorld) -> Iterator[ApiServer]:
    """The app with its defaults (auto-detection, cache) over the backfilled Prometheus."""
    server = ApiServer({"PROMETHEUS_URL": history.url})
    yield server
    server.close()


@pytest.fixture(scope="module")
def window(history: HistoryWorld) -> tuple[int, int]:
    """2 h 55 min inside the history, aligned to 5 minutes: the default step is 60 s."""
    start = math.ceil(history.timeline.first / 300) * 300
    return start, start + 175 * 60


# ------------------------------------------------------------------------------- helpers

def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def unix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def ok_data(response: requests.Response) -> Any:
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    assert body["success"] is True and body["error"] is None, body
    return body["data"]


def fetch_history(api: ApiServer, **params: Any) -> dict[str, Any]:
    return dict(ok_data(api.get(HISTORY, params=params)))


def assert_bad_request(response: requests.Response, *words: str) -> str:
    assert response.status_code == 400, (response.status_code, response.text[:500])
    body = response.json()
    assert body["success"] is False and body["data"] is None and body["message"] is None, body
    assert isinstance(body["error"], str) and body["error"], body
    for word in words:
        assert word in body["error"], (word, body["error"])
    return str(body["error"])


def timestamps_of(data: dict[str, Any]) -> list[int]:
    return [round(unix(t)) for t in data["timestamps"]]


def assert_value(got: Any, want: float | None, field: str, where: object,
                 exact: bool = False) -> None:
    """Nulls where the truth has nothing; numbers within the API's rounding otherwise."""
    if want is None:
        assert got is None, f"{where} {field}: {got!r}, expected null"
        return
    assert isinstance(got, int | float) and not isinstance(got, bool), (
        f"{where} {field}: {got!r}, expected {want}")
    tolerance = 1e-9 if exact or field not in PERCENT_FIELDS else 1e-3
    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=tolerance), (
        f"{where} {field}: {got}, expected {want}")


def group_names(row: Row, group_by: str) -> list[tuple[Any, ...]]:
    """The groups one truth row belongs to (a GPU shared by two namespaces: both)."""
    if group_by == "gpu":
        return [gpu_key(row)]
    if group_by == "node":
        return [(row["node_name"],)]
    if group_by == "gpu_name":
        return [(row["gpu_name"],)]
    if group_by == "namespace":
        return [(ns,) for ns in sorted({p["namespace"] for p in row["pods"]})] or [(None,)]
    return [()]


def key_of(series: dict[str, Any], group_by: str) -> tuple[Any, ...]:
    key = series["key"]
    names = {"gpu": GPU_KEY, "node": ("node_name",), "gpu_name": ("gpu_name",),
             "namespace": ("namespace",), "cluster": ()}[group_by]
    assert set(key) == set(names), f"key {key} of a group_by={group_by} series"
    return tuple(key[name] for name in names)


def expected_groups(history: HistoryWorld, times: list[int], group_by: str, agg: str,
                    fields: tuple[str, ...], keep: Callable[[Row], bool] = lambda r: True,
                    ) -> dict[tuple[Any, ...], dict[str, list[float | None]]]:
    """Per group and field, the aggregate of its truth rows at each timestamp."""
    members: list[dict[tuple[Any, ...], list[Row]]] = []
    for t in times:
        groups: dict[tuple[Any, ...], list[Row]] = {}
        for row in history.expected_rows(t):
            if keep(row):
                for name in group_names(row, group_by):
                    groups.setdefault(name, []).append(row)
        members.append(groups)
    keys = {key for groups in members for key in groups}
    result: dict[tuple[Any, ...], dict[str, list[float | None]]] = {}
    for key in keys:
        result[key] = {}
        for field in fields:
            column: list[float | None] = []
            for groups in members:
                values = [r[field] for r in groups.get(key, []) if r[field] is not None]
                column.append(AGGREGATES[agg](values) if values else None)
            result[key][field] = column
    return result


def assert_series_match(data: dict[str, Any], expected: dict[tuple[Any, ...],
                        dict[str, list[float | None]]], group_by: str) -> None:
    got = {key_of(s, group_by): s["values"] for s in data["series"]}
    assert len(got) == len(data["series"]), "two series with one key"
    if group_by == "namespace" and (None,) in got and (None,) not in expected:
        pytest.fail(f"a namespace: null series although every GPU has a namespace: {got}")
    if group_by == "namespace" and (None,) not in got:
        expected = {k: v for k, v in expected.items() if k != (None,)}
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    times = timestamps_of(data)
    for key, fields in expected.items():
        assert set(got[key]) == set(fields), (key, sorted(got[key]))
        for field, column in fields.items():
            values = got[key][field]
            assert len(values) == len(times), (key, field, len(values), len(times))
            for t, value, want in zip(times, values, column, strict=True):
                assert_value(value, want, field, (key, rfc3339(t)))


# ------------------------------------------------------------------- the harness itself

def test_backfilled_prometheus_holds_the_truth_with_its_gaps(history: HistoryWorld) -> None:
    """Straight from Prometheus, no app: values at an instant, lingering and holes."""
    prometheus = history.prometheus
    temperature = 'gpu_temperature_C{hostname="hn-001",index="0"}'
    for minutes in (10, 119.5, 121, 124.5, 126, 139.5, 141):
        t = history.at(minutes)
        rows = [r for r in history.expected_rows(t)
                if r["node_name"] == "hn-001" and r["gpu_index"] == 0]
        got = prometheus.query_at(temperature, t)
        # nvitop is down from minute 120 to 140: its last sample lingers 5 minutes.
        if minutes in (126, 139.5):
            assert rows == [] and got == [], (minutes, got)
        else:
            assert [float(s["value"][1]) for s in got] == [rows[0]["temperature"]], minutes
    assert history.timeline.last - history.timeline.first == 3 * 3600
    assert history.stats.blocks >= 2  # promtool cut the 3 hours at 2 h boundaries


# --------------------------------------------------------------- the snapshot at time T

SNAPSHOT_INSTANTS = {
    "start": 1, "smi node down": 35, "copy down, lingering": 62, "copy down": 70,
    "copy back": 81, "shares down 3 min (no hole)": 101.5, "nvitop down": 130, "end": 179.5,
}


@pytest.mark.parametrize("minutes", list(SNAPSHOT_INSTANTS.values()),
                         ids=list(SNAPSHOT_INSTANTS))
@pytest.mark.parametrize("spelling", ["unix", "rfc3339"])
def test_metrics_at_time_are_the_rows_of_that_instant(
        history: HistoryWorld, api: ApiServer, minutes: float, spelling: str) -> None:
    t = history.at(minutes)
    rows = ok_data(api.get(METRICS, params={"time": str(t) if spelling == "unix"
                                            else rfc3339(t)}))
    expected = history.expected_rows(t)
    assert [gpu_key(r) for r in rows] == [gpu_key(r) for r in expected]
    for got, want in zip(rows, expected, strict=True):
        where = gpu_key(want)
        for field in SNAPSHOT_FIELDS:
            if field == "pods" or field in GPU_KEY or field == "mig_profile":
                assert got[field] == want[field], (where, field, got[field], want[field])
            elif field in PERCENT_FIELDS and want[field] is not None:
                assert_value(got[field], round(want[field], 3), field, where, exact=True)
            else:
                assert_value(got[field], want[field], field, where)
        assert round(unix(got["timestamp"])) == t, (where, got["timestamp"])


def test_metrics_at_time_in_a_hole_has_no_rows_of_the_silent_exporter(
        history: HistoryWorld, api: ApiServer) -> None:
    inside = ok_data(api.get(METRICS, params={"time": history.at(70), "node": "hc-001"}))
    lingering = ok_data(api.get(METRICS, params={"time": history.at(62), "node": "hc-001"}))
    assert inside == []
    assert len(lingering) == 4  # the last sample before the outage, under 5 minutes old


# --------------------------------------------------------------------- group_by=gpu

def test_gpu_history_is_the_truth_at_every_timestamp(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int]) -> None:
    start, end = window
    data = fetch_history(api, start=start, end=end)
    assert data["step"] == 60 and data["group_by"] == "gpu" and data["agg"] == "avg"
    assert tuple(data["fields"]) == HISTORY_FIELDS
    assert (round(unix(data["start"])), round(unix(data["end"]))) == window
    times = timestamps_of(data)
    assert times == list(range(start, end + 60, 60))
    assert_series_match(data, expected_groups(history, times, "gpu", "avg", HISTORY_FIELDS),
                        "gpu")
    # The holes are there: the copy cluster's GPUs are null from 5 minutes into its outage.
    hole = times.index(history.at(70) // 60 * 60)
    copy = [s for s in data["series"] if s["key"]["node_name"].startswith("hc-")]
    assert len(copy) == 24 and all(s["values"]["temperature"][hole] is None for s in copy)


def test_gpu_history_equals_the_snapshot_at_each_of_its_timestamps(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int]) -> None:
    """The issue's point-by-point rule, between the two endpoints of the service."""
    start, end = window
    data = fetch_history(api, start=start, end=end)
    times = timestamps_of(data)
    series = {key_of(s, "gpu"): s["values"] for s in data["series"]}
    for minutes in (2, 36, 61, 66, 101, 125, 150, 174):
        t = (start + minutes * 60) // 60 * 60
        i = times.index(t)
        rows = {gpu_key(r): r for r in ok_data(api.get(METRICS, params={"time": t}))}
        for key, values in series.items():
            row = rows.get(key)
            for field in HISTORY_FIELDS:
                assert_value(values[field][i], None if row is None else row[field], field,
                             (key, rfc3339(t)), exact=True)
        assert set(rows) <= set(series), set(rows) - set(series)


def test_mig_instances_are_gpus_of_their_own(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int]) -> None:
    data = fetch_history(api, start=window[0], end=window[1], node="hc-003",
                         fields="memory_used")
    keys = sorted(key_of(s, "gpu") for s in data["series"])
    # 4 A100/H100 GPUs in the 3g + 2g + 1g + 1g layout, instances by their GPU instance id.
    assert [(k[1], k[3]) for k in keys] == [(g, m) for g in range(4) for m in (2, 3, 9, 10)]


@pytest.mark.parametrize("node", ["hc-001", "hh-001", "hb-001"])
def test_a_time_shared_gpu_is_one_series_with_the_device_values(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int], node: str) -> None:
    shared = [r for r in history.expected_rows(window[0])
              if r["node_name"] == node and len(r["pods"]) > 1]
    assert shared, f"the world should time-share a GPU on {node}"
    row = shared[0]
    data = fetch_history(api, start=window[0], end=window[1], uuid=row["uuid"],
                         fields=["utilization", "memory_used"])
    (series,) = data["series"]
    times = timestamps_of(data)
    for i, t in enumerate(times):
        (truth,) = [r for r in history.expected_rows(t) if r["uuid"] == row["uuid"]] or [None]
        for field in ("utilization", "memory_used"):
            # The device's own value: neither a sum over the pods nor a copy per pod.
            assert_value(series["values"][field][i], truth and truth[field], field,
                         (node, rfc3339(t)))


def test_two_exporters_on_the_same_gpus_count_each_gpu_once(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int]) -> None:
    data = fetch_history(api, start=window[0], end=window[1], node="hb-001")
    assert len(data["series"]) == 3
    summed = fetch_history(api, start=window[0], end=window[1], node="hb-001",
                           group_by="node", agg="sum")
    times = timestamps_of(summed)
    assert_series_match(summed, expected_groups(
        history, times, "node", "sum", HISTORY_FIELDS, lambda r: r["node_name"] == "hb-001"),
        "node")


# ------------------------------------------------------------------------ rolled up

@pytest.mark.parametrize("agg", ["avg", "max", "min", "sum"])
@pytest.mark.parametrize("group_by", ["node", "namespace", "gpu_name", "cluster"])
def test_groups_are_the_aggregate_of_their_gpus(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int], group_by: str,
        agg: str) -> None:
    data = fetch_history(api, start=window[0], end=window[1], group_by=group_by, agg=agg)
    assert data["group_by"] == group_by and data["agg"] == agg
    times = timestamps_of(data)
    assert_series_match(data, expected_groups(history, times, group_by, agg, HISTORY_FIELDS),
                        group_by)


def test_a_gpu_shared_by_two_namespaces_counts_in_both(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int]) -> None:
    row = next(r for r in history.expected_rows(window[0])
               if r["node_name"].startswith("hb-") and len(r["pods"]) > 1)
    namespaces = sorted({p["namespace"] for p in row["pods"]})
    assert len(namespaces) == 2
    data = fetch_history(api, start=window[0], end=window[1], group_by="namespace",
                         agg="sum", fields="memory_used", node=row["node_name"])
    times = timestamps_of(data)
    expected = expected_groups(history, times, "namespace", "sum", ("memory_used",),
                               lambda r: r["node_name"] == row["node_name"])
    assert {k[0] for k in expected} >= set(namespaces)
    assert_series_match(data, expected, "namespace")


def test_history_takes_the_filters_of_the_gpu_list(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int]) -> None:
    namespace = "team-vision"
    data = fetch_history(api, start=window[0], end=window[1], namespace=namespace)
    times = timestamps_of(data)
    assert_series_match(data, expected_groups(
        history, times, "gpu", "avg", HISTORY_FIELDS,
        lambda r: any(p["namespace"] == namespace for p in r["pods"])), "gpu")
    two = fetch_history(api, start=window[0], end=window[1], group_by="node",
                        node=["hs-001", "hn-002"], agg="max")
    assert_series_match(two, expected_groups(
        history, times, "node", "max", HISTORY_FIELDS,
        lambda r: r["node_name"] in ("hs-001", "hn-002")), "node")
    model = history.expected_rows(window[0])[0]["gpu_name"]
    by_model = fetch_history(api, start=window[0], end=window[1], group_by="cluster",
                             agg="sum", gpu_name=model)
    assert_series_match(by_model, expected_groups(
        history, times, "cluster", "sum", HISTORY_FIELDS,
        lambda r: r["gpu_name"] == model), "cluster")


# ------------------------------------------------------------------------------ steps

def assert_grid(data: dict[str, Any], step: int) -> list[int]:
    """Aligned start and end, both included, one shared timestamps array."""
    start, end = round(unix(data["start"])), round(unix(data["end"]))
    assert data["step"] == step, data["step"]
    assert start % step == 0 and end % step == 0, (start, end, step)
    times = timestamps_of(data)
    assert times == list(range(start, end + step, step))
    for series in data["series"]:
        assert all(len(v) == len(times) for v in series["values"].values())
    return times


@pytest.mark.parametrize(("range_", "points", "step", "count"), [
    ("15m", None, 15, 61),
    ("1h", None, 30, 121),   # 15 s would be 241 timestamps, over the default 240
    ("1h", 241, 15, 241),
    ("1h", 60, 300, 13),     # 1 m would be 61
    ("6h", None, 300, 73),
    ("7d", None, 3600, 169),
])
def test_default_step_is_the_finest_that_fits_the_points(
        history: HistoryWorld, api: ApiServer, range_: str, points: int | None, step: int,
        count: int) -> None:
    end = history.timeline.last // 3600 * 3600  # aligned to every step these pick
    params: dict[str, Any] = {"range": range_, "end": end, "node": "hs-001"}
    if points is not None:
        params["points"] = points
    data = fetch_history(api, **params)
    times = assert_grid(data, step)
    assert len(times) == count and times[-1] == end


def test_default_window_is_the_last_hour(api: ApiServer) -> None:
    data = fetch_history(api, node="hs-001")
    step = data["step"]
    assert step in STEPS
    times = assert_grid(data, step)
    start, end = times[0], times[-1]
    now = datetime.now(UTC).timestamp()
    assert now - 60 - step <= end <= now + step
    assert 3600 - step <= end - start <= 3600 + step
    assert len(times) <= 240
    finer = [s for s in STEPS if s < step]
    # The finest step that fits: the next finer one would need more than 240 timestamps.
    assert not finer or (end - start) // finer[-1] + 1 > 240


@pytest.mark.parametrize(("step", "seconds"), [("90", 90), ("5m", 300), ("1h", 3600)])
def test_an_explicit_step_is_used_and_aligns_the_window(
        history: HistoryWorld, api: ApiServer, step: str, seconds: int) -> None:
    start, end = history.at(10) + 7, history.at(170) - 4  # deliberately unaligned
    data = fetch_history(api, start=rfc3339(start), end=rfc3339(end), step=step,
                         node="hs-001")
    times = assert_grid(data, seconds)
    assert abs(times[0] - start) < seconds and abs(times[-1] - end) < seconds


def test_11000_points_is_the_most_and_is_served(history: HistoryWorld,
                                                 api: ApiServer) -> None:
    end = history.timeline.last // 15 * 15
    data = fetch_history(api, start=end - 10999 * 15, end=end, step=15, node="hs-001",
                         fields="temperature")
    assert len(assert_grid(data, 15)) == 11000
    limit = fetch_history(api, range="2d", end=end, points=11000, node="hs-001",
                          fields="temperature")
    assert limit["step"] == 30  # 2 d at 15 s would be 11,521 timestamps


# ------------------------------------------------------------------------- bad input

BAD_REQUESTS = {
    "start after end": ({"start": 2000, "end": 1000}, "start"),
    "step 0": ({"step": "0"}, "step"),
    "negative step": ({"step": "-15"}, "step"),
    "step not a duration": ({"step": "often"}, "step"),
    "11,001 points": ({"start": 1_700_000_000 - 11000 * 15, "end": 1_700_000_000,
                       "step": 15}, "11"),
    "points over 11000": ({"points": 11001}, "points"),
    "no points": ({"points": 0}, "points"),
    "unknown field": ({"fields": "bogus"}, "bogus"),
    "non-numeric field": ({"fields": "pods"}, "pods"),
    "unknown group_by": ({"group_by": "pod"}, "group_by"),
    "unknown agg": ({"agg": "median"}, "agg"),
    "bad start": ({"start": "yesterday"}, "start"),
    "bad range": ({"range": "5x"}, "range"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_history_requests_are_400_envelopes(api: ApiServer, case: str) -> None:
    params, word = BAD_REQUESTS[case]
    assert_bad_request(api.get(HISTORY, params=params), word)


def test_a_bad_time_on_the_gpu_list_is_a_400_envelope(api: ApiServer) -> None:
    assert_bad_request(api.get(METRICS, params={"time": "noon"}), "time")


def test_too_many_values_is_a_400_that_says_how_to_narrow(
        history: HistoryWorld, api_server: Callable[..., ApiServer],
        window: tuple[int, int]) -> None:
    small = api_server(PROMETHEUS_URL=history.url, HISTORY_MAX_VALUES="1000")
    # ~100 GPU series x 176 points: far over; one cluster series x 176 points: under.
    error = assert_bad_request(small.get(HISTORY, params={"start": window[0],
                                                          "end": window[1]}))
    lowered = error.lower()
    assert "step" in lowered and ("group_by" in lowered or "rollup" in lowered) and (
        "filter" in lowered or "node" in lowered), error
    rolled_up = ok_data(small.get(HISTORY, params={"start": window[0], "end": window[1],
                                                   "group_by": "cluster",
                                                   "fields": "utilization"}))
    assert len(rolled_up["series"]) == 1


# ---------------------------------------------------------------------------- caching

def test_one_aligned_window_is_one_answer_with_an_etag(
        history: HistoryWorld, api: ApiServer, window: tuple[int, int]) -> None:
    start, end = window
    # Raw bounds inside one 300 s step of the aligned ones, and never past `end`: the
    # history's last sample may be only 7 s after it, and an end in the future is a 400.
    raw = {"start": start + 20, "end": end - 40, "step": 300}
    first = api.get(HISTORY, params=raw)
    assert first.status_code == 200, first.text[:500]
    aligned = first.json()["data"]
    # The same aligned window asked with other raw bounds (its own, already aligned).
    second = api.get(HISTORY, params={"start": aligned["start"], "end": aligned["end"],
                                      "step": 300})
    assert second.status_code == 200, second.text[:500]
    etag = first.headers.get("ETag")
    assert etag and second.headers.get("ETag") == etag, (first.headers, second.headers)
    assert first.json() == second.json()
    again = api.get(HISTORY, params=raw, headers={"If-None-Match": etag})
    assert again.status_code == 304, (again.headers, again.text[:500])
