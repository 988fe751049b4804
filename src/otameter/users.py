"""Accounts: creating users, their first API key (the bootstrap path of the CLI) and the
memberships they were invited to before they existed."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, delete, func, select

from .auth import hash_key, new_api_key
from .storage import schema as s


class UserExists(ValueError):
    pass


def create_user(
    conn: Connection, email: str, name: str, now_ms: int, *, key_mode: str = "all"
) -> tuple[str, str]:
    """Create a user with one API key; returns (user_id, the key in clear, shown once)."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise ValueError(f"not an email address: {email!r}")
    if conn.scalar(
        select(func.count()).select_from(s.users).where(func.lower(s.users.c.email) == email)
    ):
        raise UserExists(f"a user with email {email} exists already")
    user_id = str(uuid.uuid4())
    conn.execute(s.users.insert().values(id=user_id, email=email, name=name, created_at=now_ms))
    key = new_api_key()
    conn.execute(
        s.api_keys.insert().values(
            id=str(uuid.uuid4()),
            user_id=user_id,
            name="created by otameter user create",
            key_hash=hash_key(key),
            mode=key_mode,
            created_at=now_ms,
        )
    )
    _accept_invitations(conn, user_id, email, now_ms)
    return user_id, key


def _accept_invitations(conn: Connection, user_id: str, email: str, now_ms: int) -> None:
    """Memberships offered to this address before it had a user become the user's."""
    i = s.org_invitations.c
    invitations = conn.execute(
        select(i.org_id, i.role).where(i.email == email).order_by(i.org_id)
    ).all()
    for org_id, role in invitations:
        conn.execute(
            s.org_members.insert().values(
                org_id=org_id, user_id=user_id, role=role, created_at=now_ms
            )
        )
    if invitations:
        conn.execute(delete(s.org_invitations).where(i.email == email))
