"""Log lines as text (the default) or as one JSON object per line (LOG_FORMAT=json).

Every record carries the current request id (`request_id`, null outside a request), and
whatever a caller passes in `extra` (the access log's method, route, status...) becomes
fields of the JSON object. Used by the app and by gunicorn's own loggers alike.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

from app.telemetry import request_id

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request it was logged for."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.current()
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time (RFC 3339 UTC), level, logger, message, the pid
    (which gunicorn worker), and the extras."""
    return OrjsonFormatter(["levelname", "name", "message", "process"],
                           rename_fields={"levelname": "level", "name": "logger",
                                          "process": "pid"},
                           timestamp="time")


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of LOG_FORMAT."""
    return json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def stdout_handler(log_format: str) -> logging.Handler:
    """A stdout handler in `log_format` whose records carry the request id."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(log_format))
    return handler


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send every log line to stdout at `level`, in `log_format`."""
    logging.basicConfig(level=level.upper(), handlers=[stdout_handler(log_format)],
                        force=True)
    # urllib3 logs every retry; our client reports the outcome once, at the boundary.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def gunicorn_logconfig(level: str) -> dict[str, Any]:
    """gunicorn's `logconfig_dict` for JSON lines from its own loggers too."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
               "formatter": "json", "filters": ["request_id"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.telemetry.logs.json_formatter"}},
        "filters": {"request_id": {"()": "app.telemetry.logs.RequestIdFilter"}},
        "handlers": {"json_stdout": handler},
        # Replaces gunicorn's default root logger, whose handler this dict does not define.
        "root": {"level": level.upper(), "handlers": ["json_stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["json_stdout"],
                               "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["json_stdout"],
                                "propagate": False},
        },
    }
