"""The id of the request being served, for logs and the queries sent on its behalf.

Flask-free: the Prometheus client reads it to send `X-Request-ID` upstream, and the log
filter to stamp every record. Thread pools copy it explicitly (`contextvars.copy_context`),
since a ContextVar does not follow work submitted to another thread by itself.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "X-Request-ID"
# What we pass on as received: an id a proxy or client made (a UUID, a trace id, an
# ingress' $req_id). Anything else (too long, spaces, control characters) is replaced,
# so a client cannot inject text into our logs or our upstream requests.
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:+/=-]{1,128}$")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current() -> str | None:
    """The id of the request this code runs for, or None outside any request."""
    return _current.get()


def accept(received: str | None) -> str:
    """Return the id a client sent when it is safe to log and forward, else a new one."""
    if received is not None and _ACCEPTABLE.match(received):
        return received
    return uuid.uuid4().hex


def bind(request_id: str | None) -> None:
    """Make `request_id` the current one for this context (None: outside any request)."""
    _current.set(request_id)
