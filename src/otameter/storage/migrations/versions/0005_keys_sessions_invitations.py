"""key expiry and revocation, org invitations, dashboard sessions, failed-auth counters

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01 23:00:00

Keys get an optional expiry and a revocation time (a revoked key's row stays, so that its
name and dates remain listed nowhere but are kept for the record). Adding a member by an
address without a user records an invitation, taken up when that user is created.
Dashboard sessions live in the database (hashed ids) so that sign-out and revocation end
them on every process and they survive a restart. Failed authentications are counted per
address in a fixed window shared by every process.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.BigInteger(), nullable=True))
    op.add_column("api_keys", sa.Column("revoked_at", sa.BigInteger(), nullable=True))
    op.create_table(
        "org_invitations",
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("invited_by", sa.String(36), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_org_invitations_org_id_orgs"),
        sa.PrimaryKeyConstraint("org_id", "email", name="pk_org_invitations"),
    )
    op.create_index("ix_org_invitations_email", "org_invitations", ["email"])
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_dashboard_sessions_user_id_users"
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_dashboard_sessions_key_id_api_keys"
        ),
        sa.PrimaryKeyConstraint("id_hash", name="pk_dashboard_sessions"),
    )
    op.create_index("ix_dashboard_sessions_key_id", "dashboard_sessions", ["key_id"])
    op.create_table(
        "auth_failures",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "address", name="pk_auth_failures"),
    )
    op.create_index("ix_auth_failures_window_start", "auth_failures", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_auth_failures_window_start", table_name="auth_failures")
    op.drop_table("auth_failures")
    op.drop_index("ix_dashboard_sessions_key_id", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    op.drop_index("ix_org_invitations_email", table_name="org_invitations")
    op.drop_table("org_invitations")
    # SQLite drops columns by rebuilding the table (batch mode); PostgreSQL alters it.
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("expires_at")
