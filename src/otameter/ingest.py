"""The event pipeline: turns events into stored facts, inside one writer transaction.

Live HTTP traffic and ``otameter import`` both end here, so both count alike. Every fact
is order-independent (device first/last seen are min/max, activity is a set union,
bandwidth a sum), which is what makes replays and merged, unordered logs come out the same.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pyroaring import BitMap
from sqlalchemy import Connection, Table, and_, case, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from . import schema as s
from .clock import day_of_ms
from .counting import Verdict, classify
from .events import (
    ACCEPTED,
    DUPLICATE,
    BundleDelete,
    BundleUpload,
    CheckIn,
    Download,
    DownloadCorrection,
    Event,
    Outcome,
    PluginStat,
    rejected,
)

IpPredicate = Callable[[str], bool]


def dialect_insert(conn: Connection, table: Table) -> Any:
    """INSERT with ON CONFLICT support for the connection's engine."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _greatest(old: Any, new: Any) -> ColumnElement[Any]:
    # Portable max() that keeps the non-NULL side (SQLite has no GREATEST).
    return case(
        (new.is_(None), old),
        (old.is_(None), new),
        (new > old, new),
        else_=old,
    )


def _least(old: Any, new: Any) -> ColumnElement[Any]:
    return case((new < old, new), else_=old)


@dataclass(slots=True)
class _DeviceRow:
    app_id: str
    device_id: str
    first_seen: int
    last_seen: int
    last_counted_at: int | None
    platform: str
    version_name: str
    version_build: str
    version_os: str
    plugin_version: str
    custom_id: str
    is_emulator: bool
    is_prod: bool


