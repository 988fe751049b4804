"""The statistics API (``/statistics/...``): its query strings and its answers (daily figures,
bundle usage, release health, refused devices)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, ClassVar, Final, Literal, NotRequired, TypedDict

import msgspec

from .shapes import Day, NonNegative


class StatsRow(TypedDict):
    date: Day
    mau: Annotated[
        NonNegative, msgspec.Meta(description="Unique counted devices in the 30 days to `date`.")
    ]
    storage: Annotated[
        NonNegative, msgspec.Meta(description="Bytes of bundles existing at the day's end.")
    ]
    bandwidth: Annotated[
        NonNegative, msgspec.Meta(description="Bytes of bundle downloads served that day.")
    ]
    new_devices: NotRequired[
        Annotated[
            NonNegative,
            msgspec.Meta(
                description=(
                    "With `breakdown=true`: devices active that day for the first time in "
                    "its calendar month."
                )
            ),
        ]
    ]
    dau: NotRequired[
        Annotated[
            NonNegative, msgspec.Meta(description="With `breakdown=true`: devices active that day.")
        ]
    ]


class StatsDay(StatsRow):
    """One day's figures."""

    previous: NotRequired[
        Annotated[
            StatsRow,
            msgspec.Meta(
                description=(
                    "With `compare=previous`: the same figures for the day at the same "
                    "position in the previous period."
                )
            ),
        ]
    ]


# "from" is a keyword: the functional form names the key.
Period = TypedDict("Period", {"from": Day, "to": Day})
Period.__doc__ = "With `compare=previous`: the period of equal length ending the day before `from`."


class StatsAnswer(TypedDict):
    data: Annotated[
        list[StatsDay],
        msgspec.Meta(description="One row per day, oldest first; days after today are left out."),
    ]
    previous_period: NotRequired[Period]


class VersionShare(TypedDict):
    version: str
    devices: NonNegative
    share: Annotated[
        float,
        msgspec.Meta(
            ge=0,
            le=100,
            description=(
                "Percent of the day's counted devices seen on this version (a device that "
                "updated during the day counts on both)."
            ),
        ),
    ]


class BundleUsageDay(TypedDict):
    date: Day
    devices: Annotated[NonNegative, msgspec.Meta(description="Counted devices active that day.")]
    versions: Annotated[list[VersionShare], msgspec.Meta(description="Most used first.")]


class BundleUsageAnswer(TypedDict):
    data: list[BundleUsageDay]


class ReleaseRow(TypedDict):
    """One bundle version's release health (or one version's day, with `by=day`)."""

    version: str
    active: Annotated[NonNegative, msgspec.Meta(description="Devices whose update checks ran it.")]
    offered: Annotated[
        NonNegative, msgspec.Meta(description="Devices `/updates` offered its download.")
    ]
    downloaded: Annotated[
        NonNegative, msgspec.Meta(description="Devices that sent `download_complete`.")
    ]
    installed: Annotated[NonNegative, msgspec.Meta(description="Devices that sent `set`.")]
    failed: Annotated[
        NonNegative, msgspec.Meta(description="Devices that sent a download or install failure.")
    ]
    rolled_back: Annotated[
        NonNegative, msgspec.Meta(description="Devices that sent `update_fail`.")
    ]
    crashed: Annotated[
        NonNegative, msgspec.Meta(description="Devices that crashed while running it.")
    ]
    launches: Annotated[
        NonNegative, msgspec.Meta(description="`app_launch_ready` events (not devices).")
    ]
    launch_ms_p50: Annotated[
        NonNegative | None,
        msgspec.Meta(description="Median launch time (ms), within 1%; null without launches."),
    ]
    launch_ms_p95: Annotated[
        NonNegative | None,
        msgspec.Meta(description="95th percentile launch time (ms), within 1%; null if none."),
    ]
    date: NotRequired[Annotated[Day, msgspec.Meta(description="With `by=day` only.")]]


class ReleasesAnswer(TypedDict):
    data: list[ReleaseRow]


class RefusedDay(TypedDict):
    date: Day
    refused_new_devices: NonNegative


class RefusedDevicesAnswer(TypedDict):
    data: list[RefusedDay]


# -- query strings (read by query_strings.decode_query, documented by openapi.query_parameters)

INVALID_DATE: Final = "Invalid date format. Use YYYY-MM-DD"
INVALID_FORMAT: Final = "Invalid format. Use json or csv"
INVALID_BREAKDOWN: Final = "Invalid breakdown. Use true or false"
INVALID_COMPARE: Final = "Invalid compare. Use previous"
INVALID_BY: Final = "Invalid by. Use day"


def missing_parameter(name: str) -> str:
    """The seed's message, naming the parameter that was not given."""
    return f"{INVALID_DATE} (the '{name}' parameter is missing)"


def folded(text: str) -> str:
    """An option's word: case and white space around it do not matter."""
    return text.strip().lower()


class StatsRange(msgspec.Struct):
    """``from`` and ``to`` of every statistics route (their order and span: statistics.py)."""

    messages: ClassVar[dict[str, str]] = {"from": INVALID_DATE, "to": INVALID_DATE}
    missing: ClassVar[dict[str, str]] = {name: missing_parameter(name) for name in ("from", "to")}

    start: Annotated[
        date,
        msgspec.Meta(
            description="First day (`YYYY-MM-DD`, UTC, inclusive). At most 90 days in all."
        ),
    ] = msgspec.field(name="from")
    end: Annotated[
        date,
        msgspec.Meta(
            description="Last day (`YYYY-MM-DD`, UTC, inclusive). At most 90 days in all."
        ),
    ] = msgspec.field(name="to")


class StatsFormat(msgspec.Struct):
    """``format``, read by every statistics route after the range."""

    messages: ClassVar[dict[str, str]] = {"format": INVALID_FORMAT}
    read: ClassVar[dict[str, Callable[[str], str]]] = {"format": folded}

    format: Annotated[
        Literal["json", "csv"],
        msgspec.Meta(
            description=(
                "`csv`: the same rows as `text/csv` with a header line and a "
                "Content-Disposition filename."
            )
        ),
    ] = "json"


class StatsOptions(StatsFormat):
    """The options of the daily statistics, in the order they are checked."""

    messages: ClassVar[dict[str, str]] = {
        **StatsFormat.messages,
        "compare": INVALID_COMPARE,
        "breakdown": INVALID_BREAKDOWN,
    }
    read: ClassVar[dict[str, Callable[[str], str]]] = {
        **StatsFormat.read,
        "compare": lambda text: folded(text) or "none",
        "breakdown": folded,
    }

    compare: Annotated[
        Literal["previous", "none"],
        msgspec.Meta(
            description=(
                "`previous`: each row gets a `previous` object with the figures of the day at "
                "the same position in the preceding period of equal length "
                "(`previous_period`). In CSV they are the `previous_*` columns."
            )
        ),
    ] = "none"
    breakdown: Annotated[
        bool,
        msgspec.Meta(
            description="Adds `new_devices` and `dau` to each row (`1`, `yes`, `0`, `no` too)."
        ),
    ] = False


class ReleaseGrouping(msgspec.Struct):
    """``by`` of the release-health route, read after ``format``."""

    messages: ClassVar[dict[str, str]] = {"by": INVALID_BY}
    read: ClassVar[dict[str, Callable[[str], str]]] = {"by": lambda text: folded(text) or "version"}

    by: Annotated[
        Literal["version", "day"],
        msgspec.Meta(description="`day`: a row per version and day (default: per version)."),
    ] = "version"
