"""Storing a batch's plugin stats events: the raw log, release device sets, launch times.

See ``releases.py`` for what is counted; every fact here merges in any order and any number
of times, except launches, which are added once per new raw event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date

import orjson
from pyroaring import BitMap
from sqlalchemy import Connection, delete, select, tuple_

from .clock import day_of_ms
from .metering.counting import Verdict, device_verdict
from .metering.events import PluginStat
from .metering.ingest import DELTA_COLUMNS, upsert_devices
from .releases import ACTION_OUTCOMES, LAUNCH_ACTION, launch_bucket, release_version
from .storage import app_rows
from .storage import schema as s
from .storage.dialect import date_param

_COUNTED = Verdict.COUNTED


def store_stats(conn: Connection, stats: Sequence[PluginStat]) -> None:
    """Store a batch's stats events: the raw log, release device sets and launch times."""
    if not stats:
        return
    new = _insert_raw(conn, stats)
    # Emulators and dev builds are kept in the log but never counted, as for MAU.
    counted = [
        i for i, e in enumerate(stats) if device_verdict(e.is_emulator, e.is_prod) is _COUNTED
    ]
    groups: dict[tuple[str, date, str, str], list[tuple[str, str]]] = defaultdict(list)
    launches: dict[tuple[str, date, str, int], int] = defaultdict(int)
    for i in counted:
        event = stats[i]
        version = release_version(event.version_name)
        if not version:
            continue
        day = day_of_ms(event.at_ms)
        outcome = ACTION_OUTCOMES.get(event.action)
        if outcome is not None:
            groups[(event.app_id, day, outcome, version)].append((event.app_id, event.device_id))
        elif event.action == LAUNCH_ACTION and event.duration_ms is not None and i in new:
            launches[(event.app_id, day, version, launch_bucket(event.duration_ms))] += 1
    if groups:
        ordinals = device_ordinals(
            conn, [stats[i] for i in counted if stats[i].action in ACTION_OUTCOMES]
        )
        app_rows.insert(
            conn,
            "activity_deltas",
            DELTA_COLUMNS,
            [
                (app_id, day, kind, version, BitMap([ordinals[key] for key in members]).serialize())
                for (app_id, day, kind, version), members in groups.items()
            ],
        )
    if launches:
        _add_launches(conn, launches)


def _insert_raw(conn: Connection, stats: Sequence[PluginStat]) -> set[int]:
    """Insert the raw events; the indexes of those that were new (not a resent event)."""
    # One statement for the batch, the rows as one JSON array (plain SQL: this runs in every
    # group commit that holds stats, where building a Core statement costs more than it).
    rows = [
        (
            e.app_id,
            e.device_id,
            e.action,
            e.version_name,
            e.old_version_name,
            e.at_ms,
            e.metadata,
            e.device_ts,
        )
        for e in stats
    ]
    postgres = conn.dialect.name == "postgresql"
    sql = _RAW_INSERT_POSTGRESQL if postgres else _RAW_INSERT_SQLITE
    inserted = {tuple(row) for row in conn.exec_driver_sql(sql, (orjson.dumps(rows).decode(),))}
    new: set[int] = set()
    for i, e in enumerate(stats):
        key = (e.app_id, e.device_id, e.device_ts, e.action, e.version_name)
        if e.device_ts is None or key in inserted:
            new.add(i)
            # The same event twice in one batch is inserted (and new) once.
            if e.device_ts is not None:
                inserted.discard(key)
    return new


def device_ordinals(conn: Connection, stats: Iterable[PluginStat]) -> dict[tuple[str, str], int]:
    """The ordinal of each event's device; a device never seen before gets its row here.

    A device known only from its stats events gets a row with their attributes (as a
    check-in would: first and last seen at the event, never counted for MAU); its check-ins
    then update the row as usual.
    """
    wanted: dict[tuple[str, str], PluginStat] = {}
    for e in stats:
        old = wanted.get((e.app_id, e.device_id))
        if old is None or e.at_ms < old.at_ms:
            wanted[(e.app_id, e.device_id)] = e
    found = _read_ordinals(conn, wanted)
    missing = [event for key, event in sorted(wanted.items()) if key not in found]
    if missing:
        # Only devices not found get a row, with the next ordinals of their app's counter
        # (``upsert_devices``, as a check-in's fold takes them).
        rows = [
            [
                e.app_id,
                e.device_id,
                e.at_ms,
                e.at_ms,
                None,
                e.platform,
                release_version(e.version_name),
                e.version_build,
                "",
                e.plugin_version,
                e.custom_id,
                e.is_emulator,
                e.is_prod,
            ]
            for e in missing
        ]
        ordinals = upsert_devices(conn, rows)
        found.update(
            ((e.app_id, e.device_id), ordinal) for e, ordinal in zip(missing, ordinals, strict=True)
        )

    return found


