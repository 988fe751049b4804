"""Locks and usage alerts, decided from an org's usage.

Locks are written to ``orgs.lock_code``/``lock_reason``, which the plugin endpoints read
from their cached app snapshot: the hot path never counts anything. The decision runs inside
each rollup transaction for the orgs whose apps it touched (so a lock follows the event that
caused it within a rollup interval), when a plan changes, and in a periodic sweep that
catches time-based changes (a trial ending).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Connection, event, func, select, update

from ..catalog import Catalog
from ..clock import Clock, day_of_ms, to_ms
from ..metering.writer import Writer
from ..storage import schema as s
from ..storage.dialect import dialect_insert
from ..units import format_bytes
from ..webhooks import enqueue_event
from .plans import METRICS, effective_plan
from .usage import EMUDEV_THRESHOLD, Usage, compute_usage

log = logging.getLogger(__name__)

METRIC_LABELS = {
    "mau": "monthly active users",
    "storage": "storage",
    "bandwidth": "bandwidth",
}
ALERT_THRESHOLDS = (50, 70, 90, 100)
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
