"""One composition root: create_app, the benchmarks and the demo wire the service alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app import create_app
from app.config import load_config
from app.state import EXTENSION_KEY, AppState, build_state
from bench.floor import Plan, plan_for
from tests.fakes import PROM_URL, FakePrometheus

ENV = {"PROMETHEUS_URL": PROM_URL, "QUERY_THREADS": "3", "PROMETHEUS_TIMEOUT": "4",
       "NODE_LABEL": "kubernetes_node", "CACHE_TTL": "7", "DIALECT_REFRESH_SECONDS": "60",
       "HISTORY_DEADLINE": "90"}


def wiring(state: AppState) -> dict[str, object]:
    """Everything build_state decides from the config."""
    selector, cache = state.dialects, state.cache
    return {"client": state.prometheus.settings,
            "history_client": state.history_prometheus.settings, "candidates": selector.candidates,
            "forced": selector.forced, "node_label": selector.node_label,
            "refresh_s": selector.refresh_s, "ttl": cache.ttl, "stale_for": cache.stale_for}


@pytest.fixture
def states() -> Iterator[list[AppState]]:
    """States built by a test; their client pools are closed afterwards."""
    built: list[AppState] = []
    yield built
    for state in built:
        state.close()


def test_create_app_holds_exactly_what_build_state_wires(states: list[AppState]) -> None:
    app_state = create_app(ENV).extensions[EXTENSION_KEY]
    root_state = build_state(load_config(ENV))
    states.extend([app_state, root_state])
    assert wiring(app_state) == wiring(root_state)
    assert wiring(root_state)["client"].threads == 3  # the override reached the client
    history = root_state.history_prometheus.settings
    assert (history.timeout, history.deadline, history.threads) == (90, 90, 3)
    assert root_state.prometheus.settings.timeout == 4
    assert root_state.dialects.node_label == "kubernetes_node"


def test_bench_plan_uses_the_client_and_detection_create_app_has(
        fake_prometheus: FakePrometheus, states: list[AppState]) -> None:
    fake_prometheus.add("DCGM_FI_DEV_GPU_UTIL",
                        {"Hostname": "node-a", "gpu": "0", "UUID": "GPU-1"}, 40)
    plan: Plan = plan_for(PROM_URL)
    app_state = create_app({"PROMETHEUS_URL": PROM_URL}).extensions[EXTENSION_KEY]
    states.extend([plan.state, app_state])
    assert wiring(plan.state) == wiring(app_state)
    assert [d.name for d in plan.dialects] == [d.name for d in app_state.detection().dialects]
    assert plan.dialects and plan.fan_out > 0


def test_build_state_asks_prometheus_nothing(fake_prometheus: FakePrometheus,
                                             states: list[AppState]) -> None:
    state = build_state(load_config({"PROMETHEUS_URL": PROM_URL}))
    states.append(state)
    assert fake_prometheus.queries == []
    assert state.dialects.latest is None and not state.dialects.detecting


def test_a_forced_dialect_is_the_only_candidate(states: list[AppState]) -> None:
    state = build_state(load_config({"PROMETHEUS_URL": PROM_URL, "METRICS_DIALECT": "dcgm"}))
    states.append(state)
    assert [d.name for d in state.dialects.candidates] == ["dcgm"]
    assert state.dialects.forced
