"""The statistics API (the seed's Statistics page): per app, per org, per user.

Access rules (no existence oracle, contract.md "Authentication"):

- an app or org that does not exist, is deleted (apps), belongs to an org the user is not a
  member of, or lies outside the key's org/app limits answers 404 ``App/Organization not
  found``, byte for byte like one that never existed;
- an org the key can see but only through some of its apps (a key limited to apps) answers
  403 ``Insufficient permissions to access statistics``: its total would reveal the others;
- the user endpoint sums exactly the apps the key can see, in every org the user belongs to
  (deleted apps included, their history was real usage).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import Level, Principal, lookup_key, org_role, readable_org_ids
from ..clock import to_ms
from ..errors import ApiError
from ..models import statistics as models
from ..openapi import (
    AUTH,
    UNAUTHORIZED,
    answer,
    app_id_param,
    describe,
    error,
    json_content,
    org_id_param,
    query_parameters,
)
from ..query_strings import decode_query
from ..rate_limits import refused_by_day
from ..release_stats import release_rows, release_rows_to_csv
from ..statistics import (
    StatsQuery,
    bundle_usage_rows,
    bundle_usage_to_csv,
    parse_query,
    rows_to_csv,
    statistics_rows,
)
from ..storage import schema as s
from .common import JSONResponse, read_db, refuse, request_key, runtime

NOT_FOUND = "App/Organization not found"
FORBIDDEN = "Insufficient permissions to access statistics"
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def _require_read(level: Level | None) -> None:
    if level is None:
        raise ApiError(404, NOT_FOUND)
    if level < Level.READ:
        raise ApiError(403, FORBIDDEN)


def app_ids_for_app(conn: Connection, principal: Principal, app_id: str) -> list[str]:
    a = s.apps.c
    owner = conn.scalar(select(a.owner_org).where(a.app_id == app_id, a.deleted_at.is_(None)))
    if owner is None or not principal.sees_app(app_id, owner):
        raise ApiError(404, NOT_FOUND)
    _require_read(org_role(conn, principal, owner))
    return [app_id]


def app_ids_for_org(conn: Connection, principal: Principal, org_id: str) -> list[str]:
    exists = conn.scalar(select(s.orgs.c.id).where(s.orgs.c.id == org_id))
    if exists is None:
        raise ApiError(404, NOT_FOUND)
    _require_read(org_role(conn, principal, org_id))
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


def _filename(scope: str, name: str | None, query: StatsQuery, suffix: str = "") -> str:
    parts = ["statistics", scope, *([name] if name else []), *([suffix] if suffix else [])]
    stem = "-".join(_UNSAFE_FILENAME.sub("_", part) for part in parts)
    return f"{stem}-{query.start.isoformat()}-{query.end.isoformat()}.csv"


def csv_response(text: str, filename: str) -> Response:
    return Response(
        text.encode(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def _principal(
    conn: Connection, given: Principal | None, key: str | None, now_ms: int
) -> Principal | None:
    """The caller: ``given`` (a dashboard session's), else the key's if it is valid."""
    if given is None and key:
        return lookup_key(conn, key, now_ms)
    return given


async def read_statistics(
    request: Request, scope: str, principal: Principal | None = None
) -> tuple[StatsQuery, list[models.StatsDay]]:
    """The statistics of the app, org or user the path names, for ``principal`` (the
    dashboard's session) or, without it, for the request's key (``GET /statistics/...``)."""
    key = request_key(request) if principal is None else None
    rt = runtime(request)
    now_ms = to_ms(rt.clock.now())
    today = rt.clock.now().date()

    # Key, parameters and rows in one trip to the thread pool and one connection: the
    # key is checked first so that a caller without one learns nothing else.
    def read(conn: Connection) -> tuple[StatsQuery, list[models.StatsDay]] | None:
        caller = _principal(conn, principal, key, now_ms)
        if caller is None:
            return None
        query = parse_query(request.query_params)
        if scope == "app":
            app_ids = app_ids_for_app(conn, caller, request.path_params["app_id"])
        elif scope == "org":
            app_ids = app_ids_for_org(conn, caller, request.path_params["org_id"])
        else:
            app_ids = app_ids_for_user(conn, caller)
        return query, statistics_rows(conn, app_ids, query, today)

    answer = await read_db(request, read)
    if answer is None:
        await refuse(request, key)
    return answer


def statistics_body(query: StatsQuery, rows: list[models.StatsDay]) -> models.StatsAnswer:
    """The JSON answer of ``GET /statistics/...`` (and of the dashboard's copy)."""
    body: models.StatsAnswer = {"data": rows}
    if query.compare:
        lo, hi = query.previous
        body["previous_period"] = {"from": lo.isoformat(), "to": hi.isoformat()}
    return body


async def _answer(request: Request, scope: str) -> Response:
    name = request.path_params.get("app_id") or request.path_params.get("org_id")
    query, rows = await read_statistics(request, scope)
    if query.csv:
        text = rows_to_csv(rows, query.breakdown, query.compare)
        return csv_response(text, _filename(scope, name, query))
    return JSONResponse(statistics_body(query, rows))


async def app_statistics(request: Request) -> Response:
    return await _answer(request, "app")


async def org_statistics(request: Request) -> Response:
    return await _answer(request, "org")


async def user_statistics(request: Request) -> Response:
    return await _answer(request, "user")


T = TypeVar("T")


async def read_app_rows(
    request: Request,
    rows: Callable[[Connection, str, StatsQuery, date, str], T],
    read_by: Callable[[Mapping[str, str]], str] = lambda params: "",
    principal: Principal | None = None,
) -> tuple[StatsQuery, str, T]:
    """What a per-app statistics route reads, in the order every one of them checks it: the
    key (or the dashboard session's ``principal``), the parameters (``read_by`` checks
    ``by``), the app's visibility, then its rows."""
    key = request_key(request) if principal is None else None
    rt = runtime(request)
    now_ms = to_ms(rt.clock.now())
    today = rt.clock.now().date()
    app_id = request.path_params["app_id"]

    def read(conn: Connection) -> tuple[StatsQuery, str, T] | None:
        caller = _principal(conn, principal, key, now_ms)
        if caller is None:
            return None
        query = parse_query(request.query_params, options=False)
        by = read_by(request.query_params)
        app_ids_for_app(conn, caller, app_id)
        return query, by, rows(conn, app_id, query, today, by)

    answer = await read_db(request, read)
    if answer is None:
        await refuse(request, key)
    return answer


def bundle_usage_of(
    conn: Connection, app_id: str, query: StatsQuery, today: date, by: str
) -> list[models.BundleUsageDay]:
    """The rows of ``GET /statistics/app/{app_id}/bundle_usage/``."""
    return bundle_usage_rows(conn, app_id, query.start, query.end, today)


async def bundle_usage(request: Request) -> Response:
    query, _, data = await read_app_rows(request, bundle_usage_of)
    if query.csv:
        app_id = request.path_params["app_id"]
        return csv_response(
            bundle_usage_to_csv(data), _filename("app", app_id, query, "bundle_usage")
        )
    return JSONResponse({"data": data})


async def refused_devices(request: Request) -> Response:
    """Check-ins refused per day by the new-devices-per-address limit (rate_limits.py)."""

    def rows(
        conn: Connection, app_id: str, query: StatsQuery, today: date, by: str
    ) -> list[models.RefusedDay]:
        last = min(query.end, today)
        refused = refused_by_day(conn, [app_id], query.start, last)
        days = (last - query.start).days + 1
        return [
            {"date": day.isoformat(), "refused_new_devices": refused.get(day, 0)}
            for day in (query.start + timedelta(days=n) for n in range(max(0, days)))
        ]

    _, _, data = await read_app_rows(request, rows)
    return JSONResponse({"data": data})


def release_by(params: Mapping[str, str]) -> str:
    """The ``by`` of the releases route: ``version`` (the default) or ``day``."""
    return decode_query(params, models.ReleaseGrouping).by


def releases_of(
    conn: Connection, app_id: str, query: StatsQuery, today: date, by: str
) -> list[models.ReleaseRow]:
    """The rows of ``GET /statistics/app/{app_id}/releases/``."""
    return release_rows(conn, app_id, query.start, query.end, today, by_day=by == "day")


async def releases(request: Request) -> Response:
    """Release health per bundle version (contract.md "Release health")."""
    query, by, data = await read_app_rows(request, releases_of, release_by)
    by_day = by == "day"
    if query.csv:
        app_id = request.path_params["app_id"]
        suffix = "releases_by_day" if by_day else "releases"
        return csv_response(
            release_rows_to_csv(data, by_day), _filename("app", app_id, query, suffix)
        )
    return JSONResponse({"data": data})


routes = [
    Route("/statistics/app/{app_id}/releases/", releases, methods=["GET"]),
    Route("/statistics/app/{app_id}/", app_statistics, methods=["GET"]),
    Route("/statistics/app/{app_id}/bundle_usage/", bundle_usage, methods=["GET"]),
    Route("/statistics/app/{app_id}/refused_devices/", refused_devices, methods=["GET"]),
    Route("/statistics/org/{org_id}/", org_statistics, methods=["GET"]),
    Route("/statistics/user/", user_statistics, methods=["GET"]),
]


# -- the OpenAPI description of these routes --------------------------------------------------

CSV_ANSWER = {
    "text/csv": {
        "schema": {"type": "string"},
        "example": "date,mau,storage,bandwidth\r\n2024-01-01,120,536870912,1073741824\r\n",
    }
}
STATS_ERRORS = {
    "400": error(
        "`Invalid date format. Use YYYY-MM-DD` (bad or impossible date; a missing one adds "
        "`(the 'from' parameter is missing)` or `'to'`), "
        "`Date range cannot exceed 90 days`, an invalid range (`from` after `to`), or an "
        "invalid `format`, `breakdown` or `compare`."
    ),
    "401": UNAUTHORIZED,
    "403": error(
        "`Insufficient permissions to access statistics`: the key sees the org only "
        "through some of its apps."
    ),
    "404": error(
        "`App/Organization not found`: it does not exist, was deleted (apps), or is not "
        "visible to this key (another org's, or outside the key's limits): no existence oracle."
    ),
}


def stats_op(summary: str, params: list[dict[str, Any]], description: str) -> dict[str, Any]:
    return {
        "tags": ["statistics"],
        "summary": summary,
        "description": description,
        "security": AUTH,
        "parameters": [*params, *query_parameters(models.StatsRange, models.StatsOptions)],
        "responses": {
            "200": {
                "description": "One row per day.",
                "content": {**json_content(models.StatsAnswer), **CSV_ANSWER},
            },
            **STATS_ERRORS,
        },
    }


describe(
    "/statistics/app/{app_id}/",
    {
        "get": stats_op(
            "An app's statistics",
            [app_id_param()],
            "Per day: `mau` (unique counted devices in the 30 days ending that day), "
            "`storage` (bytes of bundles existing at the day's end) and `bandwidth` (bytes "
            "downloaded that day). Days before the app existed are zeros; today is live.",
        )
    },
)

describe(
    "/statistics/app/{app_id}/bundle_usage/",
    {
        "get": {
            "tags": ["statistics"],
            "summary": "Share of devices on each bundle version",
            "description": "Per day, from the counted check-ins' versions.",
            "security": AUTH,
            "parameters": [
                app_id_param(),
                *query_parameters(models.StatsRange, models.StatsFormat),
            ],
            "responses": {
                "200": {
                    "description": (
                        "One row per day. CSV: one line per day and version "
                        "(`date,version,devices,share,day_devices`)."
                    ),
                    "content": {**json_content(models.BundleUsageAnswer), **CSV_ANSWER},
                },
                **STATS_ERRORS,
            },
        }
    },
)

describe(
    "/statistics/app/{app_id}/releases/",
    {
        "get": {
            "tags": ["statistics"],
            "summary": "Release health per bundle version",
            "description": (
                "What the plugin's stats events say happened to each bundle version over the "
                "range: unique counted devices (emulators and dev builds never count; a device "
                "that retries counts once) that ran it, were offered it, downloaded, installed, "
                "failed, rolled back, crashed; its launches and their p50/p95 launch time. "
                "`by=day`: one row per version per day, with `date`. Live within 10 seconds."
            ),
            "security": AUTH,
            "parameters": [
                app_id_param(),
                *query_parameters(models.StatsRange, models.StatsFormat, models.ReleaseGrouping),
            ],
            "responses": {
                "200": {
                    "description": "One row per version (newest bundle first).",
                    "content": {
                        **json_content(models.ReleasesAnswer),
                        **CSV_ANSWER,
                    },
                },
                **STATS_ERRORS,
            },
        }
    },
)

describe(
    "/statistics/app/{app_id}/refused_devices/",
    {
        "get": {
            "tags": ["statistics"],
            "summary": "New devices refused by the per-address limit",
            "description": (
                "Per day, the check-ins of devices the app had not seen that were refused "
                "because their address had added its allowance of new devices to the app that "
                "hour (`OTAMETER_NEW_DEVICES_PER_IP_HOUR`). Those devices were not counted; a "
                "device refused twice counts twice."
            ),
            "security": AUTH,
            # ``format`` is checked too, but the answer is JSON either way: not offered.
            "parameters": [app_id_param(), *query_parameters(models.StatsRange)],
            "responses": {
                "200": answer("One row per day.", models.RefusedDevicesAnswer),
                **STATS_ERRORS,
            },
        }
    },
)

describe(
    "/statistics/org/{org_id}/",
    {
        "get": stats_op(
            "An organization's statistics",
            [org_id_param()],
            "The sum of its apps' rows (deleted apps included: their usage was real).",
        )
    },
)

describe(
    "/statistics/user/",
    {
        "get": stats_op(
            "Statistics over every org the caller can read",
            [],
            "The sum over every app the key can see, in every org the user belongs to.",
        )
    },
)
