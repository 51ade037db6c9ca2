"""Auto-detection of dialects and fitting them to the labels that exist."""

from __future__ import annotations

import pytest
import responses

from app.dialects.builtin import DCGM, LEGACY, NVIDIA_SMI
from app.dialects.detect import DialectSelector, count_series_query, detect, fit
from app.prometheus.client import ClientSettings, PrometheusClient
from app.prometheus.errors import PrometheusUnavailableError
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


def test_selector_caches_and_keeps_the_last_answer_when_prometheus_fails(
        prom: PrometheusClient) -> None:
    selector = DialectSelector([LEGACY], forced=False, refresh_s=0.0, retry_s=0.0)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakePrometheus(mock)
        fake.add("nvidia_gpu_utilization_percent", {"node": "n", "gpu": "0"}, 1)
        first = selector.current(prom)
        fake.failure = lambda: (503, {}, "down")
        again = selector.current(prom)  # refresh is due, fails: the old answer stays
    assert again is first


def test_selector_raises_when_it_never_had_an_answer(prom: PrometheusClient) -> None:
    selector = DialectSelector([LEGACY], forced=False)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakePrometheus(mock)
        fake.failure = lambda: (503, {}, "down")
        with pytest.raises(PrometheusUnavailableError):
            selector.current(prom)
