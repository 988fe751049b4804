"""Wire protocol of the capacitor-updater plugin: request validation and answer shapes.

Pure functions only. The HTTP layer decodes the body with :func:`decode_json`, calls a
``parse_*`` function, and serialises one of the answer builders. Every validation failure is a
:class:`ProtocolError` carrying the error code, a message naming the field, and the HTTP status
the Capgo backend uses for that case.

Reference: ``shared/reference/plugin-protocol.md`` (binding) and Capgo's
``plugin_runtime/utils/plugin_validation.ts``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Unpack
from urllib.parse import urlsplit

import msgspec
import orjson

from .models.plugin import (
    MAX_ACTION,
    MAX_CUSTOM_ID,
    MAX_INSTALL_SOURCE,
    MAX_KEY_ID,
    MAX_METADATA_FIELDS,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_VALUE_LENGTH,
    MAX_STATS_VERSION_NAME,
    MAX_TEXT,
    MAX_TIMESTAMP_MS,
    BlockedDetails,
    ChannelBody,
    ChannelGet,
    ChannelListEntry,
    ChannelSetOk,
    ChannelStatus,
    Kind,
    ManifestEntry,
    PluginError,
    StatsEventBody,
    StatsOk,
    StatsResult,
    UpdateAvailable,
    UpdateBody,
)
from .models.shapes import APP_ID_RE, MAX_APP_ID, PLATFORMS, SEMVER_RE, UUID_RE
from .text import has_control, may_hold_control

__all__ = [
    "BLOCKED_CODES",
    "KIND_BLOCKED",
    "KIND_FAILED",
    "KIND_UP_TO_DATE",
    "MAX_STATS_BATCH",
    "PLATFORMS",
    "UP_TO_DATE_CODES",
    "ChannelRequest",
    "DeviceInfo",
    "ProtocolError",
    "StatsEvent",
    "UpdateRequest",
    "channel_error",
    "channel_get",
    "channel_list_entry",
    "channel_set_ok",
    "decode_channel_request",
    "decode_json",
    "decode_stats_body",
    "decode_update_request",
    "kind_for_code",
    "no_update",
    "parse_channel_query",
    "parse_channel_request",
    "parse_stats_body",
    "parse_update_request",
    "stats_ok",
    "stats_result",
    "update_available",
]

# --------------------------------------------------------------------------------------------
# Limits and patterns
# --------------------------------------------------------------------------------------------


#: Largest stats array we accept; generous over the plugin's cap (it never queues more than 200
#: stats events on disk) for replays and older queues.
MAX_STATS_BATCH: Final = 1000

_HEX_RE: Final = re.compile(r"[0-9a-f]*", re.ASCII)
_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """A request the plugin protocol does not accept.

    ``code`` is a stable machine-readable error code, ``message`` a human-readable sentence
    naming the offending field, ``http_status`` the status to answer with (Capgo's: 400 for
    malformed bodies, 200 for ``missing_channel`` on ``POST /channel_self``; Capgo has no stats
    batch cap, so an oversized batch is our 413), and ``field`` the wire name of the field at
    fault, if any.

    The answer body always carries ``kind: "failed"``: these are malformed requests, never an
    "up to date" or "blocked" verdict, and plugins >= 8.45.11 treat a missing ``kind`` as
    failed anyway.
    """

    code: str
    message: str
    http_status: int
    field: str | None

    def __init__(
        self, code: str, message: str, http_status: int = 400, field: str | None = None
    ) -> None:
        # All constructor arguments go to Exception so the error survives pickling.
        super().__init__(code, message, http_status, field)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.field = field

    def body(self) -> PluginError:
        return {"error": self.code, "message": self.message, "kind": KIND_FAILED}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"ProtocolError(code={self.code!r}, message={self.message!r}, "
            f"http_status={self.http_status!r}, field={self.field!r})"
        )


def decode_json(body: bytes) -> Any:
    """Decode a request body; any decode failure (including an empty body) is a 400."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError("invalid_json_body", "Request body is not valid JSON") from None


