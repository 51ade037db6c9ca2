"""Whether Prometheus is asked for compressed answers."""

from __future__ import annotations

import pytest
import responses

from app.config import ConfigError, load_config
from app.prometheus.client import PrometheusClient
from tests.factories import api_body

URL = "http://prom.test:9090"


@pytest.mark.parametrize(("setting", "sent"), [(None, "identity"), ("gzip", "gzip"),
                                               ("identity", "identity")])
def test_accept_encoding_follows_prometheus_compression(setting: str | None, sent: str) -> None:
    env = {"PROMETHEUS_URL": URL} | ({"PROMETHEUS_COMPRESSION": setting} if setting else {})
    client = PrometheusClient(load_config(env).client_settings())
    with responses.RequestsMock() as mock:
        mock.get(f"{URL}/api/v1/query", json=api_body({"metric": {}, "value": [1.0, "1"]}))
        client.probe()
        assert mock.calls[0].request.headers["Accept-Encoding"] == sent


def test_unknown_compression_stops_startup() -> None:
    with pytest.raises(ConfigError, match="PROMETHEUS_COMPRESSION"):
        load_config({"PROMETHEUS_COMPRESSION": "brotli"})
