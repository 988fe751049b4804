"""rate-limit counters and refused new devices

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01 23:30:00

Two new tables, nothing else changes: ``rate_counters`` holds the counters the processes share
(per-device request rates, new devices per address and app), ``refused_devices`` the check-ins
refused by the new-devices limit, per app and day.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_counters",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("prev_hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "app_id", "subject", name="pk_rate_counters"),
    )
    op.create_table(
        "refused_devices",
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("checkins", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "day", name="pk_refused_devices"),
    )


def downgrade() -> None:
    op.drop_table("refused_devices")
    op.drop_table("rate_counters")