class Pipeline:
    """Applies a batch of events to the database; called only from a writer transaction."""

    def __init__(self, is_google_ip: IpPredicate) -> None:
        self.is_google_ip = is_google_ip

    def apply(self, conn: Connection, events: Sequence[Event]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(events)
        fresh = self._dedupe(conn, events, outcomes)
        live_apps = self._existing_apps(conn, {getattr(events[i], "app_id", "") for i in fresh})
        queue: set[tuple[str, date, str]] = set()

        checkins: list[tuple[int, CheckIn]] = []
        for i in fresh:
            event = events[i]
            app_id = getattr(event, "app_id", None)
            if app_id is not None and app_id not in live_apps:
                outcomes[i] = rejected(f"unknown app {app_id!r}")
            elif isinstance(event, CheckIn):
                checkins.append((i, event))
            elif isinstance(event, BundleUpload):
                outcomes[i] = self._upload(conn, event, queue)
            elif isinstance(event, BundleDelete):
                outcomes[i] = self._delete(conn, event, queue)
        # Bundles first: a check-in in the same batch sees an upload before it (Google window).
        self._checkins(conn, checkins, outcomes)
        self._downloads(conn, events, fresh, outcomes, queue)
        self._stats(conn, events, fresh, outcomes)
        if queue:
            conn.execute(
                s.rollup_queue.insert(),
                [{"app_id": a, "day": d, "what": w} for a, d, w in sorted(queue)],
            )
        return [outcome or ACCEPTED for outcome in outcomes]

    # -- idempotency ---------------------------------------------------------------------

    def _dedupe(
        self, conn: Connection, events: Sequence[Event], outcomes: list[Outcome | None]
    ) -> list[int]:
        """Indexes of events to apply; events whose id was applied before are duplicates."""
        with_ids: dict[str, int] = {}
        for i, event in enumerate(events):
            event_id = getattr(event, "event_id", None)
            if event_id is None:
                continue
            if event_id in with_ids:
                outcomes[i] = DUPLICATE
            else:
                with_ids[event_id] = i
        if with_ids:
            at = max(getattr(events[i], "at_ms", 0) for i in with_ids.values())
            stmt = (
                dialect_insert(conn, s.seen_events)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(s.seen_events.c.event_id)
            )
            rows = [{"event_id": eid, "applied_at": at} for eid in with_ids]
            new_ids = set(conn.scalars(stmt, rows))
            for event_id, i in with_ids.items():
                if event_id not in new_ids:
                    outcomes[i] = DUPLICATE
        return [i for i in range(len(events)) if outcomes[i] is None]

    @staticmethod
    def _existing_apps(conn: Connection, app_ids: Iterable[str]) -> set[str]:
        wanted = [a for a in app_ids if a]
        if not wanted:
            return set()
        rows = conn.scalars(
            select(s.apps.c.app_id).where(
                s.apps.c.app_id.in_(wanted), s.apps.c.deleted_at.is_(None)
            )
        )
        return set(rows)

    # -- bundles ---------------------------------------------------------------------------

    def _upload(
        self, conn: Connection, event: BundleUpload, queue: set[tuple[str, date, str]]
    ) -> Outcome:
        exists = conn.scalar(
            select(func.count())
            .select_from(s.bundles)
            .where(s.bundles.c.app_id == event.app_id, s.bundles.c.version == event.version)
        )
        if exists:
            # Deleted versions keep their name: their statistics still refer to it.
            return rejected(f"version {event.version!r} already exists for {event.app_id}")
        bundle_id = str(uuid.uuid4())
        row = {
            "id": bundle_id,
            "app_id": event.app_id,
            "version": event.version,
            "size": event.size,
            "checksum": event.checksum,
            "storage_path": event.storage_path,
            "external_url": event.external_url,
            "created_at": event.at_ms,
            "created_by": event.created_by,
        }
        conn.execute(s.bundles.insert(), row)
        if event.channel:
            link_channel(conn, event.app_id, event.channel, bundle_id, event.at_ms)
        if event.external_url is None:
            queue.add((event.app_id, day_of_ms(event.at_ms), "storage"))
        return Outcome("accepted", value=row)

    def _delete(
        self, conn: Connection, event: BundleDelete, queue: set[tuple[str, date, str]]
    ) -> Outcome:
        bundle = conn.execute(
            select(s.bundles.c.id, s.bundles.c.external_url, s.bundles.c.storage_path).where(
                s.bundles.c.app_id == event.app_id,
                s.bundles.c.version == event.version,
                s.bundles.c.deleted_at.is_(None),
            )
        ).first()
        if bundle is None:
            return rejected(f"no bundle {event.version!r} for {event.app_id}")
        conn.execute(
            update(s.bundles).where(s.bundles.c.id == bundle.id).values(deleted_at=event.at_ms)
        )
        # A channel never serves a deleted bundle.
        conn.execute(
            update(s.channels)
            .where(s.channels.c.bundle_id == bundle.id)
            .values(bundle_id=None, updated_at=event.at_ms)
        )
        if bundle.external_url is None:
            queue.add((event.app_id, day_of_ms(event.at_ms), "storage"))
        return Outcome("accepted", value={"id": bundle.id, "storage_path": bundle.storage_path})

    # -- check-ins -------------------------------------------------------------------------

    def _bundle_uploaded_between(self, conn: Connection, app_id: str) -> Callable[[int, int], bool]:
        def check(after_ms: int, until_ms: int) -> bool:
            return (
                conn.scalar(
                    select(literal_column("1"))
                    .select_from(s.bundles)
                    .where(
                        s.bundles.c.app_id == app_id,
                        s.bundles.c.created_at > after_ms,
                        s.bundles.c.created_at <= until_ms,
                    )
                    .limit(1)
                )
                is not None
            )

        return check

    def _checkins(
        self,
        conn: Connection,
        checkins: list[tuple[int, CheckIn]],
        outcomes: list[Outcome | None],
    ) -> None:
        if not checkins:
            return
        merged: dict[tuple[str, str], _DeviceRow] = {}
        active: list[tuple[tuple[str, str], date, Verdict, str]] = []
        for i, c in checkins:
            from_google = bool(c.ip) and self.is_google_ip(c.ip or "")
            verdict = classify(
                is_emulator=c.is_emulator,
                is_prod=c.is_prod,
                from_google=from_google,
                bundle_uploaded_between=self._bundle_uploaded_between(conn, c.app_id),
                at_ms=c.at_ms,
            )
            key = (c.app_id, c.device_id)
            counted_at = c.at_ms if verdict is Verdict.COUNTED else None
            row = merged.get(key)
            if row is None:
                merged[key] = _DeviceRow(
                    c.app_id,
                    c.device_id,
                    c.at_ms,
                    c.at_ms,
                    counted_at,
                    c.platform,
                    c.version_name,
                    c.version_build,
                    c.version_os,
                    c.plugin_version,
                    c.custom_id,
                    c.is_emulator,
                    c.is_prod,
                )
            else:
                _merge_device(row, c, counted_at)
            if verdict is not Verdict.GOOGLE_WINDOW:
                active.append((key, day_of_ms(c.at_ms), verdict, c.version_name))
            outcomes[i] = (
                ACCEPTED
                if verdict is not Verdict.GOOGLE_WINDOW
                else Outcome("accepted", reason="google_window")
            )
        ordinals = self._upsert_devices(conn, list(merged.values()))

        deltas: dict[tuple[str, date, str, str], BitMap] = defaultdict(BitMap)
        for key, day, verdict, version in active:
            ordinal = ordinals[key]
            deltas[(key[0], day, verdict.value, version)].add(ordinal)
        if deltas:
            conn.execute(
                s.activity_deltas.insert(),
                [
                    {
                        "app_id": app_id,
                        "day": day,
                        "kind": kind,
                        "version_name": version,
                        "bitmap": bitmap.serialize(),
                    }
                    for (app_id, day, kind, version), bitmap in deltas.items()
                ],
            )

    @staticmethod
    def _upsert_devices(conn: Connection, rows: list[_DeviceRow]) -> dict[tuple[str, str], int]:
        d = s.devices.c
        stmt = dialect_insert(conn, s.devices)
        ex = stmt.excluded
        newer = ex.last_seen >= d.last_seen

        def latest(column: str) -> ColumnElement[Any]:
            # Device attributes follow the newest check-in, whatever order events arrive in.
            return case((newer, getattr(ex, column)), else_=getattr(d, column))

        stmt = stmt.on_conflict_do_update(
            index_elements=["app_id", "device_id"],
            set_={
                "first_seen": _least(d.first_seen, ex.first_seen),
                "last_seen": _greatest(d.last_seen, ex.last_seen),
                "last_counted_at": _greatest(d.last_counted_at, ex.last_counted_at),
                **{
                    name: latest(name)
                    for name in (
                        "platform",
                        "version_name",
                        "version_build",
                        "version_os",
                        "plugin_version",
                        "custom_id",
                        "is_emulator",
                        "is_prod",
                    )
                },
            },
        ).returning(d.id, d.app_id, d.device_id)
        params = [
            {
                "app_id": r.app_id,
                "device_id": r.device_id,
                "first_seen": r.first_seen,
                "last_seen": r.last_seen,
                "last_counted_at": r.last_counted_at,
                "platform": r.platform,
                "version_name": r.version_name,
                "version_build": r.version_build,
                "version_os": r.version_os,
                "plugin_version": r.plugin_version,
                "custom_id": r.custom_id,
                "is_emulator": r.is_emulator,
                "is_prod": r.is_prod,
            }
            for r in rows
        ]
        result = conn.execute(stmt, params)
        return {(row.app_id, row.device_id): row.id for row in result}

    # -- downloads and plugin stats ------------------------------------------------------------

    def _downloads(
        self,
        conn: Connection,
        events: Sequence[Event],
        fresh: list[int],
        outcomes: list[Outcome | None],
        queue: set[tuple[str, date, str]],
    ) -> None:
        for i in fresh:
            event = events[i]
            if outcomes[i] is not None:
                continue
            if isinstance(event, Download):
                day = day_of_ms(event.at_ms)
                download_id = conn.scalar(
                    s.downloads.insert()
                    .values(
                        app_id=event.app_id,
                        device_id=event.device_id,
                        version=event.version,
                        at=event.at_ms,
                        day=day,
                        bytes=event.bytes,
                    )
                    .returning(s.downloads.c.id)
                )
                queue.add((event.app_id, day, "bandwidth"))
                outcomes[i] = Outcome("accepted", value=download_id)
            elif isinstance(event, DownloadCorrection):
                row = conn.execute(
                    update(s.downloads)
                    .where(s.downloads.c.id == event.download_id)
                    .values(bytes=event.bytes)
                    .returning(s.downloads.c.app_id, s.downloads.c.day)
                ).first()
                if row is None:
                    outcomes[i] = rejected(f"no download {event.download_id}")
                else:
                    queue.add((row.app_id, row.day, "bandwidth"))

    @staticmethod
    def _stats(
        conn: Connection,
        events: Sequence[Event],
        fresh: list[int],
        outcomes: list[Outcome | None],
    ) -> None:
        rows = [
            {
                "app_id": e.app_id,
                "device_id": e.device_id,
                "action": e.action,
                "version_name": e.version_name,
                "old_version_name": e.old_version_name,
                "at": e.at_ms,
                "metadata": e.metadata,
            }
            for i in fresh
            if outcomes[i] is None and isinstance(e := events[i], PluginStat)
        ]
        if rows:
            conn.execute(s.device_events.insert(), rows)


def _merge_device(row: _DeviceRow, c: CheckIn, counted_at: int | None) -> None:
    row.first_seen = min(row.first_seen, c.at_ms)
    if counted_at is not None and (row.last_counted_at is None or counted_at > row.last_counted_at):
        row.last_counted_at = counted_at
    if c.at_ms >= row.last_seen:
        row.last_seen = c.at_ms
        row.platform = c.platform
        row.version_name = c.version_name
        row.version_build = c.version_build
        row.version_os = c.version_os
        row.plugin_version = c.plugin_version
        row.custom_id = c.custom_id
        row.is_emulator = c.is_emulator
        row.is_prod = c.is_prod


def link_channel(conn: Connection, app_id: str, name: str, bundle_id: str, at_ms: int) -> None:
    """Point a channel at a bundle, creating it (as the app's default if it has none)."""
    c = s.channels.c
    updated = conn.execute(
        update(s.channels)
        .where(and_(c.app_id == app_id, c.name == name))
        .values(bundle_id=bundle_id, updated_at=at_ms)
    )
    if updated.rowcount:
        return
    has_default = conn.scalar(
        select(func.count()).select_from(s.channels).where(c.app_id == app_id, c.public.is_(True))
    )
    conn.execute(
        s.channels.insert().values(
            app_id=app_id,
            name=name,
            bundle_id=bundle_id,
            public=not has_default,
            created_at=at_ms,
            updated_at=at_ms,
        )
    )
