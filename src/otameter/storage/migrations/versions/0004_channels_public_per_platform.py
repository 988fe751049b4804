"""channels: public per platform, auto-update rules

Revision ID: 0004
Revises: 0005
Create Date: 2026-12-01 23:00:00

Each platform has its own public channel (plugin-protocol.md §4, Capgo's
public-channel-uniqueness test): ``public_ios``, ``public_android`` and ``public_electron``
say which platforms a channel is the public channel of; ``public`` stays their OR. A channel
that was public becomes the public channel of every platform it serves, which is what it was
before. ``disable_auto_update`` ("none", "major", "minor", "patch") and
``disable_auto_update_under_native`` (default true, as in Capgo) are the channel's update
rules. The downgrade drops the new columns; ``public`` keeps its meaning.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0005"
branch_labels = None
depends_on = None

PLATFORMS = ("ios", "android", "electron")


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        for platform in PLATFORMS:
            batch.add_column(
                sa.Column(f"public_{platform}", sa.Boolean(), nullable=False, server_default="0")
            )
        batch.add_column(
            sa.Column(
                "disable_auto_update", sa.String(length=8), nullable=False, server_default="none"
            )
        )
        batch.add_column(
            sa.Column(
                "disable_auto_update_under_native",
                sa.Boolean(),
                nullable=False,
                server_default="1",
            )
        )
    channels = sa.table(
        "channels",
        sa.column("public", sa.Boolean()),
        *(sa.column(p, sa.Boolean()) for p in PLATFORMS),
        *(sa.column(f"public_{p}", sa.Boolean()) for p in PLATFORMS),
    )
    c = channels.c
    op.execute(
        channels.update()
        .where(c.public.is_(True))
        .values(
            public_ios=c.ios,
            public_android=c.android,
            public_electron=c.electron,
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("disable_auto_update_under_native")
        batch.drop_column("disable_auto_update")
        for platform in reversed(PLATFORMS):
            batch.drop_column(f"public_{platform}")