# --------------------------------------------------------------------------------------------
# Validated requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The ``createInfoObject`` fields every plugin request carries.

    Values are stored as sent (app_id keeps its case; ``""`` is kept as ``""``), except
    ``device_id``, which is lowercased because iOS sends upper-case UUIDs. Optional strings the
    plugin may omit (``custom_id``, ``version_code``, ``version_os``, and ``plugin_version``
    outside update checks) are ``""`` when absent; ``install_source``, ``default_channel`` and
    ``key_id`` are ``None`` when absent, since iOS omits them on purpose.
    """

    platform: str
    device_id: str
    app_id: str
    custom_id: str
    version_build: str
    version_code: str
    version_os: str
    version_name: str
    plugin_version: str
    is_emulator: bool
    is_prod: bool
    install_source: str | None
    default_channel: str | None
    key_id: str | None


@dataclass(frozen=True, slots=True)
class UpdateRequest(DeviceInfo):
    """Body of ``POST updateUrl``. ``version_name == "builtin"`` means the shipped bundle."""


@dataclass(frozen=True, slots=True)
class ChannelRequest(DeviceInfo):
    """Body of ``POST``/``PUT channelUrl`` or query of ``GET channelUrl``.

    For ``GET`` (list channels) ``device_id``, ``version_name`` and ``version_build`` may be
    ``""``: Capgo does not require them there.
    """

    channel: str | None


@dataclass(frozen=True, slots=True)
class StatsEvent:
    """One stats event. Fields the plugin may leave out are ``None`` when absent.

    Android's ``DownloadService`` posts single objects without ``timestamp`` or ``key_id``, and
    iOS omits nil keys, so only the fields needed to attribute and count an event are
    required: ``app_id``, ``device_id``, ``platform``, ``action`` and ``version_name`` (which
    may be ``""``, and may be ``"<version>:<file>"`` for per-file failures).
    """

    app_id: str
    device_id: str
    platform: str
    action: str
    version_name: str
    old_version_name: str | None
    version_build: str | None
    version_code: str | None
    version_os: str | None
    plugin_version: str | None
    custom_id: str | None
    is_emulator: bool
    is_prod: bool
    install_source: str | None
    default_channel: str | None
    key_id: str | None
    channel: str | None
    timestamp: int | None
    metadata: dict[str, str] | None


# --------------------------------------------------------------------------------------------
# Field readers
# --------------------------------------------------------------------------------------------


class _Fields:
    """Typed access to a decoded JSON object; every failure raises a ProtocolError.

    JSON ``null`` on an optional field counts as absent: it carries no information and some
    JSON encoders emit it for unset values.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def optional_str(self, key: str, max_len: int = MAX_TEXT) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ProtocolError(_invalid(key), f"{key} must be a string", field=key)
        if len(value) > max_len:
            raise ProtocolError(
                _invalid(key), f"{key} must be at most {max_len} characters", field=key
            )
        if has_control(value):
            raise ProtocolError(
                _invalid(key), f"{key} must not contain control characters", field=key
            )
        return value

    def required_str(self, key: str, max_len: int = MAX_TEXT, allow_empty: bool = False) -> str:
        value = self.optional_str(key, max_len)
        if value is None or (not allow_empty and value == ""):
            raise ProtocolError(_missing(key), f"{key} is required", field=key)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        # Missing booleans default like Capgo does for pre-5.0 plugins; wrong types never do.
        value = self._data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ProtocolError(_invalid(key), f"{key} must be a boolean", field=key)
        return value

    def app_id(self) -> str:
        value = self.required_str("app_id", MAX_APP_ID)
        if not APP_ID_RE.fullmatch(value):
            raise ProtocolError(
                "invalid_app_id",
                "app_id must be a reverse domain string (e.g. com.example.app)",
                field="app_id",
            )
        return value

    def device_id(self, required: bool = True) -> str:
        if required:
            value = self.required_str("device_id", 36)
        else:
            value = self.optional_str("device_id", 36) or ""
            if value == "":
                return ""
        if not UUID_RE.fullmatch(value):
            raise ProtocolError(
                "invalid_device_id", "device_id must be a UUID string", field="device_id"
            )
        return value.lower()

    def platform(self) -> str:
        value = self.required_str("platform")
        if value not in PLATFORMS:
            raise ProtocolError(
                "invalid_platform",
                "platform must be one of: android, electron, ios",
                field="platform",
            )
        return value

    def plugin_version(self, required: bool) -> str:
        if required:
            value = self.required_str("plugin_version")
        else:
            value = self.optional_str("plugin_version") or ""
            if value == "":
                return ""
        if not SEMVER_RE.fullmatch(value):
            raise ProtocolError(
                "invalid_plugin_version",
                "plugin_version must be a semantic version (e.g. 8.51.14)",
                field="plugin_version",
            )
        return value


