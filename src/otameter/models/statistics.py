"""The statistics API's answers (``/statistics/...``): daily figures, bundle usage, release
health, refused devices."""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

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
