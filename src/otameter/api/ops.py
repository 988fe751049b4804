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
from ..models.common import StatusOk
from ..openapi import answer, describe, error
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


# -- the OpenAPI description of these routes --------------------------------------------------


describe(
    "/health",
    {
        "get": {
            "tags": ["server"],
            "summary": "Liveness (the same as /healthz)",
            "security": [],
            "responses": {"200": answer("Up.", StatusOk)},
        }
    },
)

describe(
    "/healthz",
    {
        "get": {
            "tags": ["server"],
            "summary": "Liveness",
            "description": "200 while the process serves requests; nothing else is checked.",
            "security": [],
            "responses": {"200": answer("Up.", StatusOk)},
        }
    },
)

describe(
    "/readyz",
    {
        "get": {
            "tags": ["server"],
            "summary": "Readiness",
            "description": "200 only when the database answers, its schema is the one this "
            "server needs, the writer thread runs and the data directory is writable; "
            "otherwise 503 with the reason.",
            "security": [],
            "responses": {
                "200": answer("Ready.", StatusOk),
                "503": error("Not ready; `error` says why."),
            },
        }
    },
)

describe(
    "/metrics",
    {
        "get": {
            "tags": ["server"],
            "summary": "Prometheus metrics",
            "description": "Prometheus text format: `otameter_http_requests_total` (route "
            "template, method, status), `otameter_http_request_duration_seconds`, "
            "`otameter_events_ingested_total` (kind), `otameter_group_commit_events`, "
            "`otameter_group_commit_duration_seconds`, `otameter_writer_queue_depth`, "
            "`otameter_rollup_lag_seconds`, `otameter_webhook_deliveries_total` (outcome). "
            "With several workers the values of all of them. When `OTAMETER_METRICS_TOKEN` is "
            "set, `authorization: Bearer <token>` is required.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": error("`OTAMETER_METRICS_TOKEN` is set and the bearer token is not it."),
            },
        }
    },
)
