"""The dashboard page in a real headless Chromium, against the simulator behind a real
Prometheus: its rows and values are the API's, its tiles /api/v1/cluster's, the filter and
sort work, the banner follows Prometheus going away and coming back, nothing fails in the
console, and the page keeps its own Content-Security-Policy.

The cluster is frozen (step 0), so the page and the test read the same values.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

from app import SECURITY_HEADERS
from app.ui import PAGE_CSP
from demo.cluster import ClusterSpec
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer, ScrapeTarget, _free_port
from tests.integration.browser import chromium, console_errors
from tests.integration.conftest import ApiServer

pytestmark = pytest.mark.integration

SPEC = ClusterSpec(nodes=3, gpus_per_node=4, seed=71, mig_nodes=1, shared_gpus=1, fleet=True,
                   node_prefix="ui-")
DASH = "—"


class Lab:
    """dcgm-exporter and kube-state-metrics, scraped every second by a Prometheus on a port
    of its own (so it can be stopped and started again there), and the API."""

    def __init__(self, stack: ExitStack) -> None:
        dcgm = stack.enter_context(ExporterServer(SPEC, "dcgm-health-all"))
        ksm = stack.enter_context(ExporterServer(SPEC, "kube-state-metrics"))
        self.prometheus = PrometheusServer(
            [ScrapeTarget(dcgm.address, labels={"namespace": "gpu-operator"}),
             ScrapeTarget(ksm.address, labels={"job": "kube-state-metrics"}, honor_labels=True)],
            scrape_interval="1s", port=_free_port())
        stack.callback(self.prometheus.stop)
        self.start_prometheus()
        # No response cache: the page sees an outage at its next refresh.
        self.api = ApiServer({"PROMETHEUS_URL": self.prometheus.url, "CACHE_TTL": "0"})
        stack.callback(self.api.close)

    def start_prometheus(self) -> None:
        self.prometheus.start()
        self.prometheus.wait_for("up == 1", min_count=2)
        self.prometheus.wait_for("kube_pod_status_phase", min_count=1)

    def data(self, path: str) -> Any:
        body = self.api.get(path).json()
        assert body["success"], body
        return body["data"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with ExitStack() as stack:
        yield Lab(stack)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as page:
        yield page


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def open_page(browser: webdriver.Chrome, url: str) -> None:
    browser.get(url)
    wait_until(lambda: browser.execute_script("return document.body.dataset.rowsComplete"),
               what="the GPU rows")


def shown_rows(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """Every visible GPU row: its key and each cell's text, by column."""
    return list(browser.execute_script("""
        const heads = [...document.querySelectorAll('#gpus thead th')].map(th => th.dataset.sort);
        return [...document.querySelectorAll('#gpus tbody tr')].filter(tr => !tr.hidden)
          .map(tr => ({key: tr.dataset.key, cells: Object.fromEntries(
            [...tr.cells].map((td, i) => [heads[i], td.querySelector('.name, .bar-text')
              ? td.querySelector('.name, .bar-text').textContent : td.textContent]))}));
    """))


def key(row: dict[str, Any]) -> str:
    mig = "" if row["mig_instance"] is None else str(row["mig_instance"])
    return f"{row['node_name']}|{row['uuid'] or row['gpu_index']}|{mig}"


def shown(value: Any, digits: int | None = None, suffix: str = "") -> str:
    """What the page writes for a value: a dash for null, never 0."""
    if value is None:
        return DASH
    return (f"{value:.{digits}f}" if digits is not None else str(value)) + suffix


@pytest.fixture(scope="module")
def loaded(lab: Lab, browser: webdriver.Chrome) -> webdriver.Chrome:
    # first_rows=5: the first answer is drawn in steps, as 8,000 GPUs are (5 rows first).
    open_page(browser, lab.api.url + "/?refresh=1&first_rows=5")
    return browser


