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
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .. import metrics, openapi
from ..errors import ApiError
from ..logs import log_request
from ..runtime import Runtime
from . import bounds, devices, management, ops, plans, plugin, statistics
from .common import JSONResponse, client_ip, error_response

log = logging.getLogger(__name__)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _body_too_large(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, bounds.BodyTooLarge)
    # The rest of the body is not read: the connection closes after this answer.
    return Response(
        bounds.error_body(request.url.path, 413, "payload_too_large", exc.message),
        status_code=413,
        media_type="application/json",
        headers={"connection": "close"},
    )


async def _client_gone(_request: Request, _exc: Exception) -> Response:
    # The client left, or its stalled body was answered 408 by the server: this answer goes
    # nowhere (uvicorn drops what is sent to a closed connection).
    return Response(status_code=400)


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

    Every request first meets the bounds of ``bounds.py`` (body size, control characters in
    the URL), on both ways.
    """

    meter: metrics.RequestMeter
    access_log = False
    body_limits: bounds.BodyLimits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"][len(scope.get("root_path", "")) :]
        limit = self.body_limits.for_request(scope["method"], path)
        if await bounds.refuse_early(scope, send, path, limit):
            return
        if limit is not None:
            receive = bounds.counting_receive(receive, limit)
        if scope["method"] == "POST" and path == "/updates":
            scope["app"] = self
            request = Request(scope, receive, send)
            try:
                response = await plugin.update_check(
                    self.state.runtime, request, await _read_body(receive)
                )
            except bounds.BodyTooLarge as exc:
                response = await _body_too_large(request, exc)
            except ClientDisconnect:
                return  # nobody to answer (a stalled body was answered 408 by the server)
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


async def _read_body(receive: Receive) -> bytes:
    """The request's body, straight from the ASGI messages (one, for a plugin's request)."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        parts.append(message.get("body", b""))
    return b"".join(parts)


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
            *devices.routes,
            *statistics.routes,
            *openapi.routes,
            *plans.routes,
            *dashboard_routes,
        ],
        exception_handlers={
            bounds.BodyTooLarge: _body_too_large,
            ClientDisconnect: _client_gone,
            ApiError: _api_error,
            HTTPException: _http_error,
            500: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.access_log = rt.settings.access_log
    app.meter = meter
    app.body_limits = bounds.BodyLimits.from_settings(rt.settings)
    return app
