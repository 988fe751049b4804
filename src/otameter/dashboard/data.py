"""The seed's table of apps, which the public API does not serve as such.

It goes through the same access checks as the API, so the dashboard never shows what the key
could not read through the API.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, func, select

from ..api.statistics import NOT_FOUND
from ..auth import Principal, org_role
from ..billing.plans import cycle_bounds
from ..errors import ApiError
from ..metering.rollups import devices_by_app
from ..storage import schema as s


def org_apps(conn: Connection, principal: Principal, org_id: str, today: date) -> dict[str, Any]:
    """The seed's table of apps: this cycle's MAU, storage and bandwidth of each app."""
    org = conn.execute(select(s.orgs.c.id, s.orgs.c.cycle_anchor).where(s.orgs.c.id == org_id))
    row = org.first()
    if row is None or org_role(conn, principal, org_id) is None:
        raise ApiError(404, NOT_FOUND)
    start, end = cycle_bounds(int(row.cycle_anchor or 1), today)
    a = s.apps.c
    apps = [
        r
        for r in conn.execute(
            select(a.app_id, a.name)
            .where(a.owner_org == org_id, a.deleted_at.is_(None))
            .order_by(a.app_id)
        )
        if principal.sees_app(r.app_id, org_id)
    ]
    ids = [r.app_id for r in apps]
    mau: dict[str, int] = {}
    storage: dict[str, int] = {}
    bandwidth: dict[str, int] = {}
    if ids:
        # The devices counted at least once since the cycle started: the same set as the
        # device table's (last counted check-in in the cycle), read from the day bitmaps
        # as the plan check reads it.
        mau = {
            app: len(devices) for app, devices in devices_by_app(conn, ids, start, today).items()
        }
        u = s.daily_usage.c
        for app_id, total in conn.execute(
            select(u.app_id, func.sum(u.bandwidth))
            .where(u.app_id.in_(ids), u.day >= start, u.day <= today)
            .group_by(u.app_id)
        ):
            bandwidth[app_id] = int(total or 0)
        b = s.bundles.c
        # Storage now, straight from the bundles (the day's rollup may be a second behind).
        for app_id, total in conn.execute(
            select(b.app_id, func.sum(b.size))
            .where(b.app_id.in_(ids), b.deleted_at.is_(None), b.external_url.is_(None))
            .group_by(b.app_id)
        ):
            storage[app_id] = int(total or 0)
    return {
        "org_id": org_id,
        "cycle_start": start.isoformat(),
        "cycle_end": end.isoformat(),
        "apps": [
            {
                "app_id": r.app_id,
                "name": r.name,
                "mau": mau.get(r.app_id, 0),
                "storage": storage.get(r.app_id, 0),
                "bandwidth": bandwidth.get(r.app_id, 0),
            }
            for r in apps
        ],
    }
