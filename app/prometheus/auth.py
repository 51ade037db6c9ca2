"""Bearer-token authentication whose token file may rotate under us."""

from __future__ import annotations

import os
import re
import threading

import requests
from requests.auth import AuthBase

from app.prometheus.errors import PrometheusUnavailableError

# What an HTTP header can carry as a token: visible ASCII, no spaces or line breaks.
TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")


def is_sendable_token(token: str) -> bool:
    """Tell whether a token can go in an Authorization header as it is."""
    return bool(TOKEN_CHARACTERS.fullmatch(token))


class BearerTokenAuth(AuthBase):
    """Add `Authorization: Bearer …`, re-reading the token file when it changes.

    Kubernetes rotates projected service-account tokens in place, so the file is checked
    for a new modification time on every request (one stat call) and re-read only then.
    """

    def __init__(self, token: str | None, token_file: str | None) -> None:
        self._token = token.strip() if token else None
        self._file = token_file
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token
        return f"BearerTokenAuth(file={self._file!r})"

    def current_token(self) -> str:
        """Return the token to send, reading the file again if it was replaced."""
        if self._file is None:
            assert self._token is not None
            return self._token
        try:
            info = os.stat(self._file)
            stamp = (info.st_mtime_ns, info.st_ino)
            with self._lock:
                if stamp != self._stamp:
                    with open(self._file, encoding="utf-8") as handle:
                        self._token = handle.read().strip()
                    self._stamp = stamp
                token = self._token
        except OSError as exc:
            raise PrometheusUnavailableError(
                f"cannot read the Prometheus bearer token file {self._file}: {exc.strerror}"
            ) from exc
        if not token:
            raise PrometheusUnavailableError(
                f"the Prometheus bearer token file {self._file} is empty"
            )
        if not is_sendable_token(token):
            # Never echo the value: it is a secret, and likely a mangled one.
            raise PrometheusUnavailableError(
                f"the Prometheus bearer token file {self._file} holds characters an HTTP "
                "header cannot carry (a line break, a space or non-ASCII text?)"
            )
        return token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.current_token()}"
        return request
