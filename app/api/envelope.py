"""Build the `{success, data, message, error}` envelope that every response carries."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, current_app, g, request

from app.cache import CachedBody


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


def envelope_bytes(data: Any, message: str) -> bytes:
    """Serialize a success envelope outside any request (the cache refreshes in threads)."""
    return orjson.dumps({"success": True, "data": data, "message": message, "error": None})


def cached_ok(entry: CachedBody, ttl: float) -> Response:
    """Serve a cached success body with validators; 304 when the client has it already."""
    response = Response(entry.body, mimetype="application/json")
    response.set_etag(entry.etag)
    age = entry.age()
    response.headers["Cache-Control"] = f"public, max-age={max(0, int(ttl - age))}"
    response.headers["Age"] = str(int(age))
    g.body_etag = entry.etag  # lets the compressor reuse its work for this exact body
    return response.make_conditional(request)
