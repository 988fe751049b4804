"""every primary key of an app table led by app_id

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-02 02:30:00

Distribution by app (Citus) needs the primary key, and every unique key, of a distributed
table to contain the distribution column. ``activity_deltas``, ``checkin_log``, ``channels``,
``device_events``, ``downloads`` and ``rollup_queue`` become keyed ``(app_id, id)``,
``bundles`` ``(app_id, id)``, ``bundle_uploads`` ``(app_id, bundle_id)`` and
``rate_counters`` ``(app_id, scope, subject)``. The keys that refer to them follow:
``channel_devices (app_id, channel_id)`` and ``channels (app_id, bundle_id)`` refer to
``channels (app_id, id)`` and ``bundles (app_id, id)``, so a channel can only hold its own
app's devices and bundles. Ids keep their values and stay unique across apps.

The queue-like tables (``checkin_log``, ``activity_deltas``, ``rollup_queue``) are consumed
oldest first across apps (``ORDER BY id``), and a signed download link names a bundle by its
id alone: those get a plain index on ``id`` (not unique, which a distributed table allows),
except ``checkin_log`` on SQLite, which is read in rowid order (equal to the id's, see
below), so that a group commit writes one index page less.

PostgreSQL changes the keys in place; each integer ``id`` keeps its sequence as default
(sequences are fine on a distributed table), so inserts are unchanged there, the check-in
log's one-statement group commit included. SQLite autoincrements only a lone INTEGER
PRIMARY KEY, so with ``(app_id, id)`` the id is given by the insert: ``app_rows.py`` names
both ``rowid`` and ``id`` with one more than the largest rowid (the B-tree's last entry, no
index needed, read under the writer's write lock). That keeps what SQLite did before
exactly (an INTEGER PRIMARY KEY left empty got one more than the largest), keeps ids unique
across apps (an id is its row's rowid) and costs no round trip. Other designs were weighed:
ids per app from a counter (like device ordinals) would change channel and download ids and
the cross-app order of the queues; a counter row per table would add a page write to every
group commit; ``MAX(id)`` would need one more index on every such table.

SQLite rebuilds each table from its own ``CREATE TABLE`` text with the key clause replaced
(the documented way to change a table's constraints), copies every row keeping ``rowid``
equal to ``id``, and recreates its indexes; foreign keys are checked afterwards. The
downgrade restores the previous keys the same ways, keeping every row.
"""

from __future__ import annotations

import re

from alembic import op
from sqlalchemy import Connection, inspect

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

# Tables whose integer id SQLite assigned as the rowid of an INTEGER PRIMARY KEY.
DRAWN_IDS = (
    "activity_deltas",
    "checkin_log",
    "channels",
    "device_events",
    "downloads",
    "rollup_queue",
)
# table: (key before, key after)
KEYS = {
    **{table: ("id", "app_id, id") for table in DRAWN_IDS},
    "bundles": ("id", "app_id, id"),
    "bundle_uploads": ("bundle_id", "app_id, bundle_id"),
    "rate_counters": ("scope, app_id, subject", "app_id, scope, subject"),
}
# name: (table, columns before, referred before, columns after, referred after)
FOREIGN_KEYS = {
    "fk_channels_bundle_id_bundles": (
        "channels",
        "bundle_id",
        "bundles (id)",
        "app_id, bundle_id",
        "bundles (app_id, id)",
    ),
    "fk_channel_devices_channel_id_channels": (
        "channel_devices",
        "channel_id",
        "channels (id)",
        "app_id, channel_id",
        "channels (app_id, id)",
    ),
}
INDEXES = {
    "ix_activity_deltas_id": "activity_deltas",
    "ix_rollup_queue_id": "rollup_queue",
    "ix_bundles_id": "bundles",
}
# PostgreSQL only: SQLite reads the check-in log by rowid.
POSTGRESQL_INDEXES = {"ix_checkin_log_id": "checkin_log"}


def upgrade() -> None:
    _change(up=True)


def downgrade() -> None:
    _change(up=False)


