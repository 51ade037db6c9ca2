"""A real Prometheus behind an authenticating gateway with a path prefix and a tenant header.

The gateway (`AuthProxy`) wants `Authorization` (a bearer token or basic auth) and
`X-Scope-OrgID: team-a`, serves under /prometheus and forwards to a real Prometheus scraping
a simulated dcgm-exporter. Secrets are random per test, so finding one anywhere is a leak.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from demo.cluster import ClusterSpec, node_names
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusServer, ScrapeTarget
from tests.integration.conftest import ApiServer
from tests.integration.upstreams import AuthProxy, RefusingPort, query_string

pytestmark = pytest.mark.integration

SPEC = ClusterSpec(nodes=2, gpus_per_node=2, seed=41, node_prefix="sec-")
GPUS = SPEC.nodes * SPEC.gpus_per_node
TENANT_HEADER = "X-Scope-OrgID=team-a"
# Everything the app may show or log about itself, for leak checks.
DEBUG_PATHS = ("/debug/vars", "/debug/pprof/threads", "/api/v1/capabilities")


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """One real Prometheus scraping a small dcgm-exporter cluster, for the module."""
    with ExporterServer(SPEC, "dcgm") as exporter:
        server = PrometheusServer([ScrapeTarget(exporter.address)]).start()
        try:
            server.wait_for("DCGM_FI_DEV_GPU_TEMP", min_count=GPUS, timeout=60)
            yield server
        finally:
            server.stop()


@pytest.fixture
def proxy(prometheus: PrometheusServer) -> Iterator[AuthProxy]:
    """The gateway in front of the module's Prometheus; accepts nobody until told."""
    with AuthProxy(prometheus.url, prefix="/prometheus", tenant="team-a") as gateway:
        yield gateway


def new_secret(kind: str) -> str:
    """A credential that cannot appear anywhere by chance."""
    return f"{kind}-{secrets.token_urlsafe(24)}"


class ProjectedToken:
    """A token file laid out like a Kubernetes projected volume, rotated the same way.

    `token` is a symlink to `..data/token`; `..data` is a symlink to a timestamped
    directory that the kubelet replaces atomically with a rename.
    """

    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self._generation = 0
        self._write(token)
        (root / "token").symlink_to("..data/token")

    @property
    def path(self) -> str:
        """What PROMETHEUS_BEARER_TOKEN_FILE names."""
        return str(self.root / "token")

    def rotate(self, token: str) -> None:
        """Publish a new token the way the kubelet does."""
        self._write(token)

    def _write(self, token: str) -> None:
        self._generation += 1
        version = self.root / f"..2024_01_01_00_00_{self._generation:02d}"
        version.mkdir()
        (version / "token").write_text(token + "\n")
        staged = self.root / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.root / "..data")


def gpus(api: ApiServer, query: str = "") -> list[dict[str, object]]:
    """The GPU list, asserting a successful envelope."""
    response = api.get("/api/v1/gpu/metrics" + (f"?{query}" if query else ""))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["error"] is None
    return list(body["data"])


def failure(response: requests.Response, status: int) -> str:
    """The error text of a failure envelope, asserting its shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["data"] is None and body["message"] is None
    error = str(body["error"])
    assert "<html" not in error.lower() and "Traceback" not in error, error
    return error


def places_shown(secrets_: tuple[str, ...], api: ApiServer,
                 capsys: pytest.CaptureFixture[str], **texts: str) -> list[str]:
    """Where any of the secrets shows: the given texts, the app's responses, its log."""
    shown = dict(texts)
    for path in ("/api/healthz", *DEBUG_PATHS):
        response = api.get(path)
        assert response.status_code != 404, path  # the debug endpoints must be on
        shown[path] = response.text
    captured = capsys.readouterr()
    shown["log (stdout)"], shown["stderr"] = captured.out, captured.err
    assert "GET /api/healthz" in captured.out, "the app's log was not captured"
    return [where for where, text in shown.items() if any(s in text for s in secrets_)]


def assert_never_shown(secret: str, api: ApiServer, capsys: pytest.CaptureFixture[str],
                       **texts: str) -> None:
    """The secret is in no response of the app, no text given, and no log line."""
    assert places_shown((secret,), api, capsys, **texts) == []


