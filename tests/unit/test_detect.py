"""Auto-detection of dialects, fitting them to the labels that exist, and the selector."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from app.dialects.builtin import DCGM, LEGACY, NVIDIA_SMI
from app.dialects.detect import (
    Detection,
    count_series_query,
    detect,
    fit,
    probe_metrics,
)
from app.dialects.selector import DialectSelector
from app.prometheus.client import ClientSettings, PrometheusClient
from app.prometheus.errors import PrometheusTimeoutError, PrometheusUnavailableError
from tests.cache_doubles import FakeClock
from tests.factories import api_body
from tests.fakes import PROM_URL, FakePrometheus


def test_fit_prefers_exported_pod_labels_and_says_why() -> None:
    labels = frozenset({"Hostname", "gpu", "UUID", "modelName", "exported_pod",
                        "exported_namespace", "pod", "namespace", "instance"})
    fitted, notes = fit(DCGM, labels, {"DCGM_FI_DEV_FB_USED": 8})
    assert fitted.labels.node == ("Hostname",)
    assert fitted.labels.pod == ("exported_pod", "pod")
    assert fitted.labels.mig_instance == ()
    assert list(fitted.gpu_fields) == ["memory_used"]  # only metrics that exist are read
    assert any("exported_pod" in note for note in notes)


def test_fit_falls_back_to_instance_and_says_so() -> None:
    fitted, notes = fit(NVIDIA_SMI, frozenset({"uuid", "instance", "job"}),
                        {"nvidia_smi_utilization_gpu_ratio": 4})
    assert fitted.labels.node == ("instance",)
    assert any("NODE_LABEL" in note and "instance" in note for note in notes)


def test_fit_reads_a_configured_node_label_first() -> None:
    fitted, _ = fit(NVIDIA_SMI, frozenset({"uuid", "instance", "kubernetes_node", "host"}),
                    {"nvidia_smi_utilization_gpu_ratio": 4}, node_label="host")
    assert fitted.labels.node == ("host", "kubernetes_node", "instance")


def test_count_series_query_escapes_names_into_one_regex() -> None:
    assert count_series_query(["b_metric", "a:metric"]) == (
        'count by (__name__) ({__name__=~"a:metric|b_metric"})')


@pytest.fixture
def prom() -> PrometheusClient:
    return PrometheusClient(ClientSettings(base_url=PROM_URL, retries=0))


def test_detect_keeps_only_dialects_with_series(prom: PrometheusClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakePrometheus(mock)
        fake.add("nvidia_gpu_utilization_percent", {"node": "n", "gpu": "0"}, 1)
        found = detect(prom, [DCGM, LEGACY], forced=False)
    assert [d.name for d in found.dialects] == ["legacy"]
    assert found.dialects[0].labels.node == ("node",)
    assert found.series_counts == {"nvidia_gpu_utilization_percent": 1}


def test_detect_with_nothing_found_says_what_it_looked_for(prom: PrometheusClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakePrometheus(mock)
        found = detect(prom, [DCGM, LEGACY], forced=False)
    assert found.dialects == ()
    assert "dcgm, legacy" in found.notes[-1] and "METRICS_MAPPING_FILE" in found.notes[-1]


def test_forced_dialect_is_used_even_before_its_series_exist(prom: PrometheusClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakePrometheus(mock)
        found = detect(prom, [DCGM], forced=True)
    assert [d.name for d in found.dialects] == ["dcgm"]
    assert "no series" in found.notes[0]


def test_detect_is_a_few_index_lookups_not_a_scan(prom: PrometheusClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakePrometheus(mock)
        for gpu in ("0", "1"):
            labels = {"Hostname": "n", "gpu": gpu, "UUID": f"GPU-{gpu}"}
            fake.add("DCGM_FI_DEV_GPU_UTIL", labels, 5)
            fake.add("DCGM_FI_DEV_FB_USED", labels, 100)
        found = detect(prom, [DCGM, LEGACY, NVIDIA_SMI], forced=False)
        calls = [(urlsplit(c.request.url).path, parse_qs(urlsplit(c.request.url).query))
                 for c in mock.calls]
    assert [d.name for d in found.dialects] == ["dcgm"]
    # The names come from the index alone, whatever the number of series.
    assert calls[0][0] == "/api/v1/label/__name__/values" and "match[]" not in calls[0][1]
    # Only the pod metric's series are counted.
    counting = [q for q in fake.queries if q.startswith("count")]
    assert counting == [count_series_query(["DCGM_FI_DEV_FB_USED"])]
    assert not any("DCGM_FI_DEV_GPU_UTIL" in q for q in fake.queries)
    # Label names: of the dialect's own metrics that exist, one lookup.
    (names_of,) = [params["match[]"] for path, params in calls if path == "/api/v1/labels"]
    assert set(names_of) <= {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}
    lookups = [params for path, params in calls if path.startswith("/api/v1/label")]
    for params in lookups:  # index lookups over a recent window only
        assert 0 < float(params["end"][0]) - float(params["start"][0]) <= 3600
    assert found.series_counts == {"DCGM_FI_DEV_FB_USED": 2}
    assert found.metrics == {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}
    assert list(found.dialects[0].gpu_fields) == ["utilization", "memory_used"]
    assert found.elapsed_s is not None and found.elapsed_s >= 0


def test_detect_finds_mig_labels_that_only_some_metrics_carry(
        prom: PrometheusClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakePrometheus(mock)
        gpu = {"Hostname": "n", "gpu": "0", "UUID": "GPU-0"}
        fake.add("DCGM_FI_DEV_GPU_UTIL", gpu, 5)  # absent on MIG instances
        fake.add("DCGM_FI_DEV_FB_USED", {**gpu, "GPU_I_ID": "1", "GPU_I_PROFILE": "1g.10gb"},
                 100)
        found = detect(prom, [DCGM], forced=False)
    assert found.dialects[0].labels.mig_instance == ("GPU_I_ID",)
    assert found.dialects[0].labels.mig_profile == ("GPU_I_PROFILE",)


def test_probe_metrics_prefers_the_pod_metric_and_adds_one_process_metric() -> None:
    names = {"nvidia_gpu_utilization_percent", "nvidia_gpu_used_memory_bytes",
             "nvidia_gpu_process_cpu_percent"}
    assert probe_metrics(LEGACY, names) == ("nvidia_gpu_used_memory_bytes",
                                            "nvidia_gpu_process_cpu_percent")
    assert probe_metrics(LEGACY, {"nvidia_gpu_utilization_percent"}) == (
        "nvidia_gpu_utilization_percent",)
    assert probe_metrics(LEGACY, set()) == ()


def _stale_index(mock: responses.RequestsMock, names: list[str],
                 counts: dict[str, int]) -> None:
    """A Prometheus whose index lists `names` but whose live series are `counts`."""
    mock.get(f"{PROM_URL}/api/v1/label/__name__/values",
             json={"status": "success", "data": names})
    mock.get(f"{PROM_URL}/api/v1/query", json=api_body(*(
        {"metric": {"__name__": name}, "value": [1.0, str(n)]} for name, n in counts.items())))
    mock.get(f"{PROM_URL}/api/v1/labels",
             json={"status": "success", "data": ["__name__", "node", "gpu"]})


def test_detect_ignores_metric_names_whose_series_have_stopped(
        prom: PrometheusClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _stale_index(mock, ["nvidia_gpu_utilization_percent", "up"], counts={})
        auto = detect(prom, [LEGACY], forced=False)
        forced = detect(prom, [LEGACY], forced=True)
    assert auto.dialects == ()
    assert [d.name for d in forced.dialects] == ["legacy"]
    assert "legacy: no series of its metrics in Prometheus yet" in forced.notes
    assert forced.metrics == frozenset()


def test_detect_drops_process_fields_when_no_process_series_are_live(
        prom: PrometheusClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _stale_index(mock, ["nvidia_gpu_utilization_percent",
                            "nvidia_gpu_process_gpu_memory_bytes"],
                     counts={"nvidia_gpu_utilization_percent": 3})
        found = detect(prom, [LEGACY], forced=False)
    (legacy,) = found.dialects
    assert legacy.process_fields == {}
    assert any("no per-process series" in note for note in found.notes)


def test_detect_keeps_every_lookup_within_one_deadline(prom: PrometheusClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        FakePrometheus(mock)
        with pytest.raises(PrometheusTimeoutError):
            detect(prom, [LEGACY], forced=False, deadline=time.monotonic() - 1)
        assert len(mock.calls) == 0


# -- the selector: background detection, single flight ---------------------------------------

REFRESH_S = 300.0
RETRY_S = 15.0
WAIT_S = 5.0  # a bound for waits in these tests; none of them should come near it


def detection(tag: str) -> Detection:
    """A detection that found something; `tag` tells two of them apart."""
    return Detection(dialects=(LEGACY,), series_counts={"nvidia_gpu_utilization_percent": 1},
                     label_names={}, notes=(tag,), checked_at=0.0, forced=False)


class ScriptedDetector:
    """Answer each detection with the next scripted outcome; optionally hold it at a gate."""

    def __init__(self, *outcomes: Detection | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()  # open unless a test closes it

    def __call__(self, prom: PrometheusClient) -> Detection:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_selector(clock: FakeClock) -> Iterator[Callable[[ScriptedDetector], DialectSelector]]:
    built: list[tuple[DialectSelector, ScriptedDetector]] = []

    def factory(detector: ScriptedDetector) -> DialectSelector:
        selector = DialectSelector([LEGACY], forced=False, refresh_s=REFRESH_S,
                                   retry_s=RETRY_S, detector=detector, clock=clock)
        built.append((selector, detector))
        return selector

    yield factory
    for selector, detector in built:  # let no detection thread outlive its test
        detector.gate.set()
        wait_until(lambda s=selector: not s.detecting)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll `condition` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def test_first_request_waits_for_the_startup_detection(
        prom: PrometheusClient, make_selector: Callable[..., DialectSelector]) -> None:
    first = detection("startup")
    detector = ScriptedDetector(first)
    detector.gate.clear()
    selector = make_selector(detector)
    selector.start(prom)
    assert detector.entered.wait(WAIT_S)
    got: list[Detection] = []
    request = threading.Thread(target=lambda: got.append(selector.current(prom)))
    request.start()
    request.join(timeout=0.2)
    assert request.is_alive() and not got, "the request must wait: there is no detection yet"
    assert selector.detecting
    detector.gate.set()
    request.join(timeout=WAIT_S)
    assert got == [first] and got[0] is first
    assert detector.calls == 1  # the request reused the startup detection
    assert selector.latest is first


def test_concurrent_first_requests_share_one_detection(
        prom: PrometheusClient, make_selector: Callable[..., DialectSelector]) -> None:
    only = detection("only")
    detector = ScriptedDetector(only)
    detector.gate.clear()
    selector = make_selector(detector)
    got: list[Detection] = []
    requests = [threading.Thread(target=lambda: got.append(selector.current(prom)))
                for _ in range(8)]
    for request in requests:
        request.start()
    assert detector.entered.wait(WAIT_S)
    detector.gate.set()
    for request in requests:
        request.join(timeout=WAIT_S)
    assert len(got) == 8 and all(d is only for d in got)
    assert detector.calls == 1


def test_due_refresh_returns_the_old_detection_at_once_and_refreshes_in_background(
        prom: PrometheusClient, make_selector: Callable[..., DialectSelector],
        clock: FakeClock) -> None:
    old, new = detection("old"), detection("new")
    detector = ScriptedDetector(old, new)
    selector = make_selector(detector)
    assert selector.current(prom) is old
    clock.advance(REFRESH_S - 1)
    assert selector.current(prom) is old and detector.calls == 1  # not due yet
    clock.advance(1)
    detector.entered.clear()
    detector.gate.clear()  # the refresh cannot finish until the test says so
    assert selector.current(prom) is old  # answered while the refresh is held
    assert detector.entered.wait(WAIT_S)
    assert selector.current(prom) is old
    assert detector.calls == 2  # single flight: the second due call joined the first
    detector.gate.set()
    wait_until(lambda: selector.latest is new)
    assert selector.current(prom) is new
    clock.advance(REFRESH_S - 1)
    assert selector.current(prom) is new and detector.calls == 2  # due again only later


def test_failed_refresh_keeps_the_old_detection_logs_once_and_retries_sooner(
        prom: PrometheusClient, make_selector: Callable[..., DialectSelector],
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    old, new = detection("old"), detection("new")
    down = PrometheusUnavailableError("Prometheus at x is unreachable")
    detector = ScriptedDetector(old, down, down, new)
    selector = make_selector(detector)
    assert selector.current(prom) is old
    caplog.set_level(logging.DEBUG, logger="app.dialects.selector")
    clock.advance(REFRESH_S)
    for attempt in (2, 3):  # two failed refreshes in a row
        assert selector.current(prom) is old  # and the refresh starts
        wait_until(lambda: not selector.detecting)
        assert selector.latest is old and detector.calls == attempt
        clock.advance(RETRY_S - 1)
        assert selector.current(prom) is old and detector.calls == attempt  # not due yet
        clock.advance(1)  # the retry comes after retry_s, not refresh_s
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "keeping the previous answer" in warnings[0].getMessage()
    assert selector.current(prom) is old  # the third attempt succeeds, in the background
    wait_until(lambda: selector.latest is new)
    assert detector.calls == 4
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_first_detection_failure_reaches_the_request_and_the_next_one_retries(
        prom: PrometheusClient, make_selector: Callable[..., DialectSelector]) -> None:
    found = detection("found")
    detector = ScriptedDetector(PrometheusUnavailableError("Prometheus at x is down"), found)
    selector = make_selector(detector)
    with pytest.raises(PrometheusUnavailableError, match="is down"):
        selector.current(prom)
    assert selector.latest is None
    assert selector.current(prom) is found  # no cached failure: Prometheus is asked again
    assert detector.calls == 2


def test_unexpected_detector_error_reaches_the_waiting_request(
        prom: PrometheusClient, make_selector: Callable[..., DialectSelector]) -> None:
    selector = make_selector(ScriptedDetector(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        selector.current(prom)
    assert not selector.detecting


def test_selector_detects_against_prometheus_by_default(prom: PrometheusClient) -> None:
    selector = DialectSelector([LEGACY], forced=False)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakePrometheus(mock)
        fake.add("nvidia_gpu_utilization_percent", {"node": "n", "gpu": "0"}, 1)
        found = selector.current(prom)
    assert [d.name for d in found.dialects] == ["legacy"]


def test_selector_raises_when_it_never_had_an_answer(prom: PrometheusClient) -> None:
    selector = DialectSelector([LEGACY], forced=False)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakePrometheus(mock)
        fake.failure = lambda: (503, {}, "down")
        with pytest.raises(PrometheusUnavailableError):
            selector.current(prom)
