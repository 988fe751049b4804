"""The endpoints the capacitor-updater plugin calls: /updates, /stats, /channel_self, downloads.

Every answer follows plugin-protocol.md to the byte: a success body never carries ``error``
or ``kind``, every other update answer carries a ``kind``, channel ids are integers.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import msgspec
import orjson
from sqlalchemy import delete, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import channels, protocol
from ..bundle_store import BundleBytes
from ..catalog import AppSnapshot
from ..clock import to_ms
from ..download import MeteredFileResponse
from ..metering.events import CheckIn, Download, DownloadCorrection, PluginStat
from ..models import plugin as models
from ..models.shapes import AppId, DeviceId, Platform, SemVer
from ..openapi import INT, STR, SchemaLike, answer, describe, error, json_body, json_content
from ..protocol import ProtocolError
from ..releases import parse_duration, stat_metadata
from ..runtime import Runtime
from ..storage import schema as s
from ..storage.dialect import dialect_insert
from .common import JSONResponse, client_ip, runtime

# Signed download links stay valid long enough for a device to resume a download later.
DOWNLOAD_LINK_SECONDS = 7 * 24 * 3600


async def app_snapshot(rt: Runtime, app_id: str) -> AppSnapshot | None:
    hit, snapshot = rt.catalog.cached(app_id)
    if hit:
        return snapshot
    # When the cached snapshot expires under load, every request in flight misses at once:
    # one load per app runs, the others wait for it instead of each querying.
    loop = asyncio.get_running_loop()
    key = (loop, app_id)
    load = rt.snapshot_loads.get(key)
    if load is None:
        load = loop.create_task(run_in_threadpool(rt.catalog.get, app_id))
        rt.snapshot_loads[key] = load
        load.add_done_callback(lambda _: rt.snapshot_loads.pop(key, None))
    return await asyncio.shield(load)


def app_not_found(app_id: str) -> JSONResponse:
    # HTTP 200 so the plugin reads the code instead of a transport error.
    return JSONResponse(
        protocol.no_update("app_not_found", f"App {app_id} is not registered on this server")
    )


# How long a device waits before it checks again for an app this server does not know. The
# plugin honours Retry-After (capped at 24 h) and skips its update, channel and stats calls
# meanwhile (plugin-protocol.md §2), so a fleet shipped with a wrong app id or server costs a
# request an hour per device, and an app registered late starts updating within the hour.
UNKNOWN_APP_RETRY_SECONDS = 3600


def unknown_app_backoff(app_id: str) -> JSONResponse:
    """The update check of an app that does not exist: 429, as Capgo answers it."""
    return JSONResponse(
        {
            "error": "app_not_found",
            "message": f"App {app_id} is not registered on this server",
            "retryAfterSeconds": UNKNOWN_APP_RETRY_SECONDS,
        },
        status_code=429,
        headers={"retry-after": str(UNKNOWN_APP_RETRY_SECONDS)},
    )


async def updates(request: Request) -> Response:
    return await update_check(runtime(request), request, await request.body())


async def update_check(rt: Runtime, request: Request, body: bytes) -> Response:
    """An update check: decode and validate in one pass, log the check-in, answer.

    The check-in is only logged here (``Writer.append``: one compact record per group
    commit); the rollup folds it into the device table and the day's bitmaps within seconds.
    """
    try:
        req = protocol.decode_update_request(body)
    except ProtocolError as exc:
        return JSONResponse(exc.body(), status_code=exc.http_status)
    snapshot = await app_snapshot(rt, req.app_id)
    if snapshot is None:
        return unknown_app_backoff(req.app_id)
    wait = await rt.limits.checkins.admit(req.app_id, req.device_id)
    if wait is not None:
        return rate_limited(wait, "Too many update checks from this device")
    # The new-devices limit is applied when the rollup drains the log (checkin_log.py): the
    # answer does not wait for the device table, so a refused new device is answered 200.
    # The answer is decided first: the check-in records the version it offers (release
    # health's ``offered``).
    answer = update_answer(rt, request, snapshot, req)
    await rt.writer.append(
        CheckIn(
            req.app_id,
            req.device_id,
            to_ms(rt.clock.now()),
            req.platform,
            req.version_name,
            req.is_emulator,
            req.is_prod,
            req.version_build,
            req.version_os,
            req.plugin_version,
            req.custom_id,
            client_ip(request, rt.settings.trusted_proxies),
            live=True,
            offered_version=answer["version"] if "url" in answer else "",
        )
    )
    return EncodedJSON(orjson.dumps(answer))


class EncodedJSON(Response):
    """A JSON answer already encoded: only its two headers are built."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]


