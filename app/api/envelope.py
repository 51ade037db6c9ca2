"""Build the `{success, data, message, error}` envelope that every response carries."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app


def ok(data: Any, message: str | None = None, status: int = 200) -> Response:
    """Wrap a successful result."""
    return envelope_response(
        {"success": True, "data": data, "message": message, "error": None}, status
    )


def fail(status: int, error: str) -> Response:
    """Wrap a failure: no data, no message, an actionable error."""
    return envelope_response(
        {"success": False, "data": None, "message": None, "error": error}, status
    )


def envelope_response(body: dict[str, Any], status: int) -> Response:
    """Serialize an already-built envelope."""
    response = current_app.json.response(body)
    response.status_code = status
    return response
