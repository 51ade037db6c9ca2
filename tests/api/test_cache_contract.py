"""The HTTP cache contract of the list endpoints: validators, freshness, compression, staleness.

The app's response cache is swapped for one on a FakeClock whose background refreshes wait
in a Backlog, so "later" and "after the refresh" need no sleeping.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import brotli
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app.config import ConfigError, load_config
from app.state import EXTENSION_KEY, build_cache
from tests.cache_doubles import Backlog, FakeClock
from tests.fakes import PROM_URL, FakePrometheus

try:
    from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
except ImportError:
    from backports import zstd

DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": zstd.decompress, "br": brotli.decompress, "gzip": gzip.decompress}
PATH = "/api/v1/gpu/metrics"


@dataclass
class ClockedApi:
    """A test client whose response cache runs on a fake clock and a held background."""

    client: FlaskClient
    clock: FakeClock
    backlog: Backlog


@pytest.fixture
def clocked(make_app: Callable[..., Flask],
            fake_prometheus: FakePrometheus) -> Callable[..., ClockedApi]:
    def build(**env: str) -> ClockedApi:
        app = make_app(**env)
        state = app.extensions[EXTENSION_KEY]
        clock, backlog = FakeClock(), Backlog()
        state.cache = build_cache(state.config, clock=clock, spawn=backlog)
        return ClockedApi(app.test_client(), clock, backlog)

    return build


def publish_cluster(prom: FakePrometheus, utilization: float = 40, gpus: int = 12) -> None:
    """Enough GPUs that the body is worth compressing (over 1 KiB)."""
    prom.metrics.clear()
    for index in range(gpus):
        labels = {"hostname": f"node-{index // 4}", "gpu_id": str(index % 4),
                  "gpu_name": "NVIDIA H100 80GB HBM3"}
        prom.add("nvidia_gpu_utilization_percent", labels, utilization)
        prom.add("nvidia_gpu_temperature_celsius", labels, 50 + index)


def refuse_connections() -> tuple[int, dict[str, str], str]:
    raise requests.ConnectionError("Connection refused")


def max_age(response) -> int:
    found = re.fullmatch(r"public, max-age=(\d+)", response.headers["Cache-Control"])
    assert found, response.headers["Cache-Control"]
    return int(found.group(1))


# -- validators ---------------------------------------------------------------------------


def test_if_none_match_with_the_current_etag_gives_304(clocked, fake_prometheus) -> None:
    publish_cluster(fake_prometheus)
    api = clocked()
    first = api.client.get(PATH, headers={"Accept-Encoding": "identity"})
    etag = first.headers["ETag"]
    again = api.client.get(PATH, headers={"If-None-Match": etag,
                                          "Accept-Encoding": "identity"})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == etag
    other = api.client.get(PATH, headers={"If-None-Match": '"something-else"',
                                          "Accept-Encoding": "identity"})
    assert other.status_code == 200 and other.data == first.data


@pytest.mark.parametrize("encoding", list(DECODERS))
def test_if_none_match_with_a_compressed_etag_gives_304(clocked, fake_prometheus,
                                                        encoding: str) -> None:
    publish_cluster(fake_prometheus)
    api = clocked()
    first = api.client.get(PATH, headers={"Accept-Encoding": encoding})
    assert first.headers["Content-Encoding"] == encoding
    again = api.client.get(PATH, headers={"Accept-Encoding": encoding,
                                          "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


# -- freshness ----------------------------------------------------------------------------


def test_freshness_left_falls_as_age_rises(clocked, fake_prometheus) -> None:
    publish_cluster(fake_prometheus)
    api = clocked()  # CACHE_TTL 5
    seen = []
    for step in (0, 1.5, 1.0, 2.4):
        api.clock.advance(step)
        response = api.client.get(PATH, headers={"Accept-Encoding": "identity"})
        # RFC 9111: fresh while Age < max-age, so max-age - Age is the time left.
        age = int(response.headers["Age"])
        seen.append((age, max(0, max_age(response) - age)))
    assert seen == [(0, 5), (1, 3), (2, 2), (4, 0)]
    assert not api.backlog.tasks  # all within the TTL: Prometheus was not asked again


def test_a_stale_answer_while_refreshing_is_already_expired(clocked, fake_prometheus) -> None:
    publish_cluster(fake_prometheus)
    api = clocked()
    api.client.get(PATH)
    api.clock.advance(7)
    response = api.client.get(PATH, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200 and response.headers["Age"] == "7"
    assert max_age(response) == 0 and "Cache-Status" not in response.headers
    assert len(api.backlog.tasks) == 1


# -- compression --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", list(DECODERS))
def test_each_encoding_decodes_to_the_same_bytes(clocked, fake_prometheus,
                                                 encoding: str) -> None:
    publish_cluster(fake_prometheus)
    api = clocked()
    plain = api.client.get(PATH, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and len(plain.data) > 1024
    for _ in range(2):  # the second copy comes from the compressed-body store
        packed = api.client.get(PATH, headers={"Accept-Encoding": encoding})
        assert packed.headers["Content-Encoding"] == encoding
        assert "Accept-Encoding" in packed.headers["Vary"]
        assert packed.headers["ETag"] == plain.headers["ETag"][:-1] + f':{encoding}"'
        assert len(packed.data) < len(plain.data)
        assert DECODERS[encoding](packed.data) == plain.data


@pytest.mark.parametrize("encoding", list(DECODERS))
def test_compressed_copy_follows_the_new_etag_after_a_refresh(clocked, fake_prometheus,
                                                              encoding: str) -> None:
    publish_cluster(fake_prometheus, utilization=40)
    api = clocked()
    old = api.client.get(PATH, headers={"Accept-Encoding": encoding})
    publish_cluster(fake_prometheus, utilization=90)
    api.clock.advance(6)
    stale = api.client.get(PATH, headers={"Accept-Encoding": encoding})
    assert stale.headers["ETag"] == old.headers["ETag"]  # refreshing: the old answer
    api.backlog.run()
    new = api.client.get(PATH, headers={"Accept-Encoding": encoding})
    assert new.headers["ETag"] != old.headers["ETag"]
    body = DECODERS[encoding](new.data)
    assert body == api.client.get(PATH, headers={"Accept-Encoding": "identity"}).data
    assert {gpu["utilization"] for gpu in json.loads(body)["data"]} == {90.0}
    revalidated = api.client.get(PATH, headers={"Accept-Encoding": encoding,
                                                "If-None-Match": old.headers["ETag"]})
    assert revalidated.status_code == 200 and revalidated.data == new.data


# -- after Prometheus fails ---------------------------------------------------------------


def uncached_failure(make_app: Callable[..., Flask]) -> tuple[int, dict]:
    """What the same failure looks like without a cache."""
    response = make_app(CACHE_TTL="0").test_client().get(PATH)
    return response.status_code, response.get_json()


def test_a_failed_refresh_gives_the_uncached_failure_envelope(
        clocked, fake_prometheus, make_app) -> None:
    publish_cluster(fake_prometheus)
    api = clocked()
    assert api.client.get(PATH).status_code == 200
    fake_prometheus.failure = refuse_connections
    api.clock.advance(5)
    assert api.client.get(PATH).status_code == 200  # refresh in flight: the old answer
    api.backlog.run()  # ...which fails
    api.clock.advance(0.5)
    response = api.client.get(PATH)
    assert (response.status_code, response.get_json()) == uncached_failure(make_app)
    assert response.status_code == 503 and "ETag" not in response.headers


def test_a_hanging_refresh_gives_a_504_after_the_stale_window(clocked,
                                                              fake_prometheus) -> None:
    publish_cluster(fake_prometheus)
    api = clocked()  # CACHE_TTL 5 + CACHE_STALE_SECONDS 5
    api.client.get(PATH)
    api.clock.advance(5)
    api.client.get(PATH)  # the refresh starts and, held in the backlog, never returns
    api.clock.advance(4.9)
    assert api.client.get(PATH).status_code == 200
    api.clock.advance(0.1)
    response = api.client.get(PATH)
    assert response.status_code == 504
    assert response.get_json() == {
        "success": False, "data": None, "message": None,
        "error": f"Prometheus at {PROM_URL} has not answered for 5.0s (a refresh of this "
                 "answer is still waiting)"}


def test_stale_if_error_serves_marked_data_with_its_own_etag(clocked, fake_prometheus,
                                                             make_app) -> None:
    publish_cluster(fake_prometheus)
    api = clocked(CACHE_STALE_IF_ERROR_SECONDS="60")
    fresh = api.client.get(PATH, headers={"Accept-Encoding": "identity"})
    fake_prometheus.failure = refuse_connections
    _, failure = uncached_failure(make_app)
    api.clock.advance(6)
    api.client.get(PATH)
    api.backlog.run()
    api.clock.advance(36)
    stale = api.client.get(PATH, headers={"Accept-Encoding": "identity"})
    assert stale.status_code == 200
    assert stale.get_json() == {
        "success": True, "data": fresh.get_json()["data"], "error": None,
        "message": f"{failure['error']}; serving data from 42 s ago"}
    assert stale.headers["Cache-Status"] == 'gpu-monitor-api; hit; ttl=-37; ' \
                                            'detail="stale-if-error"'
    assert stale.headers["Age"] == "42" and stale.headers["Cache-Control"] == "no-cache"
    assert stale.headers["ETag"] != fresh.headers["ETag"]
    # A client holding the fresh body must not be told it is still current.
    held = api.client.get(PATH, headers={"If-None-Match": fresh.headers["ETag"],
                                         "Accept-Encoding": "identity"})
    assert held.status_code == 200 and held.data == stale.data
    packed = api.client.get(PATH, headers={"Accept-Encoding": "gzip"})
    assert gzip.decompress(packed.data) == stale.data
    assert packed.headers["ETag"] == stale.headers["ETag"][:-1] + ':gzip"'


def test_stale_if_error_is_off_by_default(clocked, fake_prometheus) -> None:
    publish_cluster(fake_prometheus)
    api = clocked()
    api.client.get(PATH)
    fake_prometheus.failure = refuse_connections
    api.clock.advance(6)
    api.client.get(PATH)
    api.backlog.run()
    assert api.client.get(PATH).status_code == 503


def test_recovery_serves_fresh_data_on_the_next_request(clocked, fake_prometheus) -> None:
    publish_cluster(fake_prometheus, utilization=40)
    api = clocked(CACHE_STALE_IF_ERROR_SECONDS="60")
    api.client.get(PATH)
    fake_prometheus.failure = refuse_connections
    api.clock.advance(6)
    api.client.get(PATH)
    api.backlog.run()
    assert "Cache-Status" in api.client.get(PATH).headers
    fake_prometheus.failure = None
    publish_cluster(fake_prometheus, utilization=90)
    api.backlog.run()  # the background retry stale-if-error started
    response = api.client.get(PATH)
    assert "Cache-Status" not in response.headers
    assert response.get_json()["message"] == "GPU metrics retrieved successfully"
    assert {gpu["utilization"] for gpu in response.get_json()["data"]} == {90.0}


# -- the setting ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "3601"])
def test_a_bad_stale_if_error_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="CACHE_STALE_IF_ERROR_SECONDS"):
        load_config({"CACHE_STALE_IF_ERROR_SECONDS": raw})


def test_cache_defaults_surface_a_hanging_prometheus_within_15_seconds() -> None:
    config = load_config({})
    assert config.cache_stale_if_error == 0
    # A hang shows once an answer is CACHE_TTL + CACHE_STALE_SECONDS old.
    assert config.cache_ttl + config.cache_stale < 15
