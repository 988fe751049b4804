"""The management API's requests and answers: organizations, members, API keys, apps,
bundles and channels."""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Literal, NotRequired, TypedDict

import msgspec

from .common import PAGE_MESSAGE, Page
from .shapes import (
    APP_ID_CORE,
    CONTROL,
    MAX_APP_ID,
    NOT_BLANK,
    DateTime,
    NonNegative,
    python_pattern,
)

Role = Literal["read", "upload", "write", "admin", "super_admin"]
KeyMode = Literal["read", "upload", "write", "all"]
Uuid = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]
OrgId = Annotated[str, msgspec.Meta(max_length=36)]


class NewOrganization(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]


class CreatedOrganization(TypedDict):
    id: Uuid
    name: str


class Organization(TypedDict):
    id: Uuid
    name: str
    role: Role
    plan: str | None
    created_at: DateTime


class NewMember(msgspec.Struct):
    # Read in this order, each as a non-blank string; the handler then checks that the role
    # is one of the roles and that the address holds an "@".
    orgId: Annotated[str, msgspec.Meta(min_length=1, max_length=36, pattern=NOT_BLANK)]
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=320, pattern=NOT_BLANK)]
    invite_type: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=16,
            pattern=NOT_BLANK,
            extra_json_schema={"enum": list(typing.get_args(Role))},
        ),
    ]


class Membership(TypedDict):
    """The membership, or the invitation (the same shape)."""

    org_id: str
    email: str
    role: str
    status: Literal["ok"]


class NewApiKey(msgspec.Struct):
    name: str | msgspec.UnsetType = msgspec.UNSET
    mode: KeyMode = "read"
    limited_to_orgs: list[str] | msgspec.UnsetType = msgspec.UNSET
    limited_to_apps: list[str] | msgspec.UnsetType = msgspec.UNSET
    expires_at: DateTime | None = None


class CreatedApiKey(TypedDict):
    """The new key, shown once."""

    id: str
    key: str
    name: str
    mode: str
    limited_to_orgs: list[str]
    limited_to_apps: list[str]
    created_at: NotRequired[DateTime]
    expires_at: NotRequired[DateTime | None]


class ApiKeyInfo(TypedDict):
    """An API key as listed: never the key itself."""

    id: str
    name: str
    mode: KeyMode
    limited_to_orgs: list[str]
    limited_to_apps: list[str]
    created_at: DateTime
    expires_at: DateTime | None
    expired: NotRequired[bool]


class RevokedKey(TypedDict):
    status: Literal["ok"]
    id: str


class NewApp(msgspec.Struct, kw_only=True):
    # Read in this order, as require_str and optional_str read them.
    app_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_APP_ID,
            # An app id, white space around it aside (it is stored stripped); no control
            # character anywhere.
            pattern=python_pattern(rf"(?![\s\S]*{CONTROL})\s*(?:{APP_ID_CORE})\s*"),
            description="A reverse-domain app id like `com.example.app`.",
        ),
    ]
    # Any value but null and "" is taken as text, cut to 200 characters (default: the app id).
    name: Annotated[Any, msgspec.Meta(extra_json_schema={"type": "string"})] = None
    owner_org: Annotated[str, msgspec.Meta(min_length=1, max_length=36, pattern=NOT_BLANK)]

    messages: ClassVar[dict[str, str]] = {
        "app_id": "'app_id' must be a reverse-domain id like com.example.app"
    }


class App(TypedDict):
    app_id: str
    name: str
    owner_org: str
    created_at: DateTime


Version = Annotated[str, msgspec.Meta(max_length=255)]


class BundleForm(msgspec.Struct):
    """A bundle uploaded as a multipart form: `app_id` and `version` before `file`."""

    app_id: str
    version: Version
    file: Annotated[str, msgspec.Meta(extra_json_schema={"contentMediaType": "application/zip"})]
    channel: str | msgspec.UnsetType = msgspec.UNSET


