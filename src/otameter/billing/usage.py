"""An org's usage in its current billing cycle, computed from stored facts only:

- MAU: the exact number of distinct counted devices active on any day of the cycle (the
  union of the per-day bitmaps of all the org's apps, deleted apps included);
- bandwidth: bytes served during the cycle (the rolled-up ``daily_usage`` rows);
- storage: bytes of the org's live, non-external bundles right now (not reset by a cycle);
- emulators and dev builds: the distinct devices in the cycle's "emudev" bitmaps, as a share
  of every device active in the cycle (counted or emudev).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pyroaring import BitMap
from sqlalchemy import Connection, func, select

from ..clock import day_of_ms
from ..metering.rollups import devices_by_app
from ..models import plans as models
from ..storage import schema as s
from .plans import Plan, cycle_bounds, effective_plan

# The seed's rule: after the trial, at most 3% of the cycle's active devices may be
# emulators or dev builds.
EMUDEV_THRESHOLD = 0.03

# -- usage -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    org_id: str
    plan: Plan | None
    cycle_start: date
    cycle_end: date
    mau: int
    storage: int
    bandwidth: int
    emudev_devices: int
    active_devices: int
    trial_ends_ms: int | None
    lock_code: str | None
    lock_reason: str | None
    app_ids: list[str]

    def used(self, metric: str) -> int:
        value: int = getattr(self, metric)
        return value

    @property
    def emudev_ratio(self) -> float:
        return self.emudev_devices / self.active_devices if self.active_devices else 0.0

    def in_trial(self, now_ms: int) -> bool:
        return self.trial_ends_ms is not None and now_ms < self.trial_ends_ms

    def percent(self, metric: str) -> float | None:
        if self.plan is None:
            return None
        return round(self.used(metric) * 100 / self.plan.limit(metric), 2)

    def metric_json(self, metric: str) -> models.UsageMetric:
        return {
            "used": self.used(metric),
            "limit": self.plan.limit(metric) if self.plan else None,
            "percent": self.percent(metric),
        }

    def as_json(self, now_ms: int, refused_new_devices: int) -> models.Usage:
        """``GET /organization/{org_id}/usage``'s answer; ``refused_new_devices``: the check-ins
        of new devices refused this cycle by the new-devices-per-address limit."""
        return {
            "org_id": self.org_id,
            "plan": self.plan.name if self.plan else None,
            "cycle_start": self.cycle_start.isoformat(),
            "cycle_end": self.cycle_end.isoformat(),
            "locked": self.lock_code is not None,
            "lock_code": self.lock_code,
            "lock_reason": self.lock_reason,
            "trial_ends": (
                day_of_ms(self.trial_ends_ms).isoformat() if self.trial_ends_ms else None
            ),
            "in_trial": self.in_trial(now_ms),
            "mau": self.metric_json("mau"),
            "storage": self.metric_json("storage"),
            "bandwidth": self.metric_json("bandwidth"),
            "emulator_dev": {
                "ratio": round(self.emudev_ratio, 6),
                "threshold": EMUDEV_THRESHOLD,
                "devices": self.emudev_devices,
                "active_devices": self.active_devices,
                "enforced": self.plan is not None and not self.in_trial(now_ms),
            },
            "refused_new_devices": refused_new_devices,
        }


def _devices(conn: Connection, app_ids: list[str], lo: date, hi: date) -> tuple[int, int, int]:
    """(counted, emudev, either) devices of the apps over [lo, hi].

    Ordinals are per app, so each app's devices are counted on its own bitmaps and the apps'
    counts added up: the org's figure counts (app, device) pairs.
    """
    counted = devices_by_app(conn, app_ids, lo, hi, "counted")
    emudev = devices_by_app(conn, app_ids, lo, hi, "emudev")
    empty = BitMap()
    either = sum(
        counted.get(app_id, empty).union_cardinality(emudev.get(app_id, empty))
        for app_id in set(counted) | set(emudev)
    )
    return sum(map(len, counted.values())), sum(map(len, emudev.values())), either


def bandwidth_by_app(conn: Connection, app_ids: list[str], lo: date, hi: date) -> dict[str, int]:
    """Bytes each app served over the days [lo, hi] (apps with none are left out)."""
    u = s.daily_usage.c
    rows = conn.execute(
        select(u.app_id, func.sum(u.bandwidth))
        .where(u.app_id.in_(app_ids), u.day >= lo, u.day <= hi)
        .group_by(u.app_id)
    )
    return {app_id: int(total or 0) for app_id, total in rows}


def storage_by_app(conn: Connection, app_ids: list[str]) -> dict[str, int]:
    """Bytes each app stores now: its bundles not deleted, external ones left out (they are
    never stored). Read from the bundles, not the day's rollup, which may be behind."""
    b = s.bundles.c
    rows = conn.execute(
        select(b.app_id, func.sum(b.size))
        .where(b.app_id.in_(app_ids), b.deleted_at.is_(None), b.external_url.is_(None))
        .group_by(b.app_id)
    )
    return {app_id: int(total or 0) for app_id, total in rows}


def compute_usage(conn: Connection, org: Any, today: date) -> Usage:
    """The org's usage in the billing cycle containing ``today`` (``org``: an orgs row)."""
    start, end = cycle_bounds(int(org.cycle_anchor or 1), today)
    plan = effective_plan(conn, org.plan)
    a = s.apps.c
    app_ids = list(conn.scalars(select(a.app_id).where(a.owner_org == org.id)))
    mau = storage = bandwidth = emudev = active = 0
    if app_ids:
        hi = min(end, today)
        mau, emudev, active = _devices(conn, app_ids, start, hi)
        bandwidth = sum(bandwidth_by_app(conn, app_ids, start, hi).values())
        storage = sum(storage_by_app(conn, app_ids).values())
    return Usage(
        org.id,
        plan,
        start,
        end,
        mau,
        storage,
        bandwidth,
        emudev,
        active,
        org.trial_ends_at,
        org.lock_code,
        org.lock_reason,
        app_ids,
    )


def load_org(conn: Connection, org_id: str) -> Any:
    return conn.execute(select(s.orgs).where(s.orgs.c.id == org_id)).first()
