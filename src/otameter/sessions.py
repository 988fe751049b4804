"""Dashboard sessions held on the server: a random id in the cookie, its hash in the database.

The cookie carries no key and nothing readable: only 256 random bits. The row binds the
session to the user and the API key that signed in, so that signing out (the row goes),
revoking or expiring the key (the session is read through the key's row) and the session's
own expiry end it on every process, and it survives a restart. Only the SHA-256 of the id is
stored: a copy of the table opens no session.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Connection, delete, select

from .auth import PRINCIPAL_COLUMNS, Principal, key_is_live, principal_from_row
from .storage import schema as s

MAX_AGE_SECONDS = 12 * 3600


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def create_session(conn: Connection, principal: Principal, now_ms: int) -> str:
    """Open a session for the key's holder; returns the id for the cookie (shown once)."""
    t = s.dashboard_sessions
    # Sessions past their end are never read again: drop them here, where sessions are made.
    conn.execute(delete(t).where(t.c.expires_at <= now_ms))
    session_id = secrets.token_urlsafe(32)
    conn.execute(
        t.insert().values(
            id_hash=_hash(session_id),
            user_id=principal.user_id,
            key_id=principal.key_id,
            created_at=now_ms,
            expires_at=now_ms + MAX_AGE_SECONDS * 1000,
        )
    )
    return session_id


def session_principal(conn: Connection, session_id: str, now_ms: int) -> Principal | None:
    """The principal of a live session whose key is still valid, else None."""
    if not session_id or len(session_id) > 128:
        return None
    d, k = s.dashboard_sessions.c, s.api_keys.c
    row = conn.execute(
        select(*PRINCIPAL_COLUMNS)
        .join(s.api_keys, k.id == d.key_id)
        .where(
            d.id_hash == _hash(session_id),
            d.expires_at > now_ms,
            k.user_id == d.user_id,
            key_is_live(now_ms),
        )
    ).first()
    return None if row is None else principal_from_row(row)


def end_session(conn: Connection, session_id: str) -> None:
    t = s.dashboard_sessions
    conn.execute(delete(t).where(t.c.id_hash == _hash(session_id)))


def end_key_sessions(conn: Connection, key_id: str) -> None:
    t = s.dashboard_sessions
    conn.execute(delete(t).where(t.c.key_id == key_id))
