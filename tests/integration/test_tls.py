"""Prometheus over TLS: a CA bundle, a client certificate, and opting out of verification.

The upstream is `MisbehavingPrometheus` (one healthy legacy GPU, detection answered
truthfully) behind a real TLS handshake on 127.0.0.1; the app is the real one over HTTP,
with the real network client. Certificates are made for each test by a throwaway CA.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.certs import CertificateAuthority, Issued
from tests.integration.conftest import ApiServer
from tests.integration.upstreams import MisbehavingPrometheus

pytestmark = pytest.mark.integration

# A refused handshake is not worth retrying, and no answer may come from the cache.
FAST_ENV = {"CACHE_TTL": "0", "PROMETHEUS_RETRIES": "0"}
SKIP_VERIFY_WARNING = "TLS verification of Prometheus is OFF"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    """The CA that signs the server's (and the accepted client's) certificates."""
    return CertificateAuthority(tmp_path, "cluster")


@pytest.fixture
def other_ca(tmp_path: Path) -> CertificateAuthority:
    """A CA nobody in the test trusts."""
    return CertificateAuthority(tmp_path, "stranger")


@contextlib.contextmanager
def tls_prometheus(server_cert: Issued, *,
                   client_ca: CertificateAuthority | None = None,
                   ) -> Iterator[tuple[str, MisbehavingPrometheus]]:
    """A fake Prometheus on https://127.0.0.1:<port>; with `client_ca`, mutual TLS.

    MisbehavingPrometheus listens in plain HTTP: wrapping its listening socket makes each
    accepted connection TLS. The handshake runs at the handler's first read, in the
    connection's thread, so a client that fails it does not stall the accept loop.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.present_in(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.trust_in(context)
    with MisbehavingPrometheus() as server:
        httpd = server._httpd
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True,
                                           do_handshake_on_connect=False)
        yield server.url.replace("http://", "https://", 1), server


def served_gpus(response: requests.Response) -> list[dict[str, object]]:
    """The GPU list of a successful envelope."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["error"] is None
    return list(body["data"])


def tls_error(response: requests.Response, url: str) -> str:
    """The error of a 503 envelope about a failed TLS handshake with `url`."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["success"] is False and body["data"] is None and body["message"] is None
    error = str(body["error"])
    assert "TLS" in error and url in error, error
    assert "Traceback" not in error and "<html" not in error.lower(), error
    return error


def test_a_ca_bundle_that_signed_the_server_certificate_is_trusted(
        ca: CertificateAuthority, api_server: Callable[..., ApiServer]) -> None:
    with tls_prometheus(ca.issue("prometheus", "127.0.0.1")) as (url, upstream):
        api = api_server(PROMETHEUS_URL=url, PROMETHEUS_CA_FILE=str(ca.bundle), **FAST_ENV)
        gpus = served_gpus(api.get("/api/v1/gpu/metrics"))
        assert [(g["node_name"], g["gpu_index"], g["utilization"]) for g in gpus] == [
            ("n", 0, 42.0)]
        assert api.get("/api/healthz").status_code == 200
        assert upstream.seen("data") and upstream.seen("probe")


@pytest.mark.parametrize("trusted", ["another CA", "the system CAs"])
def test_a_server_certificate_no_trusted_ca_signed_is_refused(
        trusted: str, ca: CertificateAuthority, other_ca: CertificateAuthority,
        api_server: Callable[..., ApiServer]) -> None:
    env = {"PROMETHEUS_CA_FILE": str(other_ca.bundle)} if trusted == "another CA" else {}
    with tls_prometheus(ca.issue("prometheus", "127.0.0.1")) as (url, upstream):
        api = api_server(PROMETHEUS_URL=url, **env, **FAST_ENV)
        error = tls_error(api.get("/api/v1/gpu/metrics"), url)
        assert "certificate verify failed" in error
        assert "certificate verify failed" in tls_error(api.get("/api/healthz"), url)
        assert upstream.seen() == []  # not one request went over the untrusted connection


def test_a_certificate_for_another_host_name_is_refused(
        ca: CertificateAuthority, api_server: Callable[..., ApiServer]) -> None:
    # Signed by the trusted CA, but for a name the URL does not use.
    with tls_prometheus(ca.issue("elsewhere", "prometheus.example.org")) as (url, upstream):
        api = api_server(PROMETHEUS_URL=url, PROMETHEUS_CA_FILE=str(ca.bundle), **FAST_ENV)
        assert "certificate verify failed" in tls_error(api.get("/api/v1/gpu/metrics"), url)
        assert upstream.seen() == []


