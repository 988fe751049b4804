"""The migrations build exactly the schema the code declares, on both engines."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from otameter.storage.db import (
    HEAD_REVISION,
    alembic_config,
    create_db_engine,
    migrate,
    schema_revision,
)
from otameter.storage.schema import metadata


def test_migrations_match_schema(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # upgrading an up-to-date database changes nothing
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            assert set(inspect(conn).get_table_names()) >= set(metadata.tables)
    finally:
        engine.dispose()


def test_migrate_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/cli.db"
    result = subprocess.run(
        [sys.executable, "-m", "otameter", "migrate", "--db", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr
    assert (tmp_path / "cli.db").exists()


def test_seen_events_keep_their_rows_across_the_rebuild(tmp_path: Path) -> None:
    # 0002 rebuilds seen_events WITHOUT ROWID on SQLite; the ids already applied must stay.
    url = f"sqlite:///{tmp_path}/old.db"
    config = alembic_config(url)
    command.upgrade(config, "0001")
    with closing(sqlite3.connect(tmp_path / "old.db")) as conn, conn:
        conn.execute("INSERT INTO seen_events VALUES ('e1', 5), ('e2', 6)")

    def table() -> tuple[str, list[tuple[str, int]]]:
        with closing(sqlite3.connect(tmp_path / "old.db")) as conn:
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'seen_events'"
            ).fetchone()
            return sql, conn.execute("SELECT * FROM seen_events ORDER BY 1").fetchall()

    migrate(url)
    sql, rows = table()
    assert sql.endswith("WITHOUT ROWID") and rows == [("e1", 5), ("e2", 6)]
    command.downgrade(config, "0001")
    sql, rows = table()
    assert "WITHOUT ROWID" not in sql and rows == [("e1", 5), ("e2", 6)]


def test_the_last_counted_index_goes_and_comes_back(db_url: str) -> None:
    # 0003 drops devices (app_id, last_counted_at); its downgrade restores it.
    config = alembic_config(db_url)

    def device_indexes() -> set[str]:
        engine = create_db_engine(db_url)
        try:
            with engine.connect() as conn:
                return {index["name"] for index in inspect(conn).get_indexes("devices")}
        finally:
            engine.dispose()

    migrate(db_url)
    assert "ix_devices_app_last_counted" not in device_indexes()
    command.downgrade(config, "0002")
    assert "ix_devices_app_last_counted" in device_indexes()
    migrate(db_url)
    assert "ix_devices_app_last_counted" not in device_indexes()


def test_the_head_revision_is_the_newest_script(tmp_path: Path) -> None:
    # migrate() skips alembic when the database is at HEAD_REVISION: it must be the newest.
    from alembic.script import ScriptDirectory

    url = f"sqlite:///{tmp_path}/head.db"
    assert ScriptDirectory.from_config(alembic_config(url)).get_current_head() == HEAD_REVISION
    assert schema_revision(url) is None
    migrate(url)
    assert schema_revision(url) == HEAD_REVISION


def test_0008_numbers_devices_per_app_and_back(db_url: str) -> None:
    # 0008 gives each app its own dense ordinals and rewrites the bitmaps through the same
    # mapping; its downgrade numbers all devices in one sequence again, bitmaps too.
    from pyroaring import BitMap
    from sqlalchemy import text

    config = alembic_config(db_url)
    command.upgrade(config, "0004")
    engine = create_db_engine(db_url)
    apps = {"com.a.app": [1, 3, 5], "com.b.app": [2, 4]}  # global ids, interleaved

    def bitmap(ids: list[int]) -> bytes:
        return BitMap(ids).serialize()

    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO users (id, email, created_at) VALUES ('u', 'u@example.com', 0)")
            )
            conn.execute(
                text(
                    "INSERT INTO orgs (id, name, created_by, created_at) VALUES ('o', 'O', 'u', 0)"
                )
            )
            for app_id, ids in apps.items():
                conn.execute(
                    text(
                        "INSERT INTO apps (app_id, name, owner_org, created_at)"
                        " VALUES (:a, :a, 'o', 0)"
                    ),
                    {"a": app_id},
                )
                for n in ids:
                    conn.execute(
                        text(
                            "INSERT INTO devices (id, app_id, device_id, first_seen, last_seen,"
                            " platform, version_name, is_emulator, is_prod)"
                            " VALUES (:id, :a, :d, 0, 0, 'ios', '1', false, true)"
                        ),
                        {"id": n, "a": app_id, "d": f"device-{n}"},
                    )
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT setval('devices_id_seq', 5)"))
            conn.execute(
                text(
                    "INSERT INTO activity_bitmaps (app_id, day, kind, version_name, bitmap,"
                    " devices) VALUES ('com.a.app', '2024-05-01', 'counted', '', :b, 2),"
                    " ('com.b.app', '2024-05-01', 'counted', '', :c, 2)"
                ),
                {"b": bitmap([3, 5]), "c": bitmap([2, 4])},
            )
            conn.execute(
                text(
                    "INSERT INTO activity_deltas (app_id, day, kind, version_name, bitmap)"
                    " VALUES ('com.a.app', '2024-05-02', 'emudev', '', :b)"
                ),
                {"b": bitmap([1, 5])},
            )

        def state() -> tuple[dict[str, int], dict[str, set[int]], set[int]]:
            with engine.connect() as conn:
                devices = dict(conn.execute(text("SELECT device_id, id FROM devices")).all())
                bitmaps = {
                    app_id: set(BitMap.deserialize(bytes(blob)))
                    for app_id, blob in conn.execute(
                        text("SELECT app_id, bitmap FROM activity_bitmaps")
                    )
                }
                (delta,) = conn.execute(text("SELECT bitmap FROM activity_deltas")).one()
            return devices, bitmaps, set(BitMap.deserialize(bytes(delta)))

        migrate(db_url)
        devices, bitmaps, delta = state()
        assert devices == {
            "device-1": 1,
            "device-3": 2,
            "device-5": 3,
            "device-2": 1,
            "device-4": 2,
        }
        assert bitmaps == {"com.a.app": {2, 3}, "com.b.app": {1, 2}}
        assert delta == {1, 3}
        with engine.connect() as conn:
            counters = dict(conn.execute(text("SELECT app_id, device_ordinals FROM apps")).all())
        assert counters == {"com.a.app": 3, "com.b.app": 2}
        # A new device of an app takes the next ordinal of that app.
        from otameter.metering.fold import DEVICE_FIELDS
        from otameter.metering.ingest import upsert_devices

        def row(app_id: str, device_id: str) -> list[object]:
            values = dict.fromkeys((name for name, _ in DEVICE_FIELDS), "")
            values.update(app_id=app_id, device_id=device_id, first_seen=9, last_seen=9)
            values.update(last_counted_at=9, is_emulator=False, is_prod=True)
            return list(values.values())

        with engine.begin() as conn:
            assert upsert_devices(
                conn, [row("com.b.app", "device-new"), row("com.a.app", "device-3")]
            ) == [3, 2]

        command.downgrade(config, "0004")
        devices, bitmaps, delta = state()
        assert devices == {
            "device-1": 1,
            "device-3": 2,
            "device-5": 3,
            "device-2": 4,
            "device-4": 5,
            "device-new": 6,
        }
        assert bitmaps == {"com.a.app": {2, 3}, "com.b.app": {4, 5}}
        assert delta == {1, 3}
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                drawn = conn.execute(text("SELECT nextval('devices_id_seq')")).scalar_one()
            assert drawn == 7  # the sequence goes on after the highest id

        migrate(db_url)
        devices, bitmaps, _ = state()
        assert devices["device-new"] == 3 and devices["device-2"] == 1
        assert bitmaps == {"com.a.app": {2, 3}, "com.b.app": {1, 2}}
    finally:
        engine.dispose()


def test_keys_sessions_and_invitations_go_down_and_up_keeping_keys(db_url: str) -> None:
    # 0005 adds api_keys.expires_at/revoked_at and three tables; its downgrade keeps the keys.
    from sqlalchemy import text

    config = alembic_config(db_url)
    migrate(db_url)
    engine = create_db_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, email, name, created_at) VALUES ('u1', 'a@b.c', '', 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, user_id, name, key_hash, mode, created_at,"
                    " expires_at, revoked_at) VALUES ('k1', 'u1', 'n', 'h1', 'all', 1, 99, NULL)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO dashboard_sessions (id_hash, user_id, key_id, created_at,"
                    " expires_at) VALUES ('s1', 'u1', 'k1', 1, 2)"
                )
            )
        command.downgrade(config, "0005-1")
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            columns = {c["name"] for c in inspect(conn).get_columns("api_keys")}
            rows = conn.execute(text("SELECT id, key_hash, mode FROM api_keys")).all()
        assert not tables & {"dashboard_sessions", "org_invitations", "auth_failures"}
        assert "expires_at" not in columns and "revoked_at" not in columns
        assert [tuple(r) for r in rows] == [("k1", "h1", "all")]
        migrate(db_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, expires_at, revoked_at FROM api_keys")).all()
            assert [tuple(r) for r in rows] == [("k1", None, None)]
            assert conn.execute(text("SELECT count(*) FROM dashboard_sessions")).scalar() == 0
    finally:
        engine.dispose()


def test_the_rate_limit_tables_go_and_come_back(db_url: str) -> None:
    # 0006 adds rate_counters and refused_devices; its downgrade drops them, nothing else.
    config = alembic_config(db_url)

    def tables() -> set[str]:
        engine = create_db_engine(db_url)
        try:
            with engine.connect() as conn:
                return set(inspect(conn).get_table_names())
        finally:
            engine.dispose()

    migrate(db_url)
    engine = create_db_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO server_state (key, value) VALUES ('kept', 'yes')")
    finally:
        engine.dispose()
    assert {"rate_counters", "refused_devices"} <= tables()
    command.downgrade(config, "0006-1")
    assert not {"rate_counters", "refused_devices"} & tables()
    migrate(db_url)
    assert {"rate_counters", "refused_devices"} <= tables()
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            kept = conn.exec_driver_sql("SELECT value FROM server_state WHERE key = 'kept'")
            assert kept.scalar() == "yes"
    finally:
        engine.dispose()


def test_release_health_migration_keeps_rows_both_ways(db_url: str) -> None:
    # 0007 adds device_events.device_ts (and its unique index), channels' auto_rollback and
    # previous_bundle_id, release_launches and release_alerts; rows already there stay.
    from sqlalchemy import text

    config = alembic_config(db_url)
    command.upgrade(config, "0006")
    engine = create_db_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO device_events (app_id, device_id, action, version_name, at)"
                    " VALUES ('a', 'd', 'set', '1.0.0', 5), ('a', 'd', 'set', '1.0.0', 5)"
                )
            )
        migrate(db_url)
        with engine.begin() as conn:
            rows = conn.execute(
                text("SELECT action, at, device_ts FROM device_events ORDER BY id")
            ).all()
            assert [tuple(r) for r in rows] == [("set", 5, None), ("set", 5, None)]
            tables = set(inspect(conn).get_table_names())
            assert {"release_launches", "release_alerts"} <= tables
            columns = {c["name"] for c in inspect(conn).get_columns("channels")}
            assert {"auto_rollback", "previous_bundle_id"} <= columns
        command.downgrade(config, "0006")
        with engine.begin() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM device_events")).scalar() == 2
            assert "release_launches" not in set(inspect(conn).get_table_names())
            columns = {c["name"] for c in inspect(conn).get_columns("device_events")}
            assert "device_ts" not in columns
        migrate(db_url)
        assert schema_revision(db_url) == HEAD_REVISION
    finally:
        engine.dispose()
