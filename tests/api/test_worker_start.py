"""Dialect detection starts with the gunicorn worker, in the background, not in create_app."""

from __future__ import annotations

import gc
import logging
import runpy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from app.state import EXTENSION_KEY, AppState, start_worker
from tests.fakes import FakePrometheus

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


@pytest.fixture
def post_worker_init() -> Iterator[Callable[[Any], None]]:
    """gunicorn.conf.py's hook; the GC settings it applies are undone afterwards."""
    threshold = gc.get_threshold()
    yield runpy.run_path(str(GUNICORN_CONF))["post_worker_init"]
    gc.unfreeze()
    gc.set_threshold(*threshold)


def publish_legacy_gpu(fake: FakePrometheus) -> None:
    fake.add("nvidia_gpu_utilization_percent", {"node": "n", "gpu": "0"}, 7)


def state_of(app: Flask) -> AppState:
    return app.extensions[EXTENSION_KEY]


def test_create_app_starts_no_detection(make_app: Callable[..., Flask],
                                        fake_prometheus: FakePrometheus) -> None:
    publish_legacy_gpu(fake_prometheus)
    state = state_of(make_app())
    assert not state.dialects.detecting
    assert state.dialects.latest is None
    assert fake_prometheus.queries == []


def test_post_worker_init_detects_in_the_background_before_any_request(
        make_app: Callable[..., Flask], fake_prometheus: FakePrometheus,
        post_worker_init: Callable[[Any], None]) -> None:
    publish_legacy_gpu(fake_prometheus)
    app = make_app()
    state = state_of(app)
    post_worker_init(SimpleNamespace(wsgi=app, log=logging.getLogger("gunicorn.error")))
    wait_until(lambda: state.dialects.latest is not None)
    assert [d.name for d in state.dialects.latest.dialects] == ["legacy"]
    detections = len(fake_prometheus.queries)  # the series count detection sent
    assert detections == 1

    response = app.test_client().get("/api/v1/gpu/metrics")
    assert response.status_code == 200
    assert [g["utilization"] for g in response.get_json()["data"]] == [7]
    assert not any(q.startswith("count by (__name__)")
                   for q in fake_prometheus.queries[detections:]), "detected again"


def test_post_worker_init_warns_when_the_app_is_not_ours(
        post_worker_init: Callable[[Any], None], caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("gunicorn.error")
    with caplog.at_level(logging.WARNING, logger="gunicorn.error"):
        post_worker_init(SimpleNamespace(wsgi=lambda environ, start: [], log=log))
    assert any("first request" in r.getMessage() for r in caplog.records)
    assert start_worker(object()) is False