def rate_limited(wait: int, message: str) -> JSONResponse:
    """429 with ``Retry-After``, which the plugin honours (it also reads retryAfterSeconds)."""
    return JSONResponse(
        {**protocol.no_update("too_many_requests", message), "retryAfterSeconds": wait},
        status_code=429,
        headers={"retry-after": str(wait)},
    )


def update_answer(
    rt: Runtime, request: Request, snapshot: AppSnapshot, req: protocol.UpdateRequest
) -> models.UpdateAvailable | models.PluginError:
    if snapshot.lock_code:
        return protocol.no_update(snapshot.lock_code, snapshot.lock_reason or "Plan limit reached")
    channel = channels.select_channel(snapshot, req)
    if channel is None:
        # Never names the channel: a private channel's name is not the device's to learn.
        return protocol.no_update("no_channel", "No channel serves this app to this device")
    if not channel.allows_platform(req.platform):
        return protocol.no_update(
            f"disabled_platform_{req.platform}",
            f"Channel {channel.name} does not serve {req.platform}",
        )
    if req.is_emulator and not channel.allow_emulator:
        return protocol.no_update(
            "disable_emulator", f"Channel {channel.name} does not serve emulators"
        )
    if not req.is_prod and not channel.allow_dev:
        return protocol.no_update(
            "disable_dev_build", f"Channel {channel.name} does not serve dev builds"
        )
    bundle = channel.bundle
    if bundle is None or bundle.version == req.version_name:
        return protocol.no_update()
    if req.version_name == "builtin" and req.version_build == bundle.version:
        # A fresh install ships this very bundle: downloading it again would only cost
        # bandwidth and a reload.
        return protocol.no_update()
    if bundle.version == "builtin" and req.version_name == "builtin":
        return protocol.no_update("already_on_builtin", "Already on the builtin bundle")
    blocked = channels.auto_update_block(channel, bundle.version, req.version_build)
    if blocked is not None:
        return blocked
    if bundle.external_url == "":
        return protocol.no_update("no_bundle_url", f"Bundle {bundle.version} has no download URL")
    url = bundle.external_url or download_url(rt, request, bundle.id, req.device_id)
    return protocol.update_available(bundle.version, url, bundle.checksum or "")


def base_url(rt: Runtime, request: Request) -> str:
    if rt.settings.public_url:
        return rt.settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def download_url(rt: Runtime, request: Request, bundle_id: str, device_id: str) -> str:
    expires = str(int(rt.clock.now().timestamp()) + DOWNLOAD_LINK_SECONDS)
    query = urlencode(
        {"device_id": device_id, "expires": expires, "sig": rt.sign(bundle_id, device_id, expires)}
    )
    return f"{base_url(rt, request)}/download/{bundle_id}.zip?{query}"


async def download(request: Request) -> Response:
    rt = runtime(request)
    bundle_id = request.path_params["bundle_id"]
    device_id = request.query_params.get("device_id", "")
    expires = request.query_params.get("expires", "")
    sig = request.query_params.get("sig", "")
    if (
        # isascii: int() and compare_digest refuse other digits and characters. A Unix time
        # has at most 20 digits; int() refuses (ValueError) more than 4300 of them.
        not (expires.isascii() and expires.isdigit() and len(expires) <= 20 and sig.isascii())
        or int(expires) < rt.clock.now().timestamp()
        or not rt.verify(sig, bundle_id, device_id, expires)
    ):
        return JSONResponse(
            {"error": "Download link is invalid or expired", "status": "KO"}, status_code=403
        )

    def load() -> tuple[Any, BundleBytes | None]:
        b = s.bundles.c
        with rt.read_engine.connect() as conn:
            row = conn.execute(
                select(b.app_id, b.version, b.size, b.checksum, b.storage, b.storage_path).where(
                    b.id == bundle_id, b.deleted_at.is_(None), b.storage.is_not(None)
                )
            ).first()
        if row is None:
            return None, None
        stored = BundleBytes(bundle_id, row.app_id, row.storage, row.storage_path, row.size)
        # A file another machine stored (before its move into the database) is not here.
        if row.storage == "file" and not rt.bundles.files.exists(stored):
            return None, None
        return row, stored

    bundle, stored = await run_in_threadpool(load)
    if bundle is None or stored is None:
        return JSONResponse({"error": "Bundle not found", "status": "KO"}, status_code=404)
    store = rt.bundles.of(stored.storage)
    recorded: list[int] = []

    async def on_sent(total: int, completed: bool) -> None:
        if not recorded:
            if total <= 0:
                return
            (outcome,) = await rt.submit(
                [Download(bundle.app_id, device_id, bundle.version, total, to_ms(rt.clock.now()))]
            )
            recorded.append(int(outcome.value))
        else:
            await rt.submit([DownloadCorrection(bundle.app_id, recorded[0], total)])

    return MeteredFileResponse(
        opener=partial(store.reader, stored),
        etag=bundle.checksum or bundle_id,
        filename=f"{bundle.app_id}-{bundle.version}.zip",
        on_sent=on_sent,
        size=bundle.size,
    )


