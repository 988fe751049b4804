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
from ..storage import schema as s
from .plans import METRICS, Plan, cycle_bounds, effective_plan

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

    def as_json(self, now_ms: int) -> dict[str, Any]:
        body: dict[str, Any] = {
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
        }
        for metric in METRICS:
            body[metric] = {
                "used": self.used(metric),
                "limit": self.plan.limit(metric) if self.plan else None,
                "percent": self.percent(metric),
            }
        body["emulator_dev"] = {
            "ratio": round(self.emudev_ratio, 6),
            "threshold": EMUDEV_THRESHOLD,
            "devices": self.emudev_devices,
            "active_devices": self.active_devices,
            "enforced": self.plan is not None and not self.in_trial(now_ms),
        }
        return body


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
        u = s.daily_usage.c
        bandwidth = int(
            conn.scalar(
                select(func.coalesce(func.sum(u.bandwidth), 0)).where(
                    u.app_id.in_(app_ids), u.day >= start, u.day <= hi
                )
            )
            or 0
        )
        bn = s.bundles.c
        storage = int(
            conn.scalar(
                select(func.coalesce(func.sum(bn.size), 0)).where(
                    bn.app_id.in_(app_ids), bn.deleted_at.is_(None), bn.external_url.is_(None)
                )
            )
            or 0
        )
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
