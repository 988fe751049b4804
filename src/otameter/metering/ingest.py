"""The event pipeline: turns events into stored facts, inside one writer transaction.

Live HTTP traffic and ``otameter import`` both end here, so both count alike. Every fact
is order-independent (device first/last seen are min/max, activity is a set union,
bandwidth a sum), which is what makes replays and merged, unordered logs come out the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import orjson
from pyroaring import BitMap
from sqlalchemy import (
    Connection,
    and_,
    delete,
    func,
    select,
    update,
)

from ..bundle_store import delete_chunks
from ..channel_store import public_column, unclaimed_platforms
from ..clock import day_of_ms
from ..models.shapes import PLATFORMS
from ..storage import app_rows
from ..storage import schema as s
from ..storage.dialect import placeholder
from .counting import Verdict
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
from .fold import DEVICE_FIELDS, LATEST_FIELDS, Fold, FoldedBatch, FoldedFacts, IpPredicate


class Pipeline:
    """Applies a batch of events to the database; called only from a writer transaction."""

    def __init__(self, is_google_ip: IpPredicate) -> None:
        self._is_google_ip = is_google_ip
        self._google_cache: dict[str, bool] = {}

    @property
    def google_predicate(self) -> IpPredicate:
        """The uncached lookup, for folds made in other processes."""
        return self._is_google_ip

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
        live_apps = self.existing_apps(conn, {getattr(e, "app_id", "") for e in events})
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
            queue_days(conn, queue)
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
            sql = _seen_insert(conn) + " RETURNING event_id"
            payload = orjson.dumps(list(with_ids)).decode()
            new_ids = {row[0] for row in conn.exec_driver_sql(sql, (at, payload)).fetchall()}
            if len(new_ids) < len(with_ids):
                for event_id, i in with_ids.items():
                    if event_id not in new_ids:
                        outcomes[i] = DUPLICATE
        return [i for i in range(len(events)) if outcomes[i] is None]

    @staticmethod
    def existing_apps(conn: Connection, app_ids: Iterable[str]) -> set[str]:
        wanted = [a for a in app_ids if a]
        if not wanted:
            return set()
        # Plain SQL: this runs once per group commit, where building a Core statement costs
        # more than the query.
        marks = ", ".join([placeholder(conn)] * len(wanted))
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
        bundle_id = event.bundle_id or str(uuid.uuid4())
        row = {
            "id": bundle_id,
            "app_id": event.app_id,
            "version": event.version,
            "size": event.size,
            "checksum": event.checksum,
            "storage_path": event.storage_path,
            "storage": event.storage,
            "external_url": event.external_url,
            "created_at": event.at_ms,
            "created_by": event.created_by,
        }
        conn.execute(s.bundles.insert(), row)
        if event.bundle_id:
            # The upload is recorded: its bytes are no longer an upload in progress.
            u = s.bundle_uploads.c
            conn.execute(
                delete(s.bundle_uploads).where(
                    u.app_id == event.app_id, u.bundle_id == event.bundle_id
                )
            )
        if event.channel:
            link_channel(conn, event.app_id, event.channel, bundle_id, event.at_ms)
        if event.external_url is None:
            queue.add((event.app_id, day_of_ms(event.at_ms), "storage"))
        return Outcome("accepted", value=row)

    def _delete(
        self, conn: Connection, event: BundleDelete, queue: set[tuple[str, date, str]]
    ) -> Outcome:
        b = s.bundles.c
        bundle = conn.execute(
            select(b.id, b.external_url, b.storage_path, b.storage, b.size).where(
                s.bundles.c.app_id == event.app_id,
                s.bundles.c.version == event.version,
                s.bundles.c.deleted_at.is_(None),
            )
        ).first()
        if bundle is None:
            return rejected(f"no bundle {event.version!r} for {event.app_id}")
        conn.execute(
            update(s.bundles)
            .where(s.bundles.c.app_id == event.app_id, s.bundles.c.id == bundle.id)
            .values(deleted_at=event.at_ms)
        )
        # A channel never serves a deleted bundle.
        conn.execute(
            update(s.channels)
            .where(s.channels.c.app_id == event.app_id, s.channels.c.bundle_id == bundle.id)
            .values(bundle_id=None, updated_at=event.at_ms)
        )
        if bundle.storage == "database":
            # The bytes go with the delete, in its transaction: freed on every machine at once.
            delete_chunks(conn, event.app_id, bundle.id)
        if bundle.external_url is None:
            queue.add((event.app_id, day_of_ms(event.at_ms), "storage"))
        value = {
            "id": bundle.id,
            "app_id": event.app_id,
            "storage": bundle.storage,
            "storage_path": bundle.storage_path,
            "size": bundle.size,
        }
        return Outcome("accepted", value=value)

    # -- check-ins -------------------------------------------------------------------------

    @staticmethod
    def upload_times(conn: Connection, app_id: str) -> list[int]:
        """Sorted upload times of the app's bundles (all of them: each opened a window)."""
        rows = conn.exec_driver_sql(
            "SELECT created_at FROM bundles WHERE app_id = "
            f"{placeholder(conn)} ORDER BY created_at",
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
        fold = Fold(lambda app_id: self.upload_times(conn, app_id), self.is_google_ip)
        google = Verdict.GOOGLE_WINDOW
        for i, checkin in checkins:
            outcomes[i] = _GOOGLE_WINDOW if fold.add_checkin(checkin) is google else ACCEPTED
        self.store(conn, fold.seal())

    def store(self, conn: Connection, facts: FoldedFacts) -> None:
        """Store a batch's folded facts (see ``store_facts``)."""
        store_facts(conn, facts)

    def apply_folded(self, conn: Connection, batch: FoldedBatch) -> bool:
        """Store a batch folded elsewhere; False (nothing written) if its assumptions fail.

        The fold assumed that its apps exist and that none of its event ids was applied
        before. The caller applies the events one by one (``apply``) when this answers False.
        """
        if self.existing_apps(conn, batch.apps) != batch.apps:
            return False
        if batch.id_count:
            savepoint = conn.begin_nested()
            # Without RETURNING: the row count alone says whether every id was new.
            inserted = conn.exec_driver_sql(
                _seen_insert(conn), (batch.latest_at, batch.event_ids)
            ).rowcount
            if inserted != batch.id_count:
                savepoint.rollback()
                return False
            savepoint.commit()
        self.store(conn, batch.ready_facts())
        return True

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
                    (event.app_id, event.device_id, event.version, event.at_ms, day, event.bytes)
                )
            # The live download route needs each row's id (to correct its byte count later).
            ids = app_rows.insert(conn, "downloads", DOWNLOAD_COLUMNS, rows, returning=True)
            for i, download_id in zip(downloads, ids, strict=True):
                outcomes[i] = Outcome("accepted", value=download_id)
        for i in pending:
            event = events[i]
            if isinstance(event, DownloadCorrection):
                dl = s.downloads.c
                row = conn.execute(
                    update(s.downloads)
                    .where(dl.app_id == event.app_id, dl.id == event.download_id)
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
        # Imported here: release_ingest builds on this module's helpers.
        from ..release_ingest import store_stats

        store_stats(
            conn,
            [e for i in fresh if outcomes[i] is None and isinstance(e := events[i], PluginStat)],
        )


def store_facts(conn: Connection, facts: FoldedFacts) -> None:
    """Store a batch's folded facts: device rows, activity deltas and downloads."""
    ordinals = upsert_devices(conn, facts.device_rows) if facts.device_rows else []
    if facts.activity:
        app_rows.insert(
            conn,
            "activity_deltas",
            DELTA_COLUMNS,
            [
                (app_id, day, kind, version, BitMap([ordinals[i] for i in members]).serialize())
                for (app_id, day, kind, version), members in facts.activity.items()
            ],
        )
    if facts.downloads:
        app_rows.insert(conn, "downloads", DOWNLOAD_COLUMNS, facts.downloads)
        queue_days(conn, {(row[0], row[4], "bandwidth") for row in facts.downloads})


DELTA_COLUMNS = ("app_id", "day", "kind", "version_name", "bitmap")
DOWNLOAD_COLUMNS = ("app_id", "device_id", "version", "at", "day", "bytes")


def queue_days(conn: Connection, days: set[tuple[str, date, str]]) -> None:
    """Queue (app, day, what) for the rollup to recompute."""
    app_rows.insert(conn, "rollup_queue", ("app_id", "day", "what"), sorted(days))


def upsert_devices(conn: Connection, rows: list[list[Any]]) -> list[int]:
    """Upsert device rows; returns their ordinals (within their app), in row order.

    A known device keeps its ordinal; a new one takes the next of its app's counter
    (``apps.device_ordinals``, raised in this transaction), so each app's ordinals stay
    dense and no sequence is shared by all apps.
    """
    postgres = conn.dialect.name == "postgresql"
    ordinals = _known_ordinals(conn, rows, postgres)
    fresh: dict[str, list[int]] = {}
    for i, ordinal in enumerate(ordinals):
        if ordinal is None:
            fresh.setdefault(rows[i][0], []).append(i)
    take = _TAKE_ORDINALS_POSTGRESQL if postgres else _TAKE_ORDINALS_SQLITE
    for app_id, indexes in fresh.items():
        # The app's row stays locked until the commit: concurrent writers take turns here.
        last = int(conn.exec_driver_sql(take, (len(indexes), app_id)).scalar_one())
        for ordinal, i in enumerate(indexes, start=last - len(indexes) + 1):
            ordinals[i] = ordinal
    if postgres:
        # One JSON array parameter: the statement text is the same for every batch and no
        # per-row work happens in the driver. Rows are sent in key order (merged import
        # batches hold runs of it): concurrent writers lock rows in the same order. A device
        # another process added meanwhile keeps that process's ordinal (RETURNING says which).
        ordered = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1]))
        payload = orjson.dumps([[*rows[i], ordinals[i]] for i in ordered]).decode()
        result = conn.exec_driver_sql(_DEVICE_UPSERT_POSTGRESQL, (payload,))
        by_key = {(app_id, device_id): ordinal for ordinal, app_id, device_id in result}
        return [by_key[(row[0], row[1])] for row in rows]
    # SQLite has one writer at a time: the ordinals given are the ordinals stored. The
    # driver's cursor binds each row directly, cheaper than SQLAlchemy's executemany.
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        cursor.executemany(
            _DEVICE_UPSERT_SQLITE, [[*row, ordinals[i]] for i, row in enumerate(rows)]
        )
    finally:
        cursor.close()
    return [int(ordinal) for ordinal in ordinals if ordinal is not None]


