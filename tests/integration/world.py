"""One real Prometheus scraping a simulated cluster in every exporter dialect at once.

Each dialect gets its own cluster (its own node prefix and seed), so a test can ask the API
for one dialect, or for all of them, and compare with the ground truth of those clusters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from demo.cluster import ClusterSpec, SimGpu, node_names, snapshot
from demo.dialects import PER_NODE_DIALECTS, exporter_pod
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer, ScrapeTarget

# The exporter's own pod, as Kubernetes service discovery labels its scrape target.
DCGM_TARGET_LABELS = {"pod": "nvidia-dcgm-exporter-7x9k2", "namespace": "gpu-operator",
                      "container": "nvidia-dcgm-exporter"}
DCGM_HONORED_TARGET_LABELS = {"pod": "nvidia-dcgm-exporter-h4h4q", "namespace": "gpu-operator"}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """One simulated exporter deployment and how Prometheus scrapes it."""

    exporter_dialect: str  # the simulator's name for what it renders
    spec: ClusterSpec
    honor_labels: bool = True
    target_labels: tuple[tuple[str, str], ...] = ()
    # Per-node targets: add the node as `kubernetes_node`, as a common relabeling does.
    node_relabel: bool = True
    # Also run kube-state-metrics' kube_pod_info for this cluster's pods.
    kube_state_metrics: bool = False

    def truth(self) -> list[SimGpu]:
        """What the exporter publishes (the clusters are frozen at step 0)."""
        return snapshot(self.spec, 0)


CLUSTERS: tuple[Cluster, ...] = (
    Cluster("legacy-node", ClusterSpec(nodes=2, gpus_per_node=3, seed=11, node_prefix="ln-")),
    Cluster("legacy-hostname", ClusterSpec(nodes=2, gpus_per_node=3, seed=12, mig_nodes=1,
                                           node_prefix="lh-")),
    Cluster("gpu-metrics", ClusterSpec(nodes=2, gpus_per_node=2, seed=13, node_prefix="gm-")),
    # The GPU Operator's default: honorLabels false, so pod labels become exported_*.
    # (Time-shared GPUs have labs of their own, with values written by hand:
    # test_time_sharing.py.)
    Cluster("dcgm", ClusterSpec(nodes=3, gpus_per_node=4, seed=14, mig_nodes=1,
                                node_prefix="dc-"),
            honor_labels=False, target_labels=tuple(DCGM_TARGET_LABELS.items())),
    # honorLabels true: idle GPUs carry the exporter's own pod label, which must not count;
    # 4.8's shape, so each pod's own share of utilization and memory is known.
    Cluster("dcgm-hostname", ClusterSpec(nodes=2, gpus_per_node=3, seed=15, node_prefix="dh-"),
            target_labels=tuple(DCGM_HONORED_TARGET_LABELS.items())),
    # A custom counter set without GPU_UTIL: utilization comes from the engine activity.
    Cluster("dcgm-no-gpu-util", ClusterSpec(nodes=1, gpus_per_node=3, seed=30,
                                            node_prefix="dg-"),
            honor_labels=False, target_labels=tuple(DCGM_TARGET_LABELS.items())),
    # No NODE_NAME given: Hostname is each node's exporter pod. One cluster relabels the
    # node in, the other has only kube-state-metrics to say where each pod runs.
    Cluster("dcgm-pod-hostname", ClusterSpec(nodes=2, gpus_per_node=2, seed=22,
                                             node_prefix="pr-")),
    Cluster("dcgm-pod-hostname", ClusterSpec(nodes=2, gpus_per_node=2, seed=23,
                                             node_prefix="pk-"),
            honor_labels=False, node_relabel=False, kube_state_metrics=True),
    Cluster("dcgm-old", ClusterSpec(nodes=2, gpus_per_node=2, seed=16, node_prefix="do-")),
    Cluster("nvidia-smi", ClusterSpec(nodes=2, gpus_per_node=3, seed=17, mig_nodes=1,
                                      node_prefix="ns-")),
    # Before v1.3: the index is only the nvidia_smi_index gauge.
    Cluster("nvidia-smi-1.2", ClusterSpec(nodes=1, gpus_per_node=2, seed=20, node_prefix="no-")),
    Cluster("nvitop", ClusterSpec(nodes=2, gpus_per_node=2, seed=18, mig_nodes=1,
                                  node_prefix="nv-")),
)

# The API's dialect name for each simulated exporter.
API_DIALECT = {
    "legacy-node": "legacy", "legacy-hostname": "legacy", "gpu-metrics": "gpu-metrics",
    "dcgm": "dcgm", "dcgm-hostname": "dcgm", "dcgm-pod-hostname": "dcgm",
    "dcgm-no-gpu-util": "dcgm", "dcgm-old": "dcgm-old",
    "nvidia-smi": "nvidia-smi", "nvidia-smi-1.2": "nvidia-smi", "nvitop": "nvitop",
}


def instance_of(cluster: Cluster, node: str) -> str:
    """The `instance` of a per-node target: what a node-less exporter's node is known by."""
    port = 9400 if cluster.exporter_dialect == "dcgm-old" else 9835
    return f"{node}:{port}"


def targets_for(cluster: Cluster, exporter: ExporterServer) -> list[ScrapeTarget]:
    """Scrape targets: one per node for exporters without a node label, else one."""
    labels = dict(cluster.target_labels)
    if cluster.exporter_dialect not in PER_NODE_DIALECTS:
        return [ScrapeTarget(exporter.address, labels=labels,
                             honor_labels=cluster.honor_labels)]
    targets = []
    for node in node_names(cluster.spec):
        node_labels = {**labels, "instance": instance_of(cluster, node)}
        if cluster.exporter_dialect == "dcgm-pod-hostname":
            # Each node's exporter pod is a target of its own, as a DaemonSet's are.
            node_labels.update(pod=exporter_pod(node), namespace="gpu-operator")
        if cluster.node_relabel and cluster.exporter_dialect != "dcgm-old":
            # A common relabeling adds the node name; dcgm-old is left with instance only.
            node_labels["kubernetes_node"] = node
        targets.append(ScrapeTarget(exporter.address, metrics_path=f"/metrics/{node}",
                                    labels=node_labels, honor_labels=cluster.honor_labels))
    return targets


@contextmanager
def running_world(clusters: tuple[Cluster, ...] = CLUSTERS, *,
                  server: type[PrometheusServer] = PrometheusServer,
                  ) -> Iterator[PrometheusServer]:
    """Start every exporter and one `server` (Prometheus, or VictoriaMetrics) scraping
    them; wait for every target."""
    with ExitStack() as stack:
        targets: list[ScrapeTarget] = []
        for cluster in clusters:
            exporter = stack.enter_context(ExporterServer(cluster.spec,
                                                          cluster.exporter_dialect))
            targets.extend(targets_for(cluster, exporter))
            if cluster.kube_state_metrics:
                ksm = stack.enter_context(ExporterServer(cluster.spec, "kube-state-metrics"))
                targets.append(ScrapeTarget(ksm.address))
        prometheus = stack.enter_context(server(targets, scrape_interval="1s"))
        prometheus.wait_for(
            "up == 1", predicate=lambda result: len(result) == len(targets), timeout=60)
        # Let every target's first scrape land (up == 1 is written with the samples).
        yield prometheus
