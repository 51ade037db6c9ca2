"""Node names that are nodes: when an exporter's node label holds its own pod's name.

dcgm-exporter writes its container's hostname as `Hostname` unless it is given NODE_NAME,
and a container's hostname is its pod's name (`dcgm-exporter-6ldbb`). Detection notices
when the node label's values are scrape targets' own pods (the `pod` label of `up`) or
pods kube-state-metrics knows, and then reads the node from a better source: a node label
the operator's relabeling added to the series, or kube-state-metrics' `kube_pod_info`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from app.dialects.model import TARGET_ADDRESS_LABEL, Dialect
from app.prometheus.client import PrometheusClient
from app.prometheus.promql import equals_any, selector

# Labels operators relabel the exporter pod's node into (__meta_kubernetes_pod_node_name).
RELABELED_NODE_LABELS = ("kubernetes_node", "nodename", "node")
KUBE_POD_INFO = "kube_pod_info"
# Scrape targets found by Kubernetes service discovery carry their pod as `pod` on `up`.
TARGETS = "up"
LOOKBACK_S = 600.0


def fit_node_names(
    prom: PrometheusClient,
    dialect: Dialect,
    labels: frozenset[str],
    metrics: Collection[str],
    *,
    node_label: str | None,
    deadline: float,
) -> tuple[Dialect, list[str]]:
    """Return the dialect reading real node names, and notes saying what was done."""
    node = dialect.labels.node
    better = tuple(n for n in (node_label, *RELABELED_NODE_LABELS) if n)
    if not node or node[0] == TARGET_ADDRESS_LABEL or node[0] in better:
        return dialect, []  # the node label is the target's or one the operator chose
    probe = dialect.pod_metric()
    values = set()
    for name in node:
        values |= set(prom.label_values(name, matchers=[probe], lookback_s=LOOKBACK_S,
                                        deadline=deadline))
    if not values:
        return dialect, []
    target_pods: set[str] = set()
    for pod_label in dialect.labels.target_pod:
        target_pods |= set(prom.label_values(pod_label, matchers=[TARGETS],
                                             lookback_s=LOOKBACK_S, deadline=deadline))
    pods = values & target_pods
    has_ksm = KUBE_POD_INFO in metrics
    if not pods and has_ksm:
        known = prom.query(
            f"group by (pod) ({selector(KUBE_POD_INFO, [equals_any('pod', sorted(values))])})",
            deadline=deadline)
        pods = {s["metric"].get("pod", "") for s in known.series} & values
    if not pods:
        return dialect, []
    example = sorted(pods)[0]
    where = (f"{dialect.name}: the node label {node[0]} holds the exporter's own pod name "
             f"(e.g. {example!r}), not the node's")
    fix = ("; to fix it at the source, give dcgm-exporter NODE_NAME (the GPU Operator and "
           "the current chart do)")
    relabeled = tuple(name for name in better if name in labels)
    if not relabeled and not has_ksm:
        return dialect, [f"{where}, and no relabeled node label (kubernetes_node, nodename, "
                         f"node or NODE_LABEL) or {KUBE_POD_INFO} says which node it runs on: "
                         f"GPUs are listed under the pod's name{fix}"]
    # Both can be needed at once: exporters scraped by differently relabeled jobs.
    how = []
    if relabeled:
        labels_read = dataclasses.replace(dialect.labels, node=relabeled[:1] + node)
        dialect = dataclasses.replace(dialect, labels=labels_read)
        how.append(f"reading the node from the relabeled {relabeled[0]} label")
    if has_ksm:
        dialect = dataclasses.replace(dialect, node_map_metric=KUBE_POD_INFO)
        how.append(f"mapping each exporter pod to its node with kube-state-metrics' "
                   f"{KUBE_POD_INFO}")
    return dialect, [f"{where}: {', else '.join(how)}{fix}"]