def _known_ordinals(conn: Connection, rows: list[list[Any]], postgres: bool) -> list[int | None]:
    """The stored ordinal of each row's device (None for a new device), in row order."""
    app_id = rows[0][0]
    if not postgres and all(row[0] == app_id for row in rows):
        # One app (an import, most batches): the app as a parameter and plain device ids.
        # Extracting two fields from a JSON array of pairs cost three times as much a row.
        keys = orjson.dumps([row[1] for row in rows]).decode()
        result = conn.exec_driver_sql(_APP_DEVICE_ORDINALS_SQLITE, (keys, app_id))
    else:
        pairs = orjson.dumps([row[:2] for row in rows]).decode()
        sql = _DEVICE_ORDINALS_POSTGRESQL if postgres else _DEVICE_ORDINALS_SQLITE
        result = conn.exec_driver_sql(sql, (pairs,))
    return [ordinal for (ordinal,) in result]


def _device_upsert_sql(postgres: bool) -> str:
    fields = [*DEVICE_FIELDS, ("id", "bigint")]
    names = [name for name, _ in fields]
    if postgres:
        values = [f"(e.v->>{i})::{kind}" for i, (_, kind) in enumerate(fields)]
        source = (
            f" SELECT {', '.join(values)} FROM json_array_elements(%s::json)"
            # Rows locked in the order given, which is key order (see upsert_devices):
            # writers in several processes never deadlock.
            " WITH ORDINALITY AS e(v, n) ORDER BY e.n"
        )
    else:
        source = f" VALUES ({', '.join(['?'] * len(names))})"

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
            for name in LATEST_FIELDS
        ),
    ]
    returning = " RETURNING id, app_id, device_id" if postgres else ""
    return (
        f"INSERT INTO devices ({', '.join(names)}){source}"
        f" ON CONFLICT (app_id, device_id) DO UPDATE SET {', '.join(sets)}{returning}"
    )


