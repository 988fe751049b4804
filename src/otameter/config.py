"""Runtime settings, read from command-line options and OTAMETER_* environment variables."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///./otameter.db"
DEFAULT_DATA_DIR = "./otameter-data"
DEFAULT_MAX_BUNDLE_BYTES = 512 * 1024 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(
    values: list[str] | str | None, what: str = "trusted proxy CIDR"
) -> tuple[Network, ...]:
    """CIDRs from a list or a comma-separated string; a bare address is a /32 or /128."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    items = [part.strip() for value in values for part in value.split(",")]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items if item)
    except ValueError as exc:
        raise ValueError(f"invalid {what}: {exc}") from None


# Numeric settings read from OTAMETER_<NAME>.
_NUMBERS: dict[str, type[int] | type[float]] = {
    "stats_retention_days": float,
    "release_min_devices": int,
    "release_max_rollback_rate": float,
    "release_max_failure_rate": float,
    "release_max_crash_rate": float,
}
# Integer settings read from OTAMETER_<NAME>, e.g. OTAMETER_AUTH_FAILURE_LIMIT.
_INT_SETTINGS = (
    "auth_failure_limit",
    "auth_failure_window_seconds",
    "signin_failure_limit",
    "signin_failure_window_seconds",
)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    public_url: str | None = None
    trusted_proxies: tuple[Network, ...] = ()
    # FULL: every acknowledged event survives power loss (fsync per group commit).
    # NORMAL: survives a process crash, may lose the last commits on power loss; faster.
    sqlite_synchronous: str = "FULL"
    # How often the rollup worker turns new facts into per-day figures.
    rollup_interval_seconds: float = 2.0
    # Group commit: how many events at most share one transaction.
    max_batch: int = 2000
    # Time-to-live of the in-process caches of apps and channels used on the hot path. The
    # contract wants a management change to reach /updates on every process within 2 s: a
    # snapshot lives at most this long after its read began, and a request that took it
    # from the cache just before it expired still has to be answered (after the writer's
    # group commit), so the time-to-live leaves a second for that.
    cache_ttl_seconds: float = 1.0
    trial_days: int = 14
    # Largest bundle zip an upload may store (413 past it).
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    # How long raw plugin stats events are kept for the device log (their release-health
    # aggregates are kept like the other statistics).
    stats_retention_days: float = 7.0
    # Release regression (release_guard.py): once at least ``release_min_devices`` devices
    # installed (or failed to install) a version, a rollback, failure or crash rate above its
    # maximum raises ``release_regression`` (and rolls back channels with auto_rollback).
    release_min_devices: int = 20
    release_max_rollback_rate: float = 0.05
    release_max_failure_rate: float = 0.10
    release_max_crash_rate: float = 0.05
    # -- bounds on what a client may send (see README "Limits") --------------------------
    # Request head (request line and headers) in bytes: 431 above.
    max_header_bytes: int = 16 * 1024
    # Seconds a connection has to send a complete request head: 408 after.
    header_timeout_seconds: float = 10.0
    # Seconds a request body may pause between two reads: 408 after.
    body_timeout_seconds: float = 30.0
    # Seconds an idle kept-alive connection stays open.
    keepalive_timeout_seconds: float = 5.0
    # Open connections per process: one more is answered 503 and closed.
    max_connections: int = 1000
    # Request bodies in bytes: the plugin's update and channel calls, its stats, the
    # management API's JSON (and the dashboard's forms). 413 above. POST /bundle has its own.
    plugin_body_bytes: int = 16 * 1024
    stats_body_bytes: int = 1024 * 1024
    api_body_bytes: int = 256 * 1024
    # Events in one /stats post (the plugin queues at most 200).
    stats_max_events: int = 200
    # -- rate limits (429 with Retry-After) ----------------------------------------------
    # Per device and minute (sliding): check-ins, /stats posts.
    checkins_per_device_minute: int = 100
    stats_per_device_minute: int = 100
    # New devices one client address (an IPv6 /64) may add to one app per clock hour.
    new_devices_per_ip_hour: int = 1000
    # Webhook targets in these networks are allowed even though they are not public
    # (loopback, private, link-local...): OTAMETER_WEBHOOK_ALLOW_PRIVATE.
    webhook_allow_private: tuple[Network, ...] = ()
    # Failed authentications allowed per client address and window: API keys, then dashboard
    # sign-ins (README "Abuse limits"). A limit of 0 turns that limit off.
    auth_failure_limit: int = 30
    auth_failure_window_seconds: int = 300
    signin_failure_limit: int = 10
    signin_failure_window_seconds: int = 300
    # When set, GET /metrics requires ``authorization: Bearer <token>``.
    metrics_token: str | None = None
    # One log line per request (logger ``otameter.access``).
    access_log: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment, with explicit (non-None) overrides winning."""
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("OTAMETER_DATABASE_URL", DEFAULT_DATABASE_URL),
            "data_dir": Path(env.get("OTAMETER_DATA_DIR", DEFAULT_DATA_DIR)),
            "public_url": env.get("OTAMETER_PUBLIC_URL") or None,
            "trusted_proxies": parse_networks(env.get("OTAMETER_TRUSTED_PROXIES")),
            "sqlite_synchronous": env.get("OTAMETER_SQLITE_SYNCHRONOUS", "FULL").upper(),
            "webhook_allow_private": parse_networks(
                env.get("OTAMETER_WEBHOOK_ALLOW_PRIVATE"), "OTAMETER_WEBHOOK_ALLOW_PRIVATE CIDR"
            ),
            "metrics_token": env.get("OTAMETER_METRICS_TOKEN") or None,
            "access_log": env.get("OTAMETER_ACCESS_LOG", "").lower() in {"1", "true", "yes", "on"},
        }
        if env.get("OTAMETER_MAX_BUNDLE_SIZE"):
            from .billing.plans import parse_quantity

            try:
                values["max_bundle_bytes"] = parse_quantity(env["OTAMETER_MAX_BUNDLE_SIZE"])
            except ValueError as exc:
                raise ValueError(f"OTAMETER_MAX_BUNDLE_SIZE: {exc}") from None
        if "OTAMETER_TRIAL_DAYS" in env:
            values["trial_days"] = int(env["OTAMETER_TRIAL_DAYS"])
        for name, kind in _NUMBERS.items():
            raw = env.get(f"OTAMETER_{name.upper()}")
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ValueError(f"OTAMETER_{name.upper()} must be a number") from None
        for name, (var, kind) in LIMIT_VARIABLES.items():
            if env.get(var):
                try:
                    values[name] = kind(env[var])
                except ValueError:
                    raise ValueError(f"{var} must be a number, got {env[var]!r}") from None
        for name in _INT_SETTINGS:
            variable = "OTAMETER_" + name.upper()
            if variable in env:
                try:
                    values[name] = int(env[variable])
                except ValueError:
                    raise ValueError(f"{variable} must be an integer") from None
                if values[name] < 0:  # type: ignore[operator]
                    raise ValueError(f"{variable} must not be negative")
        for key, value in overrides.items():
            if value is not None:
                values[key] = value
        if isinstance(values.get("trusted_proxies"), list | str):
            values["trusted_proxies"] = parse_networks(values["trusted_proxies"])  # type: ignore[arg-type]
        if isinstance(values.get("webhook_allow_private"), list | str):
            values["webhook_allow_private"] = parse_networks(
                values["webhook_allow_private"],  # type: ignore[arg-type]
                "OTAMETER_WEBHOOK_ALLOW_PRIVATE CIDR",
            )
        if isinstance(values.get("data_dir"), str):
            values["data_dir"] = Path(str(values["data_dir"]))
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.sqlite_synchronous not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError("OTAMETER_SQLITE_SYNCHRONOUS must be FULL, EXTRA or NORMAL")
        for name, (var, _) in LIMIT_VARIABLES.items():
            if getattr(settings, name) <= 0:
                raise ValueError(f"{var} must be positive")
        return settings

    def limit_environment(self) -> dict[str, str]:
        """The limits as OTAMETER_* variables, for worker processes."""
        return {var: str(getattr(self, name)) for name, (var, _) in LIMIT_VARIABLES.items()}

    @property
    def bundle_dir(self) -> Path:
        return self.data_dir / "bundles"

    @property
    def google_ranges_dir(self) -> Path:
        return self.data_dir / "google-ip-ranges"


# Settings read from the environment, with their variable and type.
LIMIT_VARIABLES: dict[str, tuple[str, type[int] | type[float]]] = {
    "max_header_bytes": ("OTAMETER_MAX_HEADER_BYTES", int),
    "header_timeout_seconds": ("OTAMETER_HEADER_TIMEOUT", float),
    "body_timeout_seconds": ("OTAMETER_BODY_TIMEOUT", float),
    "keepalive_timeout_seconds": ("OTAMETER_KEEPALIVE_TIMEOUT", float),
    "max_connections": ("OTAMETER_MAX_CONNECTIONS", int),
    "plugin_body_bytes": ("OTAMETER_PLUGIN_BODY_BYTES", int),
    "stats_body_bytes": ("OTAMETER_STATS_BODY_BYTES", int),
    "api_body_bytes": ("OTAMETER_API_BODY_BYTES", int),
    "stats_max_events": ("OTAMETER_STATS_MAX_EVENTS", int),
    "checkins_per_device_minute": ("OTAMETER_CHECKINS_PER_DEVICE_MINUTE", int),
    "stats_per_device_minute": ("OTAMETER_STATS_PER_DEVICE_MINUTE", int),
    "new_devices_per_ip_hour": ("OTAMETER_NEW_DEVICES_PER_IP_HOUR", int),
}
