"""Log set-up of the server: plain text or one JSON object a line, and the access log."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

ACCESS_LOGGER = "otameter.access"
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def log_config(fmt: str, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for otameter and uvicorn (passed to every worker)."""
    if fmt not in {"text", "json"}:
        raise ValueError("--log-format must be text or json")
    formatter: dict[str, Any] = (
        {"()": "otameter.logs.JsonFormatter"}
        if fmt == "json"
        else {
            "()": "otameter.logs.UtcFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's own handlers go: its lines take the same format as ours.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


class UtcFormatter(logging.Formatter):
    """The text format, its times in UTC like the JSON format's."""

    converter = staticmethod(time.gmtime)


access = logging.getLogger(ACCESS_LOGGER)


def log_request(
    client: str | None, method: str, path: str, route: str, status: int, seconds: float
) -> None:
    duration_ms = round(seconds * 1000, 2)
    access.info(
        '%s "%s %s" %d %.2fms',
        client or "-",
        method,
        path,
        status,
        duration_ms,
        extra={
            "client": client,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
        },
    )