_DEVICE_UPSERT_SQLITE = _device_upsert_sql(postgres=False)
_DEVICE_UPSERT_POSTGRESQL = _device_upsert_sql(postgres=True)
_TAKE_ORDINALS_SQLITE = (
    "UPDATE apps SET device_ordinals = device_ordinals + ? WHERE app_id = ?"
    " RETURNING device_ordinals"
)
_TAKE_ORDINALS_POSTGRESQL = _TAKE_ORDINALS_SQLITE.replace("?", "%s")
# LEFT JOIN: one answer a row, NULL for a new device. ORDER BY e.key also keeps the planner
# driving the join from the JSON array: without it, SQLite may scan the devices and search
# the array for each one.
_DEVICE_ORDINALS_SQLITE = (
    "SELECT d.id FROM json_each(?) AS e"
    " LEFT JOIN devices AS d ON d.app_id = e.value->>0 AND d.device_id = e.value->>1"
    " ORDER BY e.key"
)
_APP_DEVICE_ORDINALS_SQLITE = (
    "SELECT d.id FROM json_each(?) AS e"
    " LEFT JOIN devices AS d ON d.app_id = ? AND d.device_id = e.value"
    " ORDER BY e.key"
)
_DEVICE_ORDINALS_POSTGRESQL = (
    "SELECT d.id FROM json_array_elements(%s::json) WITH ORDINALITY AS e(v, n)"
    " LEFT JOIN devices AS d ON d.app_id = e.v->>0 AND d.device_id = e.v->>1"
    " ORDER BY e.n"
)