def _missing(key: str) -> str:
    return f"missing_{_code_name(key)}"


def _invalid(key: str) -> str:
    return f"invalid_{_code_name(key)}"


def _code_name(key: str) -> str:
    # Error codes are snake_case even where the wire name is not ("defaultChannel").
    return "default_channel" if key == "defaultChannel" else key


def _as_object(data: Any, what: str = "Request body") -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError("invalid_json_body", f"{what} must be a JSON object")
    return data


# --------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------


def parse_update_request(data: Any) -> UpdateRequest:
    """Validate the body of an update check (``POST updateUrl``)."""
    f = _Fields(_as_object(data))
    app_id = f.app_id()
    device_id = f.device_id()
    platform = f.platform()
    version_name = f.required_str("version_name")
    version_build = f.required_str("version_build")
    plugin_version = f.plugin_version(required=True)
    is_emulator = f.boolean("is_emulator", False)
    is_prod = f.boolean("is_prod", True)
    return UpdateRequest(
        platform=platform,
        device_id=device_id,
        app_id=app_id,
        custom_id=f.optional_str("custom_id", MAX_CUSTOM_ID) or "",
        version_build=version_build,
        version_code=f.optional_str("version_code") or "",
        version_os=f.optional_str("version_os") or "",
        version_name=version_name,
        plugin_version=plugin_version,
        is_emulator=is_emulator,
        is_prod=is_prod,
        install_source=f.optional_str("install_source", MAX_INSTALL_SOURCE),
        default_channel=f.optional_str("defaultChannel"),
        key_id=f.optional_str("key_id", MAX_KEY_ID),
    )


# -- one decode that also validates, for update checks ------------------------------------------

# The rules of parse_update_request are models.plugin.UpdateBody's constraints, so that the
# common, valid body is decoded and checked in one pass in C.
_decode_update_body = msgspec.json.Decoder(UpdateBody).decode


def decode_update_request(body: bytes) -> UpdateRequest:
    """Decode and validate the body of an update check in one pass.

    Equal to ``parse_update_request(decode_json(body))``: a body msgspec refuses is read
    again by that path, which raises the protocol's error for the first faulty field (the
    constraints above accept exactly what it accepts; tests/test_protocol.py compares them).
    A body that may hold a control character in a string (an escape, DEL, a C1 character) is
    read by that path too, which refuses control characters field by field.
    """
    if may_hold_control(body):
        return parse_update_request(decode_json(body))
    try:
        b = _decode_update_body(body)
    except msgspec.DecodeError:
        return parse_update_request(decode_json(body))
    return UpdateRequest(
        b.platform,
        b.device_id.lower(),
        b.app_id,
        b.custom_id or "",
        b.version_build,
        b.version_code or "",
        b.version_os or "",
        b.version_name,
        b.plugin_version,
        False if b.is_emulator is None else b.is_emulator,
        True if b.is_prod is None else b.is_prod,
        b.install_source,
        b.defaultChannel,
        b.key_id,
    )


