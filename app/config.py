"""One configuration object, read from the environment in one place."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar
from urllib.parse import urlsplit

from app.dialects.builtin import BUILTIN_DIALECTS
from app.dialects.mapping import load_mapping_file
from app.dialects.model import Dialect
from app.durations import parse_duration
from app.prometheus.auth import is_sendable_token
from app.prometheus.client import ClientSettings
from app.prometheus.promql import check_label_name
from app.telemetry.logs import LOG_FORMATS

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Config:
    """Settings of one service process; every field has a documented environment variable."""

    prometheus_url: str = "http://localhost:9090"
    port: int = 8080
    log_level: str = "info"
    # text for people, json for a log pipeline: one object per line, with the request id.
    log_format: str = "text"
    # 0: /metrics on the API's port; else gunicorn's master serves it there, alone.
    metrics_port: int = 0
    # Read timeout of one PromQL query; Prometheus is asked to give up a little earlier.
    prometheus_timeout: float = 10.0
    # Budget of one API request's whole fan-out; below gunicorn's worker timeout.
    request_deadline: float = 20.0
    # Threads issuing PromQL in parallel, per worker process.
    query_threads: int = 8
    # Retries of a refused connection or a 502/503 answer (reads are idempotent; a slow
    # answer is not retried, it would only blow the deadline).
    prometheus_retries: int = 2
    cors_origins: tuple[str, ...] = ("*",)
    debug_endpoints: bool = False
    # How to reach a hardened Prometheus: secrets are kept out of repr() and logs.
    bearer_token: str | None = field(default=None, repr=False)
    bearer_token_file: str | None = None
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    ca_file: str | None = None
    client_cert: tuple[str, str] | None = None
    tls_verify: bool = True
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    max_response_mb: int = 256
    # Ask Prometheus for compressed answers? identity: less CPU for Prometheus (the
    # answers are ~9 MB per fan-out at 8,000 GPUs); gzip: ~10x fewer bytes on the wire.
    prometheus_compression: str = "identity"
    # Exporter dialects to read; empty means detect them from what Prometheus holds.
    metrics_dialects: tuple[str, ...] = ()
    # Custom dialects from METRICS_MAPPING_FILE, tried before the built-in ones.
    custom_dialects: tuple[Dialect, ...] = ()
    # A label that names the node where the exporter has none (e.g. kubernetes_node).
    node_label: str | None = None
    # Seconds a GPU or process list is served from memory before Prometheus is asked again
    # (0 turns the cache off); then served stale for up to cache_stale seconds more while
    # a background refresh runs. A refresh that fails ends that at once; one that hangs
    # ends it after cache_ttl + cache_stale (10 s), which keeps a hanging Prometheus
    # visible within 15 s although one query may wait prometheus_timeout (10 s).
    cache_ttl: float = 5.0
    cache_stale: float = 5.0
    # After a failed refresh, serve answers younger than this anyway, marked stale in the
    # message and a Cache-Status header (0: never; the failure is answered instead).
    cache_stale_if_error: float = 0.0
    cache_max_mb: int = 64
    # How often auto-detection looks again at which exporters exist.
    dialect_refresh: float = 300.0
    # Most values (series x fields x timestamps) one history answer may hold.
    history_max_values: int = 2_000_000
    # Read timeout of each history query and budget of one history request: a rollup of
    # hours of thousands of GPUs costs Prometheus tens of CPU-seconds, which a list never does.
    history_deadline: float = 60.0
    # A GPU is idle when its utilization (%) stayed below this for the idle window (s).
    idle_utilization_percent: float = 5.0
    idle_window: float = 1800.0

    def client_settings(self) -> ClientSettings:
        """How the Prometheus client reaches the server these settings name."""
        return ClientSettings(
            base_url=self.prometheus_url,
            timeout=self.prometheus_timeout,
            deadline=self.request_deadline,
            threads=self.query_threads,
            retries=self.prometheus_retries,
            max_response_bytes=self.max_response_mb << 20,
            # A CA bundle replaces the system's; verification is on unless opted out.
            verify=(self.ca_file or True) if self.tls_verify else False,
            client_cert=self.client_cert,
            bearer_token=self.bearer_token,
            bearer_token_file=self.bearer_token_file,
            basic_auth=self.basic_auth,
            headers=dict(self.headers),
            accept_encoding=self.prometheus_compression,
        )

    def history_client_settings(self) -> ClientSettings:
        """The client settings of history queries: the same server, the history budget."""
        return replace(self.client_settings(), timeout=self.history_deadline,
                       deadline=self.history_deadline)

    def dialect_catalog(self) -> dict[str, Dialect]:
        """Every known dialect by name, custom ones first."""
        return {**{d.name: d for d in self.custom_dialects}, **BUILTIN_DIALECTS}


def _parse_int(text: str, minimum: int, maximum: int) -> int:
    value = int(text)
    if not minimum <= value <= maximum:
        raise ValueError(f"must be between {minimum} and {maximum}")
    return value


def _parse_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise ValueError("must be a number of seconds between 0 and 3600")
    return value


def _parse_percent(text: str) -> float:
    value = float(text)
    if not 0 < value <= 100:
        raise ValueError("must be a percentage above 0 and at most 100")
    return value


def _parse_idle_window(text: str) -> float:
    seconds = parse_duration(text.strip())
    if seconds is None or not 60 <= seconds <= 86400:
        raise ValueError("must be a duration from 1m to 24h, in seconds or with a unit "
                         "(e.g. 30m)")
    return seconds


def _parse_non_negative(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise ValueError("must be a number of seconds between 0 and 3600")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _parse_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL such as http://prometheus:9090")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query string or fragment")
    # A path prefix (VictoriaMetrics /prometheus, a proxy's /prometheus) is kept; "/" is not.
    return text.strip().rstrip("/")


def _parse_log_level(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return lowered


def _parse_log_format(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
    return lowered


def _parse_origins(text: str) -> tuple[str, ...]:
    origins = tuple(part.strip() for part in text.split(",") if part.strip())
    if not origins:
        raise ValueError("must list at least one origin, or *")
    for origin in origins:
        if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
            raise ValueError(f"{origin!r} is not * or an http(s) origin")
    return origins


def _parse_dialects(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    return () if names in ((), ("auto",)) else names


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    headers = []
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME.match(name) or not value or "\n" in value:
            raise ValueError("must be comma-separated Name=value pairs, e.g. X-Scope-OrgID=team-a")
        if name.lower() == "authorization":
            raise ValueError("set credentials with PROMETHEUS_BEARER_TOKEN(_FILE) or "
                             "PROMETHEUS_USERNAME/PROMETHEUS_PASSWORD instead")
        headers.append((name, value))
    return tuple(headers)


def _parse_compression(text: str) -> str:
    value = text.strip().lower()
    if value not in ("identity", "gzip"):
        raise ValueError("must be identity or gzip")
    return value


def _parse_readable_file(text: str) -> str:
    path = text.strip()
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError("is not a readable file")
    return path


# Values that may hold a secret (a URL's user:password, a header's API key): their
# errors name the variable and say what is wrong, never what it holds.
_SECRET_BEARING = frozenset({"PROMETHEUS_URL", "PROMETHEUS_HEADERS"})


def _read(
    environ: Mapping[str, str], name: str, parse: Callable[[str], T], default: T
) -> T:
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        shown = name if name in _SECRET_BEARING else f"{name}={raw!r}"
        raise ConfigError(f"{shown} is invalid: {exc}") from None


def load_config(environ: Mapping[str, str]) -> Config:
    """Build the Config from environment-style variables, naming any bad one."""
    defaults = Config()
    config = Config(
        prometheus_url=_read(environ, "PROMETHEUS_URL", _parse_url, defaults.prometheus_url),
        port=_read(environ, "PORT", lambda t: _parse_int(t, 1, 65535), defaults.port),
        log_level=_read(environ, "LOG_LEVEL", _parse_log_level, defaults.log_level),
        log_format=_read(environ, "LOG_FORMAT", _parse_log_format, defaults.log_format),
        metrics_port=_read(environ, "METRICS_PORT", lambda t: _parse_int(t, 0, 65535),
                           defaults.metrics_port),
        prometheus_timeout=_read(
            environ, "PROMETHEUS_TIMEOUT", _parse_seconds, defaults.prometheus_timeout
        ),
        request_deadline=_read(
            environ, "REQUEST_DEADLINE", _parse_seconds, defaults.request_deadline
        ),
        query_threads=_read(
            environ, "QUERY_THREADS", lambda t: _parse_int(t, 1, 64), defaults.query_threads
        ),
        prometheus_retries=_read(
            environ, "PROMETHEUS_RETRIES", lambda t: _parse_int(t, 0, 5),
            defaults.prometheus_retries,
        ),
        cors_origins=_read(environ, "CORS_ORIGINS", _parse_origins, defaults.cors_origins),
        debug_endpoints=_read(
            environ, "ENABLE_DEBUG_ENDPOINTS", _parse_bool, defaults.debug_endpoints
        ),
    )
    config = _with_connection_settings(environ, config)
    custom: tuple[Dialect, ...] = _read(environ, "METRICS_MAPPING_FILE",
                                        lambda p: tuple(load_mapping_file(p)), ())
    config = replace(
        config,
        custom_dialects=custom,
        metrics_dialects=_read(environ, "METRICS_DIALECT", _parse_dialects, ()),
        node_label=_read(environ, "NODE_LABEL", check_label_name, None),
        cache_ttl=_read(environ, "CACHE_TTL", _parse_non_negative, defaults.cache_ttl),
        cache_stale=_read(environ, "CACHE_STALE_SECONDS", _parse_non_negative,
                          defaults.cache_stale),
        cache_stale_if_error=_read(environ, "CACHE_STALE_IF_ERROR_SECONDS",
                                   _parse_non_negative, defaults.cache_stale_if_error),
        cache_max_mb=_read(environ, "CACHE_MAX_MB", lambda t: _parse_int(t, 1, 65536),
                           defaults.cache_max_mb),
        dialect_refresh=_read(environ, "DIALECT_REFRESH_SECONDS", _parse_seconds,
                              defaults.dialect_refresh),
        history_max_values=_read(environ, "HISTORY_MAX_VALUES",
                                 lambda t: _parse_int(t, 1, 1_000_000_000),
                                 defaults.history_max_values),
        history_deadline=_read(environ, "HISTORY_DEADLINE", _parse_seconds,
                               defaults.history_deadline),
        idle_utilization_percent=_read(environ, "IDLE_UTILIZATION_PERCENT", _parse_percent,
                                       defaults.idle_utilization_percent),
        idle_window=_read(environ, "IDLE_WINDOW", _parse_idle_window, defaults.idle_window),
    )
    unknown = [n for n in config.metrics_dialects if n not in config.dialect_catalog()]
    if unknown:
        raise ConfigError(
            f"METRICS_DIALECT names unknown dialect(s) {', '.join(unknown)}; known: auto, "
            + ", ".join(config.dialect_catalog())
        )
    if config.metrics_port and config.metrics_port == config.port:
        raise ConfigError(f"METRICS_PORT={config.metrics_port} must differ from PORT "
                          "(leave it unset to serve /metrics on the API's port)")
    if config.prometheus_timeout > config.request_deadline:
        raise ConfigError(
            f"PROMETHEUS_TIMEOUT={config.prometheus_timeout} must not exceed "
            f"REQUEST_DEADLINE={config.request_deadline}"
        )
    return config


def _with_connection_settings(environ: Mapping[str, str], defaults: Config) -> Config:
    """Credentials, TLS and headers for Prometheus; values are never echoed in errors."""
    token = (environ.get("PROMETHEUS_BEARER_TOKEN") or "").strip() or None
    if token is not None and not is_sendable_token(token):
        raise ConfigError("PROMETHEUS_BEARER_TOKEN holds characters an HTTP header cannot "
                          "carry (a line break, a space or non-ASCII text?)")
    token_file = _read(environ, "PROMETHEUS_BEARER_TOKEN_FILE", _parse_readable_file, None)
    username = environ.get("PROMETHEUS_USERNAME") or None
    password = environ.get("PROMETHEUS_PASSWORD")
    password_file = _read(environ, "PROMETHEUS_PASSWORD_FILE", _parse_readable_file, None)
    if password is not None and password_file:
        raise ConfigError("set PROMETHEUS_PASSWORD or PROMETHEUS_PASSWORD_FILE, not both")
    if password_file:
        with open(password_file, encoding="utf-8") as handle:
            password = handle.read().strip()
    if token and token_file:
        raise ConfigError("set PROMETHEUS_BEARER_TOKEN or PROMETHEUS_BEARER_TOKEN_FILE, "
                          "not both")
    if username and (token or token_file):
        raise ConfigError("set a bearer token (PROMETHEUS_BEARER_TOKEN or "
                          "PROMETHEUS_BEARER_TOKEN_FILE) or PROMETHEUS_USERNAME/PASSWORD, "
                          "not both")
    if urlsplit(defaults.prometheus_url).username is not None and (username or token
                                                                    or token_file):
        raise ConfigError("PROMETHEUS_URL carries credentials (user:password@): set them there "
                          "or in PROMETHEUS_USERNAME/PASSWORD or a bearer token, not both")
    if password is not None and not _latin1(password):
        raise ConfigError("PROMETHEUS_PASSWORD holds characters HTTP basic auth cannot carry "
                          "(only Latin-1 text is sent)")
    if username and password is None:
        raise ConfigError("PROMETHEUS_USERNAME needs PROMETHEUS_PASSWORD or "
                          "PROMETHEUS_PASSWORD_FILE")
    if password is not None and not username:
        raise ConfigError("PROMETHEUS_PASSWORD needs PROMETHEUS_USERNAME")
    cert = _read(environ, "PROMETHEUS_CLIENT_CERT", _parse_readable_file, None)
    key = _read(environ, "PROMETHEUS_CLIENT_KEY", _parse_readable_file, None)
    if bool(cert) != bool(key):
        raise ConfigError("PROMETHEUS_CLIENT_CERT and PROMETHEUS_CLIENT_KEY go together")
    ca_file = _read(environ, "PROMETHEUS_CA_FILE", _parse_readable_file, None)
    _check_tls_files(ca_file, (cert, key) if cert and key else None)
    return replace(
        defaults,
        bearer_token=token,
        bearer_token_file=token_file,
        basic_auth=(username, password) if username and password is not None else None,
        ca_file=ca_file,
        client_cert=(cert, key) if cert and key else None,
        tls_verify=not _read(environ, "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", _parse_bool,
                             False),
        headers=_read(environ, "PROMETHEUS_HEADERS", _parse_headers, defaults.headers),
        prometheus_compression=_read(environ, "PROMETHEUS_COMPRESSION", _parse_compression,
                                     defaults.prometheus_compression),
        max_response_mb=_read(environ, "PROMETHEUS_MAX_RESPONSE_MB",
                              lambda t: _parse_int(t, 1, 4096), defaults.max_response_mb),
    )


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _check_tls_files(ca_file: str | None, client_cert: tuple[str, str] | None) -> None:
    """Load the CA bundle and the client key pair once, so a file that cannot work stops
    start-up instead of failing every request with a TLS error."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"PROMETHEUS_CA_FILE holds no usable certificate ({exc.reason})"
                              ) from None
    if client_cert:
        try:
            context.load_cert_chain(*client_cert)
        except ssl.SSLError as exc:
            raise ConfigError("PROMETHEUS_CLIENT_CERT and PROMETHEUS_CLIENT_KEY are not a "
                              f"certificate and its private key ({exc.reason})") from None
