"""An app's devices, a device's event log and the app's release alerts (and their query
strings)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Final, Literal, TypedDict

import msgspec

from .common import PAGE_MESSAGE, Page
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


# -- query strings (read by query_strings.decode_query, documented by openapi.query_parameters)

MAX_EVENTS_PAGE: Final = 200


class DevicesQuery(msgspec.Struct):
    """``GET /app/{app_id}/devices``: the page, then the search."""

    messages: ClassVar[dict[str, str]] = {
        "page": PAGE_MESSAGE,
        "search": "'search' is longer than 64 characters",
    }
    read: ClassVar[dict[str, Callable[[str], str]]] = {"search": str.strip}

    page: Page = 0
    search: Annotated[
        str,
        msgspec.Meta(max_length=64, description="The start of a device id or of a custom id."),
    ] = ""


class DeviceEventsQuery(msgspec.Struct):
    """``GET /app/{app_id}/devices/{device_id}/events``: how many, then from where."""

    messages: ClassVar[dict[str, str]] = {
        "limit": f"'limit' must be an integer from 1 to {MAX_EVENTS_PAGE}",
        "before": "'before' must be an event id",
    }

    # Six digits are read: leading zeros are taken, as they always were.
    limit: Annotated[
        int,
        msgspec.Meta(ge=1, le=MAX_EVENTS_PAGE, extra={"digits": 6}, description="Events a page."),
    ] = 50
    before: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                le=999_999_999_999_999_999,
                description="The `next_before` of the previous page: events older than it.",
            ),
        ]
        | None
    ) = None