def parse_channel_request(data: Any, *, require_channel: bool = False) -> ChannelRequest:
    """Validate a ``POST`` (setChannel) or ``PUT`` (getChannel) body on ``channelUrl``.

    ``version_name`` and ``version_build`` must be present but may be ``""``, as in Capgo.
    With ``require_channel=True`` (``POST``), a missing or empty ``channel`` raises
    ``missing_channel`` with ``http_status`` 200, which is how Capgo answers it.
    """
    f = _Fields(_as_object(data))
    app_id = f.app_id()
    device_id = f.device_id()
    platform = f.platform()
    version_name = f.required_str("version_name", allow_empty=True)
    version_build = f.required_str("version_build", allow_empty=True)
    channel = f.optional_str("channel")
    if require_channel and not channel:
        raise ProtocolError(
            "missing_channel", "channel is required to set a channel", 200, field="channel"
        )
    return ChannelRequest(
        platform=platform,
        device_id=device_id,
        app_id=app_id,
        custom_id=f.optional_str("custom_id", MAX_CUSTOM_ID) or "",
        version_build=version_build,
        version_code=f.optional_str("version_code") or "",
        version_os=f.optional_str("version_os") or "",
        version_name=version_name,
        plugin_version=f.plugin_version(required=False),
        is_emulator=f.boolean("is_emulator", False),
        is_prod=f.boolean("is_prod", True),
        install_source=f.optional_str("install_source", MAX_INSTALL_SOURCE),
        default_channel=f.optional_str("defaultChannel"),
        key_id=f.optional_str("key_id", MAX_KEY_ID),
        channel=channel,
    )


_decode_channel_body = msgspec.json.Decoder(ChannelBody).decode


def decode_channel_request(body: bytes, *, require_channel: bool = False) -> ChannelRequest:
    """Decode and validate a ``POST``/``PUT /channel_self`` body in one pass.

    Equal to ``parse_channel_request(decode_json(body), ...)``, which reads a body the model
    refuses (or that may hold a control character) and names its first faulty field, as
    :func:`decode_update_request` does.
    """
    if not may_hold_control(body):
        try:
            b = _decode_channel_body(body)
        except msgspec.DecodeError:
            pass
        else:
            if require_channel and not b.channel:
                raise ProtocolError(
                    "missing_channel", "channel is required to set a channel", 200, "channel"
                )
            return ChannelRequest(
                b.platform,
                b.device_id.lower(),
                b.app_id,
                b.custom_id or "",
                b.version_build,
                b.version_code or "",
                b.version_os or "",
                b.version_name,
                b.plugin_version or "",
                False if b.is_emulator is None else b.is_emulator,
                True if b.is_prod is None else b.is_prod,
                b.install_source,
                b.defaultChannel,
                b.key_id,
                b.channel,
            )
    return parse_channel_request(decode_json(body), require_channel=require_channel)


def parse_channel_query(params: Mapping[str, str]) -> ChannelRequest:
    """Validate the query string of ``GET channelUrl`` (listChannels).

    Booleans travel as the strings ``"true"``/``"false"``; anything else is rejected rather
    than read as false. Absent booleans default to ``is_emulator=False``, ``is_prod=True``.
    Only ``app_id`` and ``platform`` are required; ``device_id`` is validated when present.
    """
    values: dict[str, Any] = dict(params)
    for key in ("is_emulator", "is_prod"):
        raw = values.get(key)
        if raw is None:
            continue
        if raw == "true":
            values[key] = True
        elif raw == "false":
            values[key] = False
        else:
            raise ProtocolError(_invalid(key), f'{key} must be "true" or "false"', field=key)
    f = _Fields(values)
    app_id = f.app_id()
    platform = f.platform()
    return ChannelRequest(
        platform=platform,
        device_id=f.device_id(required=False),
        app_id=app_id,
        custom_id=f.optional_str("custom_id", MAX_CUSTOM_ID) or "",
        version_build=f.optional_str("version_build") or "",
        version_code=f.optional_str("version_code") or "",
        version_os=f.optional_str("version_os") or "",
        version_name=f.optional_str("version_name") or "",
        plugin_version=f.plugin_version(required=False),
        is_emulator=f.boolean("is_emulator", False),
        is_prod=f.boolean("is_prod", True),
        install_source=f.optional_str("install_source", MAX_INSTALL_SOURCE),
        default_channel=f.optional_str("defaultChannel"),
        key_id=f.optional_str("key_id", MAX_KEY_ID),
        channel=f.optional_str("channel"),
    )


