"""The event pipeline: turns events into stored facts, inside one writer transaction.

Live HTTP traffic and ``otameter import`` both end here, so both count alike. Every fact
is order-independent (device first/last seen are min/max, activity is a set union,
bandwidth a sum), which is what makes replays and merged, unordered logs come out the same.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from operator import itemgetter
from typing import Any

import orjson
from pyroaring import BitMap
from sqlalchemy import (
    Connection,
    Table,
    and_,
    case,
    func,
    select,
    update,
)
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


# A device row of a batch: a plain list in the order of _DEVICE_FIELDS, so that it goes to the
# database as it is (imports merge hundreds of thousands of them).
_DeviceRow = list[Any]
_FIRST_SEEN, _LAST_SEEN, _LAST_COUNTED_AT = 2, 3, 4


class Pipeline:
    """Applies a batch of events to the database; called only from a writer transaction."""

    def __init__(self, is_google_ip: IpPredicate) -> None:
        self._is_google_ip = is_google_ip
        self._google_cache: dict[str, bool] = {}

    def is_google_ip(self, ip: str) -> bool:
        # Devices keep their address across check-ins: remember recent answers.
        cache = self._google_cache
        answer = cache.get(ip)
        if answer is None:
            if len(cache) >= 100_000:
                cache.clear()
            answer = cache[ip] = self._is_google_ip(ip)
        return answer

    def apply(self, conn: Connection, events: Sequence[Event]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(events)
        fresh = self._dedupe(conn, events, outcomes)
        live_apps = self._existing_apps(conn, {getattr(e, "app_id", "") for e in events})
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
        # A rejected event was not applied: the same event may be imported once it can be.
        refused = [
            event_id
            for i in fresh
            if (outcome := outcomes[i]) is not None
            and outcome.status == "rejected"
            and (event_id := getattr(events[i], "event_id", None)) is not None
        ]
        if refused:
            postgres = conn.dialect.name == "postgresql"
            sql = _SEEN_DELETE_POSTGRESQL if postgres else _SEEN_DELETE_SQLITE
            conn.exec_driver_sql(sql, (orjson.dumps(refused).decode(),))
        return [outcome or ACCEPTED for outcome in outcomes]

    # -- idempotency ---------------------------------------------------------------------

    def _dedupe(
        self, conn: Connection, events: Sequence[Event], outcomes: list[Outcome | None]
    ) -> list[int]:
        """Indexes of events to apply; events whose id was applied before are duplicates."""
        with_ids: dict[str, int] = {}
        at = 0
        for i, event in enumerate(events):
            event_id = getattr(event, "event_id", None)
            if event_id is None:
                continue
            if event_id in with_ids:
                outcomes[i] = DUPLICATE
            else:
                with_ids[event_id] = i
                event_at = getattr(event, "at_ms", 0)
                if event_at > at:
                    at = event_at
        if with_ids:
            # One statement for the whole batch, the ids as one JSON array parameter.
            sql = (
                _SEEN_INSERT_POSTGRESQL
                if conn.dialect.name == "postgresql"
                else _SEEN_INSERT_SQLITE
            )
            payload = orjson.dumps(list(with_ids)).decode()
            new_ids = {row[0] for row in conn.exec_driver_sql(sql, (at, payload)).fetchall()}
            if len(new_ids) < len(with_ids):
                for event_id, i in with_ids.items():
                    if event_id not in new_ids:
                        outcomes[i] = DUPLICATE
        return [i for i in range(len(events)) if outcomes[i] is None]

    @staticmethod
    def _existing_apps(conn: Connection, app_ids: Iterable[str]) -> set[str]:
        wanted = [a for a in app_ids if a]
        if not wanted:
            return set()
        # Plain SQL: this runs once per group commit, where building a Core statement costs
        # more than the query.
        marks = ", ".join([_placeholder(conn)] * len(wanted))
        rows = conn.exec_driver_sql(
            f"SELECT app_id FROM apps WHERE app_id IN ({marks}) AND deleted_at IS NULL",
            tuple(wanted),
        )
        return {row[0] for row in rows}

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

    @staticmethod
    def _upload_times(conn: Connection, app_id: str) -> list[int]:
        """Sorted upload times of the app's bundles (all of them: each opened a window)."""
        rows = conn.exec_driver_sql(
            "SELECT created_at FROM bundles WHERE app_id = "
            f"{_placeholder(conn)} ORDER BY created_at",
            (app_id,),
        )
        return [row[0] for row in rows]

    def _checkins(
        self,
        conn: Connection,
        checkins: list[tuple[int, CheckIn]],
        outcomes: list[Outcome | None],
    ) -> None:
        if not checkins:
            return
        merged: dict[tuple[str, str], _DeviceRow] = {}
        # Devices active per (app, day, verdict, version), as device keys until ordinals exist.
        groups: dict[tuple[str, date, Verdict, str], list[tuple[str, str]]] = defaultdict(list)
        uploads: dict[str, list[int]] = {}
        days: dict[int, date] = {}
        is_google_ip = self.is_google_ip
        counted, emudev = Verdict.COUNTED, Verdict.EMUDEV
        for i, c in checkins:
            at_ms = c.at_ms
            app_id = c.app_id
            times = uploads.get(app_id)
            if times is None:
                times = uploads[app_id] = self._upload_times(conn, app_id)
            verdict = classify(c.is_emulator, c.is_prod, c.ip, at_ms, times, is_google_ip)
            key = (app_id, c.device_id)
            counted_at = at_ms if verdict is counted else None
            row = merged.get(key)
            if row is not None:
                # A device seen again in the batch (the common case in imports): merged inline.
                if at_ms < row[_FIRST_SEEN]:
                    row[_FIRST_SEEN] = at_ms
                if counted_at is not None and (
                    row[_LAST_COUNTED_AT] is None or counted_at > row[_LAST_COUNTED_AT]
                ):
                    row[_LAST_COUNTED_AT] = counted_at
                if at_ms >= row[_LAST_SEEN]:
                    _take_attributes(row, c)
            else:
                merged[key] = [app_id, c.device_id, at_ms, at_ms, counted_at, *_attributes(c)]
            if verdict is counted or verdict is emudev:
                day_number = at_ms // 86_400_000
                day = days.get(day_number)
                if day is None:
                    day = days[day_number] = day_of_ms(at_ms)
                groups[(app_id, day, verdict, c.version_name)].append(key)
                outcomes[i] = ACCEPTED
            else:
                outcomes[i] = _GOOGLE_WINDOW
        ordinals = self._upsert_devices(conn, list(merged.values()))
        if groups:
            conn.execute(
                s.activity_deltas.insert(),
                [
                    {
                        "app_id": app_id,
                        "day": day,
                        "kind": kind.value,
                        "version_name": version,
                        "bitmap": BitMap([ordinals[key] for key in keys]).serialize(),
                    }
                    for (app_id, day, kind, version), keys in groups.items()
                ],
            )

    @staticmethod
    def _upsert_devices(conn: Connection, rows: list[_DeviceRow]) -> dict[tuple[str, str], int]:
        """Upsert the batch's device rows; returns each device's ordinal (``devices.id``).

        The rows travel as one JSON array parameter: the statement text is the same for every
        batch (prepared once) and no per-row work happens in SQLAlchemy. Rows go in (app,
        device) order so that writers in several processes lock rows in the same order and
        never deadlock.
        """
        rows = sorted(rows, key=itemgetter(0, 1))
        postgres = conn.dialect.name == "postgresql"
        payload = orjson.dumps(rows).decode()
        sql = _DEVICE_UPSERT_POSTGRESQL if postgres else _DEVICE_UPSERT_SQLITE
        result = conn.exec_driver_sql(sql, (payload,))
        return {(app_id, device_id): ordinal for ordinal, app_id, device_id in result.fetchall()}

    # -- downloads and plugin stats ------------------------------------------------------------

    def _downloads(
        self,
        conn: Connection,
        events: Sequence[Event],
        fresh: list[int],
        outcomes: list[Outcome | None],
        queue: set[tuple[str, date, str]],
    ) -> None:
        pending = [i for i in fresh if outcomes[i] is None]
        downloads = [i for i in pending if isinstance(events[i], Download)]
        if downloads:
            rows = []
            for i in downloads:
                event = events[i]
                assert isinstance(event, Download)
                day = day_of_ms(event.at_ms)
                queue.add((event.app_id, day, "bandwidth"))
                rows.append(
                    {
                        "app_id": event.app_id,
                        "device_id": event.device_id,
                        "version": event.version,
                        "at": event.at_ms,
                        "day": day,
                        "bytes": event.bytes,
                    }
                )
            # The live download route needs each row's id (to correct its byte count later).
            stmt = s.downloads.insert().returning(s.downloads.c.id, sort_by_parameter_order=True)
            ids = conn.scalars(stmt, rows).all()
            for i, download_id in zip(downloads, ids, strict=True):
                outcomes[i] = Outcome("accepted", value=download_id)
        for i in pending:
            event = events[i]
            if isinstance(event, DownloadCorrection):
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


