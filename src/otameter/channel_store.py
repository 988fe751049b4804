"""Channel rows: their flags, and the one public channel of each platform.

Each platform (``ios``, ``android``, ``electron``) has at most one public channel. Making a
channel public for a platform takes that platform, and only that one, from the channel that
had it, as Capgo's ``public-channel-uniqueness`` test expects; a channel can so stay the
public channel of Android while a newer one becomes the public channel of iOS. ``public``
stays "public for at least one platform".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, false, or_, select, update

from .models.shapes import PLATFORMS
from .storage import schema as s


def public_column(platform: str) -> str:
    return f"public_{platform}"


def public_for_served(values: dict[str, Any], public: bool) -> dict[str, bool]:
    """The per-platform public flags of a channel made public (or private) on the platforms
    it serves, as ``values`` (a channel row's flags) says."""
    return {public_column(p): bool(public and values[p]) for p in PLATFORMS}


def claim_public(conn: Connection, app_id: str, channel_id: int, at_ms: int) -> None:
    """Take the platforms this channel is now public for away from the app's other channels,
    then bring ``public`` back in line with the per-platform flags of the app's channels."""
    c = s.channels.c
    row = conn.execute(
        select(*(c[public_column(p)] for p in PLATFORMS)).where(
            c.app_id == app_id, c.id == channel_id
        )
    ).one()
    for platform, is_public in zip(PLATFORMS, row, strict=True):
        if not is_public:
            continue
        column = c[public_column(platform)]
        conn.execute(
            update(s.channels)
            .where(c.app_id == app_id, c.id != channel_id, column.is_(True))
            .values({public_column(platform): false(), "updated_at": at_ms})
        )
    conn.execute(
        update(s.channels)
        .where(c.app_id == app_id)
        .values(public=or_(*(c[public_column(p)] for p in PLATFORMS)))
    )


def unclaimed_platforms(conn: Connection, app_id: str) -> set[str]:
    """The platforms that have no public channel in this app."""
    c = s.channels.c
    return {
        p
        for p in PLATFORMS
        if conn.scalar(
            select(c.id).where(c.app_id == app_id, c[public_column(p)].is_(True)).limit(1)
        )
        is None
    }
