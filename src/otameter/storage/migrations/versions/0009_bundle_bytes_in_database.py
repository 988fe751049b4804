"""bundle bytes in the database

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-01 23:30:00

On PostgreSQL bundle bytes are stored in the database (bundle_chunks), so that every process
and machine on one database serves every bundle. ``bundles.storage`` says where a bundle's
bytes are; bundles stored before this revision are files under the data directory
(``otameter bundles move-to-database`` moves them). ``bundle_uploads`` lists uploads in
progress, so that bytes of an upload cut short can be found and removed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bundles") as batch:
        batch.add_column(sa.Column("storage", sa.String(16), nullable=True))
    op.execute(
        "UPDATE bundles SET storage = 'file' "
        "WHERE storage_path IS NOT NULL AND external_url IS NULL"
    )
    op.create_table(
        "bundle_chunks",
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("bundle_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "bundle_id", "seq", name="pk_bundle_chunks"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Zips are compressed already: keep TOAST from trying again on every chunk.
        op.execute("ALTER TABLE bundle_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_table(
        "bundle_uploads",
        sa.Column("bundle_id", sa.String(36), nullable=False),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("storage", sa.String(16), nullable=False),
        sa.Column("storage_path", sa.Text(), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bundle_id", name="pk_bundle_uploads"),
    )


def downgrade() -> None:
    bind = op.get_bind()
    in_database = bind.execute(
        sa.text("SELECT count(*) FROM bundles WHERE storage = 'database' AND deleted_at IS NULL")
    ).scalar()
    if in_database:
        # The previous schema keeps bytes only in files, and a downgrade has no data
        # directory to write them to: refuse rather than lose bundles.
        raise RuntimeError(
            f"{in_database} bundles are stored in the database; the previous schema cannot "
            "hold them. Delete them or keep this revision."
        )
    op.drop_table("bundle_uploads")
    op.drop_table("bundle_chunks")
    with op.batch_alter_table("bundles") as batch:
        batch.drop_column("storage")
