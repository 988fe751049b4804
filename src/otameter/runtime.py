"""The running parts of one otameter process, wired together."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from .auth_limits import FailedAuthLimiter, Limit
from .billing.enforcement import PlanEnforcer
from .bundle_store import BundleStores, sweep_abandoned
from .catalog import Catalog
from .clock import Clock, SystemClock, to_ms
from .config import Settings
from .google_ranges import load_google_ranges
from .metering.events import Event, Outcome
from .metering.ingest import Pipeline
from .metering.rollups import Rollups
from .metering.writer import Writer
from .periodic import Periodic
from .rate_limits import Limits, prune
from .release_guard import ReleaseGuard
from .release_ingest import PRUNE_BATCH, prune_events
from .storage import schema as s
from .storage.db import create_db_engine, sqlite_write_lock
from .storage.dialect import dialect_insert
from .webhooks import TargetPolicy, WebhookDispatcher

log = logging.getLogger(__name__)
SECRET_KEY = "download_signing_secret"
LOG_DRAIN_SECONDS = 0.25


class Runtime:
    """Engines, the writer, the rollup worker and the caches of one process."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.read_engine = create_db_engine(settings.database_url)
        self.write_engine = create_db_engine(
            settings.database_url, writer=True, synchronous=settings.sqlite_synchronous
        )
        self.google_ranges = load_google_ranges(settings.google_ranges_dir)
        self.pipeline = Pipeline(self.google_ranges.contains)
        self._write_lock = sqlite_write_lock(settings.database_url)
        self.writer = Writer(
            self.write_engine, self.pipeline, max_batch=settings.max_batch, lock=self._write_lock
        )
        self.rollups = Rollups(
            self.writer,
            self.clock,
            read_engine=self.read_engine,
            is_google_ip=self.pipeline.is_google_ip,
        )
        self.rollup_worker = Periodic(
            "otameter-rollups", self.rollups.run_blocking, settings.rollup_interval_seconds
        )
        # Drains the check-in log more often than the whole rollup runs: short transactions
        # that hold the write lock briefly, and a device table at most this much behind.
        self.log_worker = Periodic(
            "otameter-checkin-log",
            self.rollups.drain_log_blocking,
            min(LOG_DRAIN_SECONDS, settings.rollup_interval_seconds),
        )
        self.catalog = Catalog(self.read_engine, settings.cache_ttl_seconds)
        # Snapshot loads in flight, per event loop and app (see api.plugin.app_snapshot).
        self.snapshot_loads: dict[tuple[Any, str], Any] = {}
        # Plan locks and alerts follow each rollup; the periodic pass catches trials ending.
        self.plans = PlanEnforcer(self.writer, self.clock, self.catalog)
        self.rollups.hooks.append(self.plans.on_rollup)
        self.plan_worker = Periodic(
            "otameter-plans", self.plans.tick, max(1.0, settings.rollup_interval_seconds)
        )
        self.release_guard = ReleaseGuard(settings, self.clock, self.catalog.invalidate)
        self.rollups.release_hooks.append(self.release_guard.on_rollup)
        self.prune_worker = Periodic("otameter-prune", self.prune_stats_events, 60.0)
        self.limits = Limits(
            checkins_per_minute=settings.checkins_per_device_minute,
            stats_per_minute=settings.stats_per_device_minute,
            new_devices_per_hour=settings.new_devices_per_ip_hour,
            clock=self.clock,
            run=self.writer.run,
        )
        # Applied by the rollup as it drains the check-in log into device rows.
        self.rollups.new_devices = self.limits.new_devices
        # Counters whose windows are over are dropped now and then.
        self.limits_worker = Periodic("otameter-limits", self._prune_limits, 60.0)
        self.webhook_policy = TargetPolicy(settings.webhook_allow_private)
        self.webhooks = WebhookDispatcher(self.writer, self.clock, policy=self.webhook_policy)
        self.webhook_worker = Periodic("otameter-webhooks", self.webhooks.deliver_due, 1.0)
        # Bundle bytes: files on SQLite, the database on PostgreSQL (bundle_store.py).
        self.bundles = BundleStores(self.read_engine, settings.bundle_dir)
        self.bundle_sweeper = Periodic("otameter-bundle-sweep", self.sweep_bundles, 3600.0)
        # Failed authentications per address (auth_limits.py): API keys, dashboard sign-ins.
        self.auth_failures = FailedAuthLimiter(
            self.writer,
            self.clock,
            "api",
            Limit(settings.auth_failure_limit, settings.auth_failure_window_seconds),
        )
        self.signin_failures = FailedAuthLimiter(
            self.writer,
            self.clock,
            "dashboard",
            Limit(settings.signin_failure_limit, settings.signin_failure_window_seconds),
        )
        self._secret: bytes | None = None
        self.started = False

    def start(self, *, background: bool = True) -> None:
        self.writer.start()
        self._secret = self.writer.run_blocking(_ensure_secret).encode()
        if background and self.settings.rollup_interval_seconds > 0:
            self.rollup_worker.start()
            self.log_worker.start()
            self.plan_worker.start()
            self.webhook_worker.start()
            self.bundle_sweeper.start()
            self.prune_worker.start()
            self.limits_worker.start()
        self.started = True

    def stop(self) -> None:
        background = self.log_worker.running
        self.rollup_worker.stop()
        self.log_worker.stop()
        if background:
            # What was logged is durable either way; drained now, the next start is not behind.
            try:
                self.rollups.drain_log_blocking()
            except Exception:
                log.warning("draining the check-in log at stop failed", exc_info=True)
        self.plan_worker.stop()
        self.webhook_worker.stop()
        self.bundle_sweeper.stop()
        self.prune_worker.stop()
        self.limits_worker.stop()
        self.webhooks.close()
        self.writer.stop()
        if self._write_lock is not None:
            self._write_lock.close()
        self.read_engine.dispose()
        self.write_engine.dispose()
        self.started = False

    def prune_stats_events(self) -> int:
        """Delete raw stats events older than the retention; returns how many went."""
        cutoff = to_ms(self.clock.now()) - int(self.settings.stats_retention_days * 86_400_000)
        total = 0
        while True:
            # Bounded transactions: the writer stays free for live traffic between them.
            pruned = self.writer.run_blocking(lambda conn: prune_events(conn, cutoff))
            total += pruned
            if pruned < PRUNE_BATCH:
                return total

    def _prune_limits(self) -> None:
        now_ms = to_ms(self.clock.now())
        self.writer.run_blocking(lambda conn: prune(conn, now_ms))

    async def submit(self, events: Sequence[Event]) -> list[Outcome]:
        return await self.writer.submit(events)

    def sweep_bundles(self) -> int:
        """Remove the bytes of uploads that a crash cut short; returns how many."""
        now_ms = to_ms(self.clock.now())
        gone = self.writer.run_blocking(lambda conn: sweep_abandoned(conn, now_ms))
        for bundle in gone:
            self.bundles.remove(bundle)
        return len(gone)

    # -- signed download links -------------------------------------------------------------

    def sign(self, *parts: str) -> str:
        assert self._secret is not None, "runtime not started"
        message = "\x1f".join(parts).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def verify(self, signature: str, *parts: str) -> bool:
        return hmac.compare_digest(self.sign(*parts), signature)


def _ensure_secret(conn: Connection) -> str:
    # Every process signs download links with the same secret, kept in the database.
    state = s.server_state
    conn.execute(
        dialect_insert(conn, state)
        .values(key=SECRET_KEY, value=secrets.token_hex(32))
        .on_conflict_do_nothing(index_elements=["key"])
    )
    value: Any = conn.scalar(select(state.c.value).where(state.c.key == SECRET_KEY))
    return str(value)
