"""Storing a batch's plugin stats events: the raw log, release device sets, launch times.

See ``releases.py`` for what is counted; every fact here merges in any order and any number
of times, except launches, which are added once per new raw event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date

from pyroaring import BitMap
from sqlalchemy import Connection, delete, select

from . import schema as s
from .clock import day_of_ms
from .counting import Verdict, device_verdict
from .events import PluginStat
from .ingest import dialect_insert
from .releases import ACTION_OUTCOMES, LAUNCH_ACTION, launch_bucket, release_version

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
        conn.execute(
            s.activity_deltas.insert(),
            [
                {
                    "app_id": app_id,
                    "day": day,
                    "kind": kind,
                    "version_name": version,
                    "bitmap": BitMap([ordinals[key] for key in members]).serialize(),
                }
                for (app_id, day, kind, version), members in groups.items()
            ],
        )
    if launches:
        _add_launches(conn, launches)


def _insert_raw(conn: Connection, stats: Sequence[PluginStat]) -> set[int]:
    """Insert the raw events; the indexes of those that were new (not a resent event)."""
    rows = [
        {
            "app_id": e.app_id,
            "device_id": e.device_id,
            "action": e.action,
            "version_name": e.version_name,
            "old_version_name": e.old_version_name,
            "at": e.at_ms,
            "metadata": e.metadata,
            "device_ts": e.device_ts,
        }
        for e in stats
    ]
    c = s.device_events.c
    stmt = (
        dialect_insert(conn, s.device_events)
        .on_conflict_do_nothing(
            index_elements=["app_id", "device_id", "device_ts", "action", "version_name"]
        )
        .returning(c.app_id, c.device_id, c.device_ts, c.action, c.version_name)
    )
    inserted = {tuple(row) for row in conn.execute(stmt, rows)}
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
        # Only devices not found are inserted: on PostgreSQL an INSERT .. ON CONFLICT draws
        # from the ordinal sequence even when it does nothing.
        stmt = dialect_insert(conn, s.devices).on_conflict_do_nothing(
            index_elements=["app_id", "device_id"]
        )
        conn.execute(
            stmt,
            [
                {
                    "app_id": e.app_id,
                    "device_id": e.device_id,
                    "first_seen": e.at_ms,
                    "last_seen": e.at_ms,
                    "last_counted_at": None,
                    "platform": e.platform,
                    "version_name": release_version(e.version_name),
                    "version_build": e.version_build,
                    "version_os": "",
                    "plugin_version": e.plugin_version,
                    "custom_id": e.custom_id,
                    "is_emulator": e.is_emulator,
                    "is_prod": e.is_prod,
                }
                for e in missing
            ],
        )
        found.update(_read_ordinals(conn, {(e.app_id, e.device_id): e for e in missing}))
    return found


def _read_ordinals(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    by_app: dict[str, list[str]] = defaultdict(list)
    for app_id, device_id in keys:
        by_app[app_id].append(device_id)
    d = s.devices.c
    found: dict[tuple[str, str], int] = {}
    for app_id, device_ids in by_app.items():
        for at in range(0, len(device_ids), 500):
            rows = conn.execute(
                select(d.id, d.device_id).where(
                    d.app_id == app_id, d.device_id.in_(device_ids[at : at + 500])
                )
            )
            found.update({(app_id, device_id): ordinal for ordinal, device_id in rows})
    return found


def _add_launches(conn: Connection, launches: dict[tuple[str, date, str, int], int]) -> None:
    stmt = dialect_insert(conn, s.release_launches)
    stmt = stmt.on_conflict_do_update(
        index_elements=["app_id", "day", "version_name", "bucket"],
        set_={"launches": s.release_launches.c.launches + stmt.excluded.launches},
    )
    # Key order: concurrent writers lock the rows in the same order and never deadlock.
    conn.execute(
        stmt,
        [
            {"app_id": a, "day": d, "version_name": v, "bucket": b, "launches": n}
            for (a, d, v, b), n in sorted(launches.items())
        ],
    )


PRUNE_BATCH = 10_000


def prune_events(conn: Connection, before_ms: int, limit: int = PRUNE_BATCH) -> int:
    """Delete raw stats events older than ``before_ms``, at most ``limit`` (oldest first)."""
    e = s.device_events.c
    ids = list(conn.scalars(select(e.id).where(e.at < before_ms).order_by(e.at).limit(limit)))
    if ids:
        conn.execute(delete(s.device_events).where(e.id.in_(ids)))
    return len(ids)
