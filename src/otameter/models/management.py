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
EXPIRES_AT = "'expires_at' must be a future ISO 8601 date-time with a time zone, or null"
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


# Any JSON value but null and "" is taken as text (its Python str()), cut to a length the
# handler knows; one line (``api.common.loose_text``).
LooseText = Annotated[Any, msgspec.Meta(extra_json_schema={"type": "string"})]
# One line of text, perhaps blank (a version to look up, ...).
OneLine = Annotated[str, msgspec.Meta(pattern=python_pattern(r"[^\x00-\x1f\x7f-\x9f]*"))]
# A name or id given as text, read as ``NewOrganization.name`` is (not blank, one line).
Text255 = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NOT_BLANK)]
Id = Annotated[str, msgspec.Meta(min_length=1)]


class NewApiKey(msgspec.Struct):
    # Read in this order.
    name: LooseText = None  # cut to 200 characters; default ""
    mode: KeyMode = "read"
    limited_to_orgs: list[Id] = msgspec.field(default_factory=list)
    limited_to_apps: list[Id] = msgspec.field(default_factory=list)
    # An ISO 8601 date-time with a time zone, in the future: the handler reads the time (it
    # takes what Python's ``datetime.fromisoformat`` takes) against the clock.
    expires_at: DateTime | None = None

    # Any false value (null, false, 0, "", [], {}) means no limit.
    absent_when_false: ClassVar[frozenset[str]] = frozenset({"limited_to_orgs", "limited_to_apps"})
    messages: ClassVar[dict[str, str]] = {
        "mode": f"'mode' must be one of {', '.join(typing.get_args(KeyMode))}",
        "limited_to_orgs": "'limited_to_orgs' must be a list of ids",
        "limited_to_apps": "'limited_to_apps' must be a list of ids",
        "expires_at": EXPIRES_AT,
    }


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
    # Read in this order.
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


class BundleFields(msgspec.Struct):
    """The text fields of a bundle upload form (read in this order)."""

    app_id: Text255
    version: Text255
    # Stored stripped; absent or empty: `production`.
    channel: Annotated[str, msgspec.Meta(max_length=255)] | msgspec.UnsetType = msgspec.UNSET


class BundleForm(BundleFields, kw_only=True):
    """A bundle uploaded as a multipart form: `app_id` and `version` before `file`."""

    file: Annotated[str, msgspec.Meta(extra_json_schema={"contentMediaType": "application/zip"})]


# Stored lower-cased.
Checksum = Annotated[str, msgspec.Meta(pattern=python_pattern("[0-9a-fA-F]{64}"))]


class ExternalBundle(msgspec.Struct):
    """A bundle served from its own URL, never counted in storage or bandwidth."""

    # Read in this order.
    app_id: Text255
    version: Text255
    external_url: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=2048,
            # Stored stripped; one line.
            pattern=python_pattern(rf"(?![\s\S]*{CONTROL})\s*https?://[^\s/]+[\s\S]*"),
            extra_json_schema={"format": "uri"},
        ),
    ]
    checksum: Checksum | msgspec.UnsetType | None = msgspec.UNSET
    size: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | msgspec.UnsetType = msgspec.UNSET
    channel: LooseText = None  # cut to 255 characters; default `production`

    messages: ClassVar[dict[str, str]] = {
        "external_url": "'external_url' must be an absolute http(s) URL",
        "checksum": "'checksum' must be the zip's SHA-256 as 64 hex characters",
        "size": "'size' must be a non-negative integer",
    }


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


AutoUpdateRule = Literal["none", "major", "minor", "patch"]
AutoUpdate = Annotated[
    AutoUpdateRule,
    msgspec.Meta(
        description=(
            "The semver step, from the device's native version, that devices may not "
            "auto-update across (`disable_auto_update_to_major`, ... answers)."
        )
    ),
]
Public = Annotated[
    bool,
    msgspec.Meta(
        description=(
            "Sent: true makes the channel the public channel of every platform it serves "
            "(taking each from the channel that had it), false of none. Answered: public for "
            "at least one platform."
        )
    ),
]
UnderNative = Annotated[
    bool, msgspec.Meta(description="Never offer a bundle below the device's native version.")
]
AutoRollback = Annotated[
    bool,
    msgspec.Meta(
        description=(
            "Release guard: when a `release_regression` is raised for the channel's bundle, the "
            "channel goes back to the bundle it served before (default false)."
        )
    ),
]
SentFlag = bool | msgspec.UnsetType | None


class ChannelUpdate(msgspec.Struct):
    """A channel to create or update: absent or null keeps a setting (a new channel: the
    default)."""

    # Read in this order.
    app_id: Text255
    channel: Text255
    # The bundle the channel serves; empty: none.
    version: OneLine | msgspec.UnsetType | None = msgspec.UNSET
    public: Public | msgspec.UnsetType | None = msgspec.UNSET
    allow_device_self_set: SentFlag = msgspec.UNSET
    allow_emulator: SentFlag = msgspec.UNSET
    allow_dev: SentFlag = msgspec.UNSET
    ios: SentFlag = msgspec.UNSET
    android: SentFlag = msgspec.UNSET
    electron: SentFlag = msgspec.UNSET
    disable_auto_update_under_native: UnderNative | msgspec.UnsetType | None = msgspec.UNSET
    auto_rollback: AutoRollback | msgspec.UnsetType | None = msgspec.UNSET
    disable_auto_update: AutoUpdate | msgspec.UnsetType | None = msgspec.UNSET

    fault: ClassVar[str] = "'{name}' must be a boolean"
    messages: ClassVar[dict[str, str]] = {
        "version": "'version' must be a string",
        "disable_auto_update": (
            f"'disable_auto_update' must be one of: {', '.join(typing.get_args(AutoUpdateRule))}"
        ),
    }


class Channel(TypedDict):
    """A channel as ``POST /channel`` answers it: every setting, always present."""

    id: int
    app_id: str
    channel: str
    version: Annotated[str | None, msgspec.Meta(description="The bundle it serves; null: none.")]
    public: Public
    allow_device_self_set: bool
    allow_emulator: bool
    allow_dev: bool
    ios: bool
    android: bool
    electron: bool
    disable_auto_update_under_native: UnderNative
    auto_rollback: AutoRollback
    # Which platforms the channel is the public (default) channel of.
    public_ios: bool
    public_android: bool
    public_electron: bool
    disable_auto_update: AutoUpdate


class ChannelListItem(Channel):
    """A channel as ``GET /channel`` lists it."""

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