def _change(up: bool) -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        _postgresql(conn, up)
    else:
        _sqlite(conn, up)


def _postgresql(conn: Connection, up: bool) -> None:
    if not up:
        for name in {**INDEXES, **POSTGRESQL_INDEXES}:
            op.execute(f"DROP INDEX {name}")
    # Keys referred to cannot be dropped under the foreign keys that refer to them.
    for name, (table, *_) in FOREIGN_KEYS.items():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for table, (before, after) in KEYS.items():
        name = inspect(conn).get_pk_constraint(table)["name"] or f"pk_{table}"
        columns = after if up else before
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {name},"
            f" ADD CONSTRAINT pk_{table} PRIMARY KEY ({columns})"
        )
    for name, (table, col_before, ref_before, col_after, ref_after) in FOREIGN_KEYS.items():
        columns, referred = (col_after, ref_after) if up else (col_before, ref_before)
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({columns})"
            f" REFERENCES {referred}"
        )
    if up:
        for name, table in {**INDEXES, **POSTGRESQL_INDEXES}.items():
            op.execute(f"CREATE INDEX {name} ON {table} (id)")


def _sqlite(conn: Connection, up: bool) -> None:
    rebuilt = sorted({*KEYS, *(table for table, *_ in FOREIGN_KEYS.values())})
    for table in rebuilt:
        _rebuild_sqlite(conn, table, up)
    if up:
        for name, table in INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON {table} (id)")
    # The rebuild ran without foreign key enforcement: check what it copied.
    for table in rebuilt:
        broken = conn.exec_driver_sql(f"PRAGMA foreign_key_check({table})").all()
        if broken:
            raise RuntimeError(f"rows of {table} break its foreign keys: {broken[:5]}")


def _rebuild_sqlite(conn: Connection, table: str, up: bool) -> None:
    (sql,) = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).one()
    indexes = [
        index_sql
        for name, index_sql in conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            " AND sql IS NOT NULL",
            (table,),
        )
        if name not in INDEXES
    ]
    new, count = re.subn(
        rf'^CREATE TABLE (IF NOT EXISTS )?"?{table}"? ?\(', f"CREATE TABLE {table}_rebuilt (", sql
    )
    if table in KEYS:
        before, after = KEYS[table]
        old_key, new_key = (before, after) if up else (after, before)
        new = _replace(
            new,
            f"CONSTRAINT pk_{table} PRIMARY KEY ({old_key})",
            f"CONSTRAINT pk_{table} PRIMARY KEY ({new_key})",
        )
    for name, (owner, col_before, ref_before, col_after, ref_after) in FOREIGN_KEYS.items():
        if owner != table:
            continue
        old_fk = (col_before, ref_before) if up else (col_after, ref_after)
        new_fk = (col_after, ref_after) if up else (col_before, ref_before)
        new = _replace(
            new,
            f"CONSTRAINT {name} FOREIGN KEY({old_fk[0]}) REFERENCES {old_fk[1]}",
            f"CONSTRAINT {name} FOREIGN KEY({new_fk[0]}) REFERENCES {new_fk[1]}",
        )
    if count != 1:
        raise RuntimeError(f"unexpected definition of {table}: {sql}")
    op.execute(new)
    columns = [column["name"] for column in inspect(conn).get_columns(table)]
    names = ", ".join(f'"{name}"' for name in columns)
    if table in DRAWN_IDS:
        # Before 0010 the id was the rowid; after it the rowid is kept equal to the id
        # (app_rows.py), both ways.
        op.execute(f"INSERT INTO {table}_rebuilt (rowid, {names}) SELECT id, {names} FROM {table}")
    else:
        op.execute(f"INSERT INTO {table}_rebuilt ({names}) SELECT {names} FROM {table}")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {table}_rebuilt RENAME TO {table}")
    for index_sql in indexes:
        op.execute(index_sql)


def _replace(sql: str, old: str, new: str) -> str:
    if sql.count(old) != 1:
        raise RuntimeError(f"expected {old!r} once in {sql}")
    return sql.replace(old, new)
