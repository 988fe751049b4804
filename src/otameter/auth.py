"""API keys, key modes, org roles and the permission checks built from them.

A request needs both: its key's mode must allow the action, and the key's user must hold
a role in the org that allows it. Keys may be limited to some orgs and/or apps. What a key
may not see answers exactly like what does not exist (no existence oracle).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, or_, select

from .storage import schema as s


class Level(IntEnum):
    READ = 1
    UPLOAD = 2
    WRITE = 3
    ADMIN = 4
    OWNER = 5


KEY_MODES: dict[str, Level] = {
    "read": Level.READ,
    "upload": Level.UPLOAD,
    "write": Level.WRITE,
    "all": Level.OWNER,
}
ROLES: dict[str, Level] = {
    "read": Level.READ,
    "upload": Level.UPLOAD,
    "write": Level.WRITE,
    "admin": Level.ADMIN,
    "super_admin": Level.OWNER,
}
KEY_PREFIX = "otm_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # Keys are 256-bit random secrets, so a fast unsalted hash cannot be brute-forced; it
    # keeps the per-request lookup a single indexed equality.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    key_id: str
    mode: str
    limited_orgs: frozenset[str] | None
    limited_apps: frozenset[str] | None

    @property
    def level(self) -> Level:
        return KEY_MODES[self.mode]

    def sees_org(self, org_id: str) -> bool:
        return self.limited_orgs is None or org_id in self.limited_orgs

    def sees_app(self, app_id: str, org_id: str) -> bool:
        return self.sees_org(org_id) and (self.limited_apps is None or app_id in self.limited_apps)

    @property
    def whole_orgs(self) -> bool:
        """False for a key limited to some apps: it may not act for a whole org."""
        return self.limited_apps is None

    def covers(
        self, limited_orgs: frozenset[str] | None, limited_apps: frozenset[str] | None
    ) -> bool:
        """Whether this key sees at least everything a key with these limits sees."""
        if self.limited_apps is not None:
            return False
        if self.limited_orgs is None:
            return True
        return limited_orgs is not None and limited_orgs <= self.limited_orgs


def id_set(raw: str | None) -> frozenset[str] | None:
    if not raw:
        return None
    values = json.loads(raw)
    return frozenset(values) if values else None


def key_from_headers(authorization: str | None, capgkey: str | None) -> str | None:
    value = authorization or capgkey
    if not value:
        return None
    value = value.strip()
    if value.lower().startswith("bearer "):
        value = value[7:].strip()
    return value or None


def lookup_key(conn: Connection, key: str, now_ms: int) -> Principal | None:
    """The key's principal, or None for an unknown, revoked or expired key.

    Nothing is cached: every request reads the key's row, so a revocation committed by any
    process is seen by the next request on every process.
    """
    k = s.api_keys.c
    row = conn.execute(
        select(*PRINCIPAL_COLUMNS).where(k.key_hash == hash_key(key), key_is_live(now_ms))
    ).first()
    return None if row is None else principal_from_row(row)


# What a principal is read from: a key's row (directly, or through a dashboard session).
PRINCIPAL_COLUMNS = (
    s.api_keys.c.id,
    s.api_keys.c.user_id,
    s.api_keys.c.mode,
    s.api_keys.c.limited_to_orgs,
    s.api_keys.c.limited_to_apps,
)


def key_is_live(now_ms: int) -> ColumnElement[bool]:
    """A key that is neither revoked nor expired at ``now_ms``."""
    k = s.api_keys.c
    return and_(k.revoked_at.is_(None), or_(k.expires_at.is_(None), k.expires_at > now_ms))


def principal_from_row(row: Row[*tuple[Any, ...]]) -> Principal:
    return Principal(
        row.user_id, row.id, row.mode, id_set(row.limited_to_orgs), id_set(row.limited_to_apps)
    )


def org_role(conn: Connection, principal: Principal, org_id: str) -> Level | None:
    """The user's level in the org as this key may use it, or None if the key can't see it."""
    if not principal.sees_org(org_id):
        return None
    m = s.org_members.c
    role = conn.scalar(select(m.role).where(m.org_id == org_id, m.user_id == principal.user_id))
    if role is None:
        return None
    return min(ROLES[role], principal.level)


def readable_org_ids(conn: Connection, principal: Principal) -> list[str]:
    m = s.org_members.c
    ids = conn.scalars(select(m.org_id).where(m.user_id == principal.user_id).order_by(m.org_id))
    return [org_id for org_id in ids if principal.sees_org(org_id)]
