"""Running the HTTP server: one process, or several sharing only the database."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

import uvicorn
from starlette.applications import Starlette

from . import http_protocol
from .api import create_app
from .config import Settings
from .runtime import Runtime


def app_factory() -> Starlette:
    """Entry point of each worker process; settings come from OTAMETER_* variables."""
    settings = Settings.from_env()
    configure_connections(settings)
    return create_app(Runtime(settings))


def configure_connections(settings: Settings) -> None:
    http_protocol.configure(
        http_protocol.ConnectionLimits(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
        )
    )


def serve(
    settings: Settings, host: str, port: int, workers: int, log_config: dict[str, Any]
) -> None:
    logging.config.dictConfig(log_config)
    configure_connections(settings)
    common: dict[str, Any] = {
        "log_config": log_config,
        "host": host,
        "port": port,
        # httptools, with the bounds on request heads and connections it lacks.
        "http": "otameter.http_protocol:BoundedHttpToolsProtocol",
        "timeout_keep_alive": settings.keepalive_timeout_seconds,
        "loop": "uvloop",
        "access_log": False,
        "proxy_headers": False,  # X-Forwarded-For is trusted only via --trusted-proxy
        "timeout_graceful_shutdown": 10,
    }
    if workers > 1:
        uvicorn.run("otameter.server:app_factory", factory=True, workers=workers, **common)
    else:
        uvicorn.run(create_app(Runtime(settings)), **common)
