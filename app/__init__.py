"""GPU monitoring API: NVIDIA GPU metrics from Prometheus as a clean REST API."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request
from flask_compress import Compress
from flask_cors import CORS

from app.telemetry import request_id

if TYPE_CHECKING:
    from app.cache import ByteBoundedLRU
    from app.state import RequestStats
    from app.telemetry.metrics import Telemetry

__version__ = "0.1.0"

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("app.access")


def create_app(overrides: Mapping[str, str] | None = None) -> Flask:
    """Build the Flask app from the environment, with `overrides` taking precedence."""
    # Imports here keep `app.__version__` importable by setup tools without Flask's deps.
    from app.api import capabilities, debug, fleet, gpu, health, history, openapi
    from app.api import metrics as metrics_view
    from app.cache import ByteBoundedLRU
    from app.config import load_config
    from app.errors import register_error_handlers
    from app.json import OrjsonProvider
    from app.state import EXTENSION_KEY, build_state
    from app.telemetry.logs import configure_logging
    from app.ui import bp as ui_bp

    config = load_config({**os.environ, **(overrides or {})})
    configure_logging(config.log_level, config.log_format)

    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    state = build_state(config)
    app.extensions[EXTENSION_KEY] = state
    _register_cors(app, config.cors_origins)
    for blueprint in (health.bp, gpu.bp, history.bp, fleet.bp, capabilities.bp, openapi.bp,
                      ui_bp):
        app.register_blueprint(blueprint)
    if not config.metrics_port:  # else gunicorn's master serves them on that port
        app.register_blueprint(metrics_view.bp)
    if config.debug_endpoints:
        logger.warning("debug endpoints are ENABLED under /debug: do not expose this service")
        app.register_blueprint(debug.bp)
    openapi.publish_spec(app)
    register_error_handlers(app)
    _register_access_log(app, state.stats, state.telemetry)  # runs last and sees all
    _register_request_guards(app)
    compressed: ByteBoundedLRU[bytes] = ByteBoundedLRU(config.cache_max_mb << 20, len)
    _register_compression(app, compressed)
    logger.info("serving GPU metrics from Prometheus at %s", state.prometheus.display_url)
    return app


def _register_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """Let browsers on `origins` read every answer and the cache headers."""
    CORS(
        app,
        # A lone "*" is sent as "*", as the original backend did; a list is matched per origin.
        resources={r"/*": {"origins": "*" if origins == ("*",) else list(origins)}},
        methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization", "If-None-Match", "X-Request-ID"],
        # Age and Cache-Status say how old (or stale-if-error) an answer is; ETag validates
        # it; X-Request-ID finds the request in our logs.
        expose_headers=["ETag", "Age", "Cache-Status", "X-Request-ID"],
        max_age=86400,
        send_wildcard=True,
    )


# Methods counted under their own name; anything else a client invents is "other".
_KNOWN_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})


def _register_access_log(app: Flask, stats: RequestStats, telemetry: Telemetry) -> None:
    """Give each request an id; one log line and the request metrics per request."""
    from app.telemetry.metrics import UNMATCHED_ROUTE

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id.accept(request.headers.get(request_id.HEADER))
        request_id.bind(g.request_id)

    @app.after_request
    def log_request(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        stats.record(response.status_code)
        # The route template, never the path: /metrics must not grow with what is asked.
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        method = request.method if request.method in _KNOWN_METHODS else "other"
        telemetry.request_done(route, method, response.status_code, elapsed)
        if "request_id" in g:
            response.headers[request_id.HEADER] = g.request_id
        access_logger.info(
            "%s %s %d %.1fms", request.method, request.path, response.status_code,
            elapsed * 1000,
            extra={"method": request.method, "path": request.path, "route": route,
                   "status": response.status_code, "duration_ms": round(elapsed * 1000, 3),
                   "remote_addr": request.remote_addr,
                   "user_agent": request.headers.get("User-Agent")},
        )
        return response

    @app.teardown_request
    def forget_request_id(_exc: BaseException | None) -> None:
        request_id.bind(None)  # gunicorn's threads serve the next request in this context


# Below gunicorn's socket limits (gunicorn.conf.py), so an oversized request still gets
# the envelope rather than gunicorn's plain-text 400.
MAX_QUERY_STRING_BYTES = 4096
MAX_HEADER_BYTES = 8192
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # JSON only: nothing may be loaded, framed or executed from our responses. The
    # dashboard page sets its own (app/ui).
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _register_request_guards(app: Flask) -> None:
    """Refuse oversized requests in the envelope; add security headers to every response."""
    from app.errors import HeadersTooLargeError, QueryTooLongError

    @app.before_request
    def refuse_oversized() -> None:
        if len(request.query_string) > MAX_QUERY_STRING_BYTES:
            raise QueryTooLongError(
                f"query string longer than {MAX_QUERY_STRING_BYTES} bytes; use fewer filters")
        size = sum(len(k) + len(v) + 4 for k, v in request.headers.items())
        if size > MAX_HEADER_BYTES:
            raise HeadersTooLargeError(f"request headers larger than {MAX_HEADER_BYTES} bytes")

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


class _CompressedBodies:
    """flask-compress cache backend: compressed copies of cached bodies, keyed by ETag."""

    def __init__(self, store: ByteBoundedLRU[bytes]) -> None:
        self._store = store

    def get(self, key: str) -> bytes | None:
        found = None if key.endswith(";") else self._store.get(key)
        return found if isinstance(found, bytes) else None

    def set(self, key: str, value: bytes) -> None:
        if not key.endswith(";"):
            self._store.set(key, value)


def _register_compression(app: Flask, store: ByteBoundedLRU) -> None:
    """zstd, brotli or gzip as the client accepts; each cached body is compressed once."""
    app.config.update(
        COMPRESS_ALGORITHM=["zstd", "br", "gzip"],
        COMPRESS_BR_LEVEL=4,
        COMPRESS_LEVEL=6,
        COMPRESS_MIN_SIZE=1024,
        COMPRESS_MIMETYPES=["application/json"],
        # Bodies that did not come from the response cache get an empty key: not kept.
        COMPRESS_CACHE_KEY=lambda _request: g.get("body_etag", ""),
        COMPRESS_CACHE_BACKEND=lambda: _CompressedBodies(store),
    )
    Compress(app)
