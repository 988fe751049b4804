"""The check-in log: live check-ins are made durable as one compact record per group commit,
and drained into facts later, exactly once.

What must be on disk before a device is answered is the event, not its consequences. So a
group commit of ``POST /updates`` appends, per app of its batch, one ``checkin_log`` row whose
``record`` holds every check-in of the batch (msgpack arrays of :class:`CheckIn`, compressed:
a few dozen bytes a check-in, written sequentially), commits and answers. The rollup reads
the rows, folds them with the same :class:`Fold` as every other path (each check-in with its
own time, so the Google window is judged as when it happened), and in one transaction
deletes the rows it read and stores the facts they produced: a drain that fails or is killed
leaves both, one that another process got to first finds rows missing and stores nothing.

A record starts with a format byte. Format 1 is zlib-compressed msgpack of a list of
CheckIn arrays; a CheckIn field added later goes at the end with a default, so older
records still decode (and older readers ignore trailing fields).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
from sqlalchemy import Connection

from ..rate_limits import Arrival, NewDeviceLimit, note_arrival
from ..storage import app_rows
from .events import CheckIn
from .fold import Fold, FoldedFacts, IpPredicate
from .ingest import Pipeline, store_facts

log = logging.getLogger(__name__)

FORMAT = 1
_FORMAT_BYTE = bytes([FORMAT])
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[CheckIn]).decode

# One row: app_id, number of check-ins, record.
LogRow = tuple[str, int, bytes]


class RecordError(ValueError):
    """A record this version cannot read."""


def encode_record(checkins: Sequence[CheckIn]) -> bytes:
    # Level 1: the batch's repeated strings (app, versions, platform) go for almost nothing;
    # zlib releases the GIL while it compresses.
    return _FORMAT_BYTE + zlib.compress(_encode(checkins), 1)


def decode_record(record: bytes) -> list[CheckIn]:
    if not record or record[0] != FORMAT:
        raise RecordError(f"unknown check-in record format {record[:1]!r}")
    return _decode(zlib.decompress(memoryview(record)[1:]))


def log_rows(checkins: Sequence[CheckIn]) -> list[LogRow]:
    """The rows a batch of check-ins is logged as: one per app (all apps' keys lead by app)."""
    first = checkins[0].app_id
    if all(c.app_id == first for c in checkins):
        return [(first, len(checkins), encode_record(checkins))]
    by_app: dict[str, list[CheckIn]] = {}
    for c in checkins:
        by_app.setdefault(c.app_id, []).append(c)
    return [(app_id, len(batch), encode_record(batch)) for app_id, batch in by_app.items()]


_COLUMNS = ("app_id", "checkins", "record")


def insert_statement(rows: int, postgres: bool) -> str:
    """One INSERT of ``rows`` log rows (one statement: one round trip on PostgreSQL)."""
    return app_rows.insert_sql("checkin_log", _COLUMNS, rows, postgres=postgres)


def flat_params(rows: list[LogRow]) -> tuple[Any, ...]:
    return tuple(value for row in rows for value in row)


def append(conn: Connection, checkins: Sequence[CheckIn]) -> None:
    """Log check-ins inside the caller's transaction."""
    rows = log_rows(checkins)
    postgres = conn.dialect.name == "postgresql"
    conn.exec_driver_sql(insert_statement(len(rows), postgres), flat_params(rows))


# -- draining ----------------------------------------------------------------------------------


@dataclass(slots=True)
class PreparedDrain:
    """Log rows read and folded outside the write transaction, ready to be consumed: the first
    half of a drain (``consume`` is the second)."""

    ids: list[int]
    checkins: int
    facts: FoldedFacts | None
    # Whether the log held more rows than were read.
    more: bool = False
    # The live check-ins by device, for the new-devices limit (decided in ``consume``).
    arrivals: dict[tuple[str, str], Arrival] = field(default_factory=dict)
    # SQLite: the records read, by position of ``ids`` (see ``consume``).
    records: list[bytes] = field(default_factory=list)


def prepare(conn: Connection, is_google_ip: IpPredicate, limit: int = 1000) -> PreparedDrain:
    """Read up to ``limit`` log rows (oldest first) and fold them.

    Runs on any connection, outside the write transaction: decoding and folding do not hold
    the write lock. Check-ins of an app deleted meanwhile are dropped, as the writer drops
    events of an unknown app.
    """
    postgres = conn.dialect.name == "postgresql"
    rows = conn.exec_driver_sql(_READ_POSTGRESQL if postgres else _READ_SQLITE, (limit + 1,)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return PreparedDrain([], 0, None)
    apps = Pipeline.existing_apps(conn, {row[1] for row in rows})
    fold = Fold(lambda app_id: Pipeline.upload_times(conn, app_id), is_google_ip)
    add = fold.add_checkin
    count = 0
    ids: list[int] = []
    records: list[bytes] = []
    arrivals: dict[tuple[str, str], Arrival] = {}
    for row_id, app_id, record in rows:
        try:
            checkins = decode_record(bytes(record))
        except (RecordError, ValueError, zlib.error) as exc:
            # Written by a newer version (a rolling upgrade), say: the row stays for a
            # version that reads it, and the rest of the log is folded.
            log.error("check-in log row %s cannot be read here: %s", row_id, exc)
            continue
        ids.append(row_id)
        if not postgres:
            records.append(bytes(record))
        count += len(checkins)
        if app_id in apps:
            for checkin in checkins:
                add(checkin)
                note_arrival(arrivals, checkin)
    # A read of nothing but unreadable rows says nothing more is pending: no busy loop.
    return PreparedDrain(ids, count, fold.seal(), more and bool(ids), arrivals, records)


def consume(
    conn: Connection, prepared: PreparedDrain, new_devices: NewDeviceLimit | None = None
) -> bool:
    """Delete the prepared rows and store their facts, in the caller's transaction.

    False, with nothing written, when any of the rows is gone: another drain consumed it, and
    the caller prepares again. With ``new_devices``, the devices the limit refuses here (in
    the transaction that would store them, so every process counts against one allowance)
    are left out of the facts: not stored, not counted.
    """
    if not prepared.ids:
        return True
    savepoint = conn.begin_nested()
    postgres = conn.dialect.name == "postgresql"
    if not postgres and not _still_there(conn, prepared):
        savepoint.rollback()
        return False
    sql = _DELETE_POSTGRESQL if postgres else _DELETE_SQLITE
    deleted = conn.exec_driver_sql(sql, (orjson.dumps(prepared.ids).decode(),)).rowcount
    if deleted != len(prepared.ids):
        savepoint.rollback()
        return False
    facts = prepared.facts
    if facts is not None and new_devices is not None and prepared.arrivals:
        refused = new_devices.refuse(conn, prepared.arrivals)
        if refused:
            facts = without_devices(facts, refused)
    if facts is not None:
        store_facts(conn, facts)
    savepoint.commit()
    return True


def _still_there(conn: Connection, prepared: PreparedDrain) -> bool:
    """SQLite: whether the rows at the prepared ids still hold the records that were read.

    SQLite gives a new row one past the largest rowid, so once another process has drained
    and deleted the newest rows, check-ins appended next take their ids again: a delete by id
    alone would then remove rows never folded. Read under the write lock, the records tell.
    (PostgreSQL's sequences never give an id twice, and its drain reads under the lock.)
    """
    rows = conn.exec_driver_sql(_RECORDS_SQLITE, (orjson.dumps(prepared.ids).decode(),)).all()
    now = {row_id: bytes(record) for row_id, record in rows}
    return all(
        now.get(row_id) == record
        for row_id, record in zip(prepared.ids, prepared.records, strict=True)
    )


def without_devices(facts: FoldedFacts, refused: set[tuple[str, str]]) -> FoldedFacts:
    """The facts without the rows and the activity of the ``refused`` (app, device) pairs."""
    rows: list[list[Any]] = []
    moved: dict[int, int] = {}
    for i, row in enumerate(facts.device_rows):
        if (row[0], row[1]) not in refused:
            moved[i] = len(rows)
            rows.append(row)
    activity = {}
    for group, members in facts.activity.items():
        kept = [moved[i] for i in members if i in moved]
        if kept:
            activity[group] = kept
    return FoldedFacts(rows, activity, facts.downloads)


def drain_all(conn: Connection, is_google_ip: IpPredicate | None = None) -> int:
    """Drain the whole log in the caller's transaction; returns the check-ins folded."""
    if is_google_ip is None:
        from ..google_ranges import load_google_ranges

        is_google_ip = load_google_ranges().contains
    total = 0
    while True:
        prepared = prepare(conn, is_google_ip)
        if not prepared.ids:
            return total
        if not consume(conn, prepared):
            raise RuntimeError("the check-in log changed during a drain that holds it")
        total += prepared.checkins


def pending_checkins(conn: Connection) -> int:
    """Check-ins logged and not drained yet."""
    total = conn.exec_driver_sql("SELECT COALESCE(SUM(checkins), 0) FROM checkin_log").scalar()
    return int(total or 0)


# Oldest first across apps. SQLite reads and deletes by rowid, which equals the id
# (app_rows.py) and needs no index of its own (the table is a B-tree on it).
_READ_POSTGRESQL = "SELECT id, app_id, record FROM checkin_log ORDER BY id LIMIT %s"
_READ_SQLITE = "SELECT rowid, app_id, record FROM checkin_log ORDER BY rowid LIMIT ?"
_RECORDS_SQLITE = (
    "SELECT rowid, record FROM checkin_log WHERE rowid IN (SELECT value FROM json_each(?))"
)
_DELETE_SQLITE = "DELETE FROM checkin_log WHERE rowid IN (SELECT value FROM json_each(?))"
_DELETE_POSTGRESQL = (
    "DELETE FROM checkin_log WHERE id IN (SELECT json_array_elements_text(%s::json)::bigint)"
)