async def stats(request: Request) -> Response:
    rt = runtime(request)
    try:
        batch, parsed = protocol.decode_stats_body(
            await request.body(), rt.settings.stats_max_events
        )
    except ProtocolError as exc:
        return JSONResponse(exc.body(), status_code=exc.http_status)
    now_ms = to_ms(rt.clock.now())
    events: list[PluginStat] = []
    results: list[models.StatsResult] = []
    for index, item in enumerate(parsed):
        if isinstance(item, ProtocolError):
            results.append(protocol.stats_result(index, item))
            continue
        snapshot = await app_snapshot(rt, item.app_id)
        if snapshot is None:
            error = ProtocolError("app_not_found", f"App {item.app_id} is not registered")
            results.append(protocol.stats_result(index, error))
            continue
        events.append(
            PluginStat(
                app_id=item.app_id,
                device_id=item.device_id,
                action=item.action,
                version_name=item.version_name,
                # The device's clock is not trusted for ordering; keep it in metadata only.
                at_ms=now_ms,
                old_version_name=item.old_version_name,
                metadata=stat_metadata(item.metadata, item.timestamp),
                platform=item.platform,
                is_emulator=item.is_emulator,
                is_prod=item.is_prod,
                custom_id=item.custom_id or "",
                version_build=item.version_build or "",
                plugin_version=item.plugin_version or "",
                device_ts=item.timestamp,
                duration_ms=parse_duration(item.metadata),
            )
        )
        results.append(protocol.stats_result(index))
    devices = {(event.app_id, event.device_id) for event in events}
    waits = [await rt.limits.stats.admit(app_id, device_id) for app_id, device_id in devices]
    longest = max((wait for wait in waits if wait is not None), default=None)
    if longest is not None:
        return rate_limited(longest, "Too many stats posts from this device")
    if events:
        await rt.submit(events)
    if batch:
        return JSONResponse(protocol.stats_ok(results))
    # A single object answers like Capgo: its own error, or a plain ok.
    (only,) = parsed
    if isinstance(only, ProtocolError):
        return JSONResponse(only.body(), status_code=only.http_status)
    if results[0]["status"] != "ok":
        return app_not_found(only.app_id)
    return JSONResponse(protocol.stats_ok())


# -- channel_self ------------------------------------------------------------------------------


async def channel_self(request: Request) -> Response:
    rt = runtime(request)
    try:
        if request.method == "GET":
            req = protocol.parse_channel_query(request.query_params)
        elif request.method == "DELETE" and request.query_params:
            # Old plugins send unsetChannel() as DELETE with the info fields in the query,
            # as Capgo's channel_self.ts reads them; a JSON body is accepted too.
            req = protocol.parse_channel_query(request.query_params)
            if not req.device_id:
                raise ProtocolError("missing_device_id", "device_id is required", 400, "device_id")
        else:
            req = protocol.decode_channel_request(
                await request.body(), require_channel=request.method == "POST"
            )
    except ProtocolError as exc:
        return JSONResponse(exc.body(), status_code=exc.http_status)
    snapshot = await app_snapshot(rt, req.app_id)
    if snapshot is None:
        return JSONResponse(
            protocol.channel_error("app_not_found", f"App {req.app_id} is not registered")
        )
    if request.method == "GET":
        return JSONResponse(list_channels(snapshot, req))
    if request.method == "PUT":
        return JSONResponse(get_channel(snapshot, req))
    if request.method == "DELETE":
        return JSONResponse(await unset_channel(rt, snapshot, req))
    return JSONResponse(await set_channel(rt, snapshot, req))