def _placeholder(conn: Connection) -> str:
    """The driver's positional parameter mark, for statements run with exec_driver_sql."""
    return "%s" if conn.dialect.name == "postgresql" else "?"


# (column, PostgreSQL type) in the order of the JSON rows built by Pipeline._upsert_devices.
_DEVICE_FIELDS = (
    ("app_id", "text"),
    ("device_id", "text"),
    ("first_seen", "bigint"),
    ("last_seen", "bigint"),
    ("last_counted_at", "bigint"),
    ("platform", "text"),
    ("version_name", "text"),
    ("version_build", "text"),
    ("version_os", "text"),
    ("plugin_version", "text"),
    ("custom_id", "text"),
    ("is_emulator", "boolean"),
    ("is_prod", "boolean"),
)
# Device attributes that follow the newest check-in, whatever order events arrive in.
_LATEST_FIELDS = (
    "platform",
    "version_name",
    "version_build",
    "version_os",
    "plugin_version",
    "custom_id",
    "is_emulator",
    "is_prod",
)


def _device_upsert_sql(postgres: bool) -> str:
    names = [name for name, _ in _DEVICE_FIELDS]
    if postgres:
        values = [f"(e.v->>{i})::{kind}" for i, (_, kind) in enumerate(_DEVICE_FIELDS)]
        # An INSERT .. ON CONFLICT takes a sequence number even when it ends as an update:
        # every check-in would burn an ordinal, making ordinals sparse (bigger bitmaps) and
        # reaching 2**32 (the bitmap limit) after 4 billion check-ins. So a known device is
        # upserted with its own id and only a new one draws from the sequence.
        names.insert(0, "id")
        # The sequence of the BIGSERIAL column (named by PostgreSQL as table_column_seq).
        values.insert(0, "COALESCE(known.id, nextval('devices_id_seq'))")
        source = (
            "json_array_elements(%s::json) WITH ORDINALITY AS e(v, n)"
            " LEFT JOIN devices AS known"
            " ON known.app_id = e.v->>0 AND known.device_id = e.v->>1"
        )
        order = " ORDER BY e.n"
    else:
        values = [f"e.value->>{i}" for i in range(len(_DEVICE_FIELDS))]
        # WHERE true: SQLite needs it to parse INSERT .. SELECT .. ON CONFLICT.
        source = "json_each(?) AS e"
        order = ""

    def greatest(column: str) -> str:
        # max() keeping the non-NULL side (SQLite has no GREATEST); SET sees the old row.
        new, old = f"excluded.{column}", f"devices.{column}"
        return (
            f"CASE WHEN {new} IS NULL THEN {old} WHEN {old} IS NULL OR {new} > {old}"
            f" THEN {new} ELSE {old} END"
        )

    sets = [
        "first_seen = CASE WHEN excluded.first_seen < devices.first_seen"
        " THEN excluded.first_seen ELSE devices.first_seen END",
        f"last_seen = {greatest('last_seen')}",
        f"last_counted_at = {greatest('last_counted_at')}",
        *(
            f"{name} = CASE WHEN excluded.last_seen >= devices.last_seen"
            f" THEN excluded.{name} ELSE devices.{name} END"
            for name in _LATEST_FIELDS
        ),
    ]
    return (
        f"INSERT INTO devices ({', '.join(names)}) SELECT {', '.join(values)} FROM {source}"
        f" WHERE true{order} ON CONFLICT (app_id, device_id) DO UPDATE SET {', '.join(sets)}"
        " RETURNING id, app_id, device_id"
    )


