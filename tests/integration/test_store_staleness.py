"""An exporter that goes away: its GPUs leave the list once the store marks them stale.

Both stores write staleness markers for a target's series when its scrape fails, so the
list empties within a few scrape intervals, not after the five-minute lookback.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer
from tests.integration.conftest import ApiServer

pytestmark = pytest.mark.integration

# Scrapes are every second; a lookback of five minutes would show far past this.
GONE_WITHIN_S = 30.0


def test_gpus_of_a_stopped_exporter_leave_the_list_within_a_few_scrapes(
        small_store_world: tuple[ExporterServer, PrometheusServer],
        api_server: Callable[..., ApiServer]) -> None:
    exporter, store = small_store_world
    api = api_server(PROMETHEUS_URL=store.url, METRICS_DIALECT="dcgm", CACHE_TTL="0")
    assert len(api.get("/api/v1/gpu/metrics").json()["data"]) == 4

    stopped = time.monotonic()
    exporter.close()
    deadline = stopped + GONE_WITHIN_S
    while (rows := api.get("/api/v1/gpu/metrics").json()["data"]):
        assert len(rows) == 4, rows  # all or nothing: one target
        assert time.monotonic() < deadline, "the stopped exporter's GPUs are still listed"
        time.sleep(0.2)
    store.wait_for("up == 0", min_count=1, timeout=10)  # the store saw the scrape fail