def list_channels(
    snapshot: AppSnapshot, req: protocol.ChannelRequest
) -> list[models.ChannelListEntry]:
    # ``public`` says whether the channel is the public one of the device's platform.
    return [
        protocol.channel_list_entry(
            c.id,
            c.name,
            c.public_for(req.platform) if req.platform else c.public,
            c.allow_device_self_set,
        )
        for c in sorted(snapshot.channels.values(), key=lambda c: c.id)
        if channels.may_use(c, req)
    ]


def get_channel(
    snapshot: AppSnapshot, req: protocol.ChannelRequest
) -> models.ChannelGet | models.PluginError:
    """getChannel(): what the plugin will persist as its channel (plugin-protocol.md §4).

    An old plugin's override comes first. Otherwise the device's own ``defaultChannel`` when it
    may use it (answering the public channel instead would move the device for good), else
    its platform's public channel.
    """
    override = channels.override_channel(snapshot, req)
    if override is not None:
        return protocol.channel_get(override.name, "override", override.allow_device_self_set)
    own = channels.device_channel(snapshot, req)
    if own is not None:
        return protocol.channel_get(own.name, "default", own.allow_device_self_set)
    public = snapshot.public_channel(req.platform)
    if public is None:
        return protocol.channel_error("channel_not_found", "No public channel for this device")
    return protocol.channel_get(public.name, "default", public.allow_device_self_set)


async def set_channel(
    rt: Runtime, snapshot: AppSnapshot, req: protocol.ChannelRequest
) -> models.ChannelSetOk | models.PluginError:
    """setChannel(c): may the device join c? Only old plugins get a server-side override."""
    name = req.channel or ""
    channel = snapshot.channels.get(name)
    if channel is None:
        return protocol.channel_error("channel_not_found", f"Channel {name} does not exist")
    if not channels.serves_device(channel, req):
        return protocol.channel_error(
            "channel_not_compatible", f"Channel {name} does not serve this device"
        )
    if not channels.may_use(channel, req):
        return protocol.channel_error(
            "channel_self_set_not_allowed", "This channel does not allow devices to join it"
        )
    if channels.uses_local_channel(req.plugin_version):
        # The plugin stores the channel itself and sends it as defaultChannel from now on;
        # unsetChannel() sends nothing, so an override kept here would outlive it.
        return protocol.channel_set_ok(f"Device may use channel {name}", allow_set=True)
    if channel.public_for(req.platform):
        # Choosing the platform's public channel is the same as having no override.
        await rt.writer.run(lambda conn: _clear_override(conn, snapshot.app_id, req.device_id))
        rt.catalog.invalidate(snapshot.app_id)
        return protocol.channel_set_ok(f"Channel {name} is the default channel", allow_set=True)
    if not channel.allow_device_self_set:
        return protocol.channel_error(
            "channel_self_set_not_allowed", "This channel does not allow devices to join it"
        )
    now_ms = to_ms(rt.clock.now())
    await rt.writer.run(
        lambda conn: _set_override(conn, snapshot.app_id, req.device_id, channel.id, now_ms)
    )
    rt.catalog.invalidate(snapshot.app_id)
    return protocol.channel_set_ok(f"Device joined channel {name}", allow_set=True)


async def unset_channel(
    rt: Runtime, snapshot: AppSnapshot, req: protocol.ChannelRequest
) -> models.ChannelSetOk:
    """unsetChannel() of plugins older than 7.34 / 8.2: drop the override, if any.

    Newer plugins send no request; for them nothing is stored, so there is nothing to drop.
    Answering ok when there was no override keeps the call idempotent.
    """
    if not channels.uses_local_channel(req.plugin_version) and req.device_id in snapshot.overrides:
        await rt.writer.run(lambda conn: _clear_override(conn, snapshot.app_id, req.device_id))
        rt.catalog.invalidate(snapshot.app_id)
    return protocol.channel_set_ok("The device uses its default channel")


def _clear_override(conn: Any, app_id: str, device_id: str) -> None:
    cd = s.channel_devices.c
    conn.execute(delete(s.channel_devices).where(cd.app_id == app_id, cd.device_id == device_id))


def _set_override(conn: Any, app_id: str, device_id: str, channel_id: int, now_ms: int) -> None:
    stmt = dialect_insert(conn, s.channel_devices).values(
        app_id=app_id, device_id=device_id, channel_id=channel_id, updated_at=now_ms
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["app_id", "device_id"],
            set_={"channel_id": channel_id, "updated_at": now_ms},
        )
    )


