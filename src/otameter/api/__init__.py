"""The HTTP application: plugin endpoints, management API and statistics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .. import openapi
from ..errors import ApiError
from ..runtime import Runtime
from . import devices, management, plans, plugin, statistics
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


class OtameterApp(Starlette):
    """The Starlette app, with a direct path for ``POST /updates``.

    Every app open of every device makes that request. Starlette's middleware and router
    cost about a quarter of the event loop's time per request there, so this path calls the
    handler itself and answers errors as the app's exception handlers do. Every other
    request takes the usual way.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"][len(scope.get("root_path", "")) :] == "/updates"
        ):
            scope["app"] = self
            request = Request(scope, receive, send)
            try:
                response = await plugin.updates(request)
            except ApiError as exc:
                response = await _api_error(request, exc)
            except HTTPException as exc:
                response = await _http_error(request, exc)
            except Exception as exc:
                response = await _server_error(request, exc)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


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

    app = OtameterApp(
        routes=[
            Route("/health", health, methods=["GET"]),
            *plugin.routes,
            *management.routes,
            *devices.routes,
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
