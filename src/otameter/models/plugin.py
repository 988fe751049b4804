"""The plugin endpoints' requests and answers (plugin-protocol.md), as they travel.

``DeviceInfo`` is also the decoder of ``POST /updates`` (``protocol.decode_update_request``
decodes with :class:`UpdateBody`): its constraints are the protocol's rules. The answers are
built byte-exactly by ``protocol.py``; these models are what the OpenAPI document says of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict

import msgspec

from .shapes import AppId, DeviceId, NonNegative, Platform, SemVer

# Generic cap for free-form strings the server stores; nothing legitimate comes close.
MAX_TEXT: Final = 255
# Stats version names may be "<version>:<file path>" for per-file failures.
MAX_STATS_VERSION_NAME: Final = 1024
MAX_CUSTOM_ID: Final = 36
MAX_KEY_ID: Final = 20
MAX_INSTALL_SOURCE: Final = 64
MAX_ACTION: Final = 64
# Largest plausible epoch-ms timestamp (9999-12-31T23:59:59.999Z).
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999
MAX_METADATA_FIELDS: Final = 30
MAX_METADATA_KEY_LENGTH: Final = 64
MAX_METADATA_VALUE_LENGTH: Final = 2048

Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Required = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
CustomId = Annotated[str, msgspec.Meta(max_length=MAX_CUSTOM_ID)]
InstallSource = Annotated[str, msgspec.Meta(max_length=MAX_INSTALL_SOURCE)]
KeyId = Annotated[str, msgspec.Meta(max_length=MAX_KEY_ID)]
Kind = Annotated[
    Literal["up_to_date", "blocked", "failed"],
    msgspec.Meta(description="How the plugin treats the answer (plugin-protocol.md §2)."),
]


class DeviceInfo(msgspec.Struct, gc=False):
    """The body every plugin request carries (plugin-protocol.md §2).

    JSON null on an optional field is absence. Fields the plugin does not send are ignored.
    """

    app_id: AppId
    device_id: DeviceId
    platform: Platform
    version_name: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_TEXT,
            description='`"builtin"` or the bundle the device runs.',
        ),
    ]
    version_build: Required
    plugin_version: SemVer
    is_emulator: bool | None = None
    is_prod: bool | None = None
    custom_id: CustomId | None = None
    version_code: Text | None = None
    version_os: Text | None = None
    install_source: InstallSource | None = None
    defaultChannel: Text | None = None  # the wire name
    key_id: KeyId | None = None


class UpdateBody(DeviceInfo, forbid_unknown_fields=True):
    """``DeviceInfo`` as ``POST /updates`` decodes it in one pass.

    Unknown fields are refused here (and then ignored by the full reading, see
    ``protocol.decode_update_request``): msgspec skips an unknown field without reading its
    value as orjson does (a number too large for a float, say), and the plugin sends no other
    field.
    """


class ChannelRequest(msgspec.Struct):
    """The body of ``POST``/``PUT /channel_self``: like ``DeviceInfo``, but `version_name` and
    `version_build` may be empty and `plugin_version` may be left out."""

    app_id: AppId
    device_id: DeviceId
    platform: Platform
    version_name: Text
    version_build: Text
    plugin_version: SemVer | None = None
    is_emulator: bool | None = None
    is_prod: bool | None = None
    custom_id: CustomId | None = None
    version_code: Text | None = None
    version_os: Text | None = None
    install_source: InstallSource | None = None
    defaultChannel: Text | None = None
    key_id: KeyId | None = None
    channel: Text | None = None


class ChannelBody(ChannelRequest, forbid_unknown_fields=True):
    """``ChannelRequest`` as ``POST``/``PUT /channel_self`` decode it in one pass (unknown
    fields refused here, then ignored by the full reading, as with :class:`UpdateBody`)."""


StatsVersion = Annotated[str, msgspec.Meta(max_length=MAX_STATS_VERSION_NAME)]


class StatsEvent(msgspec.Struct):
    """One plugin event (download progress, set, update_fail, ...)."""

    app_id: AppId
    device_id: DeviceId
    platform: Platform
    action: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*\Z", max_length=MAX_ACTION)]
    version_name: StatsVersion
    old_version_name: StatsVersion | None = None
    version_build: Text | None = None
    version_code: Text | None = None
    version_os: Text | None = None
    plugin_version: SemVer | None = None
    custom_id: CustomId | None = None
    is_emulator: bool | None = None
    is_prod: bool | None = None
    install_source: InstallSource | None = None
    defaultChannel: Text | None = None
    key_id: KeyId | None = None
    channel: Text | None = None
    timestamp: Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMESTAMP_MS)] | None = None
    metadata: (
        Annotated[
            dict[
                Annotated[str, msgspec.Meta(max_length=MAX_METADATA_KEY_LENGTH)],
                Annotated[str, msgspec.Meta(max_length=MAX_METADATA_VALUE_LENGTH)],
            ],
            msgspec.Meta(max_length=MAX_METADATA_FIELDS),
        ]
        | None
    ) = None


class StatsEventBody(StatsEvent, forbid_unknown_fields=True):
    """``StatsEvent`` as ``POST /stats`` decodes it in one pass (as :class:`UpdateBody`)."""


class _CodedAnswer(TypedDict):
    error: Annotated[str, msgspec.Meta(description="A stable error code.")]
    message: str
    kind: Kind


class PluginError(_CodedAnswer):
    """A plugin endpoint's error or no-update answer (`no_new_version_available`,
    `no_channel`, `need_plan_upgrade`, `disable_auto_update_to_major`, a field validation
    code, ...). Usually sent with HTTP 200 so that the plugin reads the code. Blocked answers
    may add `version` (the bundle held back), `old` (the device's native version), `major` and
    `breaking` (a major step: the plugin fires its breakingAvailable event)."""

    version: NotRequired[str]
    old: NotRequired[str]
    major: NotRequired[bool]
    breaking: NotRequired[bool]


class BlockedDetails(TypedDict, total=False):
    """The keys a blocked answer may add to a :class:`PluginError` (``protocol.no_update``'s
    keyword arguments): the same names and types as its optional keys."""

    version: str
    old: str
    major: bool
    breaking: bool


class RateLimited(_CodedAnswer):
    """`too_many_requests`: the plugin waits `retryAfterSeconds` (also in `Retry-After`)."""

    retryAfterSeconds: int


class UnknownApp(TypedDict):
    """An update check for an app this server does not know: the device backs off for
    `Retry-After` seconds (one hour) instead of asking at every launch."""

    error: Literal["app_not_found"]
    message: str
    retryAfterSeconds: int


class ManifestEntry(TypedDict):
    file_name: str
    file_hash: str
    download_url: str


class UpdateAvailable(TypedDict):
    """A bundle to install. Never carries `error` or `kind`."""

    version: str
    url: Annotated[str, msgspec.Meta(extra_json_schema={"format": "uri"})]
    checksum: Annotated[str, msgspec.Meta(description="Lowercase hex SHA-256 of the zip.")]
    session_key: NotRequired[str]
    manifest: NotRequired[list[ManifestEntry]]
    link: NotRequired[str]
    comment: NotRequired[str]


class StatsResult(TypedDict):
    status: Literal["ok", "error"]
    index: NonNegative
    error: NotRequired[str]
    message: NotRequired[str]


class StatsOk(TypedDict):
    status: Literal["ok"]
    results: NotRequired[list[StatsResult]]


class ChannelSetOk(TypedDict):
    """setChannel's success: never an `error` key."""

    status: Literal["ok"]
    message: NotRequired[str]
    allowSet: NotRequired[bool]
    unset: NotRequired[bool]


ChannelStatus = Literal["default", "override"]


class ChannelGet(TypedDict):
    """getChannel's answer: never an `error` key."""

    channel: str
    status: ChannelStatus
    allowSet: NotRequired[bool]


class ChannelListEntry(TypedDict):
    id: int
    name: str
    public: bool
    allow_self_set: bool


# JSON Schema that a model's fields cannot say: an answer that must not carry a key.
NOT_AN_ERROR: Final[dict[str, Any]] = {"not": {"required": ["error"]}}
EXTRA_SCHEMA: Final[dict[str, dict[str, Any]]] = {
    "UpdateAvailable": {"not": {"anyOf": [{"required": ["error"]}, {"required": ["kind"]}]}},
    "ChannelSetOk": NOT_AN_ERROR,
    "ChannelGet": NOT_AN_ERROR,
}