def test_every_gpu_row_and_its_values_are_the_apis(lab: Lab, loaded: webdriver.Chrome) -> None:
    api_rows = lab.data("/api/v1/gpu/metrics")
    page = {row["key"]: row["cells"] for row in shown_rows(loaded)}
    assert set(page) == {key(r) for r in api_rows}
    for row in api_rows:
        cells = page[key(row)]
        assert cells["node"] == row["node_name"]
        assert cells["model"] == shown(row["gpu_name"])
        assert cells["utilization"] == shown(row["utilization"], 1, "%")
        assert cells["temperature"] == shown(row["temperature"], 0)
        assert cells["power"] == shown(row["power_usage"], 1)
        assert cells["pod"] == shown(row["pod"])
        assert cells["namespace"] == shown(row["namespace"])
        assert cells["state"] == row["state"]
        assert cells["health"] == row["health"]["status"]
    # Free GPUs have no pod: a dash, as every value not reported.
    assert any(r["pod"] is None for r in api_rows)
    assert console_errors(loaded) == []


def test_tiles_are_the_cluster_answer(lab: Lab, loaded: webdriver.Chrome) -> None:
    cluster = lab.data("/api/v1/cluster?window=1h")
    wait_until(lambda: loaded.find_elements(By.CSS_SELECTOR, '[data-tile="allocation"]'),
               what="the cluster tiles")
    tiles = dict(loaded.execute_script(
        "return [...document.querySelectorAll('.tile')].map("
        "t => [t.dataset.tile, t.querySelector('.value').textContent])"))
    assert tiles["gpus"] == str(cluster["gpus"]["total"])
    for state, count in cluster["gpus"]["by_state"].items():
        assert tiles[f"state-{state}"] == str(count), state
    assert tiles["allocation"] == shown(cluster["allocation"]["requested"])
    assert tiles["power"] == f"{cluster['power_usage']:.0f} W"
    statuses = [r["health"]["status"] for r in lab.data("/api/v1/gpu/metrics")]
    assert tiles["health-ok"] == str(statuses.count("ok"))


