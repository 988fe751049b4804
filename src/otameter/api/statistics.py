"""The statistics API (the seed's Statistics page): per app, per org, per user."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import schema as s
from ..auth import Principal, org_role, readable_org_ids
from ..errors import ApiError
from ..statistics import daily_figures, parse_range
from .common import JSONResponse, caller, read_db, runtime

NOT_FOUND = "App/Organization not found"
FORBIDDEN = "Insufficient permissions to access statistics"
PUBLIC_FIELDS = ("date", "mau", "storage", "bandwidth")


def app_ids_for_app(conn: Connection, principal: Principal, app_id: str) -> list[str]:
    owner = conn.scalar(select(s.apps.c.owner_org).where(s.apps.c.app_id == app_id))
    if owner is None or not principal.sees_app(app_id, owner):
        raise ApiError(404, NOT_FOUND)
    if org_role(conn, principal, owner) is None:
        raise ApiError(404, NOT_FOUND)
    return [app_id]


def app_ids_for_org(conn: Connection, principal: Principal, org_id: str) -> list[str]:
    exists = conn.scalar(select(s.orgs.c.id).where(s.orgs.c.id == org_id))
    if exists is None or org_role(conn, principal, org_id) is None:
        raise ApiError(404, NOT_FOUND)
    if principal.limited_apps is not None:
        # The key sees the org but only some of its apps: an org total would reveal the rest.
        raise ApiError(403, FORBIDDEN)
    return list(conn.scalars(select(s.apps.c.app_id).where(s.apps.c.owner_org == org_id)))


def app_ids_for_user(conn: Connection, principal: Principal) -> list[str]:
    org_ids = readable_org_ids(conn, principal)
    if not org_ids:
        return []
    rows = conn.execute(
        select(s.apps.c.app_id, s.apps.c.owner_org).where(s.apps.c.owner_org.in_(org_ids))
    )
    return [r.app_id for r in rows if principal.sees_app(r.app_id, r.owner_org)]


async def _rows(request: Request, scope: str) -> list[dict[str, Any]]:
    principal = await caller(request)
    start, end = parse_range(request.query_params.get("from"), request.query_params.get("to"))
    rt = runtime(request)
    today = rt.clock.now().date()

    def read(conn: Connection) -> list[dict[str, Any]]:
        if scope == "app":
            app_ids = app_ids_for_app(conn, principal, request.path_params["app_id"])
        elif scope == "org":
            app_ids = app_ids_for_org(conn, principal, request.path_params["org_id"])
        else:
            app_ids = app_ids_for_user(conn, principal)
        return daily_figures(conn, app_ids, start, end, today)

    return await read_db(request, read)


def _public(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": [{key: row[key] for key in PUBLIC_FIELDS} for row in rows]}


async def app_statistics(request: Request) -> Response:
    return JSONResponse(_public(await _rows(request, "app")))


async def org_statistics(request: Request) -> Response:
    return JSONResponse(_public(await _rows(request, "org")))


async def user_statistics(request: Request) -> Response:
    return JSONResponse(_public(await _rows(request, "user")))


routes = [
    Route("/statistics/app/{app_id}/", app_statistics, methods=["GET"]),
    Route("/statistics/org/{org_id}/", org_statistics, methods=["GET"]),
    Route("/statistics/user/", user_statistics, methods=["GET"]),
]
