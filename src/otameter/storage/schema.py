"""The database schema (SQLAlchemy Core), portable between SQLite and PostgreSQL.

Instants are stored as epoch milliseconds (BIGINT) and days as DATE (UTC). Every table
on the ingest path carries ``app_id``, and the primary key of every table with an
``app_id`` starts with it, so that a deployment can be distributed by app (migration 0010).

An integer ``id`` beside ``app_id`` in a key is still unique across apps: PostgreSQL fills
it from the column's sequence, SQLite (which autoincrements only a lone INTEGER PRIMARY
KEY) gets it from ``app_rows.py`` as the row's rowid.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def declared_for(item: object, dialect: str) -> bool:
    """Whether a schema item exists on ``dialect`` (``Index.ddl_if`` may limit it to one)."""
    condition = getattr(item, "_ddl_if", None)
    return condition is None or condition.dialect in (None, dialect)


# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT identities.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def app_id_key(table: str) -> list[Column[Any] | PrimaryKeyConstraint]:
    """``app_id`` and an ``id`` drawn from a sequence (PostgreSQL) or by ``app_rows.py``
    (SQLite), keyed ``(app_id, id)``."""
    return [
        Column("id", BigId, nullable=False, autoincrement=True),
        Column("app_id", String(255), nullable=False),
        PrimaryKeyConstraint("app_id", "id", name=f"pk_{table}"),
    ]


users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)

orgs = Table(
    "orgs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_by", String(36), ForeignKey("users.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("plan", String(64), nullable=True),
    # Day of month (1..31) on which the billing cycle starts; months without it use their last day.
    Column("cycle_anchor", Integer, nullable=False, server_default="1"),
    Column("trial_ends_at", BigInteger, nullable=True),
    # Set while the org is locked (over its plan): the plugin answers with this code.
    Column("lock_code", String(64), nullable=True),
    Column("lock_reason", Text, nullable=True),
    # The org's release-guard thresholds where they differ from the server's (a JSON object
    # of release_guard.THRESHOLDS names; NULL: the server's settings).
    Column("release_guard", Text, nullable=True),
)

org_members = Table(
    "org_members",
    metadata,
    Column("org_id", String(36), ForeignKey("orgs.id"), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("mode", String(16), nullable=False),
    # JSON arrays of ids; NULL or [] means no limit.
    Column("limited_to_orgs", Text, nullable=True),
    Column("limited_to_apps", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # A key past its expiry or revoked gets 401; a revoked key's row stays for the record.
    Column("expires_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
)

# Memberships offered to an e-mail address that has no user yet; the user created with
# that address gets them (so adding a member never tells whether an address has an account).
org_invitations = Table(
    "org_invitations",
    metadata,
    Column("org_id", String(36), ForeignKey("orgs.id"), primary_key=True),
    Column("email", String(320), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("invited_by", String(36), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_org_invitations_email", "email"),
)

# Dashboard sign-ins held on the server: the cookie carries a random id, stored here hashed.
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("key_id", String(36), ForeignKey("api_keys.id"), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

# Failed authentications per client address in the current fixed window, shared by every
# process through the database (auth_limits.py).
auth_failures = Table(
    "auth_failures",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("address", String(64), primary_key=True),
    Column("window_start", BigInteger, nullable=False, index=True),
    Column("failures", Integer, nullable=False),
)

apps = Table(
    "apps",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner_org", String(36), ForeignKey("orgs.id"), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
    # Device ordinals handed out so far: the app's next device gets the one after.
    Column("device_ordinals", BigInteger, nullable=False, server_default="0"),
)

bundles = Table(
    "bundles",
    metadata,
    Column("id", String(36), nullable=False),
    Column("app_id", String(255), ForeignKey("apps.app_id"), nullable=False),
    Column("version", String(255), nullable=False),
    Column("size", BigInteger, nullable=False, server_default="0"),
    Column("checksum", String(64), nullable=True),
    Column("storage_path", Text, nullable=True),
    Column("external_url", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
    Column("created_by", String(36), nullable=True),
    # Where the bytes are (bundle_store.py): "file" (storage_path under the data directory)
    # or "database" (bundle_chunks); NULL for external and imported bundles, which have none.
    Column("storage", String(16), nullable=True),
    PrimaryKeyConstraint("app_id", "id", name="pk_bundles"),
    UniqueConstraint("app_id", "version", name="uq_bundles_app_version"),
    Index("ix_bundles_app_created", "app_id", "created_at"),
    # Signed download links name the bundle by its id alone (a UUID).
    Index("ix_bundles_id", "id"),
)

# The bytes of bundles stored in the database (PostgreSQL), in chunks of
# bundle_store.CHUNK_BYTES (the last one shorter), so that any process serves any bundle and a
# range starts at its chunk. Rows exist before their bundle row (written as the upload
# streams in), hence no foreign key.
bundle_chunks = Table(
    "bundle_chunks",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("bundle_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# Uploads in progress: their bytes are being stored but no bundle row refers to them yet.
# The row goes in the transaction that records the bundle; one left behind by a crash lets
# the sweep (bundle_store.sweep_abandoned) remove the bytes.
bundle_uploads = Table(
    "bundle_uploads",
    metadata,
    Column("bundle_id", String(36), nullable=False),
    Column("app_id", String(255), nullable=False),
    Column("storage", String(16), nullable=False),
    Column("storage_path", Text, nullable=True),
    Column("started_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("app_id", "bundle_id", name="pk_bundle_uploads"),
)

channels = Table(
    "channels",
    metadata,
    # The plugin requires integer channel ids.
    *app_id_key("channels"),
    Column("name", String(255), nullable=False),
    Column("bundle_id", String(36), nullable=True),
    Column("public", Boolean, nullable=False, server_default="0"),
    Column("allow_device_self_set", Boolean, nullable=False, server_default="0"),
    Column("allow_emulator", Boolean, nullable=False, server_default="1"),
    Column("allow_dev", Boolean, nullable=False, server_default="1"),
    Column("ios", Boolean, nullable=False, server_default="1"),
    Column("android", Boolean, nullable=False, server_default="1"),
    Column("electron", Boolean, nullable=False, server_default="1"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Public per platform: each platform has at most one public channel, and a channel may
    # be the public one of some of the platforms it serves only (plugin-protocol.md §4).
    # ``public`` above stays "public for at least one platform", kept equal to their OR.
    Column("public_ios", Boolean, nullable=False, server_default="0"),
    Column("public_android", Boolean, nullable=False, server_default="0"),
    Column("public_electron", Boolean, nullable=False, server_default="0"),
    # "none", "major", "minor" or "patch": the semver step a device may not auto-update over.
    Column("disable_auto_update", String(8), nullable=False, server_default="none"),
    Column("disable_auto_update_under_native", Boolean, nullable=False, server_default="1"),
    # Opt-in: a release regression of the channel's bundle puts the previous one back.
    Column("auto_rollback", Boolean, nullable=False, server_default="0"),
    # The bundle the channel served before its current one (what auto_rollback goes back to).
    Column("previous_bundle_id", String(36), nullable=True),
    UniqueConstraint("app_id", "name", name="uq_channels_app_name"),
    ForeignKeyConstraint(["app_id"], ["apps.app_id"], name="fk_channels_app_id_apps"),
    ForeignKeyConstraint(
        ["app_id", "bundle_id"],
        ["bundles.app_id", "bundles.id"],
        name="fk_channels_bundle_id_bundles",
    ),
)

channel_devices = Table(
    "channel_devices",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("device_id", String(36), primary_key=True),
    Column("channel_id", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["app_id", "channel_id"],
        ["channels.app_id", "channels.id"],
        name="fk_channel_devices_channel_id_channels",
    ),
)

# One row per app and device: the seed's "device table". ``id`` is the device's ordinal in
# its app's activity bitmaps: drawn from the app's counter (``apps.device_ordinals``), dense
# per app and below 2**32 per app. The key leads with ``app_id`` (distribution by app).
devices = Table(
    "devices",
    metadata,
    Column("app_id", String(255), nullable=False),
    Column("id", BigInteger, nullable=False, autoincrement=False),
    Column("device_id", String(36), nullable=False),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    # Last check-in that counted for MAU (NULL: never counted, e.g. an emulator).
    Column("last_counted_at", BigInteger, nullable=True),
    Column("platform", String(16), nullable=False),
    Column("version_name", String(255), nullable=False),
    Column("version_build", String(255), nullable=False, server_default=""),
    Column("version_os", String(64), nullable=False, server_default=""),
    Column("plugin_version", String(64), nullable=False, server_default=""),
    Column("custom_id", String(36), nullable=False, server_default=""),
    Column("is_emulator", Boolean, nullable=False),
    Column("is_prod", Boolean, nullable=False),
    PrimaryKeyConstraint("app_id", "id", name="pk_devices"),
    UniqueConstraint("app_id", "device_id", name="uq_devices_app_device"),
    # No index on last_counted_at: nearly every check-in moves it (see migration 0003).
)

# Append-only deltas written by each group commit: the ordinals of devices active on a day.
# The rollup worker merges them into activity_bitmaps and deletes exactly the rows it merged.
activity_deltas = Table(
    "activity_deltas",
    metadata,
    *app_id_key("activity_deltas"),
    Column("day", Date, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("version_name", String(255), nullable=False),
    Column("bitmap", LargeBinary, nullable=False),
    # The rollup merges the oldest rows of all apps first.
    Index("ix_activity_deltas_id", "id"),
)

# The check-in log: each group commit of live check-ins appends one row per app holding the
# whole batch as one compact record (checkin_log.py). The rollup drains the rows into device
# rows and activity deltas and deletes them in the same transaction (exactly once).
checkin_log = Table(
    "checkin_log",
    metadata,
    *app_id_key("checkin_log"),
    Column("checkins", Integer, nullable=False),
    Column("record", LargeBinary, nullable=False),
    # The drain reads the oldest rows of all apps first. SQLite reads them in rowid order,
    # which is the id's (app_rows.py), and spares every group commit this index's page.
    Index("ix_checkin_log_id", "id").ddl_if(dialect="postgresql"),
)

# Merged per-day device sets. kind "counted" (counts for MAU) or "emudev" (emulators and
# dev builds, kept for the 3% rule); version_name "" is the union over all versions.
activity_bitmaps = Table(
    "activity_bitmaps",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("version_name", String(255), primary_key=True),
    Column("bitmap", LargeBinary, nullable=False),
    Column("devices", BigInteger, nullable=False),
)

downloads = Table(
    "downloads",
    metadata,
    *app_id_key("downloads"),
    Column("device_id", String(36), nullable=False, server_default=""),
    Column("version", String(255), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("day", Date, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Index("ix_downloads_app_day", "app_id", "day"),
)

# Plugin stats events (download progress, set, update_fail, ...), kept for device logs for
# a bounded time (Settings.stats_retention_days); their release facts are kept in the
# activity bitmaps and release_launches.
device_events = Table(
    "device_events",
    metadata,
    *app_id_key("device_events"),
    Column("device_id", String(36), nullable=False),
    Column("action", String(64), nullable=False),
    Column("version_name", String(255), nullable=False, server_default=""),
    Column("old_version_name", String(255), nullable=True),
    Column("at", BigInteger, nullable=False),
    Column("metadata", Text, nullable=True),
    # The device's own timestamp (epoch ms) when it sent one: a queue sent again repeats it,
    # so the unique index below keeps one row per event (NULLs never conflict).
    Column("device_ts", BigInteger, nullable=True),
    Index("ix_device_events_app_device_at", "app_id", "device_id", "at"),
    Index(
        "ux_device_events_event",
        "app_id",
        "device_id",
        "device_ts",
        "action",
        "version_name",
        unique=True,
    ),
    # Pruning walks events by age.
    Index("ix_device_events_at", "at"),
)

# Launch times of a bundle version per day (app_launch_ready's metadata.duration_ms), as a
# histogram of log-scale buckets (releases.launch_bucket): counts add up, so any days and
# any order merge exactly, and a quantile is read within a bounded relative error.
release_launches = Table(
    "release_launches",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("version_name", String(255), primary_key=True),
    Column("bucket", Integer, primary_key=True),
    Column("launches", BigInteger, nullable=False),
)

# Release regressions already raised: one per (app, version, channel) ("" when no channel
# served the version), with what the guard did.
release_alerts = Table(
    "release_alerts",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("version_name", String(255), primary_key=True),
    Column("channel", String(255), primary_key=True),
    Column("reason", String(32), nullable=False),
    Column("devices", BigInteger, nullable=False),
    Column("rates", Text, nullable=False),
    # The version the channel went back to (auto_rollback), if it did.
    Column("rolled_back_to", String(255), nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

# Event ids already applied, so that a replayed import counts each event once.
seen_events = Table(
    "seen_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("applied_at", BigInteger, nullable=False),
    # On SQLite, one B-tree keyed by the id instead of a rowid table plus an index on the id:
    # an import inserts every event id, and this halves the pages each one touches.
    sqlite_with_rowid=False,
)

# Work for the rollup worker: (app, day) whose figures must be recomputed.
rollup_queue = Table(
    "rollup_queue",
    metadata,
    *app_id_key("rollup_queue"),
    Column("day", Date, nullable=False),
    Column("what", String(16), nullable=False),
    # The rollup takes the oldest items of all apps first.
    Index("ix_rollup_queue_id", "id"),
)

# Precomputed per-day figures read by the statistics API.
daily_usage = Table(
    "daily_usage",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("mau", BigInteger, nullable=False, server_default="0"),
    Column("dau", BigInteger, nullable=False, server_default="0"),
    Column("new_devices", BigInteger, nullable=False, server_default="0"),
    Column("emudev_devices", BigInteger, nullable=False, server_default="0"),
    Column("bandwidth", BigInteger, nullable=False, server_default="0"),
    Column("storage", BigInteger, nullable=False, server_default="0"),
)

# Rate-limit counters shared by every process (rate_limits.py): one row per limited subject, the
# hits of its current window and of the window before (for a sliding estimate).
rate_counters = Table(
    "rate_counters",
    metadata,
    Column("scope", String(16), nullable=False),
    Column("app_id", String(255), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("hits", Integer, nullable=False),
    Column("prev_hits", Integer, nullable=False),
    PrimaryKeyConstraint("app_id", "scope", "subject", name="pk_rate_counters"),
)

# Check-ins of new devices refused by the new-devices-per-address limit, per app and day:
# those devices were not counted, and their org can see how many were turned away.
refused_devices = Table(
    "refused_devices",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("checkins", BigInteger, nullable=False),
)

server_state = Table(
    "server_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Named plans: limits per billing cycle (MAU, bandwidth) and at any time (storage), in
# devices and bytes. An org whose ``plan`` is NULL uses the plan marked default, if any.
plans = Table(
    "plans",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("mau", BigInteger, nullable=False),
    Column("storage", BigInteger, nullable=False),
    Column("bandwidth", BigInteger, nullable=False),
    Column("is_default", Boolean, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Alerts already raised, so that each one is sent once per billing cycle.
org_alerts = Table(
    "org_alerts",
    metadata,
    Column("org_id", String(36), primary_key=True),
    Column("cycle_start", Date, primary_key=True),
    Column("alert", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("org_id", String(36), ForeignKey("orgs.id"), nullable=False, index=True),
    Column("url", Text, nullable=False),
    # Kept in clear: it signs every delivery.
    Column("secret", String(255), nullable=False),
    Column("created_by", String(36), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
)

# The outbox: one row per event and webhook, retried until delivered or given up.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("webhook_id", String(36), ForeignKey("webhooks.id"), nullable=False),
    Column("org_id", String(36), nullable=False),
    Column("event", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    # pending, delivered or failed (no attempts left).
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_org_id", "org_id", "id"),
)