def test_the_filter_and_the_sort(lab: Lab, loaded: webdriver.Chrome) -> None:
    api_rows = lab.data("/api/v1/gpu/metrics")
    box = loaded.find_element(By.ID, "filter")
    box.send_keys("ui-002")
    wanted = {key(r) for r in api_rows if r["node_name"] == "ui-002"}
    wait_until(lambda: {r["key"] for r in shown_rows(loaded)} == wanted, what="the filter")
    namespace = next(r["namespace"] for r in api_rows if r["namespace"] and "," not in
                     r["namespace"])
    box.clear()
    box.send_keys(namespace)
    held = {key(r) for r in api_rows
            if any(p["namespace"] == namespace for p in r["pods"])}
    wait_until(lambda: {r["key"] for r in shown_rows(loaded)} == held, what="the namespace")
    box.clear()
    box.send_keys(" ")  # an input event with an empty filter
    wait_until(lambda: len(shown_rows(loaded)) == len(api_rows), what="all rows again")
    header = loaded.find_element(By.CSS_SELECTOR, 'th[data-sort="utilization"]')
    values = {key(r): r["utilization"] for r in api_rows}
    header.click()
    ascending = [values[r["key"]] for r in shown_rows(loaded)]
    assert ascending == sorted(ascending)
    header.click()
    descending = [values[r["key"]] for r in shown_rows(loaded)]
    assert descending == sorted(ascending, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    assert console_errors(loaded) == []


def test_each_node_has_a_one_hour_sparkline_from_the_history_api(
        lab: Lab, browser: webdriver.Chrome) -> None:
    history = "/api/v1/gpu/history?range=1h&points=121&fields=utilization&group_by=node"

    def measured() -> dict[str, int]:
        series = lab.data(history)["series"]
        return {s["key"]["node_name"]: sum(v is not None for v in s["values"]["utilization"])
                for s in series}

    wait_until(lambda: (found := measured()) and all(found.values()), timeout=60,
               what="a history point per node")
    open_page(browser, lab.api.url + "/?refresh=1")

    def drawn() -> dict[str, int]:
        # One "M"/"L" command per point drawn.
        return dict(browser.execute_script(
            "return [...document.querySelectorAll('td.node[data-node]')].map(td => "
            "[td.dataset.node, (td.querySelector('path').getAttribute('d') || '')"
            ".split(/[ML]/).length - 1])"))

    points = measured()
    wait_until(lambda: (found := drawn()) and all(found.values()), what="the sparklines")
    assert set(drawn()) == set(points)
    for node, count in drawn().items():
        assert abs(count - points[node]) <= 1, node  # a new point may land in between
    assert console_errors(browser) == []


def test_the_window_figures_are_asked_once_a_minute_the_list_every_refresh(
        lab: Lab, browser: webdriver.Chrome) -> None:
    open_page(browser, lab.api.url + "/?refresh=1")
    time.sleep(5)  # five refreshes of the list
    asked = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
    assert asked.count("/api/v1/gpu/metrics") >= 4
    assert asked.count("/api/v1/gpu/processes") >= 4
    assert asked.count("/api/v1/cluster") == 1
    assert asked.count("/api/v1/namespaces") == 1


def test_the_page_works_under_an_ingress_path_prefix(lab: Lab,
                                                     browser: webdriver.Chrome) -> None:
    mounted = DispatcherMiddleware(NotFound(), {"/gpu-monitor": lab.api.app})
    server = make_server("127.0.0.1", 0, mounted, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        open_page(browser, f"http://127.0.0.1:{server.server_port}/gpu-monitor/")
        assert len(shown_rows(browser)) == len(lab.data("/api/v1/gpu/metrics"))
        assert console_errors(browser) == []
    finally:
        server.shutdown()
        server.server_close()


def test_the_page_has_its_own_policy_and_the_json_keeps_its(lab: Lab) -> None:
    page = requests.get(lab.api.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == PAGE_CSP
    assert "'unsafe-inline'" not in PAGE_CSP and "'unsafe-eval'" not in PAGE_CSP
    # No inline script or style: every <script> has a src, no style= or on*= attributes.
    assert not re.search(r"<script(?![^>]*\ssrc=)", page.text)
    assert not re.search(r"\s(style|on\w+)=", page.text)
    script = requests.get(lab.api.url + "/ui/static/dashboard.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    assert "eval(" not in script.text and "new Function" not in script.text
    json_answer = requests.get(lab.api.url + "/api/v1/gpu/metrics", timeout=10)
    assert json_answer.headers["Content-Security-Policy"] == \
        SECURITY_HEADERS["Content-Security-Policy"]


def test_the_banner_follows_prometheus_away_and_back(lab: Lab, browser: webdriver.Chrome) -> None:
    open_page(browser, lab.api.url + "/?refresh=1")
    rows = len(shown_rows(browser))
    banner = browser.find_element(By.ID, "banner")
    assert not banner.is_displayed()
    console_errors(browser)  # forget what came before
    lab.prometheus.stop()
    try:
        wait_until(lambda: banner.is_displayed() and "s ago" in banner.text,
                   what="the banner with the data's age")
        assert banner.text.startswith("Prometheus is not answering: ")
        # The last data stays, greyed, with its age.
        assert "stale" in browser.find_element(By.ID, "data").get_attribute("class")
        assert len(shown_rows(browser)) == rows
    finally:
        lab.start_prometheus()
    wait_until(lambda: not banner.is_displayed(), what="the banner to go")
    assert "stale" not in browser.find_element(By.ID, "data").get_attribute("class")
    # The failed fetches of the outage were answered by the API (503), none by the browser.
    outage = console_errors(browser)
    assert outage and all("status of 50" in e["message"] for e in outage), outage
