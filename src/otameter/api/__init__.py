"""The HTTP application: plugin endpoints, management API and statistics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import openapi
from ..errors import ApiError
from ..runtime import Runtime
from . import management, plans, plugin, statistics
from .common import JSONResponse, error_response

log = logging.getLogger(__name__)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": exc.detail or "Error", "status": "KO"},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _server_error(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"error": "Internal server error", "status": "KO"}, status_code=500)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(rt: Runtime, *, manage_runtime: bool = True) -> Starlette:
    """The ASGI app. With ``manage_runtime`` the app starts and stops the runtime itself."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if manage_runtime and not rt.started:
            rt.start()
        try:
            yield
        finally:
            if manage_runtime:
                rt.stop()

    from starlette.routing import Route

    # Imported here: the dashboard's modules import the API's.
    from ..dashboard.routes import routes as dashboard_routes

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            *plugin.routes,
            *management.routes,
            *statistics.routes,
            *openapi.routes,
            *plans.routes,
            *dashboard_routes,
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            500: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.runtime = rt
    return app