routes = [
    Route("/updates", updates, methods=["POST"]),
    Route("/stats", stats, methods=["POST"]),
    Route("/channel_self", channel_self, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/download/{bundle_id}.zip", download, methods=["GET", "HEAD"]),
]


# -- the OpenAPI description of these routes --------------------------------------------------


def plugin_op(
    summary: str,
    description: str,
    ok: SchemaLike,
    *,
    body: SchemaLike | None = None,
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
                models.PluginError,
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
    models.PluginError,
)
RATE_LIMITED = {
    "description": (
        "`too_many_requests`: the device is over its rate, or its address over its new "
        "devices for this app this hour (see README, Limits). The plugin waits `Retry-After` "
        "seconds (also in `retryAfterSeconds`)."
    ),
    "headers": {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
    "content": json_content(models.RateLimited),
}


DEVICE_QUERY = [
    {"name": name, "in": "query", "required": required, "schema": schema}
    for name, required, schema in (
        ("app_id", True, AppId),
        ("platform", True, Platform),
        ("device_id", False, DeviceId),
        ("is_emulator", False, Literal["true", "false"]),
        ("is_prod", False, Literal["true", "false"]),
        ("version_name", False, models.Text),
        ("version_build", False, models.Text),
        ("plugin_version", False, SemVer),
        ("custom_id", False, models.CustomId),
        ("defaultChannel", False, models.Text),
    )
]


describe(
    "/updates",
    {
        "post": plugin_op(
            "Update check",
            "Records the device's activity (the MAU source) and answers with the bundle of "
            "its channel, or a no-update code with HTTP 200 (`no_new_version_available`, "
            "`no_channel`, `need_plan_upgrade`, `disable_auto_update_to_major`, ...). The "
            "channel: an old plugin's override (before 7.34 / 8.2), else the device's "
            "`defaultChannel` when it may use it (`no_channel` when it may not), else its "
            "platform's public channel. An app that does not exist answers 429 with "
            "`Retry-After`.",
            {"anyOf": [models.UpdateAvailable, models.PluginError]},
            body=models.DeviceInfo,
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
                    "content": json_content({"anyOf": [models.UnknownApp, models.RateLimited]}),
                },
            },
        )
    },
)

describe(
    "/stats",
    {
        "post": {
            **plugin_op(
                "Plugin events",
                "One event object or an array of them (at most 200, the plugin's queue; "
                "`OTAMETER_STATS_MAX_EVENTS`). An array answers "
                "`results`, one per element; a single object answers `{status: ok}` or its "
                "own error.",
                {
                    "anyOf": [
                        models.StatsOk,
                        models.PluginError,
                    ]
                },
                body={
                    "anyOf": [
                        models.StatsEvent,
                        Annotated[list[models.StatsEvent], msgspec.Meta(max_length=200)],
                    ]
                },
                more={
                    "413": answer(
                        "An array of more than 200 events (`too_many_events`), or a body over "
                        "1 MB (`payload_too_large`).",
                        models.PluginError,
                    ),
                    "429": RATE_LIMITED,
                },
            ),
        }
    },
)

describe(
    "/channel_self",
    {
        "get": plugin_op(
            "List channels",
            "The channels the device may choose (public or self-assignable, compatible).",
            {
                "anyOf": [
                    list[models.ChannelListEntry],
                    models.PluginError,
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
            {"anyOf": [models.ChannelSetOk, models.PluginError]},
            body=models.ChannelRequest,
            more={"413": TOO_LARGE},
        ),
        "put": plugin_op(
            "Get the device's channel",
            "An old plugin's override; else the device's `defaultChannel` when it may use it; "
            "else its platform's public channel.",
            {"anyOf": [models.ChannelGet, models.PluginError]},
            body=models.ChannelRequest,
            more={"413": TOO_LARGE},
        ),
        "delete": plugin_op(
            "Unset the device's channel (plugins before 7.34 / 8.2)",
            "Removes an old plugin's server-side override. Newer plugins unset locally and "
            "send nothing; for them this is a no-op. The info fields come as a query string "
            "(as GET) or a JSON body.",
            {"anyOf": [models.ChannelSetOk, models.PluginError]},
            parameters=DEVICE_QUERY,
        ),
    },
)

describe(
    "/download/{bundle_id}.zip",
    {
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
)
