"""dcgm-exporter and nvitop-exporter on the same nodes, as many clusters run them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from demo.cluster import ClusterSpec
from demo.prometheus import PrometheusServer
from tests.integration.conftest import ApiServer
from tests.integration.expected import (
    expected_gpus,
    expected_processes,
    sort_gpus,
    sort_processes,
)
from tests.integration.test_dialects_end_to_end import assert_rows_match
from tests.integration.world import Cluster, running_world

pytestmark = pytest.mark.integration
SPEC = ClusterSpec(nodes=2, gpus_per_node=3, seed=31, shared_gpus=1, node_prefix="both-")
DCGM = Cluster("dcgm", SPEC, honor_labels=False,
               target_labels=(("pod", "dcgm-exporter-q1"), ("namespace", "gpu-operator")))
NVITOP = Cluster("nvitop", SPEC)


@pytest.fixture(scope="module")
def both() -> Iterator[PrometheusServer]:
    with running_world((DCGM, NVITOP)) as prometheus:
        yield prometheus


def test_each_gpu_is_listed_once_with_its_pods(
        both: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=both.url)
    gpus = api.get("/api/v1/gpu/metrics").json()["data"]
    shared = {gpu.uuid: gpu for gpu in DCGM.truth() if len(gpu.pods) > 1}
    assert len(shared) == 1
    assert_rows_match([g for g in gpus if g["uuid"] not in shared],
                      sort_gpus(expected_gpus(DCGM, unshared_only=True)))
    # The shared GPU: listed once (not once per exporter, nor per pod), with its pods.
    (row,) = [g for g in gpus if g["uuid"] in shared]
    truth = shared[row["uuid"]]
    assert row["utilization"] == truth.utilization  # the device's, not a sum over pods
    assert sorted(p["pod"] for p in row["pods"]) == sorted(p.pod for p in truth.pods)
    assert all(p["utilization"] is None for p in row["pods"])  # copies, not shares


def test_processes_take_the_pod_of_their_gpu_from_dcgm(
        both: PrometheusServer, api_server: Callable[..., ApiServer]) -> None:
    api = api_server(PROMETHEUS_URL=both.url)
    holders = {}
    for gpu in DCGM.truth():
        if len(gpu.pods) == 1:  # a shared GPU does not say whose a process is
            holders[gpu.uuid] = gpu.pods[0]
    expected = sort_processes(expected_processes(NVITOP))
    for row in expected:
        pod = holders.get(row["gpu_uuid"])
        row["pod"], row["namespace"] = (pod.pod, pod.namespace) if pod else (None, None)
    assert any(row["pod"] for row in expected) and any(not row["pod"] for row in expected)
    processes = api.get("/api/v1/gpu/processes").json()["data"]
    assert_rows_match(processes, expected)

    namespace = next(row["namespace"] for row in expected if row["namespace"])
    narrowed = api.get("/api/v1/gpu/processes", params={"namespace": namespace}).json()
    assert [p["pid"] for p in narrowed["data"]] == [
        row["pid"] for row in expected if row["namespace"] == namespace]
