"""Plans, billing cycles, usage against a plan, locks and usage alerts.

An org's usage in its current billing cycle is computed from stored facts only:

- MAU: the exact number of distinct counted devices active on any day of the cycle (the
  union of the folded per-day bitmaps of all the org's apps, deleted apps included);
- bandwidth: bytes served during the cycle (the rolled-up ``daily_usage`` rows);
- storage: bytes of the org's live, non-external bundles right now (not reset by a cycle);
- emulators and dev builds: the distinct devices in the cycle's "emudev" bitmaps, as a share
  of every device active in the cycle (counted or emudev).

Locks are decided here and written to ``orgs.lock_code``/``lock_reason``, which the plugin
endpoints read from their cached app snapshot: the hot path never counts anything. The
decision runs inside each rollup transaction for the orgs whose apps it touched (so a lock
follows the event that caused it within a rollup interval), when a plan changes, and in a
periodic sweep that catches time-based changes (a trial ending).

An org without a plan uses the plan marked default; if there is none, the org is unmetered:
it has no limits, the 3% rule does not apply to it and it is never locked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pyroaring import BitMap
from sqlalchemy import Connection, event, func, select, update

from .catalog import Catalog
from .clock import Clock, day_of_ms, to_ms
from .metering.rollups import devices_by_app
from .metering.writer import Writer
from .storage import schema as s
from .storage.dialect import dialect_insert
from .units import format_bytes
from .webhooks import enqueue_event

log = logging.getLogger(__name__)

METRICS = ("mau", "storage", "bandwidth")
METRIC_LABELS = {
    "mau": "monthly active users",
    "storage": "storage",
    "bandwidth": "bandwidth",
}
ALERT_THRESHOLDS = (50, 70, 90, 100)
# The seed's rule: after the trial, at most 3% of the cycle's active devices may be
# emulators or dev builds.
EMUDEV_THRESHOLD = 0.03
NEED_PLAN_UPGRADE = "need_plan_upgrade"
TOO_MANY_EMUDEV = "too_many_emulators_or_dev_builds"

# Spike rule: a figure of the current UTC day (rolling MAU, new devices, bandwidth, summed over
# the org's apps) is a spike when it is at least SPIKE_FACTOR times the mean of the same
# figure over the previous SPIKE_BASELINE_DAYS days, exceeds that mean by at least the
# metric's minimum, and the org has at least SPIKE_MIN_HISTORY_DAYS days of figures before it.
SPIKE_FACTOR = 3.0
SPIKE_BASELINE_DAYS = 14
SPIKE_MIN_HISTORY_DAYS = 7
SPIKE_MIN_INCREASE = {"mau": 20, "new_devices": 20, "bandwidth": 100 * 1024 * 1024}

# The periodic sweep re-evaluates every org this often (besides trials ending at once).
FULL_SWEEP_MS = 3600 * 1000

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_quantity(text: str | int) -> int:
    """A positive integer, optionally with a unit: ``1GB`` = 10**9, ``1GiB`` = 2**30, ``10k``."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE_RE.match(text)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"not a quantity: {text!r} (use e.g. 1000, 500MB, 1GB, 2GiB)")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ValueError(f"a limit must be positive, got {text!r}")
    return value


# -- billing cycles --------------------------------------------------------------------------


def _days_in_month(year: int, month: int) -> int:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


def _anchor_in(year: int, month: int, anchor: int) -> date:
    # A month without the anchor day starts its cycle on its last day.
    return date(year, month, min(anchor, _days_in_month(year, month)))


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def cycle_bounds(anchor: int, today: date) -> tuple[date, date]:
    """The billing cycle containing ``today``: (first day, last day), both inclusive."""
    if not 1 <= anchor <= 31:
        raise ValueError("the cycle anchor is a day of the month (1..31)")
    start = _anchor_in(today.year, today.month, anchor)
    if today < start:
        start = _anchor_in(*_shift_month(today.year, today.month, -1), anchor)
    following = _anchor_in(*_shift_month(start.year, start.month, 1), anchor)
    return start, following - timedelta(days=1)


# -- plans -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    mau: int
    storage: int
    bandwidth: int
    is_default: bool = False

    def limit(self, metric: str) -> int:
        value: int = getattr(self, metric)
        return value

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mau": self.mau,
            "storage": self.storage,
            "bandwidth": self.bandwidth,
            "default": self.is_default,
        }


