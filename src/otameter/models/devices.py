"""An app's devices, a device's event log and the app's release alerts."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

import msgspec

from .shapes import DateTime, NonNegative


class Device(TypedDict):
    device_id: str
    custom_id: str
    platform: str
    version_name: Annotated[str, msgspec.Meta(description="The version it runs (latest check-in).")]
    version_build: str
    plugin_version: str
    channel: Annotated[
        str | None,
        msgspec.Meta(description="The channel the server keeps for it (plugins before 7.34)."),
    ]
    is_emulator: bool
    is_prod: bool
    first_seen: DateTime
    last_seen: DateTime


class DevicePage(TypedDict):
    data: list[Device]
    page: NonNegative
    next_page: NonNegative | None


class DeviceEvent(TypedDict):
    id: int
    action: str
    version_name: str
    old_version_name: str | None
    at: DateTime
    metadata: dict[str, Any] | None


class DeviceEventPage(TypedDict):
    data: list[DeviceEvent]
    next_before: int | None


class ReleaseAlert(TypedDict):
    version: str
    channel: str | None
    reason: Literal["rollback", "crash", "failure"]
    devices: NonNegative
    rates: dict[str, Any]
    rolled_back_to: str | None
    created_at: DateTime


class ReleaseAlerts(TypedDict):
    data: list[ReleaseAlert]