def parse_stats_body(
    data: Any, max_events: int = MAX_STATS_BATCH
) -> list[StatsEvent | ProtocolError]:
    """Validate a stats POST: one event object, or an array of them (plugin >= 8.42.0).

    Array elements are validated independently, so the result has one entry per element, in
    order: a :class:`StatsEvent` or the :class:`ProtocolError` for that element. A body that
    is neither an object nor an array, or an array longer than :data:`MAX_STATS_BATCH`,
    raises instead (``max_events`` lowers that bound: the server's is the plugin's queue cap).
    The caller knows which shape it got from ``isinstance(data, list)``.
    """
    if isinstance(data, dict):
        return [_parse_stats_item(data)]
    if isinstance(data, list):
        cap = min(max_events, MAX_STATS_BATCH)
        if len(data) > cap:
            raise ProtocolError(
                "too_many_events",
                f"A stats batch may hold at most {cap} events, got {len(data)}",
                413,
            )
        return [_parse_stats_item(item) for item in data]
    raise ProtocolError("invalid_json_body", "Stats body must be a JSON object or array")


_decode_stats_body = msgspec.json.Decoder(StatsEventBody | list[StatsEventBody]).decode


def decode_stats_body(
    body: bytes, max_events: int = MAX_STATS_BATCH
) -> tuple[bool, list[StatsEvent | ProtocolError]]:
    """Decode and validate a stats POST in one pass: (whether it is an array, its events).

    Equal to ``parse_stats_body(decode_json(body), max_events)``, which reads a body the
    model refuses (or that may hold a control character): a batch with a faulty element is
    read element by element there, as :func:`decode_update_request` does.
    """
    if not may_hold_control(body):
        try:
            decoded = _decode_stats_body(body)
        except msgspec.DecodeError:
            pass
        else:
            if not isinstance(decoded, list):
                return False, [_stats_event(decoded)]
            cap = min(max_events, MAX_STATS_BATCH)
            if len(decoded) > cap:
                raise ProtocolError(
                    "too_many_events",
                    f"A stats batch may hold at most {cap} events, got {len(decoded)}",
                    413,
                )
            return True, [_stats_event(item) for item in decoded]
    data = decode_json(body)
    return isinstance(data, list), parse_stats_body(data, max_events)


def _stats_event(b: StatsEventBody) -> StatsEvent:
    return StatsEvent(
        app_id=b.app_id,
        device_id=b.device_id.lower(),
        platform=b.platform,
        action=b.action,
        version_name=b.version_name,
        old_version_name=b.old_version_name,
        version_build=b.version_build,
        version_code=b.version_code,
        version_os=b.version_os,
        plugin_version=b.plugin_version,
        custom_id=b.custom_id,
        is_emulator=False if b.is_emulator is None else b.is_emulator,
        is_prod=True if b.is_prod is None else b.is_prod,
        install_source=b.install_source,
        default_channel=b.defaultChannel,
        key_id=b.key_id,
        channel=b.channel,
        timestamp=b.timestamp,
        metadata=b.metadata,
    )


