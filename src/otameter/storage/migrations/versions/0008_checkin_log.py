"""the check-in log; device ordinals per app

Revision ID: 0008
Revises: 0009
Create Date: 2026-12-01 23:00:00

Live check-ins are acknowledged once a compact record of their batch is committed to
``checkin_log``; the rollup folds the records into device rows and activity deltas later.

Device ordinals become per app: ``devices`` is keyed ``(app_id, id)`` and ``id`` counts from 1
in each app (``apps.device_ordinals`` is the app's counter), so an app's bitmaps stay dense
and no sequence is shared by all apps (a distributed sequence would break the 32-bit
bitmaps). The upgrade renumbers each app's devices in the order of their old ids and rewrites
every activity bitmap and delta of the app through the same mapping; the downgrade numbers
all devices again in (app, ordinal) order, rewrites the bitmaps back, and first folds
whatever the log still holds, so that no acknowledged check-in is lost with the table.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from alembic import op
from pyroaring import BitMap

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_COLUMNS = (
    "device_id, first_seen, last_seen, last_counted_at, platform, version_name, version_build,"
    " version_os, plugin_version, custom_id, is_emulator, is_prod"
)


def _device_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_counted_at", sa.BigInteger(), nullable=True),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("version_name", sa.String(length=255), nullable=False),
        sa.Column("version_build", sa.String(length=255), server_default="", nullable=False),
        sa.Column("version_os", sa.String(length=64), server_default="", nullable=False),
        sa.Column("plugin_version", sa.String(length=64), server_default="", nullable=False),
        sa.Column("custom_id", sa.String(length=36), server_default="", nullable=False),
        sa.Column("is_emulator", sa.Boolean(), nullable=False),
        sa.Column("is_prod", sa.Boolean(), nullable=False),
    ]


def _renumber_bitmaps(conn: sa.Connection, mapping: dict[str, dict[int, int]]) -> None:
    """Rewrite every activity bitmap and delta of the mapped apps (old ordinal -> new)."""
    for table, key in (
        ("activity_bitmaps", "app_id, day, kind, version_name"),
        ("activity_deltas", "id"),
    ):
        rows = conn.exec_driver_sql(f"SELECT {key}, app_id, bitmap FROM {table}").all()
        names = [name.strip() for name in key.split(",")]
        where = " AND ".join(f"{name} = :k{i}" for i, name in enumerate(names))
        for row in rows:
            *keys, app_id, blob = row
            numbers = mapping.get(app_id, {})
            bitmap = BitMap(numbers[old] for old in BitMap.deserialize(bytes(blob)))
            params = {f"k{i}": value for i, value in enumerate(keys)}
            conn.execute(
                sa.text(f"UPDATE {table} SET bitmap = :bitmap WHERE {where}"),
                {**params, "bitmap": bitmap.serialize()},
            )


def _mapping(rows: Iterable[tuple[str, int, int]]) -> dict[str, dict[int, int]]:
    mapping: dict[str, dict[int, int]] = {}
    for app_id, old, new in rows:
        mapping.setdefault(app_id, {})[int(old)] = int(new)
    return mapping


def upgrade() -> None:
    op.create_table(
        "checkin_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("checkins", sa.Integer(), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checkin_log"),
    )
    op.add_column(
        "apps", sa.Column("device_ordinals", sa.BigInteger(), server_default="0", nullable=False)
    )
    conn = op.get_bind()
    mapping = _mapping(
        conn.exec_driver_sql(
            "SELECT app_id, id, ROW_NUMBER() OVER (PARTITION BY app_id ORDER BY id) FROM devices"
        ).all()
    )
    if conn.dialect.name == "postgresql":
        # In place: the key leads with app_id before ordinals repeat across apps.
        op.execute("ALTER TABLE devices ALTER COLUMN id DROP DEFAULT")
        op.execute("DROP SEQUENCE IF EXISTS devices_id_seq")
        op.execute("ALTER TABLE devices DROP CONSTRAINT pk_devices")
        op.execute(
            "UPDATE devices SET id = m.n FROM (SELECT id AS old,"
            " ROW_NUMBER() OVER (PARTITION BY app_id ORDER BY id) AS n FROM devices) AS m"
            " WHERE devices.id = m.old"
        )
        op.execute("ALTER TABLE devices ADD CONSTRAINT pk_devices PRIMARY KEY (app_id, id)")
    else:
        # SQLite cannot change a primary key: the table is built again.
        op.create_table(
            "devices_new",
            sa.Column("app_id", sa.String(length=255), nullable=False),
            sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
            *_device_columns(),
            sa.PrimaryKeyConstraint("app_id", "id", name="pk_devices"),
            sa.UniqueConstraint("app_id", "device_id", name="uq_devices_app_device"),
        )
        op.execute(
            f"INSERT INTO devices_new (app_id, id, {_COLUMNS}) SELECT app_id,"
            f" ROW_NUMBER() OVER (PARTITION BY app_id ORDER BY id), {_COLUMNS} FROM devices"
        )
        op.drop_table("devices")
        op.rename_table("devices_new", "devices")
    op.execute(
        "UPDATE apps SET device_ordinals ="
        " (SELECT COALESCE(MAX(id), 0) FROM devices WHERE devices.app_id = apps.app_id)"
    )
    _renumber_bitmaps(conn, mapping)


def downgrade() -> None:
    from otameter.metering.checkin_log import drain_all

    conn = op.get_bind()
    drain_all(conn)
    op.drop_table("checkin_log")
    mapping = _mapping(
        conn.exec_driver_sql(
            "SELECT app_id, id, ROW_NUMBER() OVER (ORDER BY app_id, id) FROM devices"
        ).all()
    )
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE devices DROP CONSTRAINT pk_devices")
        op.execute(
            "UPDATE devices SET id = m.n FROM (SELECT app_id AS a, id AS old,"
            " ROW_NUMBER() OVER (ORDER BY app_id, id) AS n FROM devices) AS m"
            " WHERE devices.app_id = m.a AND devices.id = m.old"
        )
        op.execute("ALTER TABLE devices ADD CONSTRAINT pk_devices PRIMARY KEY (id)")
        op.execute("CREATE SEQUENCE devices_id_seq OWNED BY devices.id")
        op.execute("ALTER TABLE devices ALTER COLUMN id SET DEFAULT nextval('devices_id_seq')")
        op.execute(
            "SELECT setval('devices_id_seq', COALESCE((SELECT MAX(id) FROM devices), 0) + 1, false)"
        )
    else:
        op.create_table(
            "devices_old",
            sa.Column("id", BigId, autoincrement=True, nullable=False),
            sa.Column("app_id", sa.String(length=255), nullable=False),
            *_device_columns(),
            sa.PrimaryKeyConstraint("id", name="pk_devices"),
            sa.UniqueConstraint("app_id", "device_id", name="uq_devices_app_device"),
        )
        op.execute(
            f"INSERT INTO devices_old (id, app_id, {_COLUMNS}) SELECT"
            f" ROW_NUMBER() OVER (ORDER BY app_id, id), app_id, {_COLUMNS} FROM devices"
        )
        op.drop_table("devices")
        op.rename_table("devices_old", "devices")
    # Plain ALTER (SQLite 3.35+): a batch rebuild of apps would trip the keys that refer to it.
    op.execute("ALTER TABLE apps DROP COLUMN device_ordinals")
    _renumber_bitmaps(conn, mapping)
