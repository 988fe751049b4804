"""The OpenAPI 3.1 document of the whole HTTP API, served at ``/openapi.json``.

Written by hand from the handlers in ``api/*.py`` so that it says what they really do,
including every error answer. ``tests/test_openapi.py`` runs schemathesis against a live
server over this document, and checks that every route the app registers is described.

Operations are listed in ``OPERATIONS``; the document served by an app holds only those whose
route that app registers, so an optional router (plans, usage, webhooks) appears exactly when
it is mounted.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import __version__ as VERSION
from .releases import RELEASE_ROW_FIELDS

JSON = "application/json"
Schema = dict[str, Any]

APP_ID_PATTERN = r"^[A-Za-z0-9]+(\.[A-Za-z0-9_-]+)+$"
UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def answer(description: str, schema: Schema | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = json_content(schema)
    return out


def error(description: str) -> dict[str, Any]:
    return answer(description, ref("Error"))


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: list[str], props: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "required": required, "properties": props, **extra}


STR = {"type": "string"}
INT = {"type": "integer"}
NONNEG = {"type": "integer", "minimum": 0}
BOOL = {"type": "boolean"}
DATETIME = {"type": "string", "format": "date-time"}
DAY = {"type": "string", "format": "date", "pattern": DATE_PATTERN}

# -- reusable schemas ----------------------------------------------------------------------------

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        ["error", "status"],
        {
            "error": {"type": "string", "description": "What went wrong, for a person."},
            "status": {"const": "KO"},
        },
        description='Every API error: `{"error": message, "status": "KO"}`.',
    ),
    "ApiKeyInfo": obj(
        ["id", "name", "mode", "limited_to_orgs", "limited_to_apps", "created_at", "expires_at"],
        {
            "id": STR,
            "name": STR,
            "mode": {"enum": ["read", "upload", "write", "all"]},
            "limited_to_orgs": {"type": "array", "items": STR},
            "limited_to_apps": {"type": "array", "items": STR},
            "created_at": DATETIME,
            "expires_at": nullable(DATETIME),
            "expired": BOOL,
        },
        description="An API key as listed: never the key itself.",
    ),
    "PluginError": obj(
        ["error", "message", "kind"],
        {
            "error": {"type": "string", "description": "A stable error code."},
            "message": STR,
            "kind": {
                "enum": ["up_to_date", "blocked", "failed"],
                "description": "How the plugin treats the answer (plugin-protocol.md §2).",
            },
        },
        description=(
            "A plugin endpoint's error or no-update answer (`no_new_version_available`, "
            "`no_channel`, `need_plan_upgrade`, `disable_auto_update_to_major`, a field "
            "validation code, ...). Usually sent with HTTP 200 so that the plugin reads the "
            "code. Blocked answers may add `version` (the bundle held back), `old` (the "
            "device's native version), `major` and `breaking` (a major step: the plugin fires "
            "its breakingAvailable event)."
        ),
    ),
    "UnknownApp": obj(
        ["error", "message", "retryAfterSeconds"],
        {"error": {"const": "app_not_found"}, "message": STR, "retryAfterSeconds": INT},
        description=(
            "An update check for an app this server does not know: the device backs off for "
            "`Retry-After` seconds (one hour) instead of asking at every launch."
        ),
    ),
    "DeviceInfo": obj(
        ["app_id", "device_id", "platform", "version_name", "version_build", "plugin_version"],
        {
            "app_id": {"type": "string", "pattern": APP_ID_PATTERN, "maxLength": 255},
            "device_id": {"type": "string", "pattern": UUID_PATTERN},
            "platform": {"enum": ["ios", "android", "electron"]},
            "version_name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "description": '`"builtin"` or the bundle the device runs.',
            },
            "version_build": {"type": "string", "minLength": 1, "maxLength": 255},
            "version_code": {"type": "string", "maxLength": 255},
            "version_os": {"type": "string", "maxLength": 255},
            "plugin_version": {"type": "string", "pattern": SEMVER_PATTERN},
            "custom_id": {"type": "string", "maxLength": 36},
            "is_emulator": {"type": "boolean", "default": False},
            "is_prod": {"type": "boolean", "default": True},
            "install_source": {"type": "string", "maxLength": 64},
            "defaultChannel": {"type": "string", "maxLength": 255},
            "key_id": {"type": "string", "maxLength": 20},
        },
        description="The body every plugin request carries (plugin-protocol.md §2).",
    ),
    "UpdateAvailable": {
        **obj(
            ["version", "url", "checksum"],
            {
                "version": STR,
                "url": {"type": "string", "format": "uri"},
                "checksum": {"type": "string", "description": "Lowercase hex SHA-256 of the zip."},
                "session_key": STR,
                "manifest": {
                    "type": "array",
                    "items": obj(
                        ["file_name", "file_hash", "download_url"],
                        {"file_name": STR, "file_hash": STR, "download_url": STR},
                    ),
                },
                "link": STR,
                "comment": STR,
            },
        ),
        "not": {"anyOf": [{"required": ["error"]}, {"required": ["kind"]}]},
        "description": "A bundle to install. Never carries `error` or `kind`.",
    },
    "StatsEvent": {
        **obj(
            ["app_id", "device_id", "platform", "action", "version_name"],
            {
                "app_id": {"type": "string", "pattern": APP_ID_PATTERN, "maxLength": 255},
                "device_id": {"type": "string", "pattern": UUID_PATTERN},
                "platform": {"enum": ["ios", "android", "electron"]},
                "action": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "maxLength": 64},
                "version_name": {"type": "string", "maxLength": 1024},
                "old_version_name": {"type": "string", "maxLength": 1024},
                "version_build": {"type": "string", "maxLength": 255},
                "version_code": {"type": "string", "maxLength": 255},
                "version_os": {"type": "string", "maxLength": 255},
                "plugin_version": {"type": "string", "pattern": SEMVER_PATTERN},
                "custom_id": {"type": "string", "maxLength": 36},
                "is_emulator": BOOL,
                "is_prod": BOOL,
                "install_source": {"type": "string", "maxLength": 64},
                "defaultChannel": {"type": "string", "maxLength": 255},
                "key_id": {"type": "string", "maxLength": 20},
                "channel": {"type": "string", "maxLength": 255},
                "timestamp": {"type": "integer", "minimum": 0, "maximum": 253402300799999},
                "metadata": {
                    "type": "object",
                    "maxProperties": 30,
                    "propertyNames": {"maxLength": 64},
                    "additionalProperties": {"type": "string", "maxLength": 2048},
                },
            },
        ),
        "description": "One plugin event (download progress, set, update_fail, ...).",
    },
    "StatsResult": obj(
        ["status", "index"],
        {
            "status": {"enum": ["ok", "error"]},
            "index": NONNEG,
            "error": STR,
            "message": STR,
        },
    ),
    "ChannelRequest": {
        "allOf": [
            ref("DeviceInfo"),
            {"type": "object", "properties": {"channel": {"type": "string", "maxLength": 255}}},
        ],
        "description": (
            "Like DeviceInfo, but `version_name` and `version_build` may be empty and "
            "`plugin_version` may be left out."
        ),
    },
    "ChannelSetOk": {
        **obj(
            ["status"],
            {"status": {"const": "ok"}, "message": STR, "allowSet": BOOL, "unset": BOOL},
        ),
        "not": {"required": ["error"]},
    },
    "ChannelGet": {
        **obj(
            ["channel", "status"],
            {"channel": STR, "status": {"enum": ["default", "override"]}, "allowSet": BOOL},
        ),
        "not": {"required": ["error"]},
    },
    "ChannelListEntry": obj(
        ["id", "name", "public", "allow_self_set"],
        {"id": INT, "name": STR, "public": BOOL, "allow_self_set": BOOL},
    ),
    "Organization": obj(
        ["id", "name", "role", "plan", "created_at"],
        {
            "id": {"type": "string", "format": "uuid"},
            "name": STR,
            "role": {"enum": ["read", "upload", "write", "admin", "super_admin"]},
            "plan": nullable(STR),
            "created_at": DATETIME,
        },
    ),
    "App": obj(
        ["app_id", "name", "owner_org", "created_at"],
        {"app_id": STR, "name": STR, "owner_org": STR, "created_at": DATETIME},
    ),
    "Bundle": obj(
        ["id", "app_id", "version", "size", "checksum", "external_url", "channel", "created_at"],
        {
            "id": STR,
            "app_id": STR,
            "version": STR,
            "size": NONNEG,
            "checksum": nullable(STR),
            "external_url": nullable(STR),
            "channel": STR,
            "created_at": DATETIME,
        },
    ),
    "BundleListItem": obj(
        ["id", "app_id", "version", "size", "checksum", "external", "created_at", "channels"],
        {
            "id": STR,
            "app_id": STR,
            "version": STR,
            "size": NONNEG,
            "checksum": nullable(STR),
            "external": BOOL,
            "external_url": nullable(STR),
            "created_at": DATETIME,
            "channels": {"type": "array", "items": STR},
        },
    ),
    "ChannelFlags": {
        "type": "object",
        "properties": {
            "public": {
                **BOOL,
                "description": (
                    "Sent: true makes the channel the public channel of every platform it "
                    "serves (taking each from the channel that had it), false of none. "
                    "Answered: public for at least one platform."
                ),
            },
            "allow_device_self_set": BOOL,
            "allow_emulator": BOOL,
            "allow_dev": BOOL,
            "ios": BOOL,
            "android": BOOL,
            "electron": BOOL,
            "disable_auto_update": {
                "enum": ["none", "major", "minor", "patch"],
                "description": (
                    "The semver step, from the device's native version, that devices may not "
                    "auto-update across (`disable_auto_update_to_major`, ... answers)."
                ),
            },
            "disable_auto_update_under_native": {
                **BOOL,
                "description": "Never offer a bundle below the device's native version.",
            },
            "auto_rollback": {
                **BOOL,
                "description": (
                    "Release guard: when a `release_regression` is raised for the channel's "
                    "bundle, the channel goes back to the bundle it served before (default "
                    "false)."
                ),
            },
        },
    },
    "ChannelPublic": obj(
        ["public_ios", "public_android", "public_electron", "disable_auto_update"],
        {"public_ios": BOOL, "public_android": BOOL, "public_electron": BOOL},
        description="Which platforms the channel is the public (default) channel of.",
    ),
    "ReleaseRow": obj(
        list(RELEASE_ROW_FIELDS),
        {
            "date": {**DAY, "description": "With `by=day` only."},
            "version": STR,
            "active": {**NONNEG, "description": "Devices whose update checks ran it."},
            "offered": {**NONNEG, "description": "Devices `/updates` offered its download."},
            "downloaded": {**NONNEG, "description": "Devices that sent `download_complete`."},
            "installed": {**NONNEG, "description": "Devices that sent `set`."},
            "failed": {**NONNEG, "description": "Devices that sent a download or install failure."},
            "rolled_back": {**NONNEG, "description": "Devices that sent `update_fail`."},
            "crashed": {**NONNEG, "description": "Devices that crashed while running it."},
            "launches": {**NONNEG, "description": "`app_launch_ready` events (not devices)."},
            "launch_ms_p50": {
                **nullable(NONNEG),
                "description": "Median launch time (ms), within 1%; null without launches.",
            },
            "launch_ms_p95": {
                **nullable(NONNEG),
                "description": "95th percentile launch time (ms), within 1%; null if none.",
            },
        },
    ),
    "Device": obj(
        [
            "device_id",
            "custom_id",
            "platform",
            "version_name",
            "version_build",
            "plugin_version",
            "channel",
            "is_emulator",
            "is_prod",
            "first_seen",
            "last_seen",
        ],
        {
            "device_id": STR,
            "custom_id": STR,
            "platform": STR,
            "version_name": {**STR, "description": "The version it runs (latest check-in)."},
            "version_build": STR,
            "plugin_version": STR,
            "channel": {
                **nullable(STR),
                "description": "The channel the server keeps for it (plugins before 7.34).",
            },
            "is_emulator": BOOL,
            "is_prod": BOOL,
            "first_seen": DATETIME,
            "last_seen": DATETIME,
        },
    ),
    "DeviceEvent": obj(
        ["id", "action", "version_name", "old_version_name", "at", "metadata"],
        {
            "id": INT,
            "action": STR,
            "version_name": STR,
            "old_version_name": nullable(STR),
            "at": DATETIME,
            "metadata": nullable({"type": "object"}),
        },
    ),
    "ReleaseGuard": obj(
        [
            "org_id",
            "min_devices",
            "max_rollback_rate",
            "max_failure_rate",
            "max_crash_rate",
            "overrides",
        ],
        {
            "org_id": STR,
            "min_devices": NONNEG,
            "max_rollback_rate": {"type": "number"},
            "max_failure_rate": {"type": "number"},
            "max_crash_rate": {"type": "number"},
            "overrides": {"type": "object", "description": "The org's own values."},
        },
    ),
    "ReleaseAlert": obj(
        ["version", "channel", "reason", "devices", "rates", "rolled_back_to", "created_at"],
        {
            "version": STR,
            "channel": nullable(STR),
            "reason": {"enum": ["rollback", "crash", "failure"]},
            "devices": NONNEG,
            "rates": {"type": "object"},
            "rolled_back_to": nullable(STR),
            "created_at": DATETIME,
        },
    ),
    "StatsRow": obj(
        ["date", "mau", "storage", "bandwidth"],
        {
            "date": DAY,
            "mau": {**NONNEG, "description": "Unique counted devices in the 30 days to `date`."},
            "storage": {**NONNEG, "description": "Bytes of bundles existing at the day's end."},
            "bandwidth": {**NONNEG, "description": "Bytes of bundle downloads served that day."},
            "new_devices": {
                **NONNEG,
                "description": (
                    "With `breakdown=true`: devices active that day for the first time in "
                    "its calendar month."
                ),
            },
            "dau": {**NONNEG, "description": "With `breakdown=true`: devices active that day."},
        },
    ),
    "StatsAnswer": obj(
        ["data"],
        {
            "data": {
                "type": "array",
                "description": "One row per day, oldest first; days after today are left out.",
                "items": {
                    "allOf": [ref("StatsRow")],
                    "properties": {
                        "previous": {
                            **ref("StatsRow"),
                            "description": (
                                "With `compare=previous`: the same figures for the day at "
                                "the same position in the previous period."
                            ),
                        }
                    },
                },
            },
            "previous_period": {
                **obj(["from", "to"], {"from": DAY, "to": DAY}),
                "description": (
                    "With `compare=previous`: the period of equal length ending the day "
                    "before `from`."
                ),
            },
        },
    ),
    "BundleUsageAnswer": obj(
        ["data"],
        {
            "data": {
                "type": "array",
                "items": obj(
                    ["date", "devices", "versions"],
                    {
                        "date": DAY,
                        "devices": {**NONNEG, "description": "Counted devices active that day."},
                        "versions": {
                            "type": "array",
                            "description": "Most used first.",
                            "items": obj(
                                ["version", "devices", "share"],
                                {
                                    "version": STR,
                                    "devices": NONNEG,
                                    "share": {
                                        "type": "number",
                                        "minimum": 0,
                                        "maximum": 100,
                                        "description": (
                                            "Percent of the day's counted devices seen on "
                                            "this version (a device that updated during the "
                                            "day counts on both)."
                                        ),
                                    },
                                },
                            ),
                        },
                    },
                ),
            }
        },
    ),
    "Usage": obj(
        ["org_id", "plan", "cycle_start", "cycle_end", "locked", "lock_reason", "trial_ends"],
        {
            "org_id": STR,
            "plan": nullable(STR),
            "cycle_start": DAY,
            "cycle_end": DAY,
            "locked": BOOL,
            "lock_code": nullable(STR),
            "lock_reason": nullable(STR),
            "trial_ends": nullable(DAY),
            "in_trial": BOOL,
            "mau": ref("UsageMetric"),
            "storage": ref("UsageMetric"),
            "bandwidth": ref("UsageMetric"),
            "emulator_dev": {
                "type": "object",
                "required": ["ratio", "threshold"],
                "properties": {"ratio": {"type": "number"}, "threshold": {"type": "number"}},
            },
            "refused_new_devices": {
                **NONNEG,
                "description": (
                    "Check-ins of new devices refused this cycle by the new-devices-per-address "
                    "limit: those devices were not counted."
                ),
            },
        },
        description="An org's usage in its current billing cycle against its plan.",
    ),
    "RefusedDevicesAnswer": obj(
        ["data"],
        {
            "data": {
                "type": "array",
                "items": obj(
                    ["date", "refused_new_devices"],
                    {"date": DAY, "refused_new_devices": NONNEG},
                ),
            }
        },
    ),
    "UsageMetric": obj(
        ["used", "limit", "percent"],
        {
            "used": NONNEG,
            "limit": nullable(NONNEG),
            "percent": nullable({"type": "number", "minimum": 0}),
        },
    ),
    "Plan": obj(
        ["name", "mau", "storage", "bandwidth"],
        {"name": STR, "mau": NONNEG, "storage": NONNEG, "bandwidth": NONNEG, "default": BOOL},
    ),
    "Webhook": obj(
        ["id", "org_id", "url", "created_at"],
        {
            "id": STR,
            "org_id": STR,
            "url": STR,
            "created_at": DATETIME,
            "secret": {"type": "string", "description": "Only when generated by the server."},
        },
    ),
    "WebhookDelivery": obj(
        ["id", "webhook_id", "event", "status", "attempts", "created_at", "payload"],
        {
            "id": INT,
            "webhook_id": STR,
            "event": STR,
            "status": {"enum": ["pending", "delivered", "failed"]},
            "attempts": NONNEG,
            "next_attempt_at": nullable(DATETIME),
            "last_status_code": nullable(INT),
            "last_error": {
                **nullable(STR),
                "description": (
                    "`HTTP <status>` when the target answered, else a generic reason "
                    "(refused target, no HTTP answer): never the network's own error text."
                ),
            },
            "created_at": DATETIME,
            "delivered_at": nullable(DATETIME),
            "payload": {},
        },
    ),
}

# -- shared parameters and answers ---------------------------------------------------------------

AUTH: list[dict[str, list[str]]] = [{"authorization": []}, {"capgkey": []}]
UNAUTHORIZED = error("No API key, or an unknown, revoked or expired one.")
# Every authenticated operation: too many failed authentications from the client's address.
TOO_MANY_FAILURES = {
    **error("Too many failed authentications from this address; a valid key is never refused."),
    "headers": {
        "Retry-After": {"description": "Seconds until the address may try again.", "schema": INT}
    },
}
BAD_REQUEST = error("The query or body is invalid; `error` says which field.")


# The 0-based ``page`` of a paged list (api.common.query_page).
PAGE_PARAM: dict[str, Any] = {
    "name": "page",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": 999999999, "default": 0},
}


def app_id_param(where: str = "path", required: bool = True) -> dict[str, Any]:
    return {
        "name": "app_id",
        "in": where,
        "required": required,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "A reverse-domain app id like `com.example.app`.",
    }


def org_id_param() -> dict[str, Any]:
    return {
        "name": "org_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 36},
    }


STATS_DATE_PARAMS = [
    {
        "name": name,
        "in": "query",
        "required": True,
        "schema": DAY,
        "description": f"{what} (`YYYY-MM-DD`, UTC, inclusive). At most 90 days in all.",
    }
    for name, what in (("from", "First day"), ("to", "Last day"))
]
FORMAT_PARAM = {
    "name": "format",
    "in": "query",
    "required": False,
    "schema": {"enum": ["json", "csv"], "default": "json"},
    "description": (
        "`csv`: the same rows as `text/csv` with a header line and a Content-Disposition filename."
    ),
}
STATS_OPTION_PARAMS = [
    FORMAT_PARAM,
    {
        "name": "breakdown",
        "in": "query",
        "required": False,
        "schema": {"enum": ["true", "false", "1", "0", "yes", "no"], "default": "false"},
        "description": "Adds `new_devices` and `dau` to each row.",
    },
    {
        "name": "compare",
        "in": "query",
        "required": False,
        "schema": {"enum": ["previous", "none"]},
        "description": (
            "`previous`: each row gets a `previous` object with the figures of the day at the "
            "same position in the preceding period of equal length (`previous_period`). In "
            "CSV they are the `previous_*` columns."
        ),
    },
]
CSV_ANSWER = {
    "text/csv": {
        "schema": {"type": "string"},
        "example": "date,mau,storage,bandwidth\r\n2024-01-01,120,536870912,1073741824\r\n",
    }
}
STATS_ERRORS = {
    "400": error(
        "`Invalid date format. Use YYYY-MM-DD` (bad or impossible date; a missing one adds "
        "`(the 'from' parameter is missing)` or `'to'`), "
        "`Date range cannot exceed 90 days`, an invalid range (`from` after `to`), or an "
        "invalid `format`, `breakdown` or `compare`."
    ),
    "401": UNAUTHORIZED,
    "403": error(
        "`Insufficient permissions to access statistics`: the key sees the org only "
        "through some of its apps."
    ),
    "404": error(
        "`App/Organization not found`: it does not exist, was deleted (apps), or is not "
        "visible to this key (another org's, or outside the key's limits): no existence oracle."
    ),
}


def stats_op(summary: str, params: list[dict[str, Any]], description: str) -> dict[str, Any]:
    return {
        "tags": ["statistics"],
        "summary": summary,
        "description": description,
        "security": AUTH,
        "parameters": [*params, *STATS_DATE_PARAMS, *STATS_OPTION_PARAMS],
        "responses": {
            "200": {
                "description": "One row per day.",
                "content": {**json_content(ref("StatsAnswer")), **CSV_ANSWER},
            },
            **STATS_ERRORS,
        },
    }


def json_body(schema: Schema, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


def plugin_op(
    summary: str,
    description: str,
    ok: Schema,
    *,
    body: Schema | None = None,
    more: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["plugin"],
        "summary": summary,
        "description": description,
        "security": [],
        "responses": {
            "200": answer("The answer, or a plugin error code (HTTP 200 on purpose).", ok),
            "400": answer(
                "A malformed request: a field failed validation (a control character in a "
                "string or in the URL included).",
                ref("PluginError"),
            ),
            **(more or {}),
        },
        **extra,
    }
    if body is not None:
        op["requestBody"] = json_body(body)
    return op


TOO_LARGE = answer(
    "`payload_too_large`: the body is over this route's bound (see README, Limits), or its "
    "Content-Length says so; the connection is closed.",
    ref("PluginError"),
)
RATE_LIMITED_BODY: Schema = {
    "allOf": [
        ref("PluginError"),
        obj(["retryAfterSeconds"], {"retryAfterSeconds": {"type": "integer"}}),
    ]
}
RATE_LIMITED = {
    "description": (
        "`too_many_requests`: the device is over its rate, or its address over its new "
        "devices for this app this hour (see README, Limits). The plugin waits `Retry-After` "
        "seconds (also in `retryAfterSeconds`)."
    ),
    "headers": {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
    "content": json_content(RATE_LIMITED_BODY),
}


DEVICE_QUERY = [
    {"name": name, "in": "query", "required": required, "schema": schema}
    for name, required, schema in (
        ("app_id", True, {"type": "string", "pattern": APP_ID_PATTERN, "maxLength": 255}),
        ("platform", True, {"enum": ["ios", "android", "electron"]}),
        ("device_id", False, {"type": "string", "pattern": UUID_PATTERN}),
        ("is_emulator", False, {"enum": ["true", "false"]}),
        ("is_prod", False, {"enum": ["true", "false"]}),
        ("version_name", False, {"type": "string", "maxLength": 255}),
        ("version_build", False, {"type": "string", "maxLength": 255}),
        ("plugin_version", False, {"type": "string", "pattern": SEMVER_PATTERN}),
        ("custom_id", False, {"type": "string", "maxLength": 36}),
        ("defaultChannel", False, {"type": "string", "maxLength": 255}),
    )
]

OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/health": {
        "get": {
            "tags": ["server"],
            "summary": "Liveness (the same as /healthz)",
            "security": [],
            "responses": {"200": answer("Up.", obj(["status"], {"status": {"const": "ok"}}))},
        }
    },
    "/healthz": {
        "get": {
            "tags": ["server"],
            "summary": "Liveness",
            "description": "200 while the process serves requests; nothing else is checked.",
            "security": [],
            "responses": {"200": answer("Up.", obj(["status"], {"status": {"const": "ok"}}))},
        }
    },
    "/readyz": {
        "get": {
            "tags": ["server"],
            "summary": "Readiness",
            "description": "200 only when the database answers, its schema is the one this "
            "server needs, the writer thread runs and the data directory is writable; "
            "otherwise 503 with the reason.",
            "security": [],
            "responses": {
                "200": answer("Ready.", obj(["status"], {"status": {"const": "ok"}})),
                "503": error("Not ready; `error` says why."),
            },
        }
    },
    "/metrics": {
        "get": {
            "tags": ["server"],
            "summary": "Prometheus metrics",
            "description": "Prometheus text format: `otameter_http_requests_total` (route "
            "template, method, status), `otameter_http_request_duration_seconds`, "
            "`otameter_events_ingested_total` (kind), `otameter_group_commit_events`, "
            "`otameter_group_commit_duration_seconds`, `otameter_writer_queue_depth`, "
            "`otameter_rollup_lag_seconds`, `otameter_webhook_deliveries_total` (outcome). "
            "With several workers the values of all of them. When `OTAMETER_METRICS_TOKEN` is "
            "set, `authorization: Bearer <token>` is required.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": error("`OTAMETER_METRICS_TOKEN` is set and the bearer token is not it."),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "tags": ["server"],
            "summary": "This document",
            "security": [],
            "responses": {"200": answer("The OpenAPI 3.1 document.", {"type": "object"})},
        }
    },
    # -- plugin ----------------------------------------------------------------------------------
    "/updates": {
        "post": plugin_op(
            "Update check",
            "Records the device's activity (the MAU source) and answers with the bundle of "
            "its channel, or a no-update code with HTTP 200 (`no_new_version_available`, "
            "`no_channel`, `need_plan_upgrade`, `disable_auto_update_to_major`, ...). The "
            "channel: an old plugin's override (before 7.34 / 8.2), else the device's "
            "`defaultChannel` when it may use it (`no_channel` when it may not), else its "
            "platform's public channel. An app that does not exist answers 429 with "
            "`Retry-After`.",
            {"anyOf": [ref("UpdateAvailable"), ref("PluginError")]},
            body=ref("DeviceInfo"),
            more={
                "413": TOO_LARGE,
                "429": {
                    "description": (
                        "The app does not exist (`app_not_found`: the device backs off for an "
                        "hour), or the device is over its rate (`too_many_requests`, see "
                        "README, Limits). The plugin waits `Retry-After` seconds (also in "
                        "`retryAfterSeconds`). A new device over its address's allowance for "
                        "the app this hour is answered 200 and not stored (counted as refused)."
                    ),
                    "headers": {"Retry-After": {"required": True, "schema": INT}},
                    "content": json_content({"anyOf": [ref("UnknownApp"), RATE_LIMITED_BODY]}),
                },
            },
        )
    },
    "/stats": {
        "post": {
            **plugin_op(
                "Plugin events",
                "One event object or an array of them (at most 200, the plugin's queue; "
                "`OTAMETER_STATS_MAX_EVENTS`). An array answers "
                "`results`, one per element; a single object answers `{status: ok}` or its "
                "own error.",
                {
                    "anyOf": [
                        obj(
                            ["status"],
                            {
                                "status": {"const": "ok"},
                                "results": {"type": "array", "items": ref("StatsResult")},
                            },
                        ),
                        ref("PluginError"),
                    ]
                },
                body={
                    "anyOf": [
                        ref("StatsEvent"),
                        {"type": "array", "maxItems": 200, "items": ref("StatsEvent")},
                    ]
                },
                more={
                    "413": answer(
                        "An array of more than 200 events (`too_many_events`), or a body over "
                        "1 MB (`payload_too_large`).",
                        ref("PluginError"),
                    ),
                    "429": RATE_LIMITED,
                },
            ),
        }
    },
    "/channel_self": {
        "get": plugin_op(
            "List channels",
            "The channels the device may choose (public or self-assignable, compatible).",
            {
                "anyOf": [
                    {"type": "array", "items": ref("ChannelListEntry")},
                    ref("PluginError"),
                ]
            },
            parameters=DEVICE_QUERY,
        ),
        "post": plugin_op(
            "Set the device's channel",
            "Checks that the device may join the channel (public or self-assignable, serving "
            "the device). Plugins from 7.34 / 8.2 keep the channel themselves: nothing is "
            "stored. Older plugins get a server-side override, cleared when the channel is "
            "their platform's public one.",
            {"anyOf": [ref("ChannelSetOk"), ref("PluginError")]},
            body=ref("ChannelRequest"),
            more={"413": TOO_LARGE},
        ),
        "put": plugin_op(
            "Get the device's channel",
            "An old plugin's override; else the device's `defaultChannel` when it may use it; "
            "else its platform's public channel.",
            {"anyOf": [ref("ChannelGet"), ref("PluginError")]},
            body=ref("ChannelRequest"),
            more={"413": TOO_LARGE},
        ),
        "delete": plugin_op(
            "Unset the device's channel (plugins before 7.34 / 8.2)",
            "Removes an old plugin's server-side override. Newer plugins unset locally and "
            "send nothing; for them this is a no-op. The info fields come as a query string "
            "(as GET) or a JSON body.",
            {"anyOf": [ref("ChannelSetOk"), ref("PluginError")]},
            parameters=DEVICE_QUERY,
        ),
    },
    "/download/{bundle_id}.zip": {
        "get": {
            "tags": ["plugin"],
            "summary": "Bundle download",
            "description": (
                "The signed link answered by `/updates`. Supports one `Range` and `If-Range`; "
                "the bytes actually sent are counted as bandwidth. On PostgreSQL the bytes are "
                "in the database, so any server on it serves the link (and a resume) of any "
                "other; a range is read from its first chunk on."
            ),
            "security": [],
            "parameters": [
                {"name": "bundle_id", "in": "path", "required": True, "schema": STR},
                {"name": "device_id", "in": "query", "required": True, "schema": STR},
                {"name": "expires", "in": "query", "required": True, "schema": STR},
                {"name": "sig", "in": "query", "required": True, "schema": STR},
                {"name": "Range", "in": "header", "required": False, "schema": STR},
            ],
            "responses": {
                "200": {
                    "description": "The zip.",
                    "content": {"application/zip": {"schema": {"type": "string"}}},
                },
                "206": {
                    "description": "The requested range.",
                    "content": {"application/zip": {"schema": {"type": "string"}}},
                },
                "403": error("The link is invalid or expired."),
                "404": error("The bundle is gone."),
                "416": {"description": "The range cannot be served."},
            },
        }
    },
    # -- management ------------------------------------------------------------------------------
    "/organization": {
        "post": {
            "tags": ["organizations"],
            "summary": "Create an organization",
            "description": "The caller becomes its `super_admin`. Needs an unrestricted `all` key.",
            "security": AUTH,
            "requestBody": json_body(
                obj(["name"], {"name": {"type": "string", "minLength": 1, "maxLength": 200}})
            ),
            "responses": {
                "201": answer(
                    "Created.",
                    obj(["id", "name"], {"id": {"type": "string", "format": "uuid"}, "name": STR}),
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("The key is not an unrestricted key of mode `all`."),
            },
        },
        "get": {
            "tags": ["organizations"],
            "summary": "The caller's organizations",
            "security": AUTH,
            "responses": {
                "200": answer(
                    "Visible to this key.", {"type": "array", "items": ref("Organization")}
                ),
                "401": UNAUTHORIZED,
            },
        },
    },
    "/organization/members": {
        "post": {
            "tags": ["organizations"],
            "summary": "Add or change a member, or invite an address",
            "description": (
                "Adds the user with this e-mail to the org with a role (or changes the role). "
                "An address without a user gets a pending invitation, answered exactly the "
                "same way; the user created later with that address (`otameter user create`) "
                "becomes a member then. Only a `super_admin` grants or takes back "
                "`super_admin`, and no change leaves the org without one. Needs `admin` and a "
                "key not limited to some apps."
            ),
            "security": AUTH,
            "requestBody": json_body(
                obj(
                    ["orgId", "email", "invite_type"],
                    {
                        "orgId": {"type": "string", "maxLength": 36},
                        "email": {"type": "string", "maxLength": 320},
                        "invite_type": {
                            "enum": ["read", "upload", "write", "admin", "super_admin"]
                        },
                    },
                )
            ),
            "responses": {
                "200": answer(
                    "The membership, or the invitation (the same shape).",
                    obj(
                        ["org_id", "email", "role", "status"],
                        {"org_id": STR, "email": STR, "role": STR, "status": {"const": "ok"}},
                    ),
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error(
                    "Needs `admin` (`super_admin` to grant or change `super_admin`); a key "
                    "limited to some apps cannot manage members."
                ),
                "404": error("Organization not found (or not visible to the key)."),
                "409": error("The change would leave the org without a `super_admin`."),
            },
        }
    },
    "/apikey": {
        "post": {
            "tags": ["keys"],
            "summary": "Create an API key",
            "description": (
                "Needs a key of mode `all` not limited to some apps. The new key is shown "
                "once; it never sees more than the key that made it. With `expires_at` it "
                "gets 401 from that instant on."
            ),
            "security": AUTH,
            "requestBody": json_body(
                {
                    "type": "object",
                    "properties": {
                        "name": STR,
                        "mode": {"enum": ["read", "upload", "write", "all"], "default": "read"},
                        "limited_to_orgs": {"type": "array", "items": {"type": "string"}},
                        "limited_to_apps": {"type": "array", "items": {"type": "string"}},
                        "expires_at": nullable(DATETIME),
                    },
                }
            ),
            "responses": {
                "201": answer(
                    "The key.",
                    obj(
                        ["id", "key", "name", "mode", "limited_to_orgs", "limited_to_apps"],
                        {
                            "id": STR,
                            "key": STR,
                            "name": STR,
                            "mode": STR,
                            "limited_to_orgs": {"type": "array", "items": STR},
                            "limited_to_apps": {"type": "array", "items": STR},
                            "created_at": DATETIME,
                            "expires_at": nullable(DATETIME),
                        },
                    ),
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("The key is not of mode `all`, or is limited to some apps."),
                "404": error("A listed org or app is not visible to the key."),
            },
        },
        "get": {
            "tags": ["keys"],
            "summary": "The caller's API keys",
            "description": (
                "The user's keys that are not revoked and see no more than the calling key "
                "(a key limited to orgs lists only keys limited within them). Never the key "
                "itself: it is shown once, when made."
            ),
            "security": AUTH,
            "responses": {
                "200": answer("The keys.", {"type": "array", "items": ref("ApiKeyInfo")}),
                "401": UNAUTHORIZED,
                "403": error("The key is not of mode `all`, or is limited to some apps."),
            },
        },
    },
    "/apikey/{key_id}": {
        "delete": {
            "tags": ["keys"],
            "summary": "Revoke an API key",
            "description": (
                "From this answer on the key gets 401 on every server process (keys are not "
                "cached), and the dashboard sessions signed in with it end."
            ),
            "security": AUTH,
            "parameters": [
                {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": answer(
                    "Revoked.", obj(["status", "id"], {"status": {"const": "ok"}, "id": STR})
                ),
                "401": UNAUTHORIZED,
                "403": error("The key is not of mode `all`, or is limited to some apps."),
                "404": error("No such key among those the caller may manage."),
            },
        }
    },
    "/app": {
        "post": {
            "tags": ["apps"],
            "summary": "Create an app",
            "security": AUTH,
            "requestBody": json_body(
                obj(
                    ["app_id", "owner_org"],
                    {
                        "app_id": {"type": "string", "pattern": APP_ID_PATTERN, "maxLength": 255},
                        "name": STR,
                        "owner_org": {"type": "string", "maxLength": 36},
                    },
                )
            ),
            "responses": {
                "201": answer("Created.", ref("App")),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("Needs `write` in the org and a key not limited to apps."),
                "404": error("Organization not found."),
                "409": error("The app id is taken."),
            },
        },
        "get": {
            "tags": ["apps"],
            "summary": "The apps the key can see",
            "security": AUTH,
            "responses": {
                "200": answer("Apps, by id.", {"type": "array", "items": ref("App")}),
                "401": UNAUTHORIZED,
            },
        },
    },
    "/app/{app_id}": {
        "get": {
            "tags": ["apps"],
            "summary": "One app",
            "security": AUTH,
            "parameters": [app_id_param()],
            "responses": {
                "200": answer("The app.", ref("App")),
                "401": UNAUTHORIZED,
                "404": error("App not found (or not visible to the key)."),
            },
        },
        "delete": {
            "tags": ["apps"],
            "summary": "Delete an app",
            "description": "Deletes its bundles (storage freed); its statistics stay in org sums.",
            "security": AUTH,
            "parameters": [app_id_param()],
            "responses": {
                "200": answer("Deleted.", obj(["status"], {"status": {"const": "ok"}})),
                "401": UNAUTHORIZED,
                "403": error("Needs `admin`."),
                "404": error("App not found."),
            },
        },
    },
    "/bundle": {
        "post": {
            "tags": ["bundles"],
            "summary": "Upload a bundle",
            "description": (
                "multipart: a zip (`file`) stored here; JSON: an external bundle served by "
                "URL, never counted in storage or bandwidth. The channel (default "
                "`production`) then serves the bundle.\n\n"
                "The multipart form is read as it streams in: `app_id` and `version` must come "
                "before `file` (the upload is authorized from them before any byte is stored), "
                "and the file flows through the size limit (`OTAMETER_MAX_BUNDLE_SIZE`, "
                "default 512 MiB) into storage: past the limit the answer is 413 and nothing "
                "is kept. The zip is then checked entry by entry; a 400 names the first entry "
                "that climbs out of the bundle folder (`..`), is an absolute path (`/`, `\\`, "
                "`C:`), is a symbolic link, is encrypted or has a bad CRC, or says that the "
                "central directory is unreadable."
            ),
            "security": AUTH,
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": obj(
                            ["app_id", "version", "file"],
                            {
                                "app_id": STR,
                                "version": {"type": "string", "maxLength": 255},
                                "channel": STR,
                                "file": {"type": "string", "contentMediaType": "application/zip"},
                            },
                        )
                    },
                    JSON: {
                        "schema": obj(
                            ["app_id", "version", "external_url"],
                            {
                                "app_id": STR,
                                "version": {"type": "string", "maxLength": 255},
                                "external_url": {
                                    "type": "string",
                                    "format": "uri",
                                    "maxLength": 2048,
                                },
                                "channel": STR,
                                "checksum": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                                "size": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "exclusiveMaximum": 9223372036854775808,
                                },
                            },
                        )
                    },
                },
            },
            "responses": {
                "201": answer("Stored.", ref("Bundle")),
                "400": error(
                    "Invalid form or body, or a zip refused: the message names the entry "
                    "(e.g. `Zip entry '../evil.js' climbs out of the bundle folder (..)`)."
                ),
                "401": UNAUTHORIZED,
                "402": error("The organization is locked (over its plan)."),
                "403": error("Needs `upload`."),
                "404": error("App not found."),
                "409": error("The version exists already (deleted versions keep their name)."),
                "413": error("The zip is larger than the configured maximum bundle size."),
            },
        },
        "get": {
            "tags": ["bundles"],
            "summary": "An app's bundles",
            "description": "Not deleted, newest first, 50 a page.",
            "security": AUTH,
            "parameters": [
                app_id_param("query"),
                PAGE_PARAM,
            ],
            "responses": {
                "200": answer("Bundles.", {"type": "array", "items": ref("BundleListItem")}),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "404": error("App not found."),
            },
        },
        "delete": {
            "tags": ["bundles"],
            "summary": "Delete a bundle",
            "description": "Soft delete: storage is freed from that moment, statistics stay.",
            "security": AUTH,
            "parameters": [
                app_id_param("query"),
                {
                    "name": "version",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                },
            ],
            "responses": {
                "200": answer(
                    "Deleted.",
                    obj(
                        ["status", "app_id", "version"],
                        {"status": {"const": "ok"}, "app_id": STR, "version": STR},
                    ),
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("Needs `write`."),
                "404": error("App or bundle not found."),
            },
        },
    },
    "/channel": {
        "post": {
            "tags": ["channels"],
            "summary": "Create or update a channel",
            "description": (
                "Each platform has at most one public channel: `public: true` makes this "
                "channel the public channel of every platform it serves, replacing only "
                "those platforms' previous public channel. New channels default to public, "
                "`disable_auto_update: none` and `disable_auto_update_under_native: true`."
            ),
            "security": AUTH,
            "requestBody": json_body(
                {
                    "allOf": [
                        obj(
                            ["app_id", "channel"],
                            {
                                "app_id": STR,
                                "channel": {"type": "string", "minLength": 1, "maxLength": 255},
                                "version": nullable(STR),
                            },
                        ),
                        ref("ChannelFlags"),
                    ]
                }
            ),
            "responses": {
                "200": answer(
                    "The channel.",
                    {
                        "allOf": [
                            obj(
                                ["id", "app_id", "channel", "version"],
                                {
                                    "id": INT,
                                    "app_id": STR,
                                    "channel": STR,
                                    "version": nullable(STR),
                                },
                            ),
                            ref("ChannelFlags"),
                            ref("ChannelPublic"),
                        ]
                    },
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("Needs `write`."),
                "404": error("App or bundle version not found."),
            },
        },
        "get": {
            "tags": ["channels"],
            "summary": "An app's channels",
            "security": AUTH,
            "parameters": [app_id_param("query")],
            "responses": {
                "200": answer(
                    "Channels.",
                    {
                        "type": "array",
                        "items": {
                            "allOf": [
                                obj(
                                    ["id", "channel", "version", "devices"],
                                    {
                                        "id": INT,
                                        "channel": STR,
                                        "version": nullable(STR),
                                        "devices": {
                                            **NONNEG,
                                            "description": (
                                                "Devices seen in the last 30 days whose last "
                                                "check-in reported running this channel's "
                                                "bundle (a fresh install: its native version) "
                                                "on a platform the channel serves."
                                            ),
                                        },
                                    },
                                ),
                                ref("ChannelFlags"),
                                ref("ChannelPublic"),
                            ]
                        },
                    },
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "404": error("App not found."),
            },
        },
    },
    # -- statistics ------------------------------------------------------------------------------
    "/statistics/app/{app_id}/": {
        "get": stats_op(
            "An app's statistics",
            [app_id_param()],
            "Per day: `mau` (unique counted devices in the 30 days ending that day), "
            "`storage` (bytes of bundles existing at the day's end) and `bandwidth` (bytes "
            "downloaded that day). Days before the app existed are zeros; today is live.",
        )
    },
    "/statistics/app/{app_id}/bundle_usage/": {
        "get": {
            "tags": ["statistics"],
            "summary": "Share of devices on each bundle version",
            "description": "Per day, from the counted check-ins' versions.",
            "security": AUTH,
            "parameters": [app_id_param(), *STATS_DATE_PARAMS, FORMAT_PARAM],
            "responses": {
                "200": {
                    "description": (
                        "One row per day. CSV: one line per day and version "
                        "(`date,version,devices,share,day_devices`)."
                    ),
                    "content": {**json_content(ref("BundleUsageAnswer")), **CSV_ANSWER},
                },
                **STATS_ERRORS,
            },
        }
    },
    "/statistics/app/{app_id}/releases/": {
        "get": {
            "tags": ["statistics"],
            "summary": "Release health per bundle version",
            "description": (
                "What the plugin's stats events say happened to each bundle version over the "
                "range: unique counted devices (emulators and dev builds never count; a device "
                "that retries counts once) that ran it, were offered it, downloaded, installed, "
                "failed, rolled back, crashed; its launches and their p50/p95 launch time. "
                "`by=day`: one row per version per day, with `date`. Live within 10 seconds."
            ),
            "security": AUTH,
            "parameters": [
                app_id_param(),
                *STATS_DATE_PARAMS,
                FORMAT_PARAM,
                {
                    "name": "by",
                    "in": "query",
                    "required": False,
                    "schema": {"enum": ["day", "version"]},
                    "description": "`day`: a row per version and day (default: per version).",
                },
            ],
            "responses": {
                "200": {
                    "description": "One row per version (newest bundle first).",
                    "content": {
                        **json_content(
                            obj(["data"], {"data": {"type": "array", "items": ref("ReleaseRow")}})
                        ),
                        **CSV_ANSWER,
                    },
                },
                **STATS_ERRORS,
            },
        }
    },
    "/statistics/app/{app_id}/refused_devices/": {
        "get": {
            "tags": ["statistics"],
            "summary": "New devices refused by the per-address limit",
            "description": (
                "Per day, the check-ins of devices the app had not seen that were refused "
                "because their address had added its allowance of new devices to the app that "
                "hour (`OTAMETER_NEW_DEVICES_PER_IP_HOUR`). Those devices were not counted; a "
                "device refused twice counts twice."
            ),
            "security": AUTH,
            "parameters": [app_id_param(), *STATS_DATE_PARAMS],
            "responses": {
                "200": answer("One row per day.", ref("RefusedDevicesAnswer")),
                **STATS_ERRORS,
            },
        }
    },
    "/app/{app_id}/devices": {
        "get": {
            "tags": ["devices"],
            "summary": "An app's devices",
            "description": "Most recently seen first; `search` matches the start of a device "
            "id or a custom id.",
            "security": AUTH,
            "parameters": [
                app_id_param(),
                {
                    "name": "search",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 64},
                },
                PAGE_PARAM,
            ],
            "responses": {
                "200": answer(
                    "A page of 50 devices.",
                    obj(
                        ["data", "page", "next_page"],
                        {
                            "data": {"type": "array", "items": ref("Device")},
                            "page": NONNEG,
                            "next_page": nullable(NONNEG),
                        },
                    ),
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "404": error("App not found (or not visible to the key)."),
            },
        }
    },
    "/app/{app_id}/devices/{device_id}/events": {
        "get": {
            "tags": ["devices"],
            "summary": "A device's recent plugin events",
            "description": (
                "Its stats events, newest first, kept for `OTAMETER_STATS_RETENTION_DAYS` "
                "(default 7). `before` (the `next_before` of a page) pages on."
            ),
            "security": AUTH,
            "parameters": [
                app_id_param(),
                {
                    "name": "device_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 36},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                {
                    "name": "before",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 999999999999999999},
                },
            ],
            "responses": {
                "200": answer(
                    "Events.",
                    obj(
                        ["data", "next_before"],
                        {
                            "data": {"type": "array", "items": ref("DeviceEvent")},
                            "next_before": nullable(INT),
                        },
                    ),
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "404": error("App not found (or not visible to the key), or device not found."),
            },
        }
    },
    "/app/{app_id}/release_alerts": {
        "get": {
            "tags": ["devices"],
            "summary": "Release regressions raised for the app",
            "description": (
                "Each `release_regression` the release guard raised (once per version and "
                "channel), newest first, with what auto_rollback did."
            ),
            "security": AUTH,
            "parameters": [app_id_param()],
            "responses": {
                "200": answer(
                    "Alerts.",
                    obj(["data"], {"data": {"type": "array", "items": ref("ReleaseAlert")}}),
                ),
                "401": UNAUTHORIZED,
                "404": error("App not found (or not visible to the key)."),
            },
        }
    },
    "/statistics/org/{org_id}/": {
        "get": stats_op(
            "An organization's statistics",
            [org_id_param()],
            "The sum of its apps' rows (deleted apps included: their usage was real).",
        )
    },
    "/statistics/user/": {
        "get": stats_op(
            "Statistics over every org the caller can read",
            [],
            "The sum over every app the key can see, in every org the user belongs to.",
        )
    },
    # -- plans, usage and webhooks (api/plans.py) -------------------------------------------------
    "/plans": {
        "get": {
            "tags": ["plans"],
            "summary": "The plans",
            "security": AUTH,
            "responses": {
                "200": answer("Plans.", {"type": "array", "items": ref("Plan")}),
                "401": UNAUTHORIZED,
            },
        }
    },
    "/organization/{org_id}/release_guard": {
        "get": {
            "tags": ["plans"],
            "summary": "The org's release-guard thresholds",
            "description": (
                "When a `release_regression` is raised: the server's thresholds "
                "(`OTAMETER_RELEASE_*`) with the org's own `overrides`."
            ),
            "security": AUTH,
            "parameters": [org_id_param()],
            "responses": {
                "200": answer("The thresholds in effect.", ref("ReleaseGuard")),
                "401": UNAUTHORIZED,
                "404": error("Organization not found (or not visible to the key)."),
            },
        },
        "put": {
            "tags": ["plans"],
            "summary": "Set the org's release-guard thresholds",
            "description": "Sets the thresholds given; `null` goes back to the server's value.",
            "security": AUTH,
            "parameters": [org_id_param()],
            "requestBody": json_body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "min_devices": nullable(
                            {"type": "integer", "minimum": 1, "maximum": 1000000000}
                        ),
                        **{
                            name: nullable({"type": "number", "minimum": 0, "maximum": 1})
                            for name in ("max_rollback_rate", "max_failure_rate", "max_crash_rate")
                        },
                    },
                }
            ),
            "responses": {
                "200": answer("The thresholds in effect.", ref("ReleaseGuard")),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("Needs `admin`, with a key not limited to some apps."),
                "404": error("Organization not found (or not visible to the key)."),
            },
        },
    },
    "/organization/{org_id}/usage": {
        "get": {
            "tags": ["plans"],
            "summary": "An organization's usage against its plan",
            "description": "contract.md, Plans and usage.",
            "security": AUTH,
            "parameters": [org_id_param()],
            "responses": {
                "200": answer("The usage.", ref("Usage")),
                "401": UNAUTHORIZED,
                "404": error("Organization not found."),
            },
        }
    },
    "/organization/{org_id}/webhooks": {
        "get": {
            "tags": ["webhooks"],
            "summary": "An organization's webhooks",
            "security": AUTH,
            "parameters": [org_id_param()],
            "responses": {
                "200": answer("Webhooks.", {"type": "array", "items": ref("Webhook")}),
                "401": UNAUTHORIZED,
                "403": error("Needs `admin` and a key not limited to some apps."),
                "404": error("Organization not found."),
            },
        },
        "post": {
            "tags": ["webhooks"],
            "summary": "Add a webhook",
            "description": (
                "Events are POSTed to `url`, signed as Standard Webhooks do: headers "
                "`webhook-id` (the delivery id, the same on every retry), `webhook-timestamp` "
                "(Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "
                '"id.timestamp.body">`, keyed with `secret` as UTF-8 bytes; `X-Otameter-Event` '
                "names the event. Without `secret` one is generated and returned once. `url` "
                "must be an absolute http(s) URL without credentials, spaces or control "
                "characters, whose host resolves only to public addresses: loopback, private, "
                "link-local, multicast and reserved ones are refused (400) unless the operator "
                "allows them with `OTAMETER_WEBHOOK_ALLOW_PRIVATE`. The address is checked "
                "again at every delivery; redirects are not followed."
            ),
            "security": AUTH,
            "parameters": [org_id_param()],
            "requestBody": json_body(
                obj(
                    ["url"],
                    {
                        "url": {
                            "type": "string",
                            "format": "uri",
                            "maxLength": 2048,
                            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                        },
                        "secret": {"type": "string", "minLength": 8, "maxLength": 255},
                    },
                )
            ),
            "responses": {
                "201": answer("Created.", ref("Webhook")),
                "400": error(
                    "`url` is not an absolute http(s) URL, carries credentials or control "
                    "characters, does not resolve or resolves to a non-public address; or "
                    "`secret` is not 8 to 255 characters."
                ),
                "401": UNAUTHORIZED,
                "403": error("Needs `admin` and a key not limited to some apps."),
                "404": error("Organization not found."),
            },
        },
    },
    "/organization/{org_id}/webhooks/deliveries": {
        "get": {
            "tags": ["webhooks"],
            "summary": "Webhook deliveries, newest first",
            "security": AUTH,
            "parameters": [
                org_id_param(),
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {"enum": ["pending", "delivered", "failed"]},
                },
                PAGE_PARAM,
            ],
            "responses": {
                "200": answer("Deliveries.", {"type": "array", "items": ref("WebhookDelivery")}),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("Needs `admin` and a key not limited to some apps."),
                "404": error("Organization not found."),
            },
        }
    },
    "/organization/{org_id}/webhooks/{webhook_id}": {
        "delete": {
            "tags": ["webhooks"],
            "summary": "Remove a webhook",
            "security": AUTH,
            "parameters": [
                org_id_param(),
                {"name": "webhook_id", "in": "path", "required": True, "schema": STR},
            ],
            "responses": {
                "200": answer("Removed.", obj(["status"], {"status": {"const": "ok"}})),
                "401": UNAUTHORIZED,
                "403": error("Needs `admin` and a key not limited to some apps."),
                "404": error("Organization or webhook not found."),
            },
        }
    },
}


def operation_id(method: str, path: str) -> str:
    """``get_statistics_app_app_id``: stable names for generated clients."""
    words = re.findall(r"[A-Za-z0-9]+", path.replace(".json", "").replace(".zip", ""))
    return "_".join([method, *(word.lower() for word in words)])


def with_bounds(op: dict[str, Any]) -> dict[str, Any]:
    """The operation with the answers every route may give (api/bounds.py)."""
    responses = dict(op["responses"])
    responses.setdefault("400", error("A control character in the URL."))
    if "requestBody" in op:
        responses.setdefault(
            "413",
            error("The body is over this route's bound (see README, Limits); connection closed."),
        )
    return {**op, "responses": responses}


def _with_auth_limit(op: dict[str, Any]) -> dict[str, Any]:
    if not op.get("security") or "429" in op["responses"]:
        return op
    return {**op, "responses": {**op["responses"], "429": TOO_MANY_FAILURES}}


def build_document(
    served: set[tuple[str, str]] | None = None, server_url: str | None = None
) -> dict[str, Any]:
    """The document; with ``served`` ((path, method) pairs) only the operations served."""
    paths: dict[str, dict[str, Any]] = {}
    for path, operations in OPERATIONS.items():
        kept = {
            method: {"operationId": operation_id(method, path), **with_bounds(_with_auth_limit(op))}
            for method, op in operations.items()
            if served is None or (path, method) in served
        }
        if kept:
            paths[path] = kept
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "otameter",
            "version": VERSION,
            "description": (
                "Usage metering and statistics for Capacitor live updates. Every error is "
                '`{"error": message, "status": "KO"}`, except on the plugin endpoints, which '
                "answer the plugin protocol's `{error, message, kind}`. Before any route, the "
                "server answers (and closes the connection) 431 to a request head over "
                "`OTAMETER_MAX_HEADER_BYTES`, 408 to one not complete within "
                "`OTAMETER_HEADER_TIMEOUT` seconds, and 503 to a connection over "
                "`OTAMETER_MAX_CONNECTIONS`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "authorization": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "authorization",
                    "description": "An API key (a `Bearer ` prefix is accepted).",
                },
                "capgkey": {"type": "apiKey", "in": "header", "name": "capgkey"},
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


# -- the route -----------------------------------------------------------------------------------

#: Paths that belong to the browser dashboard (HTML and session cookies), not to the API.
NOT_API_PREFIXES = ("/dashboard",)


def served_operations(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    """(path, method) of every API route in ``routes`` (HEAD, added for GET, left out)."""
    served: set[tuple[str, str]] = set()
    for route in routes:
        if not isinstance(route, Route) or route.path.startswith(NOT_API_PREFIXES):
            continue
        for method in route.methods or ():
            if method != "HEAD":
                served.add((route.path, method.lower()))
    return served


async def openapi_json(request: Request) -> Response:
    from .api.common import JSONResponse

    cached = getattr(request.app.state, "openapi_document", None)
    if cached is None:
        rt = request.app.state.runtime
        cached = build_document(served_operations(list(request.app.routes)), rt.settings.public_url)
        request.app.state.openapi_document = cached
    return JSONResponse(cached)


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
