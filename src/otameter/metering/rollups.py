"""Rollups: turn the writer's facts into the per-day figures that statistics read.

Each run, in one writer transaction: drain the check-in log into device rows and activity
deltas (checkin_log.py: read and folded before the transaction, consumed in it), merge
activity deltas into per-day device bitmaps, then recompute every (app, day) whose figures
those facts can change:

- a device active on D changes ``mau`` for D..D+29 and ``new_devices`` up to D's month end;
- a download on D changes ``bandwidth`` for D;
- an upload or delete on D changes ``storage`` from D to today;
- a new day starts rows for every app (rolling MAU and storage go on without traffic).

Recomputation reads only merged bitmaps, download sums and bundle rows, and is idempotent:
running it twice, or in two processes, gives the same figures.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import Any

from pyroaring import BitMap
from sqlalchemy import Connection, Engine, delete, func, select, text

from ..clock import Clock, day_start_ms, month_start, to_ms
from ..rate_limits import NewDeviceLimit
from ..storage import schema as s
from ..storage.dialect import dialect_insert
from . import checkin_log
from .checkin_log import PreparedDrain
from .fold import IpPredicate
from .writer import Writer

log = logging.getLogger(__name__)

MAU_WINDOW_DAYS = 30
MATERIALIZED_KEY = "rollup_materialized_through"
# When the last rollup left nothing waiting (epoch ms): the base of the rollup lag metric.
COMPLETED_KEY = "rollup_completed_at"
# Arbitrary constant naming the rollup's advisory lock on PostgreSQL.
ROLLUP_LOCK_ID = 0x07A3E7E4
# Kinds of activity rows that are release-health outcomes (releases.OUTCOMES).
RELEASE_KINDS = frozenset(
    ("offered", "downloaded", "installed", "failed", "rolled_back", "crashed")
)


def month_end(day: date) -> date:
    first_of_next = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first_of_next - timedelta(days=1)


def days_between(lo: date, hi: date) -> list[date]:
    return [lo + timedelta(days=n) for n in range((hi - lo).days + 1)]


@dataclass
class RollupReport:
    checkins_folded: int = 0
    deltas_merged: int = 0
    queue_items: int = 0
    days_recomputed: int = 0
    more_pending: bool = False
    skipped: bool = False
    # Another process consumed log rows this run had read: they were drained there.
    log_stale: bool = False


class Rollups:
    def __init__(
        self,
        writer: Writer,
        clock: Clock,
        *,
        max_rows: int = 5000,
        read_engine: Engine | None = None,
        is_google_ip: IpPredicate | None = None,
        # Log rows a drain transaction consumes at most: about 2,000 check-ins under load. On
        # SQLite the drain holds the one writer; kept short, group commits of live traffic
        # run between two drains instead of waiting behind one large drain.
        max_log_rows: int = 64,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.max_rows = max_rows
        # Where the check-in log is read and folded before the write transaction (None: in it).
        self.read_engine = read_engine
        self.is_google_ip: IpPredicate = is_google_ip or writer.pipeline.is_google_ip
        self.max_log_rows = max_log_rows
        # The new-devices limit, applied to the log's check-ins as they are folded (None: none).
        self.new_devices: NewDeviceLimit | None = None
        # Called inside each rollup transaction with the apps whose figures it recomputed.
        self.hooks: list[Callable[[Connection, set[str]], None]] = []
        # Called in the same transaction with the (app, version) pairs whose release-health
        # device sets it merged.
        self.release_hooks: list[Callable[[Connection, set[tuple[str, str]]], None]] = []

    def run_blocking(self) -> RollupReport:
        """Run until nothing is pending (used by import, tests and the worker)."""
        total = RollupReport()
        while True:
            prepared = self._prepare_log()
            report = self.writer.run_blocking(partial(self.transaction, prepared=prepared))
            total.checkins_folded += report.checkins_folded
            total.deltas_merged += report.deltas_merged
            total.queue_items += report.queue_items
            total.days_recomputed += report.days_recomputed
            total.skipped = report.skipped
            if not report.more_pending or report.skipped:
                return total

    def drain_log_blocking(self) -> int:
        """Drain the check-in log into device rows and deltas only (a lighter, more frequent
        pass than the whole rollup: each transaction stays short); returns check-ins folded."""
        folded = 0
        engine = self.read_engine
        while True:
            if engine is not None and engine.dialect.name == "postgresql":
                # PostgreSQL: on a connection of its own, so that the group commits of live
                # traffic never wait behind a drain; read and folded under the rollup lock, so
                # that processes do not fold the same rows only for one of them to keep it.
                with engine.begin() as conn:
                    report = self.log_transaction(conn, None)
            else:
                prepared = self._prepare_log()
                if prepared is not None and not prepared.ids:
                    return folded
                # SQLite has one writer: the drain takes its turn there, with the rows read
                # and folded beforehand so that it holds the write lock only to store them.
                report = self.writer.run_blocking(partial(self.log_transaction, prepared=prepared))
            folded += report.checkins_folded
            # After a stale read another process is draining (SQLite has no rollup lock):
            # leave the log to it until the next tick rather than race it row for row.
            if not report.more_pending or report.skipped or report.log_stale:
                return folded

    def _prepare_log(self) -> PreparedDrain | None:
        if self.read_engine is None:
            return None
        with self.read_engine.connect() as conn:
            return checkin_log.prepare(conn, self.is_google_ip, self.max_log_rows)

    def log_transaction(self, conn: Connection, prepared: PreparedDrain | None) -> RollupReport:
        report = RollupReport()
        if not self._lock(conn):
            report.skipped = True
            return report
        self._drain_log(conn, prepared, report)
        return report

    def _lock(self, conn: Connection) -> bool:
        """PostgreSQL: the rollup's lock, or False when another process holds it."""
        return conn.dialect.name != "postgresql" or bool(
            conn.scalar(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": ROLLUP_LOCK_ID})
        )

    def _drain_log(
        self, conn: Connection, prepared: PreparedDrain | None, report: RollupReport
    ) -> None:
        if prepared is None:
            prepared = checkin_log.prepare(conn, self.is_google_ip, self.max_log_rows)
        if checkin_log.consume(conn, prepared, self.new_devices):
            report.checkins_folded = prepared.checkins
            report.more_pending = prepared.more
        else:
            # Another process drained some of these rows first: read the log again.
            report.more_pending = report.log_stale = True

    def transaction(self, conn: Connection, prepared: PreparedDrain | None = None) -> RollupReport:
        report = RollupReport()
        if not self._lock(conn):
            report.skipped = True  # another process is rolling up
            return report
        today = self.clock.now().date()
        ranges: dict[str, list[date]] = {}

        def dirty(app_id: str, lo: date, hi: date) -> None:
            hi = max(lo, min(hi, today))
            span = ranges.get(app_id)
            if span is None:
                ranges[app_id] = [lo, hi]
            else:
                span[0], span[1] = min(span[0], lo), max(span[1], hi)

        self._drain_log(conn, prepared, report)
        self._new_days(conn, today, dirty)
        touched: set[tuple[str, str]] = set()
        report.deltas_merged = self._merge_deltas(conn, dirty, touched)
        report.queue_items = self._drain_queue(conn, today, dirty)
        report.more_pending |= max(report.deltas_merged, report.queue_items) >= self.max_rows
        for app_id, (lo, hi) in sorted(ranges.items()):
            rows = compute_daily_rows(conn, app_id, lo, hi)
            upsert_daily_rows(conn, rows)
            report.days_recomputed += len(rows)
        for hook in self.hooks:
            hook(conn, set(ranges))
        if not report.more_pending:
            now = str(to_ms(self.clock.now()))
            stmt = dialect_insert(conn, s.server_state).values(key=COMPLETED_KEY, value=now)
            conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": now}))
        if touched:
            for release_hook in self.release_hooks:
                release_hook(conn, touched)
        return report

    def _new_days(self, conn: Connection, today: date, dirty: Any) -> None:
        state = s.server_state
        through = conn.scalar(select(state.c.value).where(state.c.key == MATERIALIZED_KEY))
        if through is not None and date.fromisoformat(through) >= today:
            return
        if through is not None:
            first = date.fromisoformat(through) + timedelta(days=1)
            for app_id in conn.scalars(select(s.apps.c.app_id)):
                dirty(app_id, first, today)
        stmt = dialect_insert(conn, state).values(key=MATERIALIZED_KEY, value=today.isoformat())
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["key"], set_={"value": today.isoformat()})
        )

    def _merge_deltas(self, conn: Connection, dirty: Any, touched: set[tuple[str, str]]) -> int:
        d = s.activity_deltas.c
        rows = conn.execute(
            select(d.id, d.app_id, d.day, d.kind, d.version_name, d.bitmap)
            .order_by(d.id)
            .limit(self.max_rows)
        ).all()
        if not rows:
            return 0
        merged: dict[tuple[str, date, str, str], BitMap] = defaultdict(BitMap)
        for row in rows:
            bitmap = BitMap.deserialize(row.bitmap)
            merged[(row.app_id, row.day, row.kind, row.version_name)] |= bitmap
            if row.kind in RELEASE_KINDS:
                # Release-health outcomes (releases.py): per version only, no daily figure.
                touched.add((row.app_id, row.version_name))
                continue
            # Version "" holds the day's devices over all versions.
            merged[(row.app_id, row.day, row.kind, "")] |= bitmap
            if row.kind == "counted":
                dirty(row.app_id, row.day, max(row.day + timedelta(days=29), month_end(row.day)))
            else:
                dirty(row.app_id, row.day, row.day)
        b = s.activity_bitmaps.c
        for (app_id, day, kind, version), bitmap in merged.items():
            current = conn.scalar(
                select(b.bitmap).where(
                    b.app_id == app_id, b.day == day, b.kind == kind, b.version_name == version
                )
            )
            if current is not None:
                bitmap |= BitMap.deserialize(current)
            stmt = dialect_insert(conn, s.activity_bitmaps).values(
                app_id=app_id,
                day=day,
                kind=kind,
                version_name=version,
                bitmap=bitmap.serialize(),
                devices=len(bitmap),
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["app_id", "day", "kind", "version_name"],
                    set_={"bitmap": stmt.excluded.bitmap, "devices": stmt.excluded.devices},
                )
            )
        # Delete exactly what was merged: rows committed meanwhile by other processes stay.
        conn.execute(delete(s.activity_deltas).where(d.id.in_([row.id for row in rows])))
        return len(rows)

    def _drain_queue(self, conn: Connection, today: date, dirty: Any) -> int:
        q = s.rollup_queue.c
        rows = conn.execute(
            select(q.id, q.app_id, q.day, q.what).order_by(q.id).limit(self.max_rows)
        ).all()
        for row in rows:
            dirty(row.app_id, row.day, today if row.what == "storage" else row.day)
        if rows:
            conn.execute(delete(s.rollup_queue).where(q.id.in_([row.id for row in rows])))
        return len(rows)