_DEVICE_UPSERT_SQLITE = _device_upsert_sql(postgres=False)
_DEVICE_UPSERT_POSTGRESQL = _device_upsert_sql(postgres=True)


_GOOGLE_WINDOW = Outcome("accepted", reason="google_window")
_SEEN_INSERT_SQLITE = (
    "INSERT INTO seen_events (event_id, applied_at) SELECT value, ? FROM json_each(?)"
    " WHERE true ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
# As one JSON parameter: a batch may refuse more ids than a statement may have parameters.
_SEEN_DELETE_SQLITE = "DELETE FROM seen_events WHERE event_id IN (SELECT value FROM json_each(?))"
_SEEN_DELETE_POSTGRESQL = (
    "DELETE FROM seen_events WHERE event_id IN (SELECT json_array_elements_text(%s::json))"
)
_SEEN_INSERT_POSTGRESQL = (
    "INSERT INTO seen_events (event_id, applied_at)"
    " SELECT e, %s FROM json_array_elements_text(%s::json) AS e"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


def _attributes(c: CheckIn) -> tuple[Any, ...]:
    """A check-in's device attributes, in the order of a device row after ``last_counted_at``."""
    return (
        c.platform,
        c.version_name,
        c.version_build,
        c.version_os,
        c.plugin_version,
        c.custom_id,
        c.is_emulator,
        c.is_prod,
    )


def _take_attributes(row: _DeviceRow, c: CheckIn) -> None:
    """Device attributes follow the newest check-in, whatever order events arrive in."""
    row[_LAST_SEEN] = c.at_ms
    row[5:] = _attributes(c)


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
