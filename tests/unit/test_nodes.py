"""Node labels that hold the exporter's own pod name, and where the real node comes from."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.dialects.builtin import DCGM
from app.dialects.nodes import fit_node_names
from app.prometheus.client import QueryResult

FITTED = dataclasses.replace(DCGM, labels=dataclasses.replace(DCGM.labels, node=("Hostname",)))


class LabelIndex:
    """Answers label-value lookups and one query from fixed data, recording the calls."""

    def __init__(self, values: dict[str, list[str]], kube_pods: list[str] = ()) -> None:
        self.values = values
        self.kube_pods = list(kube_pods)
        self.calls: list[tuple[str, ...]] = []

    def label_values(self, label: str, *, matchers: Any = (), lookback_s: float = 0,
                     deadline: float | None = None) -> list[str]:
        self.calls.append(("values", label, *matchers))
        return self.values.get(label, [])

    def query(self, promql: str, *, deadline: float | None = None) -> QueryResult:
        self.calls.append(("query", promql))
        return QueryResult("vector", [{"metric": {"pod": p}, "value": [0, "1"]}
                                      for p in self.kube_pods])


def fit(index: LabelIndex, labels: set[str], metrics: set[str]) -> tuple[Any, list[str]]:
    return fit_node_names(index, FITTED, frozenset(labels), metrics,  # type: ignore[arg-type]
                          node_label=None, deadline=0.0)


def test_a_node_label_holding_node_names_is_left_alone() -> None:
    index = LabelIndex({"Hostname": ["gpu-node-1"], "pod": ["dcgm-exporter-6ldbb"]})

    dialect, notes = fit(index, {"Hostname", "kubernetes_node"}, {"kube_pod_info"})

    assert dialect == FITTED and notes == []


def test_an_exporter_pod_as_node_reads_the_relabeled_node_label() -> None:
    index = LabelIndex({"Hostname": ["dcgm-exporter-6ldbb"], "pod": ["dcgm-exporter-6ldbb"]})

    dialect, notes = fit(index, {"Hostname", "kubernetes_node"}, set())

    assert dialect.labels.node == ("kubernetes_node", "Hostname")
    assert dialect.node_map_metric is None
    assert "dcgm-exporter-6ldbb" in notes[0] and "NODE_NAME" in notes[0]


def test_an_exporter_pod_as_node_maps_through_kube_pod_info_without_a_relabeled_label() -> None:
    # `up` has no pod label here (a static scrape config); kube-state-metrics knows the pod.
    index = LabelIndex({"Hostname": ["dcgm-exporter-wwwjh"]}, kube_pods=["dcgm-exporter-wwwjh"])

    dialect, notes = fit(index, {"Hostname"}, {"kube_pod_info"})

    assert dialect.labels.node == ("Hostname",)
    assert dialect.node_map_metric == "kube_pod_info"
    assert ("query", 'group by (pod) (kube_pod_info{pod="dcgm-exporter-wwwjh"})') in index.calls
    assert "kube_pod_info" in notes[0]


def test_with_neither_source_the_pod_name_stays_and_the_note_says_how_to_fix_it() -> None:
    index = LabelIndex({"Hostname": ["dcgm-exporter-6ldbb"], "pod": ["dcgm-exporter-6ldbb"]})

    dialect, notes = fit(index, {"Hostname"}, set())

    assert dialect == FITTED
    assert "listed under the pod's name" in notes[0] and "NODE_NAME" in notes[0]
