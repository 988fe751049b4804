"""seen_events without rowid on SQLite

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 00:50:00

An import inserts every event id into seen_events. Keyed by the id alone (WITHOUT ROWID),
the table is one B-tree instead of a rowid table and an index on the id, which makes each
insert touch half the pages and the table about half as large. PostgreSQL is unchanged.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _rebuild(with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    suffix = "" if with_rowid else " WITHOUT ROWID"
    op.execute(
        "CREATE TABLE seen_events_rebuilt (event_id VARCHAR(200) NOT NULL, "
        "applied_at BIGINT NOT NULL, CONSTRAINT pk_seen_events PRIMARY KEY (event_id))" + suffix
    )
    op.execute("INSERT INTO seen_events_rebuilt SELECT event_id, applied_at FROM seen_events")
    op.execute("DROP TABLE seen_events")
    op.execute("ALTER TABLE seen_events_rebuilt RENAME TO seen_events")


def upgrade() -> None:
    _rebuild(with_rowid=False)


def downgrade() -> None:
    _rebuild(with_rowid=True)