def _parse_stats_item(item: Any) -> StatsEvent | ProtocolError:
    try:
        return _parse_stats_event(_as_object(item, "Stats event"))
    except ProtocolError as exc:
        return exc


def _parse_stats_event(data: Mapping[str, Any]) -> StatsEvent:
    f = _Fields(data)
    app_id = f.app_id()
    device_id = f.device_id()
    platform = f.platform()
    action = f.required_str("action", MAX_ACTION)
    if not _ACTION_RE.fullmatch(action):
        raise ProtocolError(
            "invalid_action", "action must be a snake_case identifier", field="action"
        )
    version_name = f.required_str("version_name", MAX_STATS_VERSION_NAME, allow_empty=True)
    return StatsEvent(
        app_id=app_id,
        device_id=device_id,
        platform=platform,
        action=action,
        version_name=version_name,
        old_version_name=f.optional_str("old_version_name", MAX_STATS_VERSION_NAME),
        version_build=f.optional_str("version_build"),
        version_code=f.optional_str("version_code"),
        version_os=f.optional_str("version_os"),
        plugin_version=f.plugin_version(required=False) or None,
        custom_id=f.optional_str("custom_id", MAX_CUSTOM_ID),
        is_emulator=f.boolean("is_emulator", False),
        is_prod=f.boolean("is_prod", True),
        install_source=f.optional_str("install_source", MAX_INSTALL_SOURCE),
        default_channel=f.optional_str("defaultChannel"),
        key_id=f.optional_str("key_id", MAX_KEY_ID),
        channel=f.optional_str("channel"),
        timestamp=_timestamp(data.get("timestamp")),
        metadata=_metadata(data.get("metadata")),
    )


def _timestamp(value: Any) -> int | None:
    if value is None:
        return None
    # bool is an int subclass; floats would mean a client sending seconds or garbage.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            "invalid_timestamp", "timestamp must be an integer (epoch ms)", field="timestamp"
        )
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise ProtocolError(
            "invalid_timestamp", "timestamp is out of range (epoch ms)", field="timestamp"
        )
    return value


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(
            "invalid_metadata", "metadata must be an object with string values", field="metadata"
        )
    if len(value) > MAX_METADATA_FIELDS:
        raise ProtocolError(
            "invalid_metadata",
            f"metadata must contain at most {MAX_METADATA_FIELDS} fields",
            field="metadata",
        )
    result: dict[str, str] = {}
    for key, item in value.items():
        if has_control(key):
            raise ProtocolError(
                "invalid_metadata",
                "metadata keys must not contain control characters",
                field="metadata",
            )
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise ProtocolError(
                "invalid_metadata",
                f"metadata keys must be at most {MAX_METADATA_KEY_LENGTH} characters",
                field="metadata",
            )
        if not isinstance(item, str):
            raise ProtocolError(
                "invalid_metadata", f"metadata.{key} must be a string", field="metadata"
            )
        if len(item) > MAX_METADATA_VALUE_LENGTH:
            raise ProtocolError(
                "invalid_metadata",
                f"metadata.{key} must be at most {MAX_METADATA_VALUE_LENGTH} characters",
                field="metadata",
            )
        # Free text (an error message may span lines), but never NUL or other controls.
        if has_control(item, free_text=True):
            raise ProtocolError(
                "invalid_metadata",
                f"metadata.{key} must not contain control characters but tab and line breaks",
                field="metadata",
            )
        result[key] = item
    return result


# --------------------------------------------------------------------------------------------
# Update-check answers
# --------------------------------------------------------------------------------------------

KIND_UP_TO_DATE: Final = "up_to_date"
KIND_BLOCKED: Final = "blocked"
KIND_FAILED: Final = "failed"