def test_gpus_are_read_through_a_prefixed_bearer_gateway_with_a_tenant_header(
        proxy: AuthProxy, api_server: Callable[..., ApiServer], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    token = new_secret("token")
    proxy.accept_tokens(token)
    token_file = ProjectedToken(tmp_path, token)
    api = api_server(PROMETHEUS_URL=proxy.prefixed_url,
                     PROMETHEUS_BEARER_TOKEN_FILE=token_file.path,
                     PROMETHEUS_HEADERS=TENANT_HEADER, CACHE_TTL="0", LOG_LEVEL="debug",
                     ENABLE_DEBUG_ENDPOINTS="true")

    found = gpus(api)
    assert len(found) == GPUS
    assert {gpu["node_name"] for gpu in found} == set(node_names(SPEC))
    health = api.get("/api/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["data"]["prometheus"]["url"] == proxy.prefixed_url

    seen = proxy.seen()
    assert seen and all(r.forwarded and r.tenant == "team-a" for r in seen), seen
    assert {r.path for r in seen} >= {"/api/v1/query", "/api/v1/labels"}  # prefix stripped
    assert_never_shown(token, api, capsys)


def test_without_the_tenant_header_the_gateway_refuses(
        proxy: AuthProxy, api_server: Callable[..., ApiServer], tmp_path: Path) -> None:
    token = new_secret("token")
    proxy.accept_tokens(token)
    token_file = ProjectedToken(tmp_path, token)
    api = api_server(PROMETHEUS_URL=proxy.prefixed_url,
                     PROMETHEUS_BEARER_TOKEN_FILE=token_file.path,
                     CACHE_TTL="0")
    error = failure(api.get("/api/v1/gpu/metrics"), 502)
    assert "HTTP 401" in error and proxy.prefixed_url in error
    assert proxy.seen() and all(r.tenant is None and not r.forwarded for r in proxy.seen())


def test_rotated_token_file_is_used_without_restart(
        proxy: AuthProxy, api_server: Callable[..., ApiServer], tmp_path: Path) -> None:
    first, second = new_secret("token"), new_secret("token")
    proxy.accept_tokens(first)
    token_file = ProjectedToken(tmp_path, first)
    api = api_server(PROMETHEUS_URL=proxy.prefixed_url,
                     PROMETHEUS_BEARER_TOKEN_FILE=token_file.path,
                     PROMETHEUS_HEADERS=TENANT_HEADER, CACHE_TTL="0")
    assert len(gpus(api)) == GPUS

    token_file.rotate(second)
    proxy.accept_tokens(second)  # the old token is revoked at once
    proxy.clear()
    assert len(gpus(api)) == GPUS
    assert api.get("/api/healthz").status_code == 200
    assert proxy.seen() and all(r.authorized for r in proxy.seen())


def test_wrong_token_gives_502_about_credentials_and_never_shows_the_token(
        proxy: AuthProxy, api_server: Callable[..., ApiServer], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    good, wrong = new_secret("token"), new_secret("token")
    proxy.accept_tokens(good)
    token_file = ProjectedToken(tmp_path, wrong)
    api = api_server(PROMETHEUS_URL=proxy.prefixed_url,
                     PROMETHEUS_BEARER_TOKEN_FILE=token_file.path,
                     PROMETHEUS_HEADERS=TENANT_HEADER, CACHE_TTL="0", LOG_LEVEL="debug",
                     ENABLE_DEBUG_ENDPOINTS="true")

    response = api.get("/api/v1/gpu/metrics")
    error = failure(response, 502)
    assert "credentials" in error and "HTTP 401" in error, error
    assert proxy.prefixed_url in error
    health_error = failure(api.get("/api/healthz"), 503)  # not ready, for the same reason
    assert "credentials" in health_error
    assert api.get("/api/livez").status_code == 200
    assert places_shown((wrong, good), api, capsys, metrics=response.text) == []


def test_token_file_with_a_line_break_inside_is_refused_without_showing_it(
        proxy: AuthProxy, api_server: Callable[..., ApiServer], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A file someone filled by hand: two lines. No header can carry that token.
    first, second = new_secret("line"), new_secret("line")
    token_file = tmp_path / "token"
    token_file.write_text(f"{first}\n{second}\n")
    api = api_server(PROMETHEUS_URL=proxy.prefixed_url,
                     PROMETHEUS_BEARER_TOKEN_FILE=str(token_file),
                     PROMETHEUS_HEADERS=TENANT_HEADER, CACHE_TTL="0",
                     ENABLE_DEBUG_ENDPOINTS="true")

    response = api.get("/api/v1/gpu/metrics")
    shown_in = places_shown((first, second), api, capsys, metrics=response.text)
    # Our setup is at fault, not the code (no 500), and the token stays secret.
    assert (response.status_code in (502, 503), shown_in) == (True, []), (
        f"HTTP {response.status_code} {response.text}; the token shows in: {shown_in}")
    assert str(token_file) in failure(response, response.status_code)


def test_basic_auth_reaches_the_gateway_and_a_wrong_password_is_never_shown(
        proxy: AuthProxy, api_server: Callable[..., ApiServer],
        capsys: pytest.CaptureFixture[str]) -> None:
    password = new_secret("password")
    proxy.accept_basic("grafana", password)
    api = api_server(PROMETHEUS_URL=proxy.prefixed_url, PROMETHEUS_USERNAME="grafana",
                     PROMETHEUS_PASSWORD=password, PROMETHEUS_HEADERS=TENANT_HEADER,
                     CACHE_TTL="0", LOG_LEVEL="debug", ENABLE_DEBUG_ENDPOINTS="true")
    assert len(gpus(api)) == GPUS

    proxy.accept_basic("grafana", new_secret("password"))  # the password was changed
    response = api.get("/api/v1/gpu/metrics")
    error = failure(response, 502)
    assert "credentials" in error and "HTTP 401" in error, error
    assert_never_shown(password, api, capsys, metrics=response.text)


def test_credentials_in_the_url_are_used_but_never_shown(
        proxy: AuthProxy, api_server: Callable[..., ApiServer],
        capsys: pytest.CaptureFixture[str]) -> None:
    # Random, because /debug/pprof/threads shows this test's own source lines too.
    secret = new_secret("secret")
    proxy.accept_basic("user", secret)
    with_credentials = proxy.prefixed_url.replace("http://", f"http://user:{secret}@")
    api = api_server(PROMETHEUS_URL=with_credentials, PROMETHEUS_HEADERS=TENANT_HEADER,
                     CACHE_TTL="0", LOG_LEVEL="debug", ENABLE_DEBUG_ENDPOINTS="true")
    assert len(gpus(api)) == GPUS
    health = api.get("/api/healthz")
    assert health.json()["data"]["prometheus"]["url"] == proxy.prefixed_url

    proxy.accept_basic("user", new_secret("password"))
    refused = api.get("/api/v1/gpu/metrics")
    assert "credentials" in failure(refused, 502)
    assert proxy.prefixed_url in refused.json()["error"]
    assert_never_shown(secret, api, capsys, metrics=refused.text)

    with RefusingPort() as closed:
        down = api_server(PROMETHEUS_URL=f"http://user:{secret}@127.0.0.1:{closed.port}/prometheus",
                          CACHE_TTL="0", LOG_LEVEL="debug", ENABLE_DEBUG_ENDPOINTS="true")
        unreachable = down.get("/api/v1/gpu/metrics")
        error = failure(unreachable, 503)
        assert f"http://127.0.0.1:{closed.port}/prometheus" in error
        assert_never_shown(secret, down, capsys, metrics=unreachable.text)


def test_long_query_is_posted_through_the_gateway(
        proxy: AuthProxy, api_server: Callable[..., ApiServer], tmp_path: Path) -> None:
    token = new_secret("token")
    proxy.accept_tokens(token)
    token_file = ProjectedToken(tmp_path, token)
    api = api_server(PROMETHEUS_URL=proxy.prefixed_url,
                     PROMETHEUS_BEARER_TOKEN_FILE=token_file.path,
                     PROMETHEUS_HEADERS=TENANT_HEADER, CACHE_TTL="0")
    wanted = node_names(SPEC)[:1]
    # 30 node names of 60 characters: too long a PromQL for a GET line, so it is POSTed
    # (while the app's own query string stays under its 4 KiB limit).
    decoys = [f"decoy-{i:02d}-" + "x" * 51 for i in range(29)]
    found = gpus(api, query_string({"node": wanted + decoys}))
    assert {gpu["node_name"] for gpu in found} == set(wanted)
    assert len(found) == SPEC.gpus_per_node
    assert any(r.method == "POST" and r.path == "/api/v1/query" and r.forwarded
               for r in proxy.seen())