# urllib3 warns on every unverified request; the app's own warning is what is tested here.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_skipping_verification_accepts_any_certificate_and_logs_a_warning(
        other_ca: CertificateAuthority, api_server: Callable[..., ApiServer],
        capsys: pytest.CaptureFixture[str]) -> None:
    with tls_prometheus(other_ca.issue("prometheus", "127.0.0.1")) as (url, _):
        api = api_server(PROMETHEUS_URL=url, PROMETHEUS_TLS_INSECURE_SKIP_VERIFY="true",
                         **FAST_ENV)
        assert len(served_gpus(api.get("/api/v1/gpu/metrics"))) == 1
    warnings = [line for line in capsys.readouterr().out.splitlines()
                if SKIP_VERIFY_WARNING in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0], warnings
    assert "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY" in warnings[0]


def test_verification_on_logs_no_such_warning(
        ca: CertificateAuthority, api_server: Callable[..., ApiServer],
        capsys: pytest.CaptureFixture[str]) -> None:
    with tls_prometheus(ca.issue("prometheus", "127.0.0.1")) as (url, _):
        api = api_server(PROMETHEUS_URL=url, PROMETHEUS_CA_FILE=str(ca.bundle), **FAST_ENV)
        assert len(served_gpus(api.get("/api/v1/gpu/metrics"))) == 1
    out = capsys.readouterr().out
    assert "GET /api/v1/gpu/metrics" in out, "the app's log was not captured"
    assert SKIP_VERIFY_WARNING not in out


def test_a_client_certificate_opens_a_server_that_requires_one(
        ca: CertificateAuthority, api_server: Callable[..., ApiServer]) -> None:
    client = ca.issue("gpu-monitor", "gpu-monitor.example.org")
    with tls_prometheus(ca.issue("prometheus", "127.0.0.1"), client_ca=ca) as (url, upstream):
        api = api_server(PROMETHEUS_URL=url, PROMETHEUS_CA_FILE=str(ca.bundle),
                         PROMETHEUS_CLIENT_CERT=str(client.cert),
                         PROMETHEUS_CLIENT_KEY=str(client.key), **FAST_ENV)
        assert len(served_gpus(api.get("/api/v1/gpu/metrics"))) == 1
        assert api.get("/api/healthz").status_code == 200
        assert upstream.seen("data")


def client_settings(kind: str, ca: CertificateAuthority,
                    other_ca: CertificateAuthority) -> dict[str, str]:
    """No client certificate, or one signed by a CA the server does not trust."""
    if kind == "none":
        return {}
    stranger = other_ca.issue("gpu-monitor", "gpu-monitor.example.org")
    return {"PROMETHEUS_CLIENT_CERT": str(stranger.cert),
            "PROMETHEUS_CLIENT_KEY": str(stranger.key)}


@pytest.mark.parametrize("client", ["none", "from another CA"])
def test_a_server_requiring_a_client_certificate_refuses_without_a_trusted_one(
        client: str, ca: CertificateAuthority, other_ca: CertificateAuthority,
        api_server: Callable[..., ApiServer]) -> None:
    with tls_prometheus(ca.issue("prometheus", "127.0.0.1"), client_ca=ca) as (url, upstream):
        api = api_server(PROMETHEUS_URL=url, PROMETHEUS_CA_FILE=str(ca.bundle),
                         **client_settings(client, ca, other_ca), **FAST_ENV)
        tls_error(api.get("/api/v1/gpu/metrics"), url)
        tls_error(api.get("/api/healthz"), url)
        assert upstream.seen() == []


@pytest.mark.parametrize("client", ["none", "from another CA"])
def test_a_refused_client_certificate_is_explained_in_plain_words(
        client: str, ca: CertificateAuthority, other_ca: CertificateAuthority,
        api_server: Callable[..., ApiServer]) -> None:
    with tls_prometheus(ca.issue("prometheus", "127.0.0.1"), client_ca=ca) as (url, _):
        api = api_server(PROMETHEUS_URL=url, PROMETHEUS_CA_FILE=str(ca.bundle),
                         **client_settings(client, ca, other_ca), **FAST_ENV)
        error = tls_error(api.get("/api/v1/gpu/metrics"), url)
        assert "client certificate" in error.lower(), error
        assert "HTTPSConnectionPool" not in error, error
