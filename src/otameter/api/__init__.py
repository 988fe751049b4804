"""The HTTP application: plugin endpoints, management API and statistics."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .. import metrics, openapi
from ..errors import ApiError
from ..logs import log_request
from ..runtime import Runtime
from . import management, ops, plans, plugin, statistics
from .common import JSONResponse, client_ip, error_response

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

    meter: metrics.RequestMeter
    access_log = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["method"] == "POST" and scope["path"][len(scope.get("root_path", "")) :] == (
            "/updates"
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
            try:
                await response(scope, receive, send)
            finally:
                self._measured(scope, "/updates", response.status_code, started)
            return
        status = 500  # what the client gets when no answer starts

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, send_noting_status)
        finally:
            route = scope.get("route")
            self._measured(scope, getattr(route, "path", metrics.UNMATCHED), status, started)

    def _measured(self, scope: Scope, route: str, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        self.meter.observe(route, scope["method"], status, seconds)
        if self.access_log:
            # The client as the rest of otameter sees it: behind a trusted proxy, the
            # X-Forwarded-For hop it vouches for.
            trusted = self.state.runtime.settings.trusted_proxies
            log_request(
                client_ip(Request(scope), trusted),
                scope["method"],
                scope["path"],
                route,
                status,
                seconds,
            )


def create_app(rt: Runtime, *, manage_runtime: bool = True) -> Starlette:
    """The ASGI app. With ``manage_runtime`` the app starts and stops the runtime itself."""

    meter = metrics.RequestMeter()

    async def flush_metrics() -> None:
        # Other workers answer scrapes too: they see this one's requests within a second.
        while True:
            await asyncio.sleep(1.0)
            meter.flush()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if manage_runtime and not rt.started:
            rt.start()
        flusher = asyncio.create_task(flush_metrics())
        try:
            yield
        finally:
            flusher.cancel()
            meter.flush()
            if manage_runtime:
                rt.stop()
            metrics.process_exited(os.getpid())

    # Imported here: the dashboard's modules import the API's.
    from ..dashboard.routes import routes as dashboard_routes

    app = OtameterApp(
        routes=[
            *ops.routes,
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
    app.access_log = rt.settings.access_log
    app.meter = meter
    return app