def _plan(row: Any) -> Plan:
    return Plan(row.name, int(row.mau), int(row.storage), int(row.bandwidth), bool(row.is_default))


def list_plans(conn: Connection) -> list[Plan]:
    return [_plan(r) for r in conn.execute(select(s.plans).order_by(s.plans.c.name))]


def effective_plan(conn: Connection, plan_name: str | None) -> Plan | None:
    p = s.plans.c
    if plan_name:
        row = conn.execute(select(s.plans).where(p.name == plan_name)).first()
    else:
        row = conn.execute(select(s.plans).where(p.is_default.is_(True))).first()
    return _plan(row) if row is not None else None


def upsert_plan(
    conn: Connection,
    name: str,
    mau: int,
    storage: int,
    bandwidth: int,
    now_ms: int,
    *,
    default: bool | None = None,
) -> Plan:
    """Create or update a plan; ``default`` True makes it the plan of orgs without one."""
    if not name or len(name) > 64:
        raise ValueError("a plan name is 1 to 64 characters")
    for value in (mau, storage, bandwidth):
        if value <= 0:
            raise ValueError("limits must be positive")
    p = s.plans.c
    values: dict[str, Any] = {"mau": mau, "storage": storage, "bandwidth": bandwidth}
    if default is not None:
        values["is_default"] = default
    stmt = dialect_insert(conn, s.plans).values(
        name=name, created_at=now_ms, updated_at=now_ms, **{"is_default": False, **values}
    )
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["name"], set_={**values, "updated_at": now_ms})
    )
    if default:
        conn.execute(
            update(s.plans).where(p.name != name, p.is_default.is_(True)).values(is_default=False)
        )
    row = conn.execute(select(s.plans).where(p.name == name)).one()
    return _plan(row)


def orgs_using_plan(conn: Connection, plan: Plan) -> list[str]:
    o = s.orgs.c
    where = o.plan == plan.name
    if plan.is_default:
        where = where | o.plan.is_(None)
    return list(conn.scalars(select(o.id).where(where)))


def set_org_plan(
    conn: Connection, org_id: str, plan_name: str | None, cycle_anchor: int | None
) -> None:
    o = s.orgs.c
    if conn.scalar(select(o.id).where(o.id == org_id)) is None:
        raise LookupError(f"no organization {org_id}")
    if plan_name is not None and effective_plan(conn, plan_name) is None:
        raise LookupError(f"no plan {plan_name!r} (create it with: otameter plan create)")
    values: dict[str, Any] = {"plan": plan_name}
    if cycle_anchor is not None:
        cycle_bounds(cycle_anchor, date(2000, 1, 1))  # validates the day
        values["cycle_anchor"] = cycle_anchor
    conn.execute(update(s.orgs).where(o.id == org_id).values(**values))


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


# -- lock decisions --------------------------------------------------------------------------


def _fmt(metric: str, value: int) -> str:
    if metric == "mau":
        return f"{value:,} devices"
    return format_bytes(value)


def lock_decision(usage: Usage, now_ms: int) -> tuple[str | None, str | None]:
    """(code, message) the org's devices must get, or (None, None) when it is not locked.

    The message depends only on the plan and the cycle, not on live figures, so that it does
    not change (and bust caches) while the org stays locked.
    """
    plan = usage.plan
    if plan is None:
        return None, None
    over = [m for m in METRICS if usage.used(m) > plan.limit(m)]
    cycle = f"{usage.cycle_start.isoformat()} to {usage.cycle_end.isoformat()}"
    if over:
        parts = ", ".join(f"{METRIC_LABELS[m]} (limit {_fmt(m, plan.limit(m))})" for m in over)
        return NEED_PLAN_UPGRADE, (
            f"Plan '{plan.name}' limit exceeded for the billing cycle {cycle}: {parts}. "
            "Upgrade the plan to resume updates"
            + (", or delete unused bundles to free storage" if "storage" in over else "")
            + "; cycle limits reset at the next billing cycle."
        )
    if not usage.in_trial(now_ms) and usage.emudev_ratio > EMUDEV_THRESHOLD:
        return TOO_MANY_EMUDEV, (
            f"More than {EMUDEV_THRESHOLD:.0%} of the devices active in the billing cycle {cycle} "
            "are emulators or dev builds. Ship production builds (is_prod) to real devices and "
            "use a separate app for development and testing; the lock lifts when the share is "
            f"{EMUDEV_THRESHOLD:.0%} or less, at the latest at the next billing cycle."
        )
    return None, None


