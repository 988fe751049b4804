"""The release guard: a webhook alert, and an opt-in rollback, when a bundle goes wrong.

It runs in the rollup transaction that merged a version's release-health device sets. Over the
last ``WINDOW_DAYS`` days, the version's *installing* devices are those that sent ``set``, an
install or download failure, or ``update_fail`` for it. Once there are at least
``Settings.release_min_devices`` of them, each rate (devices that rolled back, that failed, that
crashed while running it, over the installing devices) is compared with its maximum
(``release_max_rollback_rate``, ``release_max_failure_rate``, ``release_max_crash_rate``). A rate
above its maximum raises ``release_regression``, once per (version, channel serving it): a row
of ``release_alerts`` says it was raised. A channel with ``auto_rollback`` then serves the
bundle it served before (``channels.previous_bundle_id``), and the alert says so. An org may
set its own thresholds (``orgs.release_guard``), which then replace the server's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
from pyroaring import BitMap
from sqlalchemy import Connection, select, update

from .clock import Clock, to_ms
from .config import Settings
from .models.devices import ReleaseAlert
from .models.shapes import iso
from .releases import CRASHED, FAILED, INSTALLED, ROLLED_BACK
from .storage import schema as s
from .webhooks import enqueue_event

EVENT = "release_regression"
#: What an org may set for itself (``PUT /organization/:org_id/release_guard``).
THRESHOLDS = ("min_devices", "max_rollback_rate", "max_failure_rate", "max_crash_rate")
WINDOW_DAYS = 30
# Rate names, in the order a breach is named first.
RATES = (("rollback", ROLLED_BACK), ("crash", CRASHED), ("failure", FAILED))


class ReleaseGuard:
    def __init__(
        self, settings: Settings, clock: Clock, on_change: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        # Told of each app whose channels it changed (the runtime drops its cached snapshot).
        self.on_change = on_change

    def thresholds(self, overrides: str | None = None) -> dict[str, float]:
        """The server's thresholds, with an org's ``overrides`` (its ``release_guard``)."""
        st = self.settings
        values: dict[str, float] = {
            "min_devices": st.release_min_devices,
            "max_rollback_rate": st.release_max_rollback_rate,
            "max_crash_rate": st.release_max_crash_rate,
            "max_failure_rate": st.release_max_failure_rate,
        }
        if overrides:
            values.update({k: v for k, v in orjson.loads(overrides).items() if k in THRESHOLDS})
        return values

    def on_rollup(self, conn: Connection, touched: set[tuple[str, str]]) -> None:
        for app_id, version in sorted(touched):
            if version:
                self.check(conn, app_id, version)

    def check(self, conn: Connection, app_id: str, version: str) -> int:
        """Raise the version's alert where it is due; returns how many were raised."""
        today = self.clock.now().date()
        b = s.activity_bitmaps.c
        sets: dict[str, BitMap] = {}
        for kind, bitmap in conn.execute(
            select(b.kind, b.bitmap).where(
                b.app_id == app_id,
                b.version_name == version,
                b.kind.in_((INSTALLED, FAILED, ROLLED_BACK, CRASHED)),
                b.day >= today - timedelta(days=WINDOW_DAYS - 1),
                b.day <= today,
            )
        ):
            sets.setdefault(kind, BitMap()).update(BitMap.deserialize(bitmap))
        empty = BitMap()
        installing = sets.get(INSTALLED, empty) | sets.get(FAILED, empty)
        installing |= sets.get(ROLLED_BACK, empty)
        devices = len(installing)
        if devices == 0:
            return 0
        overrides = conn.scalar(
            select(s.orgs.c.release_guard)
            .join(s.apps, s.apps.c.owner_org == s.orgs.c.id)
            .where(s.apps.c.app_id == app_id)
        )
        limits = self.thresholds(overrides)
        if devices < limits["min_devices"]:
            return 0
        rates = {
            name: sets.get(kind, empty).intersection_cardinality(installing) / devices
            for name, kind in RATES
        }
        breached = [name for name, _ in RATES if rates[name] > limits[f"max_{name}_rate"]]
        if not breached:
            return 0
        return self._raise(conn, app_id, version, devices, rates, breached, limits)

    def _raise(
        self,
        conn: Connection,
        app_id: str,
        version: str,
        devices: int,
        rates: dict[str, float],
        breached: list[str],
        limits: dict[str, float],
    ) -> int:
        c, bn = s.channels.c, s.bundles.c
        serving = conn.execute(
            select(c.id, c.name, c.auto_rollback, c.bundle_id, c.previous_bundle_id)
            .join(s.bundles, (bn.app_id == c.app_id) & (bn.id == c.bundle_id))
            .where(c.app_id == app_id, bn.version == version)
            .order_by(c.name)
        ).all()
        a = s.release_alerts.c
        raised = set(
            conn.scalars(select(a.channel).where(a.app_id == app_id, a.version_name == version))
        )
        # A version no channel serves (any more) is reported once, without a channel, unless
        # it was reported for a channel already (one that then rolled back, say).
        targets: list[Any] = [ch for ch in serving if ch.name not in raised]
        if not serving and not raised:
            targets = [None]
        if not targets:
            return 0
        owner = conn.scalar(select(s.apps.c.owner_org).where(s.apps.c.app_id == app_id))
        now_ms = to_ms(self.clock.now())
        for channel in targets:
            rolled_back_to = None
            if channel is not None and channel.auto_rollback:
                rolled_back_to = self._roll_back(conn, app_id, channel, now_ms)
            name = channel.name if channel is not None else ""
            rounded = {k: round(v, 4) for k, v in rates.items()}
            conn.execute(
                s.release_alerts.insert().values(
                    app_id=app_id,
                    version_name=version,
                    channel=name,
                    reason=breached[0],
                    devices=devices,
                    rates=orjson.dumps(rounded).decode(),
                    rolled_back_to=rolled_back_to,
                    created_at=now_ms,
                )
            )
            if owner is not None:
                enqueue_event(
                    conn,
                    owner,
                    EVENT,
                    {
                        "app_id": app_id,
                        "version": version,
                        "channel": name or None,
                        "devices": devices,
                        "rates": rounded,
                        "thresholds": {
                            "rollback": limits["max_rollback_rate"],
                            "crash": limits["max_crash_rate"],
                            "failure": limits["max_failure_rate"],
                            "min_devices": limits["min_devices"],
                        },
                        "breached": breached,
                        "auto_rollback": {
                            "enabled": bool(channel is not None and channel.auto_rollback),
                            "rolled_back_to": rolled_back_to,
                        },
                    },
                    now_ms,
                )
        return len(targets)

    def _roll_back(self, conn: Connection, app_id: str, channel: Any, now_ms: int) -> str | None:
        """Point the channel at its previous bundle, if it still exists; its version."""
        if channel.previous_bundle_id is None:
            return None
        bn = s.bundles.c
        previous = conn.scalar(
            select(bn.version).where(
                bn.app_id == app_id, bn.id == channel.previous_bundle_id, bn.deleted_at.is_(None)
            )
        )
        if previous is None:
            return None
        conn.execute(
            update(s.channels)
            .where(s.channels.c.app_id == app_id, s.channels.c.id == channel.id)
            .values(
                bundle_id=channel.previous_bundle_id,
                previous_bundle_id=channel.bundle_id,
                updated_at=now_ms,
            )
        )
        if self.on_change is not None:
            self.on_change(app_id)
        return str(previous)


def release_alerts(conn: Connection, app_id: str) -> list[ReleaseAlert]:
    """The app's raised release regressions, newest first (``GET /app/{app_id}/release_alerts``,
    the dashboard's too)."""
    a = s.release_alerts.c
    rows = conn.execute(
        select(s.release_alerts).where(a.app_id == app_id).order_by(a.created_at.desc())
    )
    return [
        {
            "version": r.version_name,
            "channel": r.channel or None,
            "reason": r.reason,
            "devices": r.devices,
            "rates": orjson.loads(r.rates),
            "rolled_back_to": r.rolled_back_to,
            "created_at": iso(r.created_at),
        }
        for r in rows
    ]
