"""Every credential and TLS setting that cannot work stops start-up, naming the variables.

`load_config` refuses contradictory or unusable combinations (two tokens, a user without a
password, a certificate without its key, files it cannot read, a token no HTTP header can
carry) with a ConfigError (a ValueError) that names the variables and never shows a secret.
Secrets are random per run, so finding one in a message is a leak, not a coincidence.
"""

from __future__ import annotations

import secrets
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.config import Config, ConfigError, load_config
from tests.certs import CertificateAuthority

TOKEN = "PROMETHEUS_BEARER_TOKEN"
TOKEN_FILE = "PROMETHEUS_BEARER_TOKEN_FILE"
USERNAME = "PROMETHEUS_USERNAME"
PASSWORD = "PROMETHEUS_PASSWORD"
PASSWORD_FILE = "PROMETHEUS_PASSWORD_FILE"
CLIENT_CERT = "PROMETHEUS_CLIENT_CERT"
CLIENT_KEY = "PROMETHEUS_CLIENT_KEY"
CA_FILE = "PROMETHEUS_CA_FILE"
SKIP_VERIFY = "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY"
HEADERS = "PROMETHEUS_HEADERS"
URL = "PROMETHEUS_URL"

SECRET = f"s3cret-{secrets.token_urlsafe(18)}"
OTHER_SECRET = f"s3cret-{secrets.token_urlsafe(18)}"


@dataclass(frozen=True)
class Files:
    """Paths a setting may name: readable files holding secrets, and unreadable paths."""

    token: str
    password: str
    cert: str
    key: str
    ca: str
    missing: str
    directory: str


@pytest.fixture
def files(tmp_path: Path) -> Files:
    (tmp_path / "token").write_text(SECRET + "\n")
    (tmp_path / "password").write_text(OTHER_SECRET + "\n")
    # Real PEM: start-up loads the CA bundle and the client key pair to check them.
    ca = CertificateAuthority(tmp_path, "pki")
    client = ca.issue("client", "client.example.org")
    (tmp_path / "a-directory").mkdir()
    return Files(token=str(tmp_path / "token"), password=str(tmp_path / "password"),
                 cert=str(client.cert), key=str(client.key), ca=str(ca.bundle),
                 missing=str(tmp_path / "no-such-file"), directory=str(tmp_path / "a-directory"))


Env = Callable[[Files], dict[str, str]]


@dataclass(frozen=True)
class Refusal:
    """A bad combination and the variables its message must name."""

    env: Env
    names: tuple[str, ...]


def unreadable(variable: str, path: str, **others: str) -> Env:
    """`variable` names `path` ("missing" or "directory"); `others` make the rest valid,
    each value the name of a Files field or else a literal value."""
    def env(f: Files) -> dict[str, str]:
        extra = {name: getattr(f, value) if hasattr(f, value) else value
                 for name, value in others.items()}
        return {variable: getattr(f, path), **extra}
    return env


REFUSALS: dict[str, Refusal] = {
    "token with a space": Refusal(lambda f: {TOKEN: f"{SECRET} {OTHER_SECRET}"}, (TOKEN,)),
    "token with a line break": Refusal(
        lambda f: {TOKEN: f"{SECRET}\nX-Injected: {OTHER_SECRET}"}, (TOKEN,)),
    "token with a tab": Refusal(lambda f: {TOKEN: f"{SECRET}\t{OTHER_SECRET}"}, (TOKEN,)),
    "token with non-ASCII text": Refusal(lambda f: {TOKEN: f"{SECRET}\u00e9"}, (TOKEN,)),
    "token and token file": Refusal(
        lambda f: {TOKEN: SECRET, TOKEN_FILE: f.token}, (TOKEN, TOKEN_FILE)),
    # The message says "a bearer token" without naming which of the two variables.
    "username and token": Refusal(
        lambda f: {USERNAME: "grafana", PASSWORD: SECRET, TOKEN: OTHER_SECRET}, (USERNAME,)),
    "username and token file": Refusal(
        lambda f: {USERNAME: "grafana", PASSWORD: SECRET, TOKEN_FILE: f.token}, (USERNAME,)),
    "username without password": Refusal(
        lambda f: {USERNAME: "grafana"}, (USERNAME, PASSWORD, PASSWORD_FILE)),
    "password without username": Refusal(lambda f: {PASSWORD: SECRET}, (PASSWORD, USERNAME)),
    "password file without username": Refusal(
        lambda f: {PASSWORD_FILE: f.password}, (PASSWORD, USERNAME)),
    "client cert without key": Refusal(lambda f: {CLIENT_CERT: f.cert},
                                       (CLIENT_CERT, CLIENT_KEY)),
    "client key without cert": Refusal(lambda f: {CLIENT_KEY: f.key},
                                       (CLIENT_CERT, CLIENT_KEY)),
    **{
        f"{variable} {what}": Refusal(unreadable(variable, path, **others), (variable,))
        for variable, others in (
            (TOKEN_FILE, {}),
            (PASSWORD_FILE, {USERNAME: "grafana"}),
            (CLIENT_CERT, {CLIENT_KEY: "key"}),
            (CLIENT_KEY, {CLIENT_CERT: "cert"}),
            (CA_FILE, {}),
        )
        for what, path in (("missing", "missing"), ("a directory", "directory"))
    },
    "skip-verify not a boolean": Refusal(lambda f: {SKIP_VERIFY: "sometimes"}, (SKIP_VERIFY,)),
    "authorization in the extra headers": Refusal(
        lambda f: {HEADERS: f"Authorization=Bearer {SECRET}"}, (HEADERS, TOKEN)),
    "malformed extra headers": Refusal(
        lambda f: {HEADERS: f"X-Api-Key={SECRET},X-Scope-OrgID"}, (HEADERS,)),
    "url with credentials and a bad port": Refusal(
        lambda f: {URL: f"https://reader:{SECRET}@prometheus.example.org:99999"}, (URL,)),
}