UP_TO_DATE_CODES: Final = frozenset({"no_new_version_available", "already_on_builtin"})
BLOCKED_CODES: Final = frozenset(
    {
        "cannot_update_via_private_channel",
        "disabled_platform_ios",
        "disabled_platform_android",
        "disabled_platform_electron",
        "disable_auto_update_to_major",
        "disable_auto_update_to_minor",
        "disable_auto_update_to_patch",
        "disable_auto_update_to_metadata",
        "disable_auto_update_under_native",
        "disable_prod_build",
        "disable_dev_build",
        "disable_device",
        "disable_emulator",
        "key_id_mismatch",
        "provider_infrastructure_request_blocked",
        # Our plan locks: the org is blocked, the device did nothing wrong, so the plugin must
        # not report a download failure for it.
        "need_plan_upgrade",
        "too_many_emulators_or_dev_builds",
    }
)
_BLOCKED_PREFIXES: Final = ("disabled_platform_",)

# Keys iOS decodes with fixed types (AppVersionDec); a wrong type there is a decode_error.
_IOS_STRING_KEYS: Final = frozenset(
    {"version", "checksum", "url", "message", "error", "kind", "session_key", "link", "comment"}
)
_IOS_BOOL_KEYS: Final = frozenset({"major", "breaking"})


def kind_for_code(code: str) -> Kind:
    """Map a no-update error code to the ``kind`` the plugin expects (protocol §2)."""
    if code in UP_TO_DATE_CODES:
        return KIND_UP_TO_DATE
    if code in BLOCKED_CODES or code.startswith(_BLOCKED_PREFIXES):
        return KIND_BLOCKED
    return KIND_FAILED


def update_available(
    version: str,
    url: str,
    checksum: str,
    session_key: str = "",
    manifest: Sequence[Mapping[str, str]] | None = None,
    link: str | None = None,
    comment: str | None = None,
) -> UpdateAvailable:
    """Success answer to an update check.

    Never has an ``error`` or ``kind`` key: Android takes the error path if either exists.
    ``url`` is required even with a manifest. Without a ``session_key`` the checksum is the
    zip's SHA-256, which both platforms compare case-sensitively against lowercase hex, so it
    is lowercased and must be hex (or ``""`` to skip the check). With a ``session_key`` the
    checksum is RSA-encrypted (base64 or hex) and is passed through unchanged.
    Raises ``ValueError``/``TypeError`` on arguments the plugin could not use.
    """
    _require_str("version", version, allow_empty=False)
    _require_str("url", url, allow_empty=False)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url must be an absolute http(s) URL, got {url!r}")
    _require_str("checksum", checksum)
    _require_str("session_key", session_key)
    if not session_key:
        checksum = checksum.lower()
        if not _HEX_RE.fullmatch(checksum):
            raise ValueError("checksum must be hex (the zip's SHA-256) or empty")
    answer: UpdateAvailable = {
        "version": version,
        "url": url,
        "checksum": checksum,
        "session_key": session_key,
    }
    # Like Capgo, an empty manifest is left out so the client takes the plain zip path.
    if manifest:
        answer["manifest"] = [_manifest_entry(entry) for entry in manifest]
    if link is not None:
        _require_str("link", link)
        answer["link"] = link
    if comment is not None:
        _require_str("comment", comment)
        answer["comment"] = comment
    return answer


def _manifest_entry(entry: Mapping[str, str]) -> ManifestEntry:
    return {
        "file_name": _manifest_value(entry, "file_name"),
        "file_hash": _manifest_value(entry, "file_hash"),
        "download_url": _manifest_value(entry, "download_url"),
    }


def _manifest_value(entry: Mapping[str, str], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"manifest entries need a non-empty string {key!r}")
    return value


