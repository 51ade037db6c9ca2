"""The error tree the views raise, and the handlers that turn any failure into the envelope."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from app.api.envelope import fail
from app.prometheus.errors import (
    PrometheusError,
    PrometheusTimeoutError,
    PrometheusUnavailableError,
)

logger = logging.getLogger(__name__)


class AppError(Exception):
    """An outcome other than success, with the HTTP status it deserves."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(AppError):
    """The caller sent something we cannot accept."""

    status = 400


class NotFoundError(AppError):
    """No such resource."""

    status = 404


class QueryTooLongError(AppError):
    """The query string is longer than we accept."""

    status = 414


class HeadersTooLargeError(AppError):
    """The request headers are larger than we accept."""

    status = 431


def upstream_status(exc: PrometheusError) -> int:
    """Map trouble with Prometheus to an honest status: 503, 504 or 502."""
    if isinstance(exc, PrometheusUnavailableError):
        return 503
    if isinstance(exc, PrometheusTimeoutError):
        return 504
    return 502


def _describe_validation(messages: Any) -> str:
    if isinstance(messages, dict):
        parts = []
        for key, value in messages.items():
            parts.append(f"{key}: {_describe_validation(value)}")
        return "; ".join(parts)
    if isinstance(messages, list):
        return ", ".join(_describe_validation(m) for m in messages)
    return str(messages)


def register_error_handlers(app: Flask) -> None:
    """Answer every failure with the envelope: JSON, the right status, no stack trace."""

    @app.errorhandler(AppError)
    def handle_app_error(exc: AppError) -> Response:
        return fail(exc.status, exc.message)

    @app.errorhandler(ValidationError)
    def handle_validation_error(exc: ValidationError) -> Response:
        return fail(400, "invalid query parameters: " + _describe_validation(exc.messages))

    @app.errorhandler(PrometheusError)
    def handle_prometheus_error(exc: PrometheusError) -> Response:
        # Logged once here, at the boundary, without a traceback: it is not our bug.
        status = upstream_status(exc)
        logger.warning("upstream failure (%d): %s", status, exc)
        return fail(status, str(exc))

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        status = exc.code or 500
        messages = {
            404: "no such endpoint; see /api/openapi.json for the API",
            405: "method not allowed for this endpoint",
        }
        response = fail(status, messages.get(status, exc.description or exc.name))
        for name, value in exc.get_headers():
            if name in ("Allow", "Retry-After"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return fail(500, "internal server error; the service log has the details")