def load_day_bitmaps(
    conn: Connection, app_id: str, lo: date, hi: date, kind: str = "counted", version: str = ""
) -> dict[date, BitMap]:
    b = s.activity_bitmaps.c
    rows = conn.execute(
        select(b.day, b.bitmap).where(
            b.app_id == app_id,
            b.kind == kind,
            b.version_name == version,
            b.day >= lo,
            b.day <= hi,
        )
    )
    return {row.day: BitMap.deserialize(row.bitmap) for row in rows}


def devices_by_app(
    conn: Connection, app_ids: list[str], lo: date, hi: date, kind: str = "counted"
) -> dict[str, BitMap]:
    """The devices of each app active over the days [lo, hi], as the union of its day
    bitmaps of ``kind`` (apps with none are left out)."""
    b = s.activity_bitmaps.c
    rows = conn.execute(
        select(b.app_id, b.bitmap).where(
            b.app_id.in_(app_ids),
            b.kind == kind,
            b.version_name == "",
            b.day >= lo,
            b.day <= hi,
        )
    )
    days: dict[str, list[BitMap]] = defaultdict(list)
    for row in rows:
        days[row.app_id].append(BitMap.deserialize(row.bitmap))
    # One union of many bitmaps at once: faster than adding them one by one.
    unions = {app_id: BitMap.union(*maps) for app_id, maps in days.items()}
    return {app_id: devices for app_id, devices in unions.items() if devices}


