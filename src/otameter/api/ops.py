"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import metrics
from ..clock import to_ms
from ..health import data_dir_problem, schema_problem
from ..metering.rollups import rollup_lag_seconds
from .common import JSONResponse, runtime

# A database that does not answer within this time is not ready.
READY_TIMEOUT_SECONDS = 5.0


async def healthz(_request: Request) -> Response:
    """Liveness: the process serves requests; nothing else is looked at."""
    return JSONResponse({"status": "ok"})


def _not_ready(reason: str) -> Response:
    return JSONResponse({"error": f"not ready: {reason}", "status": "KO"}, status_code=503)


async def readyz(request: Request) -> Response:
    rt = runtime(request)

    def database() -> str | None:
        with rt.read_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            try:
                return schema_problem(conn)
            except DBAPIError:
                return "the database has no otameter schema"

    try:
        problem = await asyncio.wait_for(run_in_threadpool(database), READY_TIMEOUT_SECONDS)
    except TimeoutError:
        return _not_ready(f"the database did not answer within {READY_TIMEOUT_SECONDS:g} s")
    except Exception as exc:
        return _not_ready(f"the database does not answer: {type(exc).__name__}")
    if problem:
        return _not_ready(problem)
    if not rt.writer.alive:
        return _not_ready("the writer thread is not running")
    problem = await run_in_threadpool(data_dir_problem, rt.settings.data_dir, create=True)
    if problem:
        return _not_ready(problem)
    return JSONResponse({"status": "ok"})


async def metrics_text(request: Request) -> Response:
    rt = runtime(request)
    token = rt.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse(
                {"error": "Missing or invalid metrics token", "status": "KO"},
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
    now_ms = to_ms(rt.clock.now())

    def lag() -> float:
        with rt.read_engine.connect() as conn:
            return rollup_lag_seconds(conn, now_ms)

    request.app.meter.flush()  # this process's requests up to this one
    body = metrics.exposition(await run_in_threadpool(lag))
    return Response(body, media_type=metrics.CONTENT_TYPE)


routes = [
    Route("/health", healthz, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_text, methods=["GET"]),
]