def refused(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    return caught.value


def test_a_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("case", REFUSALS)
def test_a_bad_credential_setting_stops_start_up_naming_the_variables(
        case: str, files: Files) -> None:
    refusal = REFUSALS[case]
    message = str(refused(refusal.env(files)))
    missing = [name for name in refusal.names if name not in message]
    assert not missing, f"{message!r} does not name {missing}"


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_never_shows_a_secret(case: str, files: Files) -> None:
    error = refused(REFUSALS[case].env(files))
    shown = "".join(traceback.format_exception(error))
    assert SECRET not in shown and OTHER_SECRET not in shown, shown


def test_a_refusal_for_an_unreadable_file_names_the_path(files: Files) -> None:
    assert files.missing in str(refused({CA_FILE: files.missing}))


# -- combinations that work: the refusals above are not over-eager -------------------------


def accepted(env: dict[str, str]) -> Config:
    config = load_config(env)
    for shown in (repr(config), repr(config.client_settings())):
        assert SECRET not in shown and OTHER_SECRET not in shown, shown
    return config


def test_a_bearer_token_alone_is_used(files: Files) -> None:
    settings = accepted({TOKEN: f"  {SECRET}\n"}).client_settings()
    assert (settings.bearer_token, settings.basic_auth) == (SECRET, None)


def test_a_token_file_alone_is_used_and_read_per_request(files: Files) -> None:
    settings = accepted({TOKEN_FILE: files.token}).client_settings()
    assert (settings.bearer_token, settings.bearer_token_file) == (None, files.token)


def test_an_empty_token_is_no_token(files: Files) -> None:
    config = accepted({TOKEN: "   ", TOKEN_FILE: files.token})
    assert config.bearer_token is None and config.bearer_token_file == files.token


@pytest.mark.parametrize("source", ["variable", "file"])
def test_a_username_with_a_password_is_basic_auth(source: str, files: Files) -> None:
    password = {PASSWORD: OTHER_SECRET} if source == "variable" else {
        PASSWORD_FILE: files.password}
    config = accepted({USERNAME: "grafana", **password})
    assert config.basic_auth == ("grafana", OTHER_SECRET)  # the file's line break is cut


def test_a_client_certificate_with_its_key_and_a_ca_bundle_are_used(files: Files) -> None:
    settings = accepted({CLIENT_CERT: files.cert, CLIENT_KEY: files.key,
                         CA_FILE: files.ca}).client_settings()
    assert (settings.client_cert, settings.verify) == ((files.cert, files.key), files.ca)


@pytest.mark.parametrize(("raw", "verify"), [("true", False), ("false", True), ("1", False)])
def test_skip_verify_turns_verification_off(raw: str, verify: bool) -> None:
    assert accepted({SKIP_VERIFY: raw}).client_settings().verify is verify


# -- settings that would fail every request, or silently drop one of two ----------------


@dataclass(frozen=True)
class Unworkable:
    env: Callable[[Files, Path], dict[str, str]]
    why: str


def _pem_files(tmp_path: Path) -> tuple[str, str, str]:
    """A real certificate, the key of another certificate, and a CA file with no CA."""
    ca = CertificateAuthority(tmp_path, "pki")
    first, second = ca.issue("first", "first.example.org"), ca.issue("second", "x.example")
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("this is not a certificate\n")
    return str(first.cert), str(second.key), str(not_a_ca)


UNWORKABLE: dict[str, Unworkable] = {
    "password and password file": Unworkable(
        lambda f, _: {USERNAME: "grafana", PASSWORD: SECRET, PASSWORD_FILE: f.password},
        "the file silently replaces the variable (the token pair is refused)"),
    "credentials in the url and a username": Unworkable(
        lambda f, _: {URL: f"https://reader:{SECRET}@prometheus.example.org",
                      USERNAME: "grafana", PASSWORD: OTHER_SECRET},
        "requests silently drops the URL's credentials for the session's"),
    "credentials in the url and a token": Unworkable(
        lambda f, _: {URL: f"https://reader:{SECRET}@prometheus.example.org",
                      TOKEN: OTHER_SECRET},
        "requests silently drops the URL's credentials for the token"),
    "password basic auth cannot carry": Unworkable(
        lambda f, _: {USERNAME: "grafana", PASSWORD: f"{SECRET}\u20ac"},
        "requests encodes basic auth as latin-1: every request fails (tokens are checked)"),
    "ca file without a certificate": Unworkable(
        lambda f, tmp: {CA_FILE: _pem_files(tmp)[2]},
        "every request fails with a TLS error cut before its reason"),
    "client key of another certificate": Unworkable(
        lambda f, tmp: dict(zip((CLIENT_CERT, CLIENT_KEY), _pem_files(tmp)[:2], strict=True)),
        "every request fails with a TLS error cut before its reason"),
}


@pytest.mark.parametrize("case", UNWORKABLE)
def test_a_setting_that_cannot_work_is_refused_at_start_up(
        case: str, files: Files, tmp_path: Path) -> None:
    error = refused(UNWORKABLE[case].env(files, tmp_path))
    assert SECRET not in str(error) and OTHER_SECRET not in str(error)
