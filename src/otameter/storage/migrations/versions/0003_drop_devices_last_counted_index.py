"""drop the devices (app_id, last_counted_at) index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 02:00:00

Every check-in moves its device's last counted time, so this index was rewritten on nearly
every device upsert: about a third of the upsert's cost and half of the write-ahead log of a
live group commit. Its one frequent reader, the dashboard's table of apps, now counts the
cycle's devices from the activity bitmaps, as the plan check does. The device-table view of
the month (statistics.month_unique_devices_from_device_table) still works, by the app's rows.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_devices_app_last_counted", table_name="devices")


def downgrade() -> None:
    op.create_index(
        "ix_devices_app_last_counted", "devices", ["app_id", "last_counted_at"], unique=False
    )