@dataclass(frozen=True, slots=True)
class LockChange:
    org_id: str
    old_code: str | None
    new_code: str | None
    reason: str | None
    app_ids: tuple[str, ...]


def evaluate_orgs(conn: Connection, org_ids: Iterable[str] | None, now_ms: int) -> list[LockChange]:
    """Decide locks and raise alerts for ``org_ids`` (None: every org); writes through ``conn``."""
    o = s.orgs.c
    query = select(s.orgs).order_by(o.id)
    if org_ids is not None:
        wanted = sorted(set(org_ids))
        if not wanted:
            return []
        query = query.where(o.id.in_(wanted))
    has_default = effective_plan(conn, None) is not None
    today = day_of_ms(now_ms)
    changes: list[LockChange] = []
    for org in conn.execute(query).all():
        if org.plan is None and not has_default and org.lock_code is None:
            continue  # unmetered and unlocked: nothing to compute
        usage = compute_usage(conn, org, today)
        code, reason = lock_decision(usage, now_ms)
        if (code, reason) != (org.lock_code, org.lock_reason):
            # Conditional on the state read, so that two processes never both report it.
            same = o.lock_code.is_(None) if org.lock_code is None else o.lock_code == org.lock_code
            result = conn.execute(
                update(s.orgs)
                .where(o.id == org.id, same)
                .values(lock_code=code, lock_reason=reason)
            )
            if result.rowcount and code != org.lock_code:
                changes.append(
                    LockChange(org.id, org.lock_code, code, reason, tuple(usage.app_ids))
                )
                _lock_event(conn, usage, org.lock_code, code, reason, now_ms)
        if usage.plan is not None:
            _threshold_alerts(conn, usage, now_ms)
            _spike_alerts(conn, usage, today, now_ms)
    return changes


def _lock_event(
    conn: Connection,
    usage: Usage,
    old: str | None,
    new: str | None,
    reason: str | None,
    now_ms: int,
) -> None:
    cycle = {"cycle_start": usage.cycle_start.isoformat(), "cycle_end": usage.cycle_end.isoformat()}
    if new is None:
        enqueue_event(conn, usage.org_id, "org.unlocked", {"previous_code": old, **cycle}, now_ms)
    else:
        enqueue_event(
            conn,
            usage.org_id,
            "org.locked",
            {"code": new, "reason": reason, "previous_code": old, **cycle},
            now_ms,
        )


def _claim_alert(conn: Connection, org_id: str, cycle_start: date, alert: str, now_ms: int) -> bool:
    """True the first time ``alert`` is raised for the org in this cycle."""
    stmt = (
        dialect_insert(conn, s.org_alerts)
        .values(org_id=org_id, cycle_start=cycle_start, alert=alert, created_at=now_ms)
        .on_conflict_do_nothing(index_elements=["org_id", "cycle_start", "alert"])
        .returning(s.org_alerts.c.alert)
    )
    return conn.scalar(stmt) is not None


def _threshold_alerts(conn: Connection, usage: Usage, now_ms: int) -> None:
    assert usage.plan is not None
    for metric in METRICS:
        used, limit = usage.used(metric), usage.plan.limit(metric)
        for threshold in ALERT_THRESHOLDS:
            if used * 100 < threshold * limit:
                break
            if _claim_alert(conn, usage.org_id, usage.cycle_start, f"{metric}:{threshold}", now_ms):
                enqueue_event(
                    conn,
                    usage.org_id,
                    "usage.threshold",
                    {
                        "metric": metric,
                        "threshold": threshold,
                        "used": used,
                        "limit": limit,
                        "percent": usage.percent(metric),
                        "plan": usage.plan.name,
                        "cycle_start": usage.cycle_start.isoformat(),
                        "cycle_end": usage.cycle_end.isoformat(),
                    },
                    now_ms,
                )


