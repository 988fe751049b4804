"""Inserting rows of the tables keyed ``(app_id, id)`` whose ``id`` the database draws.

Every table with an ``app_id`` has a primary key that starts with it (distribution by app),
and several of them also need an integer ``id`` unique across apps, growing in insert order:
channel ids are part of the plugin's protocol, a download's id is how its byte count is
corrected, and the queue-like tables (``checkin_log``, ``activity_deltas``,
``rollup_queue``) are consumed oldest first by id. :data:`DRAWN_ID_TABLES` lists them.

PostgreSQL draws the id from the column's sequence (its default), so inserts there leave it
out and cost nothing more than before. SQLite autoincrements only a lone INTEGER PRIMARY
KEY, so there the id is given on insert: every insert names both ``rowid`` and ``id`` and
gives both one more than the table's largest rowid (the last entry of the table's B-tree,
read within the insert, under the writer's write lock). Then ``id`` equals ``rowid`` in
every row, so ids are unique across apps (as rowids are) and are what SQLite gave an
INTEGER PRIMARY KEY before (one more than the largest), with no index on ``id`` needed to
find the next one. Naming ``rowid`` too keeps that equality even when a statement's rows
are not all inserted (``ON CONFLICT DO NOTHING``); a restore writes ``rowid`` from ``id``
(``backup.py``). All inserts into these tables go through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection

DRAWN_ID_TABLES = frozenset(
    {"activity_deltas", "channels", "checkin_log", "device_events", "downloads", "rollup_queue"}
)

# Statements stay below SQLite's and PostgreSQL's limits on bound parameters.
_MAX_PARAMETERS = 30_000


def sqlite_id(table: str, offset: str = "1") -> str:
    """SQLite: the id (and rowid) of the row ``offset`` places after the table's last row."""
    return f"(SELECT COALESCE(MAX(rowid), 0) FROM {table}) + {offset}"


def insert_sql(
    table: str, columns: Sequence[str], rows: int = 1, *, postgres: bool, returning: bool = False
) -> str:
    """One INSERT of ``rows`` rows of ``columns`` (positional parameters, row after row)."""
    assert table in DRAWN_ID_TABLES, table
    names = ", ".join(columns)
    tail = " RETURNING id" if returning else ""
    if postgres:
        mark = f"({', '.join(['%s'] * len(columns))})"
        return f"INSERT INTO {table} ({names}) VALUES {', '.join([mark] * rows)}{tail}"
    marks = ", ".join(["?"] * len(columns))
    values = ", ".join(
        f"({sqlite_id(table, str(k))}, {sqlite_id(table, str(k))}, {marks})"
        for k in range(1, rows + 1)
    )
    return f"INSERT INTO {table} (rowid, id, {names}) VALUES {values}{tail}"


def insert(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning: bool = False,
) -> list[int]:
    """Insert ``rows`` in the caller's transaction; with ``returning``, their ids in row order.

    Ids grow in row order within a statement on both engines (PostgreSQL evaluates the
    sequence default row after row; SQLite gets the last rowid plus the row's place), so the
    ids returned are sorted to match the rows whatever order RETURNING gives them in.
    """
    if not rows:
        return []
    postgres = conn.dialect.name == "postgresql"
    if not postgres:
        # Statements run with exec_driver_sql bypass SQLAlchemy's types: a Date is stored as
        # ISO text on SQLite, as SQLAlchemy would.
        rows = [[v.isoformat() if isinstance(v, date) else v for v in row] for row in rows]
    if not returning and not postgres:
        # One prepared statement run per row: each run reads the last rowid afresh.
        conn.exec_driver_sql(insert_sql(table, columns, postgres=False), [tuple(r) for r in rows])
        return []
    per_statement = max(1, _MAX_PARAMETERS // max(1, len(columns)))
    ids: list[int] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = insert_sql(table, columns, len(chunk), postgres=postgres, returning=returning)
        result = conn.exec_driver_sql(sql, tuple(v for row in chunk for v in row))
        if returning:
            ids.extend(sorted(int(row_id) for (row_id,) in result))
    return ids