def compute_daily_rows(conn: Connection, app_id: str, lo: date, hi: date) -> list[dict[str, Any]]:
    """The figures of ``app_id`` for each day in [lo, hi], from merged facts only."""
    first_needed = min(lo - timedelta(days=MAU_WINDOW_DAYS - 1), month_start(lo))
    counted = load_day_bitmaps(conn, app_id, first_needed, hi)
    b = s.activity_bitmaps.c
    emudev: dict[date, int] = {
        day: devices
        for day, devices in conn.execute(
            select(b.day, b.devices).where(
                b.app_id == app_id,
                b.kind == "emudev",
                b.version_name == "",
                b.day >= lo,
                b.day <= hi,
            )
        )
    }
    dl = s.downloads.c
    bandwidth: dict[date, int] = {
        day: int(total or 0)
        for day, total in conn.execute(
            select(dl.day, func.sum(dl.bytes))
            .where(dl.app_id == app_id, dl.day >= lo, dl.day <= hi)
            .group_by(dl.day)
        )
    }
    bn = s.bundles.c
    sized = conn.execute(
        select(bn.size, bn.created_at, bn.deleted_at).where(
            bn.app_id == app_id, bn.external_url.is_(None)
        )
    ).all()

    rows: list[dict[str, Any]] = []
    empty = BitMap()
    month_union = BitMap()
    for day in days_between(month_start(lo), hi):
        if day.day == 1:
            month_union = BitMap()
        today_set = counted.get(day, empty)
        if day >= lo:
            window = [
                counted[d]
                for n in range(MAU_WINDOW_DAYS)
                if (d := day - timedelta(days=n)) in counted
            ]
            end_ms = day_start_ms(day + timedelta(days=1))
            rows.append(
                {
                    "app_id": app_id,
                    "day": day,
                    "mau": len(BitMap.union(*window)) if window else 0,
                    "dau": len(today_set),
                    "new_devices": today_set.difference_cardinality(month_union),
                    "emudev_devices": int(emudev.get(day, 0)),
                    "bandwidth": int(bandwidth.get(day, 0) or 0),
                    "storage": sum(
                        size
                        for size, created, deleted in sized
                        if created < end_ms and (deleted is None or deleted >= end_ms)
                    ),
                }
            )
        month_union |= today_set
    return rows


def upsert_daily_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = dialect_insert(conn, s.daily_usage)
    figures = ("mau", "dau", "new_devices", "emudev_devices", "bandwidth", "storage")
    stmt = stmt.on_conflict_do_update(
        index_elements=["app_id", "day"],
        set_={name: getattr(stmt.excluded, name) for name in figures},
    )
    conn.execute(stmt, rows)


def rollup_lag_seconds(conn: Connection, now_ms: int) -> float:
    """How long acknowledged facts may have waited for the rollup (0 when none waits): logged
    check-ins, deltas, queued days."""
    waiting = conn.scalar(select(s.checkin_log.c.id).limit(1)) is not None
    waiting = waiting or conn.scalar(select(s.activity_deltas.c.id).limit(1)) is not None
    waiting = waiting or conn.scalar(select(s.rollup_queue.c.id).limit(1)) is not None
    if not waiting:
        return 0.0
    state = s.server_state.c
    done = conn.scalar(select(state.value).where(state.key == COMPLETED_KEY))
    if done is None:
        return 0.0  # no rollup has finished yet on this database: the first one is due now
    return max(0.0, (now_ms - int(done)) / 1000)
