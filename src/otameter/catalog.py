"""What the plugin endpoints need to know about an app, cached briefly in each process.

The hot path (``POST /updates``) must not query the database for every request: each
process keeps a snapshot per app (its org's lock, channels, bundles, device overrides)
for a couple of seconds. Changes made by this process invalidate it at once; changes
made by other processes are seen within the time-to-live.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from .models.shapes import PLATFORMS as PLATFORM_ORDER
from .storage import schema as s

PLATFORMS = frozenset(PLATFORM_ORDER)


@dataclass(frozen=True, slots=True)
class BundleInfo:
    id: str
    version: str
    checksum: str | None
    external_url: str | None
    size: int


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    id: int
    name: str
    public: bool
    allow_device_self_set: bool
    allow_emulator: bool
    allow_dev: bool
    ios: bool
    android: bool
    electron: bool
    bundle: BundleInfo | None
    public_ios: bool = False
    public_android: bool = False
    public_electron: bool = False
    disable_auto_update: str = "none"
    disable_auto_update_under_native: bool = True

    def allows_platform(self, platform: str) -> bool:
        return platform in PLATFORMS and bool(getattr(self, platform))

    def public_for(self, platform: str) -> bool:
        """Whether this is the public channel of ``platform``."""
        return platform in PLATFORMS and bool(getattr(self, f"public_{platform}"))


@dataclass(frozen=True, slots=True)
class AppSnapshot:
    app_id: str
    owner_org: str
    lock_code: str | None
    lock_reason: str | None
    channels: dict[str, ChannelInfo]
    overrides: dict[str, int] = field(default_factory=dict)

    def public_channel(self, platform: str) -> ChannelInfo | None:
        """The platform's public channel: what a device without a ``defaultChannel`` gets."""
        public = [c for c in self.channels.values() if c.public_for(platform)]
        # At most one by construction; the newest wins should a race ever leave two.
        return max(public, key=lambda c: c.id) if public else None

    def channel_by_id(self, channel_id: int) -> ChannelInfo | None:
        for channel in self.channels.values():
            if channel.id == channel_id:
                return channel
        return None


def load_snapshot(engine: Engine, app_id: str) -> AppSnapshot | None:
    a, o, c, b, cd = (s.apps.c, s.orgs.c, s.channels.c, s.bundles.c, s.channel_devices.c)
    with engine.connect() as conn:
        app = conn.execute(
            select(a.app_id, a.owner_org, o.lock_code, o.lock_reason)
            .join(s.orgs, o.id == a.owner_org)
            .where(a.app_id == app_id, a.deleted_at.is_(None))
        ).first()
        if app is None:
            return None
        rows = conn.execute(
            select(
                c.id,
                c.name,
                c.public,
                c.allow_device_self_set,
                c.allow_emulator,
                c.allow_dev,
                c.ios,
                c.android,
                c.electron,
                c.public_ios,
                c.public_android,
                c.public_electron,
                c.disable_auto_update,
                c.disable_auto_update_under_native,
                b.id.label("bundle_id"),
                b.version,
                b.checksum,
                b.external_url,
                b.size,
            )
            .outerjoin(
                s.bundles,
                (b.app_id == c.app_id) & (b.id == c.bundle_id) & b.deleted_at.is_(None),
            )
            .where(c.app_id == app_id)
        ).all()
        overrides: dict[str, int] = {
            device_id: channel_id
            for device_id, channel_id in conn.execute(
                select(cd.device_id, cd.channel_id).where(cd.app_id == app_id)
            )
        }
    channels = {
        r.name: ChannelInfo(
            r.id,
            r.name,
            r.public,
            r.allow_device_self_set,
            r.allow_emulator,
            r.allow_dev,
            r.ios,
            r.android,
            r.electron,
            BundleInfo(r.bundle_id, r.version, r.checksum, r.external_url, r.size)
            if r.bundle_id
            else None,
            bool(r.public_ios),
            bool(r.public_android),
            bool(r.public_electron),
            r.disable_auto_update,
            bool(r.disable_auto_update_under_native),
        )
        for r in rows
    }
    return AppSnapshot(
        app.app_id, app.owner_org, app.lock_code, app.lock_reason, channels, overrides
    )


class Catalog:
    def __init__(self, engine: Engine, ttl_seconds: float) -> None:
        self.engine = engine
        self.ttl = ttl_seconds
        self._entries: dict[str, tuple[float, AppSnapshot | None]] = {}
        self._lock = threading.Lock()
        # Bumped by every invalidation: a snapshot read before an invalidation may predate
        # the change that caused it, so it must not be cached after it.
        self._generation = 0

    def get(self, app_id: str) -> AppSnapshot | None:
        """A fresh-enough snapshot; loads it (blocking) on a miss."""
        now = time.monotonic()
        entry = self._entries.get(app_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        generation = self._generation
        snapshot = load_snapshot(self.engine, app_id)
        with self._lock:
            if generation == self._generation:
                self._entries[app_id] = (now + self.ttl, snapshot)
        return snapshot

    def cached(self, app_id: str) -> tuple[bool, AppSnapshot | None]:
        entry = self._entries.get(app_id)
        if entry is not None and entry[0] > time.monotonic():
            return True, entry[1]
        return False, None

    def invalidate(self, app_id: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if app_id is None:
                self._entries.clear()
            else:
                self._entries.pop(app_id, None)