def no_update(
    code: str = "no_new_version_available",
    message: str = "No new version available",
    **extra: Unpack[BlockedDetails],
) -> PluginError:
    """HTTP-200 answer to an update check that carries no update (up to date, blocked, failed).

    ``kind`` is derived from ``code``. ``extra`` adds the optional top-level keys of a blocked
    answer (``version``, ``old``, ``major``, ``breaking``); keys iOS decodes with a fixed type
    are checked so the answer cannot trigger an iOS ``decode_error``.
    """
    _require_str("code", code, allow_empty=False)
    _require_str("message", message)
    if "kind" in extra:
        raise ValueError("kind is derived from code and cannot be passed")
    for key, value in extra.items():
        if key in _IOS_STRING_KEYS and not isinstance(value, str):
            raise TypeError(f"{key} must be a string")
        if key in _IOS_BOOL_KEYS and not isinstance(value, bool):
            raise TypeError(f"{key} must be a boolean")
        if key == "data" and not _is_str_map(value):
            raise TypeError("data must be a mapping of strings to strings")
    return {"error": code, "message": message, "kind": kind_for_code(code), **extra}


def _is_str_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _require_str(name: str, value: Any, *, allow_empty: bool = True) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{name} must not be empty")


# --------------------------------------------------------------------------------------------
# Channel answers
# --------------------------------------------------------------------------------------------


def channel_set_ok(
    message: str | None = None, *, allow_set: bool | None = None, unset: bool = False
) -> ChannelSetOk:
    """Success answer to setChannel (``POST``). Never has an ``error`` key, not even ``""``:
    iOS then skips persisting the channel and Android rejects the call.

    ``unset=True`` tells the device to clear its locally stored channel.
    """
    answer: ChannelSetOk = {"status": "ok"}
    if message is not None:
        _require_str("message", message)
        answer["message"] = message
    if allow_set is not None:
        answer["allowSet"] = _require_bool("allow_set", allow_set)
    if unset:
        answer["unset"] = True
    return answer


def channel_get(channel: str, status: ChannelStatus, allow_set: bool | None = None) -> ChannelGet:
    """Answer to getChannel (``PUT``): ``status`` is ``"default"`` or ``"override"``."""
    _require_str("channel", channel, allow_empty=False)
    if status not in ("default", "override"):
        raise ValueError(f'status must be "default" or "override", got {status!r}')
    answer: ChannelGet = {"channel": channel, "status": status}
    if allow_set is not None:
        answer["allowSet"] = _require_bool("allow_set", allow_set)
    return answer


def channel_error(code: str, message: str) -> PluginError:
    """HTTP-200 error answer on ``channelUrl`` (protocol §4): ``{"error", "message", "kind"}``.

    §4 shows only ``error`` and ``message``; ``kind: "failed"`` is added because every
    non-update answer in this server carries a ``kind`` and the channel clients ignore keys
    they do not know, so it cannot change how the plugin reads the error.
    """
    _require_str("code", code, allow_empty=False)
    _require_str("message", message)
    return {"error": code, "message": message, "kind": KIND_FAILED}


def channel_list_entry(id: int, name: str, public: bool, allow_self_set: bool) -> ChannelListEntry:
    """One element of the bare JSON array answered to listChannels (``GET``).

    ``id`` must be a real integer: iOS fails to decode the whole list otherwise.
    """
    if isinstance(id, bool) or not isinstance(id, int):
        raise TypeError(f"channel id must be an int, got {type(id).__name__}")
    _require_str("name", name, allow_empty=False)
    return {
        "id": id,
        "name": name,
        "public": _require_bool("public", public),
        "allow_self_set": _require_bool("allow_self_set", allow_self_set),
    }


def _require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------------------------
# Stats answers
# --------------------------------------------------------------------------------------------


def stats_ok(results: Sequence[StatsResult] | None = None) -> StatsOk:
    """``{"status": "ok"}`` for a single event, plus ``results`` for an array body."""
    if results is None:
        return {"status": "ok"}
    return {"status": "ok", "results": [entry.copy() for entry in results]}


def stats_result(index: int, error: ProtocolError | None = None) -> StatsResult:
    """One entry of a batch's ``results``: ``{status: "ok", index}`` or an error entry."""
    if error is None:
        return {"status": "ok", "index": index}
    return {"status": "error", "error": error.code, "message": error.message, "index": index}
