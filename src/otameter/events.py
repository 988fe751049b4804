"""The events of the metering pipeline: what live traffic and bulk import both produce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(slots=True)
class CheckIn:
    """An update check: the device was active (the MAU source)."""

    app_id: str
    device_id: str
    at_ms: int
    platform: str
    version_name: str
    is_emulator: bool
    is_prod: bool
    version_build: str = ""
    version_os: str = ""
    plugin_version: str = ""
    custom_id: str = ""
    ip: str | None = None
    event_id: str | None = None


@dataclass(slots=True)
class Download:
    """Bytes of a bundle sent to a device."""

    app_id: str
    device_id: str
    version: str
    bytes: int
    at_ms: int
    event_id: str | None = None


@dataclass(slots=True)
class DownloadCorrection:
    """The true byte count of a download recorded before its last chunk could be sent."""

    download_id: int
    bytes: int


@dataclass(slots=True)
class BundleUpload:
    app_id: str
    version: str
    size: int
    at_ms: int
    external_url: str | None = None
    checksum: str | None = None
    storage_path: str | None = None
    channel: str | None = None
    created_by: str | None = None
    event_id: str | None = None


@dataclass(slots=True)
class BundleDelete:
    app_id: str
    version: str
    at_ms: int
    event_id: str | None = None


@dataclass(slots=True)
class PluginStat:
    """A stats event sent by the plugin (download progress, set, update_fail, ...)."""

    app_id: str
    device_id: str
    action: str
    version_name: str
    at_ms: int
    old_version_name: str | None = None
    metadata: str | None = None


Event = CheckIn | Download | DownloadCorrection | BundleUpload | BundleDelete | PluginStat


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None
    # What the event produced, when the caller needs it (a bundle row, a download id).
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.status != "rejected"


ACCEPTED = Outcome("accepted")
DUPLICATE = Outcome("duplicate")


def rejected(reason: str) -> Outcome:
    return Outcome("rejected", reason)