_GOOGLE_WINDOW = Outcome("accepted", reason="google_window")
_SEEN_INSERT_SQLITE = (
    "INSERT INTO seen_events (event_id, applied_at) SELECT value, ? FROM json_each(?)"
    " WHERE true ON CONFLICT (event_id) DO NOTHING"
)
# As one JSON parameter: a batch may refuse more ids than a statement may have parameters.
_SEEN_DELETE_SQLITE = "DELETE FROM seen_events WHERE event_id IN (SELECT value FROM json_each(?))"
_SEEN_DELETE_POSTGRESQL = (
    "DELETE FROM seen_events WHERE event_id IN (SELECT json_array_elements_text(%s::json))"
)
_SEEN_INSERT_POSTGRESQL = (
    "INSERT INTO seen_events (event_id, applied_at)"
    " SELECT e, %s FROM json_array_elements_text(%s::json) AS e"
    " ON CONFLICT (event_id) DO NOTHING"
)


def _seen_insert(conn: Connection) -> str:
    """Records event ids (applied_at, then the ids as one JSON array); known ids are skipped."""
    return _SEEN_INSERT_POSTGRESQL if conn.dialect.name == "postgresql" else _SEEN_INSERT_SQLITE


def link_channel(conn: Connection, app_id: str, name: str, bundle_id: str, at_ms: int) -> None:
    """Point a channel at a bundle, creating it (public for the platforms without one)."""
    c = s.channels.c
    updated = conn.execute(
        update(s.channels)
        .where(and_(c.app_id == app_id, c.name == name))
        # The bundle it served before is what auto_rollback goes back to.
        .values(
            previous_bundle_id=func.coalesce(c.bundle_id, c.previous_bundle_id),
            bundle_id=bundle_id,
            updated_at=at_ms,
        )
    )
    if updated.rowcount:
        return
    # The new channel serves every platform; it becomes the public one of those without one.
    unclaimed = unclaimed_platforms(conn, app_id)
    insert_channel(
        conn,
        {
            "app_id": app_id,
            "name": name,
            "bundle_id": bundle_id,
            "public": bool(unclaimed),
            **{public_column(p): p in unclaimed for p in PLATFORMS},
            "created_at": at_ms,
            "updated_at": at_ms,
        },
    )


def insert_channel(conn: Connection, values: dict[str, Any]) -> int:
    """Insert a channel row (columns not given take their defaults); returns its id."""
    (channel_id,) = app_rows.insert(
        conn, "channels", list(values), [list(values.values())], returning=True
    )
    return channel_id
