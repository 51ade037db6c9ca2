"""The client's label lookups (`label_values`, `label_names`) against a stubbed Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from app.prometheus.client import ClientSettings, PrometheusClient
from app.prometheus.errors import PrometheusBadResponseError, PrometheusTimeoutError

BASE = "http://prometheus.test:9090"
NAMES_URL = f"{BASE}/api/v1/label/__name__/values"


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stub:
        yield stub


@pytest.fixture
def client() -> Iterator[PrometheusClient]:
    prom = PrometheusClient(ClientSettings(base_url=BASE, retries=0, timeout=2, deadline=3))
    yield prom
    prom.close()


def sent(mock: responses.RequestsMock) -> dict[str, list[str]]:
    return parse_qs(urlsplit(mock.calls[-1].request.url).query)


def test_label_values_lists_metric_names_of_a_recent_window(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    mock.get(NAMES_URL, json={"status": "success", "data": ["DCGM_FI_DEV_GPU_UTIL", "up"]})

    names = client.label_values("__name__", lookback_s=300)

    assert names == ["DCGM_FI_DEV_GPU_UTIL", "up"]
    params = sent(mock)
    assert "match[]" not in params  # the index alone: no series are selected
    start, end = float(params["start"][0]), float(params["end"][0])
    assert end - start == pytest.approx(300, abs=0.01)
    assert end == pytest.approx(time.time(), abs=60)
    assert mock.calls[-1].request.method == "GET"


def test_label_values_among_matched_series(mock: responses.RequestsMock,
                                           client: PrometheusClient) -> None:
    mock.get(f"{BASE}/api/v1/label/Hostname/values",
             json={"status": "success", "data": ["node-a", "node-b"]})

    assert client.label_values("Hostname", matchers=["DCGM_FI_DEV_FB_USED"]) == [
        "node-a", "node-b"]
    assert sent(mock)["match[]"] == ["DCGM_FI_DEV_FB_USED"]


def test_label_values_refuses_a_label_name_that_would_change_the_path(
        mock: responses.RequestsMock, client: PrometheusClient) -> None:
    with pytest.raises(ValueError, match="not a valid Prometheus label name"):
        client.label_values("../query")
    assert len(mock.calls) == 0


@pytest.mark.parametrize("data", [None, "up", {"values": ["up"]}, ["up", 3]])
def test_label_values_raises_bad_response_error_without_a_list(
        mock: responses.RequestsMock, client: PrometheusClient, data: Any) -> None:
    mock.get(NAMES_URL, json={"status": "success", "data": data})

    with pytest.raises(PrometheusBadResponseError, match="without a list of values"):
        client.label_values("__name__")


@pytest.mark.parametrize("lookup", [
    lambda c, d: c.label_values("__name__", deadline=d),
    lambda c, d: c.label_names(["up"], deadline=d),
], ids=["label_values", "label_names"])
def test_label_lookups_honour_a_shared_deadline(
        mock: responses.RequestsMock, client: PrometheusClient, lookup: Any) -> None:
    with pytest.raises(PrometheusTimeoutError):
        lookup(client, time.monotonic() - 0.1)
    assert len(mock.calls) == 0
