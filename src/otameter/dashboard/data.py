"""What the dashboard reads, through one layer: the API's own read functions.

Each JSON route the pages' script reads, ``/dashboard/api/<path>``, answers what ``GET
/<path>`` answers: the read function of that API route, called with the session's principal
instead of the request's key, so the checks, rows and errors are the API's own. The one
figure the API does not serve, the seed's table of apps (``org_apps``), is built from the
same query functions as the org's plan usage, under the same access checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request

from ..api import devices, management, statistics
from ..api.common import read_db, runtime
from ..api.plans import read_usage
from ..auth import Principal, org_role
from ..billing.plans import cycle_bounds
from ..billing.usage import bandwidth_by_app, load_org, storage_by_app
from ..errors import ApiError
from ..metering.rollups import devices_by_app
from ..models.statistics import BundleUsageAnswer, ReleasesAnswer, StatsAnswer

Read = Callable[[Request, Principal], Awaitable[Any]]


async def app_statistics(request: Request, principal: Principal) -> StatsAnswer:
    query, rows = await statistics.read_statistics(request, "app", principal)
    return statistics.statistics_body(query, rows)


async def org_statistics(request: Request, principal: Principal) -> StatsAnswer:
    query, rows = await statistics.read_statistics(request, "org", principal)
    return statistics.statistics_body(query, rows)


async def bundle_usage(request: Request, principal: Principal) -> BundleUsageAnswer:
    _, _, rows = await statistics.read_app_rows(
        request, statistics.bundle_usage_of, principal=principal
    )
    return {"data": rows}


async def releases(request: Request, principal: Principal) -> ReleasesAnswer:
    _, _, rows = await statistics.read_app_rows(
        request, statistics.releases_of, statistics.release_by, principal
    )
    return {"data": rows}


# API path (under /dashboard/api) -> its read function. Only these paths: nothing that
# writes, and nothing the pages do not read.
READS: dict[str, Read] = {
    "/organization": management.read_orgs,
    "/organization/{org_id}/usage": read_usage,
    "/app": management.read_apps,
    "/app/{app_id}": management.read_app,
    "/app/{app_id}/devices": devices.read_devices,
    "/app/{app_id}/devices/{device_id}/events": devices.read_device_events,
    "/app/{app_id}/release_alerts": devices.read_release_alerts,
    "/bundle": management.read_bundles,
    "/channel": management.read_channels,
    "/statistics/app/{app_id}/": app_statistics,
    "/statistics/org/{org_id}/": org_statistics,
    "/statistics/app/{app_id}/bundle_usage/": bundle_usage,
    "/statistics/app/{app_id}/releases/": releases,
}


async def read_org_apps(request: Request, principal: Principal) -> dict[str, Any]:
    """``/dashboard/data/org/{org_id}/apps``: the seed's table of apps."""
    today = runtime(request).clock.now().date()
    return await read_db(request, org_apps, principal, request.path_params["org_id"], today)


def org_apps(conn: Connection, principal: Principal, org_id: str, today: date) -> dict[str, Any]:
    """The seed's table of apps: this cycle's MAU, storage and bandwidth of each app the key
    can see. An org it cannot see answers like a missing one, as the statistics API does."""
    org = load_org(conn, org_id)
    if org is None or org_role(conn, principal, org_id) is None:
        raise ApiError(404, statistics.NOT_FOUND)
    start, end = cycle_bounds(int(org.cycle_anchor or 1), today)
    # The org's part of the key's list of apps (GET /app): a member's org, apps the key sees.
    apps = [app for app in management.visible_apps(conn, principal) if app["owner_org"] == org_id]
    ids = [app["app_id"] for app in apps]
    mau: dict[str, int] = {}
    storage: dict[str, int] = {}
    bandwidth: dict[str, int] = {}
    if ids:
        # The devices counted at least once since the cycle started, storage now and
        # bandwidth of the cycle: per app, the figures the org's plan usage sums.
        mau = {app: len(found) for app, found in devices_by_app(conn, ids, start, today).items()}
        storage = storage_by_app(conn, ids)
        bandwidth = bandwidth_by_app(conn, ids, start, today)
    return {
        "org_id": org_id,
        "cycle_start": start.isoformat(),
        "cycle_end": end.isoformat(),
        "apps": [
            {
                "app_id": app["app_id"],
                "name": app["name"],
                "mau": mau.get(app["app_id"], 0),
                "storage": storage.get(app["app_id"], 0),
                "bandwidth": bandwidth.get(app["app_id"], 0),
            }
            for app in apps
        ],
    }
