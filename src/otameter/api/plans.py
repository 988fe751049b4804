"""Org routes: plans, an org's usage against its plan, org webhooks and their deliveries, and
the org's release-guard thresholds."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import orjson
from sqlalchemy import Connection, select, update
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import Level, Principal
from ..billing.plans import list_plans
from ..billing.usage import compute_usage
from ..clock import to_ms
from ..errors import ApiError, bad_request, not_found
from ..rate_limits import refused_by_day
from ..release_guard import THRESHOLDS
from ..storage import schema as s
from ..webhooks import MIN_SECRET_LENGTH, TargetError, delivery_json, parse_target
from .common import JSONResponse, caller, json_object, query_page, read_db, runtime
from .management import INSUFFICIENT, iso, org_access

PAGE_SIZE = 50
STATUSES = ("pending", "delivered", "failed")


async def get_plans(request: Request) -> Response:
    await caller(request)
    plans = await read_db(request, list_plans)
    return JSONResponse([plan.as_json() for plan in plans])


async def get_usage(request: Request) -> Response:
    return JSONResponse(await read_usage(request, await caller(request)))


async def read_usage(request: Request, principal: Principal) -> dict[str, Any]:
    """The org's usage against its plan (``GET /organization/{org_id}/usage``; the
    dashboard's too)."""
    rt = runtime(request)
    org_id = request.path_params["org_id"]
    now = rt.clock.now()

    def read(conn: Connection) -> dict[str, Any]:
        org = org_access(conn, principal, org_id, Level.READ)
        if principal.limited_apps is not None:
            # Usage covers every app of the org, more than this key may read.
            raise ApiError(403, INSUFFICIENT)
        usage = compute_usage(conn, org, now.date())
        body = usage.as_json(to_ms(now))
        # Check-ins of new devices refused this cycle by the new-devices-per-address limit.
        refused = refused_by_day(conn, usage.app_ids, usage.cycle_start, usage.cycle_end)
        body["refused_new_devices"] = sum(refused.values())
        return body

    return await read_db(request, read)


def _webhook_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "org_id": row.org_id,
        "url": row.url,
        "created_at": iso(row.created_at),
    }


async def create_webhook(request: Request) -> Response:
    principal = await caller(request)
    rt = runtime(request)
    org_id = request.path_params["org_id"]
    data = await json_object(request)
    url = data.get("url")
    try:
        target = parse_target(url)
    except TargetError as exc:
        raise bad_request(str(exc)) from None
    secret = data.get("secret")
    generated = secret is None
    if generated:
        secret = secrets.token_urlsafe(32)
    if not isinstance(secret, str) or not MIN_SECRET_LENGTH <= len(secret) <= 255:
        raise bad_request(f"'secret' must be a string of {MIN_SECRET_LENGTH} to 255 characters")
    hook_id = str(uuid.uuid4())
    now_ms = to_ms(rt.clock.now())
    # Access first: a caller who may not manage this org's webhooks learns nothing more.
    await read_db(
        request, lambda conn: org_access(conn, principal, org_id, Level.ADMIN, whole_org=True)
    )
    try:
        await run_in_threadpool(rt.webhook_policy.check, target)
    except TargetError as exc:
        raise bad_request(str(exc)) from None

    def write(conn: Connection) -> dict[str, Any]:
        org_access(conn, principal, org_id, Level.ADMIN, whole_org=True)
        conn.execute(
            s.webhooks.insert().values(
                id=hook_id,
                org_id=org_id,
                url=url,
                secret=secret,
                created_by=principal.user_id,
                created_at=now_ms,
            )
        )
        row = conn.execute(select(s.webhooks).where(s.webhooks.c.id == hook_id)).one()
        return _webhook_json(row)

    body = await rt.writer.run(write)
    if generated:
        # Shown once: the receiver needs it to verify signatures.
        body["secret"] = secret
    return JSONResponse(body, status_code=201)


async def list_webhooks(request: Request) -> Response:
    principal = await caller(request)
    org_id = request.path_params["org_id"]

    def read(conn: Connection) -> list[dict[str, Any]]:
        org_access(conn, principal, org_id, Level.ADMIN, whole_org=True)
        w = s.webhooks.c
        rows = conn.execute(
            select(s.webhooks)
            .where(w.org_id == org_id, w.deleted_at.is_(None))
            .order_by(w.created_at, w.id)
        )
        return [_webhook_json(r) for r in rows]

    return JSONResponse(await read_db(request, read))


