"""An app's devices and their recent plugin events (the device log), and its release alerts.

Read access to the app is required; an app the key may not see answers exactly like a missing
one (404 ``App not found``).
"""

from __future__ import annotations

import orjson
from sqlalchemy import Connection, or_, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import Level, Principal
from ..errors import not_found
from ..models import devices as models
from ..models.shapes import iso
from ..openapi import (
    AUTH,
    BAD_REQUEST,
    UNAUTHORIZED,
    answer,
    app_id_param,
    describe,
    error,
    query_parameters,
)
from ..release_guard import release_alerts
from ..storage import schema as s
from .common import JSONResponse, caller, query_model, read_db
from .management import app_access

PAGE_SIZE = 50


async def list_devices(request: Request) -> Response:
    return JSONResponse(await read_devices(request, await caller(request)))


async def read_devices(request: Request, principal: Principal) -> models.DevicePage:
    """The app's devices (``GET /app/{app_id}/devices``; the dashboard's too): ``?search=``
    matches the start of a device id or a custom id; ``?page=`` (0-based)."""
    app_id = request.path_params["app_id"]
    query = query_model(request, models.DevicesQuery)
    page, search = query.page, query.search

    def read(conn: Connection) -> models.DevicePage:
        app_access(conn, principal, app_id, Level.READ)
        d, cd, c = s.devices.c, s.channel_devices.c, s.channels.c
        query = (
            select(s.devices, c.name.label("channel"))
            .outerjoin(s.channel_devices, (cd.app_id == d.app_id) & (cd.device_id == d.device_id))
            .outerjoin(s.channels, (c.app_id == cd.app_id) & (c.id == cd.channel_id))
            .where(d.app_id == app_id)
        )
        if search:
            query = query.where(
                or_(
                    d.device_id.startswith(search.lower(), autoescape=True),
                    d.custom_id.startswith(search, autoescape=True),
                )
            )
        rows = conn.execute(
            query.order_by(d.last_seen.desc(), d.device_id)
            .limit(PAGE_SIZE + 1)
            .offset(page * PAGE_SIZE)
        ).all()
        return {
            "data": [
                {
                    "device_id": r.device_id,
                    "custom_id": r.custom_id,
                    "platform": r.platform,
                    "version_name": r.version_name,
                    "version_build": r.version_build,
                    "plugin_version": r.plugin_version,
                    # The channel the server keeps for it (older plugins); newer plugins keep
                    # theirs on the device.
                    "channel": r.channel,
                    "is_emulator": bool(r.is_emulator),
                    "is_prod": bool(r.is_prod),
                    "first_seen": iso(r.first_seen),
                    "last_seen": iso(r.last_seen),
                }
                for r in rows[:PAGE_SIZE]
            ],
            "page": page,
            "next_page": page + 1 if len(rows) > PAGE_SIZE else None,
        }

    return await read_db(request, read)


async def device_events(request: Request) -> Response:
    return JSONResponse(await read_device_events(request, await caller(request)))


async def read_device_events(request: Request, principal: Principal) -> models.DeviceEventPage:
    """The device's stats events, newest first; ``?before=<id>`` pages on, ``?limit=``
    (``GET /app/{app_id}/devices/{device_id}/events``; the dashboard's too)."""
    app_id = request.path_params["app_id"]
    device_id = request.path_params["device_id"].lower()
    query = query_model(request, models.DeviceEventsQuery)
    limit, before = query.limit, query.before

    def read(conn: Connection) -> models.DeviceEventPage:
        app_access(conn, principal, app_id, Level.READ)
        e, d = s.device_events.c, s.devices.c
        query = select(s.device_events).where(e.app_id == app_id, e.device_id == device_id)
        if before is not None:
            query = query.where(e.id < before)
        rows = conn.execute(query.order_by(e.id.desc()).limit(limit + 1)).all()
        if not rows and before is None:
            known = conn.scalar(select(d.id).where(d.app_id == app_id, d.device_id == device_id))
            if known is None:
                raise not_found("Device not found")
        shown = rows[:limit]
        return {
            "data": [
                {
                    "id": r.id,
                    "action": r.action,
                    "version_name": r.version_name,
                    "old_version_name": r.old_version_name,
                    "at": iso(r.at),
                    "metadata": orjson.loads(r.metadata) if r.metadata else None,
                }
                for r in shown
            ],
            "next_before": shown[-1].id if len(rows) > limit else None,
        }

    return await read_db(request, read)


async def list_release_alerts(request: Request) -> Response:
    return JSONResponse(await read_release_alerts(request, await caller(request)))


async def read_release_alerts(request: Request, principal: Principal) -> models.ReleaseAlerts:
    """The release regressions raised for the app (release_guard.py), newest first
    (``GET /app/{app_id}/release_alerts``; the dashboard's too)."""
    app_id = request.path_params["app_id"]

    def read(conn: Connection) -> models.ReleaseAlerts:
        app_access(conn, principal, app_id, Level.READ)
        return {"data": release_alerts(conn, app_id)}

    return await read_db(request, read)


routes = [
    Route("/app/{app_id}/devices", list_devices, methods=["GET"]),
    Route("/app/{app_id}/devices/{device_id}/events", device_events, methods=["GET"]),
    Route("/app/{app_id}/release_alerts", list_release_alerts, methods=["GET"]),
]


# -- the OpenAPI description of these routes --------------------------------------------------


describe(
    "/app/{app_id}/devices",
    {
        "get": {
            "tags": ["devices"],
            "summary": "An app's devices",
            "description": "Most recently seen first; `search` matches the start of a device "
            "id or a custom id.",
            "security": AUTH,
            "parameters": [app_id_param(), *query_parameters(models.DevicesQuery)],
            "responses": {
                "200": answer(
                    "A page of 50 devices.",
                    models.DevicePage,
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "404": error("App not found (or not visible to the key)."),
            },
        }
    },
)

describe(
    "/app/{app_id}/devices/{device_id}/events",
    {
        "get": {
            "tags": ["devices"],
            "summary": "A device's recent plugin events",
            "description": (
                "Its stats events, newest first, kept for `OTAMETER_STATS_RETENTION_DAYS` "
                "(default 7). `before` (the `next_before` of a page) pages on."
            ),
            "security": AUTH,
            "parameters": [
                app_id_param(),
                {
                    "name": "device_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 36},
                },
                *query_parameters(models.DeviceEventsQuery),
            ],
            "responses": {
                "200": answer(
                    "Events.",
                    models.DeviceEventPage,
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "404": error("App not found (or not visible to the key), or device not found."),
            },
        }
    },
)

describe(
    "/app/{app_id}/release_alerts",
    {
        "get": {
            "tags": ["devices"],
            "summary": "Release regressions raised for the app",
            "description": (
                "Each `release_regression` the release guard raised (once per version and "
                "channel), newest first, with what auto_rollback did."
            ),
            "security": AUTH,
            "parameters": [app_id_param()],
            "responses": {
                "200": answer(
                    "Alerts.",
                    models.ReleaseAlerts,
                ),
                "401": UNAUTHORIZED,
                "404": error("App not found (or not visible to the key)."),
            },
        }
    },
)
