"""Filters reach a real Prometheus as matchers, and it answers with fewer series.

The app filters joined rows again after asking, so correct rows alone do not show the
narrowing; a recording proxy between the app and Prometheus shows the PromQL and the size of
each answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from demo.prometheus import PrometheusServer
from tests.integration.conftest import ApiServer
from tests.integration.recording_proxy import RecordedQuery, RecordingProxy
from tests.promql_text import carries

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(world: PrometheusServer) -> Iterator[RecordingProxy]:
    with RecordingProxy(world.url) as recording:
        yield recording


def answered(queries: list[RecordedQuery]) -> int:
    """Series Prometheus sent for these queries; every one must have succeeded."""
    assert queries, "no data query reached Prometheus"
    assert all(q.status == 200 and q.series is not None for q in queries), queries
    return sum(q.series or 0 for q in queries)


def rows(api: ApiServer, path: str, **params: str) -> list[dict[str, Any]]:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_gpu_filters_narrow_what_prometheus_sends(
        proxy: RecordingProxy, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=proxy.url, METRICS_DIALECT="dcgm")
    everything = rows(api, "/api/v1/gpu/metrics")
    unfiltered = answered(proxy.take())
    target = next(g for g in everything if g["pod"] and "," not in g["pod"])
    assert any(g["namespace"] and target["namespace"] not in g["namespace"].split(",")
               for g in everything), "the dcgm clusters should use several namespaces"
    assert any(g["gpu_name"] != target["gpu_name"] for g in everything)
    # (filter, value, labels it may be matched on, whether every query must carry it): GPU
    # identity narrows every metric, pod filters at least the query that finds the pods.
    # (The node filter is not pushed here: one of the world's clusters names its nodes only
    # through kube_pod_info, so Hostname holds pod names: see test_node_filter_... below.)
    cases: list[tuple[str, str, tuple[str, ...], bool]] = [
        ("uuid", target["uuid"], ("UUID",), True),
        ("gpu_name", target["gpu_name"], ("modelName",), True),
        ("namespace", target["namespace"], ("exported_namespace",), False),
        ("pod", target["pod"], ("exported_pod",), False),
    ]
    for name, value, labels, in_every_query in cases:
        got = rows(api, "/api/v1/gpu/metrics", **{name: value})
        assert target["uuid"] in {g["uuid"] for g in got}, name
        assert len(got) < len(everything), name
        queries = proxy.take()
        has = [any(carries(q.promql, label, f'"{value}"') for label in labels)
               for q in queries]
        assert all(has) if in_every_query else any(has), (name, [q.promql for q in queries])
        assert answered(queries) < unfiltered, (name, queries)


def test_node_filter_is_applied_after_the_join_where_hostname_may_be_a_pod_name(
        proxy: RecordingProxy, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=proxy.url, METRICS_DIALECT="dcgm")
    everything = rows(api, "/api/v1/gpu/metrics")
    proxy.take()
    for node in ("dc-001", "pk-001"):  # a Hostname that is the node, one mapped from a pod
        got = [(g["gpu_index"], g["uuid"]) for g in rows(api, "/api/v1/gpu/metrics", node=node)]
        assert got and got == [(g["gpu_index"], g["uuid"]) for g in everything
                               if g["node_name"] == node]
        queries = proxy.take()
        assert not any(carries(q.promql, label, f'"{node}"') for q in queries
                       for label in ("Hostname", "hostname")), node


def test_process_node_filter_narrows_what_prometheus_sends(
        proxy: RecordingProxy, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=proxy.url, METRICS_DIALECT="legacy")
    everything = rows(api, "/api/v1/gpu/processes")
    unfiltered = answered(proxy.take())
    node = everything[0]["node_name"]
    assert any(p["node_name"] != node for p in everything), "processes on several nodes"
    got = rows(api, "/api/v1/gpu/processes", node=node)

    def key(process: dict[str, Any]) -> tuple[Any, ...]:
        return process["node_name"], process["gpu_index"], process["pid"]

    assert [key(p) for p in got] == [key(p) for p in everything if p["node_name"] == node]
    queries = proxy.take()
    for query in queries:
        # The two legacy clusters spell the node `node` and `hostname`.
        assert any(carries(query.promql, label, f'"{node}"') for label in ("node", "hostname")
                   ), query.promql
    assert answered(queries) < unfiltered
