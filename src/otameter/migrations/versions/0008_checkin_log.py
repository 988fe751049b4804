"""the check-in log

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-01 23:00:00

Live check-ins are acknowledged once a compact record of their batch is committed to
``checkin_log``; the rollup folds the records into device rows and activity deltas later.
A downgrade first folds whatever the log still holds, so that no acknowledged check-in is
lost with the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "checkin_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("checkins", sa.Integer(), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checkin_log"),
    )


def downgrade() -> None:
    from otameter.checkin_log import fold_everything

    fold_everything(op.get_bind())
    op.drop_table("checkin_log")
