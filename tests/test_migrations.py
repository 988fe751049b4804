"""The migrations build exactly the schema the code declares, on both engines."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from otameter.storage.db import (
    HEAD_REVISION,
    alembic_config,
    create_db_engine,
    migrate,
    schema_revision,
)
from otameter.storage.schema import declared_for, metadata


def test_migrations_match_schema(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # upgrading an up-to-date database changes nothing
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": lambda item, *_: declared_for(item, conn.dialect.name),
                },
            )
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


def test_every_table_with_an_app_id_is_keyed_by_it_first(db_url: str) -> None:
    # Distribution by app (Citus) needs the distribution column in every primary key.
    migrate(db_url)
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            keyed = {}
            for table in inspector.get_table_names():
                columns = {c["name"] for c in inspector.get_columns(table)}
                if "app_id" in columns:
                    keyed[table] = inspector.get_pk_constraint(table)["constrained_columns"]
    finally:
        engine.dispose()
    assert {"checkin_log", "channels", "bundles", "rate_counters"} <= set(keyed)
    assert {table: key for table, key in keyed.items() if key[0] != "app_id"} == {}


# Tables 0010 re-keys, with the columns they are read back by in the test below.
_REKEYED = {
    "activity_deltas": "id, app_id, day, kind, version_name, bitmap",
    "checkin_log": "id, app_id, checkins, record",
    "downloads": "id, app_id, device_id, version, at, day, bytes",
    "device_events": "id, app_id, device_id, action, version_name, at, device_ts",
    "rollup_queue": "id, app_id, day, what",
    "bundles": "id, app_id, version, size, created_at",
    "channels": "id, app_id, name, bundle_id, public_ios",
    "channel_devices": "app_id, device_id, channel_id, updated_at",
    "bundle_uploads": "bundle_id, app_id, storage, started_at",
    "rate_counters": "scope, app_id, subject, window_start, hits, prev_hits",
}


def test_0010_leads_every_app_key_with_app_id_and_back(db_url: str) -> None:
    # 0010 re-keys the app tables (app_id, ...) keeping every row and id; new rows get ids
    # above every id of every app; its downgrade restores the previous keys, rows and all.
    from sqlalchemy import text

    from otameter.metering.ingest import insert_channel
    from otameter.storage import app_rows

    config = alembic_config(db_url)
    command.upgrade(config, "0008")
    engine = create_db_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    apps = ("com.a.app", "com.b.app")
    bundles = {"com.a.app": "00000000-0000-4000-8000-00000000000a", "com.b.app": "b-bundle"}

    def fill_0008(conn: Any) -> None:
        conn.execute(text("INSERT INTO users (id, email, created_at) VALUES ('u', 'u@x.io', 0)"))
        conn.execute(
            text("INSERT INTO orgs (id, name, created_by, created_at) VALUES ('o', 'O', 'u', 0)")
        )
        for n, app_id in enumerate(apps):
            params = {"a": app_id, "b": bundles[app_id], "n": n}
            conn.execute(
                text(
                    "INSERT INTO apps (app_id, name, owner_org, created_at) VALUES (:a, :a, 'o', 0)"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO bundles (id, app_id, version, size, created_at)"
                    " VALUES (:b, :a, '1.0.0', 10, 1)"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO channels (app_id, name, bundle_id, created_at, updated_at)"
                    " VALUES (:a, 'prod', :b, 0, 0)"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO bundle_uploads (bundle_id, app_id, storage, started_at)"
                    " VALUES (:a || '-up', :a, 'file', 3)"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO rate_counters (scope, app_id, subject, window_start, hits,"
                    " prev_hits) VALUES ('device', :a, 'd1', 7, 2, 1)"
                ),
                params,
            )
        for app_id in apps:
            conn.execute(
                text(
                    "INSERT INTO channel_devices (app_id, device_id, channel_id, updated_at)"
                    " SELECT app_id, 'dev-1', id, 5 FROM channels WHERE app_id = :a"
                ),
                {"a": app_id},
            )
        # Rows of both apps interleaved, so that each app's ids have gaps.
        for n in range(6):
            params = {"a": apps[n % 2], "n": n, "blob": bytes([n])}
            conn.execute(
                text(
                    "INSERT INTO activity_deltas (app_id, day, kind, version_name, bitmap)"
                    " VALUES (:a, '2026-05-01', 'counted', '', :blob)"
                ),
                params,
            )
            conn.execute(
                text("INSERT INTO checkin_log (app_id, checkins, record) VALUES (:a, :n, :blob)"),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO downloads (app_id, device_id, version, at, day, bytes)"
                    " VALUES (:a, 'd', '1.0.0', :n, '2026-05-01', 100)"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO device_events (app_id, device_id, action, version_name, at,"
                    " device_ts) VALUES (:a, 'd', 'set', '1.0.0', :n, :n)"
                ),
                params,
            )
            conn.execute(
                text("INSERT INTO rollup_queue (app_id, day, what) VALUES (:a, '2026-05-01', 'x')"),
                params,
            )

    def state() -> dict[str, list[tuple[Any, ...]]]:
        with engine.connect() as conn:
            return {
                table: sorted(
                    tuple(row) for row in conn.execute(text(f"SELECT {columns} FROM {table}")).all()
                )
                for table, columns in _REKEYED.items()
            }

    def keys() -> dict[str, list[str]]:
        with engine.connect() as conn:
            inspector = inspect(conn)
            return {
                table: inspector.get_pk_constraint(table)["constrained_columns"]
                for table in _REKEYED
            }

    def foreign_keys() -> dict[str, list[str]]:
        with engine.connect() as conn:
            inspector = inspect(conn)
            return {
                f"{table}->{fk['referred_table']}": fk["constrained_columns"]
                for table in ("channels", "channel_devices")
                for fk in inspector.get_foreign_keys(table)
            }

    def rowids_equal_ids() -> None:
        if postgres:
            return
        with engine.connect() as conn:
            for table in app_rows.DRAWN_ID_TABLES:
                pairs = conn.execute(text(f"SELECT rowid, id FROM {table}")).all()
                assert pairs and all(rowid == row_id for rowid, row_id in pairs), table

    try:
        with engine.begin() as conn:
            fill_0008(conn)
        before = state()
        keys_before = keys()
        assert keys_before["checkin_log"] == ["id"] and keys_before["bundles"] == ["id"]
        assert keys_before["rate_counters"] == ["scope", "app_id", "subject"]
        assert len(before["checkin_log"]) == 6 and len(before["channel_devices"]) == 2

        migrate(db_url)
        assert state() == before
        keys_after = keys()
        assert {table: key[0] for table, key in keys_after.items()} == dict.fromkeys(
            _REKEYED, "app_id"
        )
        assert keys_after["checkin_log"] == ["app_id", "id"]
        assert keys_after["rate_counters"] == ["app_id", "scope", "subject"]
        assert foreign_keys() == {
            "channels->apps": ["app_id"],
            "channels->bundles": ["app_id", "bundle_id"],
            "channel_devices->channels": ["app_id", "channel_id"],
        }
        rowids_equal_ids()

        # New rows: ids above every app's, unique across apps, in insert order.
        top = {table: max(row[0] for row in before[table]) for table in app_rows.DRAWN_ID_TABLES}
        with engine.begin() as conn:
            logged = app_rows.insert(
                conn,
                "checkin_log",
                ("app_id", "checkins", "record"),
                [(apps[1], 7, b"x"), (apps[0], 8, b"y")],
                returning=True,
            )
            app_rows.insert(
                conn,
                "rollup_queue",
                ("app_id", "day", "what"),
                [(apps[0], date(2026, 5, 2), "y")] * 2,
            )
            channel = insert_channel(
                conn, {"app_id": apps[1], "name": "beta", "created_at": 0, "updated_at": 0}
            )
        assert logged == [top["checkin_log"] + 1, top["checkin_log"] + 2]
        assert channel == top["channels"] + 1
        after = state()
        assert [row[0] for row in after["rollup_queue"][-2:]] == [
            top["rollup_queue"] + 1,
            top["rollup_queue"] + 2,
        ]
        rowids_equal_ids()
        # A channel override names a channel of its own app only.
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO channel_devices (app_id, device_id, channel_id, updated_at)"
                    " VALUES (:a, 'dev-2', :c, 0)"
                ),
                {"a": apps[0], "c": channel},
            )

        command.downgrade(config, "0008")
        assert state() == after
        assert keys() == keys_before
        if postgres:
            # The sequences go on after the highest id.
            with engine.begin() as conn:
                drawn = conn.execute(
                    text(
                        "INSERT INTO checkin_log (app_id, checkins, record)"
                        " VALUES ('com.a.app', 1, 'z') RETURNING id"
                    )
                ).scalar_one()
            assert drawn == top["checkin_log"] + 3
            after = state()

        migrate(db_url)
        assert state() == after
        assert keys() == keys_after
        rowids_equal_ids()
    finally:
        engine.dispose()
