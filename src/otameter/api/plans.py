"""Org routes: plans, an org's usage against its plan, org webhooks and their deliveries, and
the org's release-guard thresholds."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import msgspec
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
from ..models import plans as models
from ..models.common import StatusOk
from ..models.shapes import iso
from ..openapi import (
    AUTH,
    BAD_REQUEST,
    STR,
    UNAUTHORIZED,
    answer,
    describe,
    error,
    json_body,
    org_id_param,
    query_parameters,
)
from ..rate_limits import refused_by_day
from ..release_guard import THRESHOLDS
from ..storage import schema as s
from ..webhooks import MIN_SECRET_LENGTH, TargetError, delivery_json, parse_target
from .common import JSONResponse, caller, json_model, json_object, query_model, read_db, runtime
from .management import INSUFFICIENT, org_access

PAGE_SIZE = 50


async def get_plans(request: Request) -> Response:
    await caller(request)
    plans = await read_db(request, list_plans)
    return JSONResponse([plan.as_json() for plan in plans])


async def get_usage(request: Request) -> Response:
    return JSONResponse(await read_usage(request, await caller(request)))


async def read_usage(request: Request, principal: Principal) -> models.Usage:
    """The org's usage against its plan (``GET /organization/{org_id}/usage``; the
    dashboard's too)."""
    rt = runtime(request)
    org_id = request.path_params["org_id"]
    now = rt.clock.now()

    def read(conn: Connection) -> models.Usage:
        org = org_access(conn, principal, org_id, Level.READ)
        if principal.limited_apps is not None:
            # Usage covers every app of the org, more than this key may read.
            raise ApiError(403, INSUFFICIENT)
        usage = compute_usage(conn, org, now.date())
        # Check-ins of new devices refused this cycle by the new-devices-per-address limit.
        refused = refused_by_day(conn, usage.app_ids, usage.cycle_start, usage.cycle_end)
        return usage.as_json(to_ms(now), sum(refused.values()))

    return await read_db(request, read)


def _webhook_json(row: Any) -> models.Webhook:
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

    def write(conn: Connection) -> models.Webhook:
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

    def read(conn: Connection) -> list[models.Webhook]:
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
    query = query_model(request, models.DeliveriesQuery)
    status, page = query.status, query.page

    def read(conn: Connection) -> list[models.WebhookDelivery]:
        org_access(conn, principal, org_id, Level.ADMIN, whole_org=True)
        d = s.webhook_deliveries.c
        query = select(s.webhook_deliveries).where(d.org_id == org_id)
        if status is not None:
            query = query.where(d.status == status)
        rows = conn.execute(query.order_by(d.id.desc()).limit(PAGE_SIZE).offset(page * PAGE_SIZE))
        return [delivery_json(r) for r in rows]

    return JSONResponse(await read_db(request, read))


# -- release guard thresholds (release_guard.py) ---------------------------------------------


def _guard_json(rt: Any, org: Any) -> models.ReleaseGuard:
    overrides = orjson.loads(org.release_guard) if org.release_guard else {}
    values = rt.release_guard.thresholds(org.release_guard)
    return {
        "org_id": org.id,
        # Validated as an integer wherever it is set.
        "min_devices": int(values["min_devices"]),
        "max_rollback_rate": values["max_rollback_rate"],
        "max_crash_rate": values["max_crash_rate"],
        "max_failure_rate": values["max_failure_rate"],
        "overrides": overrides,
    }


async def get_release_guard(request: Request) -> Response:
    """The org's release-guard thresholds: the server's, with the org's own overrides."""
    principal = await caller(request)
    rt = runtime(request)
    org_id = request.path_params["org_id"]

    def read(conn: Connection) -> models.ReleaseGuard:
        return _guard_json(rt, org_access(conn, principal, org_id, Level.READ))

    return JSONResponse(await read_db(request, read))


async def put_release_guard(request: Request) -> Response:
    """Set some of the org's thresholds; ``null`` goes back to the server's value."""
    principal = await caller(request)
    rt = runtime(request)
    org_id = request.path_params["org_id"]
    given = await json_model(request, models.ReleaseGuardUpdate)
    # Absent: kept; null: back to the server's value.
    changes = {
        name: value for name in THRESHOLDS if (value := getattr(given, name)) is not msgspec.UNSET
    }

    def write(conn: Connection) -> models.ReleaseGuard:
        org = org_access(conn, principal, org_id, Level.ADMIN, whole_org=True)
        overrides = orjson.loads(org.release_guard) if org.release_guard else {}
        for name, value in changes.items():
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


# -- the OpenAPI description of these routes --------------------------------------------------


