"""Rows of the tables keyed (app_id, id) get ids unique across apps, in insert order, on both
engines; on SQLite each id is its row's rowid."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import text

from otameter.storage import app_rows
from otameter.storage.db import create_db_engine, migrate

APPS = ("com.a.app", "com.b.app", "com.c.app")


def test_ids_follow_the_rows_across_apps_and_statements(db_url: str) -> None:
    migrate(db_url)
    engine = create_db_engine(db_url, writer=True)
    first = date(2026, 1, 1)
    # More rows than one statement holds, so that the returned ids span several statements.
    rows = [(APPS[n % 3], first + timedelta(days=n % 400), f"w{n}") for n in range(12_001)]
    try:
        with engine.begin() as conn:
            ids = app_rows.insert(
                conn, "rollup_queue", ("app_id", "day", "what"), rows[:5], returning=True
            )
            # Without RETURNING (SQLite: one prepared statement run per row).
            app_rows.insert(conn, "rollup_queue", ("app_id", "day", "what"), rows[5:9])
            ids += app_rows.insert(
                conn, "rollup_queue", ("app_id", "day", "what"), rows[9:], returning=True
            )
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT id, app_id, day, what FROM rollup_queue")).all()
            if engine.dialect.name == "sqlite":
                pairs = conn.execute(text("SELECT rowid, id FROM rollup_queue")).all()
                assert all(rowid == row_id for rowid, row_id in pairs)
    finally:
        engine.dispose()
    by_id = {row_id: (app_id, str(day), what) for row_id, app_id, day, what in stored}
    assert len(by_id) == len(rows)  # unique across apps
    in_order = [by_id[row_id] for row_id in sorted(by_id)]
    assert in_order == [(app_id, day.isoformat(), what) for app_id, day, what in rows]
    # RETURNING gave each row its own id, in row order.
    returned = [by_id[row_id][2] for row_id in ids]
    assert returned == [what for *_, what in rows[:5] + rows[9:]]
