"""Shared fixtures: an app wired to a fake Prometheus, and its test client."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.fakes import PROM_URL, FakePrometheus


@pytest.fixture(autouse=True)
def _no_logging_into_closed_captures() -> Iterator[None]:
    """Drop root handlers left writing to a test's capture once that capture is closed.

    An app logs to the stdout of when it was built, capsys' in some tests; threads that
    outlive the test (a module's simulated exporter) would then log into a closed file.
    """
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        stream = getattr(handler, "stream", None)
        if getattr(stream, "closed", False):
            root.removeHandler(handler)


@pytest.fixture
def fake_prometheus() -> Iterator[FakePrometheus]:
    """A stubbed Prometheus; any other HTTP call fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakePrometheus(mock)


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """Build apps with environment overrides; their thread pools are closed afterwards."""
    built: list[Flask] = []

    def factory(**env: str) -> Flask:
        app = create_app({"PROMETHEUS_URL": PROM_URL, "PROMETHEUS_RETRIES": "0", **env})
        built.append(app)
        return app

    yield factory
    for app in built:
        app.extensions["gpu_monitor"].close()


@pytest.fixture
def client(make_app: Callable[..., Flask], fake_prometheus: FakePrometheus) -> FlaskClient:
    """A test client of an app whose Prometheus is `fake_prometheus`."""
    return make_app().test_client()