def _spike_alerts(conn: Connection, usage: Usage, today: date, now_ms: int) -> None:
    if not usage.app_ids:
        return
    u = s.daily_usage.c
    first = today - timedelta(days=SPIKE_BASELINE_DAYS)
    rows = conn.execute(
        select(
            u.day,
            func.sum(u.mau).label("mau"),
            func.sum(u.new_devices).label("new_devices"),
            func.sum(u.bandwidth).label("bandwidth"),
        )
        .where(u.app_id.in_(usage.app_ids), u.day >= first, u.day <= today)
        .group_by(u.day)
    ).all()
    by_day = {row.day: row for row in rows}
    current = by_day.get(today)
    history = [row for day, row in by_day.items() if day < today]
    if current is None or len(history) < SPIKE_MIN_HISTORY_DAYS:
        return
    for metric, minimum in SPIKE_MIN_INCREASE.items():
        value = int(getattr(current, metric) or 0)
        baseline = sum(int(getattr(row, metric) or 0) for row in history) / len(history)
        if value < SPIKE_FACTOR * baseline or value - baseline < minimum:
            continue
        if _claim_alert(
            conn, usage.org_id, usage.cycle_start, f"spike:{metric}:{today.isoformat()}", now_ms
        ):
            enqueue_event(
                conn,
                usage.org_id,
                "usage.spike",
                {
                    "metric": metric,
                    "day": today.isoformat(),
                    "value": value,
                    "baseline": round(baseline, 2),
                    "baseline_days": len(history),
                    "factor": round(value / baseline, 2) if baseline else None,
                },
                now_ms,
            )


# -- running it ------------------------------------------------------------------------------


class PlanEnforcer:
    """Keeps org locks and alerts current: after rollups, on demand, and periodically."""

    def __init__(self, writer: Writer, clock: Clock, catalog: Catalog) -> None:
        self.writer = writer
        self.clock = clock
        self.catalog = catalog
        self._last_tick_ms: int | None = None
        self._last_sweep_ms: int | None = None

    def on_rollup(self, conn: Connection, app_ids: set[str]) -> None:
        """Rollup hook: re-evaluate the orgs of the apps whose figures just changed."""
        if not app_ids:
            return
        a = s.apps.c
        org_ids = set(conn.scalars(select(a.owner_org).where(a.app_id.in_(sorted(app_ids)))))
        self.evaluate(conn, org_ids)

    def evaluate(self, conn: Connection, org_ids: Iterable[str] | None) -> list[LockChange]:
        # A savepoint: a failure here must never undo the rollup it runs in.
        try:
            with conn.begin_nested():
                changes = evaluate_orgs(conn, org_ids, to_ms(self.clock.now()))
        except Exception:
            log.exception("plan evaluation failed; it runs again at the next rollup")
            return []
        app_ids = [app_id for change in changes for app_id in change.app_ids]
        for change in changes:
            log.info("org %s lock: %s -> %s", change.org_id, change.old_code, change.new_code)
        if app_ids:
            self._invalidate(app_ids)
            # Again once committed: a snapshot loaded meanwhile still saw the old lock.
            event.listen(conn, "commit", lambda _conn: self._invalidate(app_ids), once=True)
        return changes

    def _invalidate(self, app_ids: list[str]) -> None:
        for app_id in app_ids:
            self.catalog.invalidate(app_id)

    def evaluate_blocking(self, org_ids: Iterable[str] | None = None) -> list[LockChange]:
        wanted = None if org_ids is None else list(org_ids)
        return self.writer.run_blocking(lambda conn: self.evaluate(conn, wanted))

    def tick(self) -> None:
        """Periodic pass: orgs whose trial just ended at once, every org now and then."""
        now_ms = to_ms(self.clock.now())
        last = self._last_tick_ms
        if (
            last is None
            or self._last_sweep_ms is None
            or now_ms - self._last_sweep_ms >= FULL_SWEEP_MS
        ):
            self.evaluate_blocking(None)
            self._last_sweep_ms = now_ms
        else:
            o = s.orgs.c

            def trial_ended(conn: Connection) -> list[LockChange]:
                ids = list(
                    conn.scalars(
                        select(o.id).where(o.trial_ends_at > last, o.trial_ends_at <= now_ms)
                    )
                )
                return self.evaluate(conn, ids) if ids else []

            self.writer.run_blocking(trial_ended)
        self._last_tick_ms = now_ms