describe(
    "/plans",
    {
        "get": {
            "tags": ["plans"],
            "summary": "The plans",
            "security": AUTH,
            "responses": {
                "200": answer("Plans.", list[models.Plan]),
                "401": UNAUTHORIZED,
            },
        }
    },
)

describe(
    "/organization/{org_id}/release_guard",
    {
        "get": {
            "tags": ["plans"],
            "summary": "The org's release-guard thresholds",
            "description": (
                "When a `release_regression` is raised: the server's thresholds "
                "(`OTAMETER_RELEASE_*`) with the org's own `overrides`."
            ),
            "security": AUTH,
            "parameters": [org_id_param()],
            "responses": {
                "200": answer("The thresholds in effect.", models.ReleaseGuard),
                "401": UNAUTHORIZED,
                "404": error("Organization not found (or not visible to the key)."),
            },
        },
        "put": {
            "tags": ["plans"],
            "summary": "Set the org's release-guard thresholds",
            "description": "Sets the thresholds given; `null` goes back to the server's value.",
            "security": AUTH,
            "parameters": [org_id_param()],
            "requestBody": json_body(models.ReleaseGuardUpdate),
            "responses": {
                "200": answer("The thresholds in effect.", models.ReleaseGuard),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("Needs `admin`, with a key not limited to some apps."),
                "404": error("Organization not found (or not visible to the key)."),
            },
        },
    },
)

describe(
    "/organization/{org_id}/usage",
    {
        "get": {
            "tags": ["plans"],
            "summary": "An organization's usage against its plan",
            "description": "contract.md, Plans and usage.",
            "security": AUTH,
            "parameters": [org_id_param()],
            "responses": {
                "200": answer("The usage.", models.Usage),
                "401": UNAUTHORIZED,
                "404": error("Organization not found."),
            },
        }
    },
)

describe(
    "/organization/{org_id}/webhooks",
    {
        "get": {
            "tags": ["webhooks"],
            "summary": "An organization's webhooks",
            "security": AUTH,
            "parameters": [org_id_param()],
            "responses": {
                "200": answer("Webhooks.", list[models.Webhook]),
                "401": UNAUTHORIZED,
                "403": error("Needs `admin` and a key not limited to some apps."),
                "404": error("Organization not found."),
            },
        },
        "post": {
            "tags": ["webhooks"],
            "summary": "Add a webhook",
            "description": (
                "Events are POSTed to `url`, signed as Standard Webhooks do: headers "
                "`webhook-id` (the delivery id, the same on every retry), `webhook-timestamp` "
                "(Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "
                '"id.timestamp.body">`, keyed with `secret` as UTF-8 bytes; `X-Otameter-Event` '
                "names the event. Without `secret` one is generated and returned once. `url` "
                "must be an absolute http(s) URL without credentials, spaces or control "
                "characters, whose host resolves only to public addresses: loopback, private, "
                "link-local, multicast and reserved ones are refused (400) unless the operator "
                "allows them with `OTAMETER_WEBHOOK_ALLOW_PRIVATE`. The address is checked "
                "again at every delivery; redirects are not followed."
            ),
            "security": AUTH,
            "parameters": [org_id_param()],
            "requestBody": json_body(models.NewWebhook),
            "responses": {
                "201": answer("Created.", models.Webhook),
                "400": error(
                    "`url` is not an absolute http(s) URL, carries credentials or control "
                    "characters, does not resolve or resolves to a non-public address; or "
                    "`secret` is not 8 to 255 characters."
                ),
                "401": UNAUTHORIZED,
                "403": error("Needs `admin` and a key not limited to some apps."),
                "404": error("Organization not found."),
            },
        },
    },
)

describe(
    "/organization/{org_id}/webhooks/deliveries",
    {
        "get": {
            "tags": ["webhooks"],
            "summary": "Webhook deliveries, newest first",
            "security": AUTH,
            "parameters": [org_id_param(), *query_parameters(models.DeliveriesQuery)],
            "responses": {
                "200": answer("Deliveries.", list[models.WebhookDelivery]),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("Needs `admin` and a key not limited to some apps."),
                "404": error("Organization not found."),
            },
        }
    },
)

describe(
    "/organization/{org_id}/webhooks/{webhook_id}",
    {
        "delete": {
            "tags": ["webhooks"],
            "summary": "Remove a webhook",
            "security": AUTH,
            "parameters": [
                org_id_param(),
                {"name": "webhook_id", "in": "path", "required": True, "schema": STR},
            ],
            "responses": {
                "200": answer("Removed.", StatusOk),
                "401": UNAUTHORIZED,
                "403": error("Needs `admin` and a key not limited to some apps."),
                "404": error("Organization or webhook not found."),
            },
        }
    },
)
