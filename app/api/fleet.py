"""The fleet view: the cluster, its nodes and namespaces, allocation against use."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, request

from app.api.cached import cached_answer
from app.api.gpu import idle_rule
from app.api.openapi import UPSTREAM_ERRORS, Operation
from app.dialects.detect import Detection
from app.prometheus.client import PrometheusClient
from app.schemas.args import FleetArgs, FleetArgsSchema, load_args
from app.schemas.fleet import ClusterSchema, NamespaceSchema, NodeSchema
from app.services.fleet import (
    FleetData,
    FleetQuery,
    cluster_summary,
    namespace_rows,
    node_rows,
    read_fleet,
)
from app.state import get_state

bp = Blueprint("fleet", __name__, url_prefix="/api/v1")

_args = FleetArgsSchema()
_cluster = ClusterSchema()
_nodes = NodeSchema(many=True)
_namespaces = NamespaceSchema(many=True)


def _answer(name: str, summarize: Callable[[FleetData], object],
            dump: Callable[[object], object], message: str) -> Response:
    """Read the fleet for the request's filters and window; serve `summarize`'s answer."""
    args: FleetArgs = load_args(_args, request.args)
    query = FleetQuery(args.filters, args.window, idle_rule(get_state().config), args.at)

    def produce(prom: PrometheusClient, detection: Detection) -> object:
        return dump(summarize(read_fleet(prom, detection.dialects, query)))

    # Window subqueries over every GPU: asked with the history client's budget.
    return cached_answer((name, query), produce, message, history=True)


@bp.get("/cluster")
@Operation("The cluster: GPUs by state and model, allocation against use, window figures",
           ok="The cluster summary", data=ClusterSchema, args=_args,
           errors=("400", *UPSTREAM_ERRORS), cached=True)
def cluster() -> Response:
    """How many GPUs are busy, idle, free or held idle; what Kubernetes allocated."""
    return _answer("cluster", cluster_summary, _cluster.dump,
                   "Cluster summary retrieved successfully")


@bp.get("/nodes")
@Operation("One row per node: GPUs, allocation, busy and idle, window figures",
           ok="The nodes", data=NodeSchema, many=True, args=_args,
           errors=("400", *UPSTREAM_ERRORS), cached=True)
def nodes() -> Response:
    """Every node with GPUs (or GPU resources), sorted by name."""
    return _answer("nodes", node_rows, _nodes.dump, "Nodes retrieved successfully")


@bp.get("/namespaces")
@Operation("One row per namespace holding or requesting GPUs, with its use and energy",
           ok="The namespaces", data=NamespaceSchema, many=True, args=_args,
           errors=("400", *UPSTREAM_ERRORS), cached=True)
def namespaces() -> Response:
    """Every namespace holding or requesting GPUs, sorted by name."""
    return _answer("namespaces", namespace_rows, _namespaces.dump,
                   "Namespaces retrieved successfully")