class ExternalBundle(msgspec.Struct):
    """A bundle served from its own URL, never counted in storage or bandwidth."""

    app_id: str
    version: Version
    external_url: Annotated[str, msgspec.Meta(max_length=2048, extra_json_schema={"format": "uri"})]
    channel: str | msgspec.UnsetType = msgspec.UNSET
    checksum: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}\Z")] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    size: (
        Annotated[int, msgspec.Meta(ge=0, extra_json_schema={"maximum": 2**63 - 1})]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class Bundle(TypedDict):
    id: str
    app_id: str
    version: str
    size: NonNegative
    checksum: str | None
    external_url: str | None
    channel: str
    created_at: DateTime


class BundleListItem(TypedDict):
    id: str
    app_id: str
    version: str
    size: NonNegative
    checksum: str | None
    external: bool
    created_at: DateTime
    external_url: str | None
    channels: list[str]


class DeletedBundle(TypedDict):
    status: Literal["ok"]
    app_id: str
    version: str


AutoUpdate = Annotated[
    Literal["none", "major", "minor", "patch"],
    msgspec.Meta(
        description=(
            "The semver step, from the device's native version, that devices may not "
            "auto-update across (`disable_auto_update_to_major`, ... answers)."
        )
    ),
]
Flag = bool | msgspec.UnsetType


class ChannelFlags(msgspec.Struct):
    public: (
        Annotated[
            bool,
            msgspec.Meta(
                description=(
                    "Sent: true makes the channel the public channel of every platform it "
                    "serves (taking each from the channel that had it), false of none. "
                    "Answered: public for at least one platform."
                )
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    allow_device_self_set: Flag = msgspec.UNSET
    allow_emulator: Flag = msgspec.UNSET
    allow_dev: Flag = msgspec.UNSET
    ios: Flag = msgspec.UNSET
    android: Flag = msgspec.UNSET
    electron: Flag = msgspec.UNSET
    disable_auto_update: AutoUpdate | msgspec.UnsetType = msgspec.UNSET
    disable_auto_update_under_native: (
        Annotated[
            bool,
            msgspec.Meta(description="Never offer a bundle below the device's native version."),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    auto_rollback: (
        Annotated[
            bool,
            msgspec.Meta(
                description=(
                    "Release guard: when a `release_regression` is raised for the channel's "
                    "bundle, the channel goes back to the bundle it served before (default "
                    "false)."
                )
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class ChannelPublic(TypedDict):
    """Which platforms the channel is the public (default) channel of."""

    public_ios: bool
    public_android: bool
    public_electron: bool
    disable_auto_update: Any


class ChannelUpdate(msgspec.Struct):
    app_id: str
    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    version: str | msgspec.UnsetType | None = msgspec.UNSET


class ChannelKey(TypedDict):
    id: int
    app_id: str
    channel: str
    version: str | None


class ChannelListKey(TypedDict):
    id: int
    channel: str
    version: str | None
    devices: Annotated[
        NonNegative,
        msgspec.Meta(
            description=(
                "Devices seen in the last 30 days whose last check-in reported running this "
                "channel's bundle (a fresh install: its native version) on a platform the "
                "channel serves."
            )
        ),
    ]


class Channel(ChannelKey, ChannelPublic):
    """A channel as ``POST /channel`` answers it: its key, every flag of ``ChannelFlags``
    (always present in an answer) and its public platforms."""

    public: bool
    allow_device_self_set: bool
    allow_emulator: bool
    allow_dev: bool
    ios: bool
    android: bool
    electron: bool
    disable_auto_update_under_native: bool
    auto_rollback: bool


class ChannelListItem(Channel):
    """A channel as ``GET /channel`` lists it."""

    devices: NonNegative


# -- query strings (read by query_strings.decode_query, documented by openapi.query_parameters)

#: Text given in a query: one line holding more than white space, read stripped.
QueryText = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NOT_BLANK)]


class AppQuery(msgspec.Struct):
    """``?app_id=`` of ``GET /channel``."""

    app_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_APP_ID,
            pattern=NOT_BLANK,
            description="A reverse-domain app id like `com.example.app`.",
        ),
    ]


class BundlesQuery(AppQuery):
    """``GET /bundle``: the app, then the page."""

    messages: ClassVar[dict[str, str]] = {"page": PAGE_MESSAGE}

    page: Page = 0


class BundleRef(AppQuery):
    """``DELETE /bundle``: the app, then the version."""

    version: QueryText
