"""release health: stats event dedupe and pruning, launch-time histograms, release alerts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:20:00

Orgs get ``release_guard`` (their own thresholds: NULL, the server's). Existing device events
keep their rows (``device_ts`` NULL: they never conflict); channels
get ``auto_rollback`` (off) and ``previous_bundle_id`` (unknown: NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orgs") as batch:
        batch.add_column(sa.Column("release_guard", sa.Text(), nullable=True))
    with op.batch_alter_table("channels") as batch:
        batch.add_column(
            sa.Column("auto_rollback", sa.Boolean(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("previous_bundle_id", sa.String(36), nullable=True))
    op.add_column("device_events", sa.Column("device_ts", sa.BigInteger(), nullable=True))
    op.create_index(
        "ux_device_events_event",
        "device_events",
        ["app_id", "device_id", "device_ts", "action", "version_name"],
        unique=True,
    )
    op.create_index("ix_device_events_at", "device_events", ["at"], unique=False)
    op.create_table(
        "release_launches",
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("version_name", sa.String(255), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("launches", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "day", "version_name", "bucket", name="pk_release_launches"
        ),
    )
    op.create_table(
        "release_alerts",
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("version_name", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("devices", sa.BigInteger(), nullable=False),
        sa.Column("rates", sa.Text(), nullable=False),
        sa.Column("rolled_back_to", sa.String(255), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "version_name", "channel", name="pk_release_alerts"),
    )


def downgrade() -> None:
    op.drop_table("release_alerts")
    op.drop_table("release_launches")
    op.drop_index("ix_device_events_at", table_name="device_events")
    op.drop_index("ux_device_events_event", table_name="device_events")
    with op.batch_alter_table("device_events") as batch:
        batch.drop_column("device_ts")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("previous_bundle_id")
        batch.drop_column("auto_rollback")
    with op.batch_alter_table("orgs") as batch:
        batch.drop_column("release_guard")