async def delete_webhook(request: Request) -> Response:
    principal = await caller(request)
    rt = runtime(request)
    org_id = request.path_params["org_id"]
    hook_id = request.path_params["webhook_id"]
    now_ms = to_ms(rt.clock.now())

    def write(conn: Connection) -> None:
        org_access(conn, principal, org_id, Level.ADMIN, whole_org=True)
        w = s.webhooks.c
        result = conn.execute(
            update(s.webhooks)
            .where(w.id == hook_id, w.org_id == org_id, w.deleted_at.is_(None))
            .values(deleted_at=now_ms)
        )
        if not result.rowcount:
            raise not_found("Webhook not found")

    await rt.writer.run(write)
    return JSONResponse({"status": "ok"})


async def list_deliveries(request: Request) -> Response:
    principal = await caller(request)
    org_id = request.path_params["org_id"]
    params = request.query_params
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise bad_request(f"'status' must be one of {', '.join(STATUSES)}")
    page = query_page(request)

    def read(conn: Connection) -> list[dict[str, Any]]:
        org_access(conn, principal, org_id, Level.ADMIN, whole_org=True)
        d = s.webhook_deliveries.c
        query = select(s.webhook_deliveries).where(d.org_id == org_id)
        if status is not None:
            query = query.where(d.status == status)
        rows = conn.execute(query.order_by(d.id.desc()).limit(PAGE_SIZE).offset(page * PAGE_SIZE))
        return [delivery_json(r) for r in rows]

    return JSONResponse(await read_db(request, read))


# -- release guard thresholds (release_guard.py) ---------------------------------------------


def _guard_json(rt: Any, org: Any) -> dict[str, Any]:
    overrides = orjson.loads(org.release_guard) if org.release_guard else {}
    return {
        "org_id": org.id,
        **rt.release_guard.thresholds(org.release_guard),
        "overrides": overrides,
    }


async def get_release_guard(request: Request) -> Response:
    """The org's release-guard thresholds: the server's, with the org's own overrides."""
    principal = await caller(request)
    rt = runtime(request)
    org_id = request.path_params["org_id"]

    def read(conn: Connection) -> dict[str, Any]:
        return _guard_json(rt, org_access(conn, principal, org_id, Level.READ))

    return JSONResponse(await read_db(request, read))


async def put_release_guard(request: Request) -> Response:
    """Set some of the org's thresholds; ``null`` goes back to the server's value."""
    principal = await caller(request)
    rt = runtime(request)
    org_id = request.path_params["org_id"]
    data = await json_object(request)
    unknown = sorted(set(data) - set(THRESHOLDS))
    if unknown:
        raise bad_request(f"unknown threshold {unknown[0]!r}; use {', '.join(THRESHOLDS)}")
    for name, value in data.items():
        if value is None:
            continue
        if name == "min_devices":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**9:
                raise bad_request("'min_devices' must be an integer from 1 to 1000000000")
        elif not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise bad_request(f"'{name}' must be a rate from 0 to 1")

    def write(conn: Connection) -> dict[str, Any]:
        org = org_access(conn, principal, org_id, Level.ADMIN, whole_org=True)
        overrides = orjson.loads(org.release_guard) if org.release_guard else {}
        for name, value in data.items():
            if value is None:
                overrides.pop(name, None)
            else:
                overrides[name] = value
        stored = orjson.dumps(overrides).decode() if overrides else None
        conn.execute(update(s.orgs).where(s.orgs.c.id == org_id).values(release_guard=stored))
        return _guard_json(rt, conn.execute(select(s.orgs).where(s.orgs.c.id == org_id)).one())

    return JSONResponse(await rt.writer.run(write))


routes = [
    Route("/organization/{org_id}/release_guard", get_release_guard, methods=["GET"]),
    Route("/organization/{org_id}/release_guard", put_release_guard, methods=["PUT"]),
    Route("/plans", get_plans, methods=["GET"]),
    Route("/organization/{org_id}/usage", get_usage, methods=["GET"]),
    Route("/organization/{org_id}/webhooks", create_webhook, methods=["POST"]),
    Route("/organization/{org_id}/webhooks", list_webhooks, methods=["GET"]),
    Route("/organization/{org_id}/webhooks/deliveries", list_deliveries, methods=["GET"]),
    Route("/organization/{org_id}/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
]