def _read_ordinals(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    by_app: dict[str, list[str]] = defaultdict(list)
    for app_id, device_id in keys:
        by_app[app_id].append(device_id)
    postgres = conn.dialect.name == "postgresql"
    sql = _ORDINALS_POSTGRESQL if postgres else _ORDINALS_SQLITE
    found: dict[tuple[str, str], int] = {}
    for app_id, device_ids in by_app.items():
        rows = conn.exec_driver_sql(sql, (app_id, orjson.dumps(device_ids).decode()))
        found.update({(app_id, device_id): ordinal for ordinal, device_id in rows})
    return found


def _add_launches(conn: Connection, launches: dict[tuple[str, date, str, int], int]) -> None:
    # Key order: concurrent writers lock the rows in the same order and never deadlock.
    conn.exec_driver_sql(
        _sql(
            conn,
            "INSERT INTO release_launches (app_id, day, version_name, bucket, launches)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_id, day, version_name, bucket)"
            " DO UPDATE SET launches = release_launches.launches + excluded.launches",
        ),
        [(a, date_param(conn, d), v, b, n) for (a, d, v, b), n in sorted(launches.items())],
    )


def _sql(conn: Connection, statement: str) -> str:
    """A statement written with ``?`` marks, in the driver's style."""
    return statement.replace("?", "%s") if conn.dialect.name == "postgresql" else statement


_RAW_COLUMNS = "app_id, device_id, action, version_name, old_version_name, at, metadata, device_ts"
_RAW_KEY = "app_id, device_id, device_ts, action, version_name"
# The n-th event of the array gets the n-th id after the table's last row (app_rows.py); an
# event already there leaves its id unused.
_NEXT_EVENT_ID = app_rows.sqlite_id("device_events", "key + 1")
_RAW_INSERT_SQLITE = (
    f"INSERT INTO device_events (rowid, id, {_RAW_COLUMNS})"
    f" SELECT {_NEXT_EVENT_ID}, {_NEXT_EVENT_ID},"
    " value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,"
    " value->>7 FROM json_each(?) WHERE true"
    f" ON CONFLICT ({_RAW_KEY}) DO NOTHING RETURNING {_RAW_KEY}"
)
_RAW_INSERT_POSTGRESQL = (
    f"INSERT INTO device_events ({_RAW_COLUMNS})"
    " SELECT e->>0, e->>1, e->>2, e->>3, e->>4, (e->>5)::bigint, e->>6, (e->>7)::bigint"
    " FROM json_array_elements(%s::json) AS e"
    f" ON CONFLICT ({_RAW_KEY}) DO NOTHING RETURNING {_RAW_KEY}"
)
_ORDINALS_SQLITE = (
    "SELECT d.id, d.device_id FROM json_each(?2) AS e"
    " JOIN devices AS d ON d.app_id = ?1 AND d.device_id = e.value"
    # Keeps the planner driving the join from the array (see ingest.upsert_devices).
    " ORDER BY e.key"
)
_ORDINALS_POSTGRESQL = (
    "SELECT d.id, d.device_id FROM devices AS d WHERE d.app_id = %s"
    " AND d.device_id IN (SELECT json_array_elements_text(%s::json))"
)


PRUNE_BATCH = 10_000


def prune_events(conn: Connection, before_ms: int, limit: int = PRUNE_BATCH) -> int:
    """Delete raw stats events older than ``before_ms``, at most ``limit`` (oldest first)."""
    e = s.device_events.c
    rows = conn.execute(
        select(e.app_id, e.id).where(e.at < before_ms).order_by(e.at).limit(limit)
    ).all()
    if rows:
        conn.execute(
            delete(s.device_events).where(
                tuple_(e.app_id, e.id).in_([(app_id, row_id) for app_id, row_id in rows])
            )
        )
    return len(rows)
