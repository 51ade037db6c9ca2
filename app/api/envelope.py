"""Build the `{success, data, message, error}` envelope that every response carries."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from flask import Response, current_app, g, request

from app.cache import Served


def ok(data: Any, message: str | None = None, status: int = 200) -> Response:
    """Wrap a successful result."""
    return json_response(
        {"success": True, "data": data, "message": message, "error": None}, status
    )


def fail(status: int, error: str) -> Response:
    """Wrap a failure: no data, no message, an actionable error."""
    return json_response(
        {"success": False, "data": None, "message": None, "error": error}, status
    )


def json_response(body: dict[str, Any], status: int) -> Response:
    """Serialize a JSON body: an envelope, or the OpenAPI document (which is not in one)."""
    return current_app.response_class(orjson.dumps(body), status=status,
                                      mimetype="application/json")


# envelope_bytes writes the keys in this order, so a body ends with its message and error.
_MESSAGE_KEY = b',"message":'
_SUCCESS_TAIL = b',"error":null}'


def envelope_bytes(data: Any, message: str) -> bytes:
    """Serialize a success envelope outside any request (the cache refreshes in threads)."""
    return orjson.dumps({"success": True, "data": data, "message": message, "error": None})


def with_message(body: bytes, message: str) -> bytes:
    """Return a body built by envelope_bytes with another message, without parsing its data.

    The data comes first and every quote inside a JSON string is escaped, so the last
    `,"message":` is the envelope's own.
    """
    cut = body.rfind(_MESSAGE_KEY)
    if cut < 0 or not body.endswith(_SUCCESS_TAIL):
        raise ValueError("not a success envelope built by envelope_bytes")
    return b"".join((memoryview(body)[:cut], _MESSAGE_KEY, orjson.dumps(message), _SUCCESS_TAIL))


def stale_message(reason: str, age: float) -> str:
    """Say what failed and how old the data served instead is."""
    return f"{reason}; serving data from {int(age)} s ago"


# RFC 9211 Cache-Status, sent only with an answer served after a failure (stale-if-error).
CACHE_NAME = "gpu-monitor-api"


def cached_ok(served: Served, ttl: float) -> Response:
    """Serve a cached success body with validators; 304 when the client has it already.

    Age is the data's age and max-age its whole freshness lifetime (RFC 9111 adds the two
    up), so max-age minus Age is what is left of the TTL. An answer served after a failed
    refresh carries the failure in its message, its own ETag and a Cache-Status header.
    """
    age = int(served.age)
    if served.stale_because is None:
        body, etag = served.body, served.etag
        left = int(ttl - served.age)
        cache_control = f"public, max-age={age + left if left > 0 else 0}"
    else:
        message = stale_message(served.stale_because, served.age)
        body = with_message(served.body, message)
        # Derived from the fresh validator and the message: unique per body, no 5 MB hash.
        etag = hashlib.blake2b(f"{served.etag}\0{message}".encode(),
                               digest_size=12).hexdigest()
        cache_control = "no-cache"
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = cache_control
    response.headers["Age"] = str(age)
    if served.stale_because is not None:
        response.headers["Cache-Status"] = (
            f'{CACHE_NAME}; hit; ttl={int(ttl - served.age)}; detail="stale-if-error"')
    g.body_etag = etag  # lets the compressor reuse its work for this exact body
    response.make_conditional(request)  # in place: 304 without a body when it matches
    return response
