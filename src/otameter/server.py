"""Running the HTTP server: one process, or several sharing only the database."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

import uvicorn
from starlette.applications import Starlette

from .api import create_app
from .config import Settings
from .runtime import Runtime


def app_factory() -> Starlette:
    """Entry point of each worker process; settings come from OTAMETER_* variables."""
    return create_app(Runtime(Settings.from_env()))


def serve(
    settings: Settings, host: str, port: int, workers: int, log_config: dict[str, Any]
) -> None:
    logging.config.dictConfig(log_config)
    common: dict[str, Any] = {
        "log_config": log_config,
        "host": host,
        "port": port,
        "http": "httptools",
        "loop": "uvloop",
        "access_log": False,
        "proxy_headers": False,  # X-Forwarded-For is trusted only via --trusted-proxy
        "timeout_graceful_shutdown": 10,
    }
    if workers > 1:
        uvicorn.run("otameter.server:app_factory", factory=True, workers=workers, **common)
    else:
        uvicorn.run(create_app(Runtime(settings)), **common)
