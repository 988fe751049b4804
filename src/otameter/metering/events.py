"""The events of the metering pipeline: what live traffic and bulk import both produce.

Events are msgspec structs: an import creates millions of them, and a struct is built in C
and, holding no references that could form a cycle, kept out of the garbage collector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec


class CheckIn(msgspec.Struct, gc=False, array_like=True):
    """An update check: the device was active (the MAU source).

    Encoded as an array (``checkin_log`` stores batches of them): field names are not
    repeated in each record. New fields go at the end with a default, so that records
    written before they existed still decode.
    """

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
    # The version whose download the answer offered ("" when it offered none): the source
    # of release health's ``offered``.
    offered_version: str = ""
    # Sent by a device to this server now (not imported): subject to the new-devices limit.
    live: bool = False


class Download(msgspec.Struct, gc=False):
    """Bytes of a bundle sent to a device."""

    app_id: str
    device_id: str
    version: str
    bytes: int
    at_ms: int
    event_id: str | None = None


class DownloadCorrection(msgspec.Struct, gc=False):
    """The true byte count of a download recorded before its last chunk could be sent."""

    app_id: str
    download_id: int
    bytes: int


class BundleUpload(msgspec.Struct, gc=False):
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
    # Set for bytes stored here: the id the store wrote them under, and which store.
    bundle_id: str | None = None
    storage: str | None = None


class BundleDelete(msgspec.Struct, gc=False):
    app_id: str
    version: str
    at_ms: int
    event_id: str | None = None


class PluginStat(msgspec.Struct, gc=False):
    """A stats event sent by the plugin (download progress, set, update_fail, ...)."""

    app_id: str
    device_id: str
    action: str
    version_name: str
    at_ms: int
    old_version_name: str | None = None
    metadata: str | None = None
    # The device's attributes, as the plugin sends them with every stats event.
    platform: str = ""
    is_emulator: bool = False
    is_prod: bool = True
    custom_id: str = ""
    version_build: str = ""
    plugin_version: str = ""
    # The device's own timestamp (epoch ms), when sent: repeated when a queue is sent again.
    device_ts: int | None = None
    # The launch time of an ``app_launch_ready`` (metadata.duration_ms), when valid.
    duration_ms: int | None = None
    event_id: str | None = None


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
