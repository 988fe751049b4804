"""The management API: organizations, members, API keys, apps, bundles and channels."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import anyio
import msgspec
from sqlalchemy import Connection, delete, func, select, update
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import ROLES, Level, Principal, hash_key, id_set, new_api_key, org_role
from ..bundle_store import BundleBytes, StagedUpload, TrackedUpload
from ..bundle_upload import receive_bundle
from ..bundles import validate_zip
from ..channel_store import claim_public, public_column, public_for_served
from ..clock import to_ms
from ..errors import ApiError, bad_request, not_found
from ..metering.events import BundleDelete, BundleUpload, Outcome
from ..metering.ingest import insert_channel
from ..models import management as models
from ..models.common import StatusOk
from ..models.shapes import PLATFORMS, iso
from ..openapi import (
    AUTH,
    BAD_REQUEST,
    JSON,
    UNAUTHORIZED,
    answer,
    app_id_param,
    describe,
    error,
    json_body,
    query_parameters,
)
from ..runtime import Runtime
from ..sessions import end_key_sessions
from ..storage import schema as s
from .common import (
    JSONResponse,
    caller,
    form_model,
    json_model,
    loose_text,
    query_model,
    read_db,
    runtime,
)

T = TypeVar("T")
PAGE_SIZE = 50
INSUFFICIENT = "Insufficient permissions"
APP_LIMITED = "A key limited to some apps cannot act for the whole organization"
KEYS_NEED = "Managing API keys needs a key of mode 'all' that is not limited to some apps"
LAST_OWNER = "An organization keeps at least one super_admin"
CHANGED_AFTER_FILE = "'app_id' and 'version' must not change after 'file' in the form"


# -- access checks ---------------------------------------------------------------------------


def org_access(
    conn: Connection, principal: Principal, org_id: str, need: Level, *, whole_org: bool = False
) -> Any:
    """The org row if the key may act on it at ``need``; 404 if the key cannot see it.

    ``whole_org``: the action concerns the whole org (members, webhooks, keys, usage). A key
    limited to some apps can see the org but not act for all of it: 403, which tells it
    nothing new (no oracle: an org it cannot see still answers 404, like a missing one).
    """
    org = conn.execute(select(s.orgs).where(s.orgs.c.id == org_id)).first()
    level = org_role(conn, principal, org_id) if org is not None else None
    if org is None or level is None:
        raise not_found("Organization not found")
    if whole_org and not principal.whole_orgs:
        raise ApiError(403, APP_LIMITED)
    if level < need:
        raise ApiError(403, INSUFFICIENT)
    return org


def app_access(conn: Connection, principal: Principal, app_id: str, need: Level) -> Any:
    app = conn.execute(
        select(s.apps).where(s.apps.c.app_id == app_id, s.apps.c.deleted_at.is_(None))
    ).first()
    level = None
    if app is not None and principal.sees_app(app_id, app.owner_org):
        level = org_role(conn, principal, app.owner_org)
    if app is None or level is None:
        raise not_found("App not found")
    if level < need:
        raise ApiError(403, INSUFFICIENT)
    return app


def _app_json(row: Any) -> models.App:
    return {
        "app_id": row.app_id,
        "name": row.name,
        "owner_org": row.owner_org,
        "created_at": iso(row.created_at),
    }


def _rejection(outcome: Outcome) -> ApiError:
    reason = outcome.reason or "rejected"
    return ApiError(409 if "already exists" in reason else 404, reason)


# -- organizations and members ---------------------------------------------------------------


async def create_org(request: Request) -> Response:
    principal = await caller(request)
    name = (await json_model(request, models.NewOrganization)).name.strip()
    if (
        principal.level < Level.OWNER
        or principal.limited_orgs is not None
        or not principal.whole_orgs
    ):
        raise ApiError(403, "Creating an organization needs an unrestricted key of mode 'all'")
    rt = runtime(request)
    org_id = str(uuid.uuid4())
    now_ms = to_ms(rt.clock.now())
    trial_ends = now_ms + rt.settings.trial_days * 86_400_000

    def write(conn: Connection) -> None:
        conn.execute(
            s.orgs.insert().values(
                id=org_id,
                name=name,
                created_by=principal.user_id,
                created_at=now_ms,
                cycle_anchor=rt.clock.now().day,
                trial_ends_at=trial_ends,
            )
        )
        conn.execute(
            s.org_members.insert().values(
                org_id=org_id, user_id=principal.user_id, role="super_admin", created_at=now_ms
            )
        )

    await rt.writer.run(write)
    return JSONResponse({"id": org_id, "name": name}, status_code=201)


async def list_orgs(request: Request) -> Response:
    return JSONResponse(await read_orgs(request, await caller(request)))


async def read_orgs(request: Request, principal: Principal) -> list[models.Organization]:
    """The orgs ``principal`` can see (``GET /organization``; the dashboard's too)."""

    def read(conn: Connection) -> list[models.Organization]:
        o, m = s.orgs.c, s.org_members.c
        rows = conn.execute(
            select(o.id, o.name, o.plan, o.created_at, m.role)
            .join(s.org_members, m.org_id == o.id)
            .where(m.user_id == principal.user_id)
            .order_by(o.created_at, o.id)
        )
        return [
            {
                "id": r.id,
                "name": r.name,
                "role": r.role,
                "plan": r.plan,
                "created_at": iso(r.created_at),
            }
            for r in rows
            if principal.sees_org(r.id)
        ]

    return await read_db(request, read)


async def add_member(request: Request) -> Response:
    """Add a member by e-mail, or record an invitation for an address without a user.

    Both answer the same status and body, so the route tells nobody whether an address has
    an account. Role rules: only a super_admin grants or changes super_admin, and no change
    leaves an org without one.
    """
    principal = await caller(request)
    given = await json_model(request, models.NewMember)
    org_id = given.orgId.strip()
    email = given.email.strip().lower()
    role = given.invite_type.strip()
    if role not in ROLES:
        raise bad_request(f"'invite_type' must be one of {', '.join(ROLES)}")
    if "@" not in email:
        raise bad_request("'email' must be an e-mail address")
    rt = runtime(request)
    need = Level.OWNER if role == "super_admin" else Level.ADMIN
    now_ms = to_ms(rt.clock.now())

    def write(conn: Connection) -> models.Membership:
        org_access(conn, principal, org_id, need, whole_org=True)
        # Role changes of one org take turns (PostgreSQL row lock; SQLite has one writer), so
        # two super_admins demoting each other at once cannot both see the other remain.
        conn.execute(select(s.orgs.c.id).where(s.orgs.c.id == org_id).with_for_update())
        # The caller's role again, after the lock: a concurrent change may have lowered it.
        granted = org_role(conn, principal, org_id) or Level.READ
        if granted < need:
            raise ApiError(403, INSUFFICIENT)
        user_id = conn.scalar(select(s.users.c.id).where(func.lower(s.users.c.email) == email))
        if user_id is None:
            _invite(conn, principal, org_id, email, role, granted, now_ms)
        else:
            _set_role(conn, org_id, user_id, role, granted, now_ms)
        return {"org_id": org_id, "email": email, "role": role, "status": "ok"}

    return JSONResponse(await rt.writer.run(write))


def _set_role(
    conn: Connection, org_id: str, user_id: str, role: str, granted: Level, now_ms: int
) -> None:
    m = s.org_members.c
    current = conn.scalar(select(m.role).where(m.org_id == org_id, m.user_id == user_id))
    if current is None:
        conn.execute(
            s.org_members.insert().values(
                org_id=org_id, user_id=user_id, role=role, created_at=now_ms
            )
        )
        return
    if current == "super_admin" and role != "super_admin":
        if granted < Level.OWNER:
            raise ApiError(403, "Only a super_admin can change the role of a super_admin")
        owners = conn.scalar(
            select(func.count())
            .select_from(s.org_members)
            .where(m.org_id == org_id, m.role == "super_admin")
        )
        if owners is None or owners <= 1:
            raise ApiError(409, LAST_OWNER)
    conn.execute(
        update(s.org_members).where(m.org_id == org_id, m.user_id == user_id).values(role=role)
    )


def _invite(
    conn: Connection,
    principal: Principal,
    org_id: str,
    email: str,
    role: str,
    granted: Level,
    now_ms: int,
) -> None:
    i = s.org_invitations.c
    current = conn.scalar(select(i.role).where(i.org_id == org_id, i.email == email))
    # The same rule as for a member: only a super_admin takes super_admin back.
    if current == "super_admin" and role != "super_admin" and granted < Level.OWNER:
        raise ApiError(403, "Only a super_admin can change the role of a super_admin")
    if current is None:
        conn.execute(
            s.org_invitations.insert().values(
                org_id=org_id,
                email=email,
                role=role,
                invited_by=principal.user_id,
                created_at=now_ms,
            )
        )
    else:
        conn.execute(
            update(s.org_invitations)
            .where(i.org_id == org_id, i.email == email)
            .values(role=role, invited_by=principal.user_id)
        )


# -- API keys --------------------------------------------------------------------------------


def _require_key_manager(principal: Principal) -> None:
    if principal.level < Level.OWNER or not principal.whole_orgs:
        raise ApiError(403, KEYS_NEED)


def _expiry(value: str | None, now_ms: int) -> int | None:
    """``expires_at`` in epoch ms: an ISO 8601 date-time with a time zone, in the future."""
    if value is None:
        return None
    message = models.EXPIRES_AT
    if len(value) > 40:
        raise bad_request(message)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(message) from None
    if when.tzinfo is None or not 1970 <= when.year <= 9999:
        raise bad_request(message)
    expires_ms = to_ms(when)
    if expires_ms <= now_ms:
        raise bad_request(message)
    return expires_ms


def _key_json(row: Any, now_ms: int) -> models.ApiKeyInfo:
    return {
        "id": row.id,
        "name": row.name,
        "mode": row.mode,
        "limited_to_orgs": sorted(id_set(row.limited_to_orgs) or []),
        "limited_to_apps": sorted(id_set(row.limited_to_apps) or []),
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "expired": row.expires_at is not None and row.expires_at <= now_ms,
    }


async def create_key(request: Request) -> Response:
    principal = await caller(request)
    given = await json_model(request, models.NewApiKey)
    name = loose_text(given.name, "", 200)
    mode = given.mode
    orgs = sorted(set(given.limited_to_orgs))
    apps = sorted(set(given.limited_to_apps))
    rt = runtime(request)
    now_ms = to_ms(rt.clock.now())
    expires_ms = _expiry(given.expires_at, now_ms)
    _require_key_manager(principal)
    key = new_api_key()
    key_id = str(uuid.uuid4())

    def write(conn: Connection) -> None:
        # A key never sees more than the key that made it.
        for org_id in orgs:
            org_access(conn, principal, org_id, Level.READ)
        for app_id in apps:
            app = app_access(conn, principal, app_id, Level.READ)
            if orgs and app.owner_org not in orgs:
                raise bad_request(f"App {app_id} is not in the orgs the key is limited to")
        inherited_orgs = orgs or sorted(principal.limited_orgs or [])
        conn.execute(
            s.api_keys.insert().values(
                id=key_id,
                user_id=principal.user_id,
                name=name,
                key_hash=hash_key(key),
                mode=mode,
                limited_to_orgs=json.dumps(inherited_orgs) if inherited_orgs else None,
                limited_to_apps=json.dumps(apps) if apps else None,
                created_at=now_ms,
                expires_at=expires_ms,
            )
        )

    await rt.writer.run(write)
    body = {
        "id": key_id,
        "key": key,
        "name": name,
        "mode": mode,
        "limited_to_orgs": orgs,
        "limited_to_apps": apps,
        "created_at": iso(now_ms),
        "expires_at": iso(expires_ms),
    }
    return JSONResponse(body, status_code=201)


def _manageable_keys(conn: Connection, principal: Principal) -> list[Any]:
    """The user's keys that are not revoked and see no more than the caller's key."""
    k = s.api_keys.c
    rows = conn.execute(
        select(s.api_keys)
        .where(k.user_id == principal.user_id, k.revoked_at.is_(None))
        .order_by(k.created_at, k.id)
    )
    return [
        r for r in rows if principal.covers(id_set(r.limited_to_orgs), id_set(r.limited_to_apps))
    ]


async def list_keys(request: Request) -> Response:
    principal = await caller(request)
    _require_key_manager(principal)
    now_ms = to_ms(runtime(request).clock.now())

    def read(conn: Connection) -> list[models.ApiKeyInfo]:
        return [_key_json(r, now_ms) for r in _manageable_keys(conn, principal)]

    return JSONResponse(await read_db(request, read))


async def revoke_key(request: Request) -> Response:
    """Revoke a key: from this commit on, every process answers it 401 (nothing caches keys),
    and the dashboard sessions signed in with it end."""
    principal = await caller(request)
    _require_key_manager(principal)
    key_id = request.path_params["key_id"]
    rt = runtime(request)
    now_ms = to_ms(rt.clock.now())

    def write(conn: Connection) -> None:
        if not any(r.id == key_id for r in _manageable_keys(conn, principal)):
            raise not_found("API key not found")
        conn.execute(update(s.api_keys).where(s.api_keys.c.id == key_id).values(revoked_at=now_ms))
        end_key_sessions(conn, key_id)

    await rt.writer.run(write)
    return JSONResponse({"status": "ok", "id": key_id})


# -- apps ------------------------------------------------------------------------------------


async def create_app(request: Request) -> Response:
    principal = await caller(request)
    given = await json_model(request, models.NewApp)
    app_id = given.app_id.strip()
    name = loose_text(given.name, app_id, 200)
    owner_org = given.owner_org.strip()
    rt = runtime(request)
    now_ms = to_ms(rt.clock.now())

    def write(conn: Connection) -> models.App:
        org_access(conn, principal, owner_org, Level.WRITE)
        if principal.limited_apps is not None:
            raise ApiError(403, "A key limited to some apps cannot create apps")
        if conn.scalar(select(func.count()).select_from(s.apps).where(s.apps.c.app_id == app_id)):
            raise ApiError(409, f"App {app_id} already exists")
        conn.execute(
            s.apps.insert().values(app_id=app_id, name=name, owner_org=owner_org, created_at=now_ms)
        )
        return {"app_id": app_id, "name": name, "owner_org": owner_org, "created_at": iso(now_ms)}

    result = await rt.writer.run(write)
    rt.catalog.invalidate(app_id)
    return JSONResponse(result, status_code=201)


async def list_apps(request: Request) -> Response:
    return JSONResponse(await read_apps(request, await caller(request)))


async def read_apps(request: Request, principal: Principal) -> list[models.App]:
    """The apps ``principal`` can see (``GET /app``; the dashboard's too)."""
    return await read_db(request, visible_apps, principal)


def visible_apps(conn: Connection, principal: Principal) -> list[models.App]:
    """The live apps of the user's orgs that the key may see, by app id."""
    a, m = s.apps.c, s.org_members.c
    rows = conn.execute(
        select(s.apps)
        .join(s.org_members, m.org_id == a.owner_org)
        .where(m.user_id == principal.user_id, a.deleted_at.is_(None))
        .order_by(a.app_id)
    )
    return [_app_json(r) for r in rows if principal.sees_app(r.app_id, r.owner_org)]


async def get_app(request: Request) -> Response:
    return JSONResponse(await read_app(request, await caller(request)))


async def read_app(request: Request, principal: Principal) -> models.App:
    """The app of the path (``GET /app/{app_id}``; the dashboard's too)."""
    app_id = request.path_params["app_id"]
    row = await read_db(request, app_access, principal, app_id, Level.READ)
    return _app_json(row)


async def delete_app(request: Request) -> Response:
    principal = await caller(request)
    app_id = request.path_params["app_id"]
    rt = runtime(request)
    now_ms = to_ms(rt.clock.now())

    def write(conn: Connection) -> list[dict[str, Any]]:
        app_access(conn, principal, app_id, Level.ADMIN)
        b = s.bundles.c
        versions = list(
            conn.scalars(select(b.version).where(b.app_id == app_id, b.deleted_at.is_(None)))
        )
        # Deleting the app frees its storage through the same path as a bundle delete.
        outcomes = rt.pipeline.apply(conn, [BundleDelete(app_id, v, now_ms) for v in versions])
        deleted = [o.value for o in outcomes if o.ok and o.value]
        conn.execute(update(s.apps).where(s.apps.c.app_id == app_id).values(deleted_at=now_ms))
        return deleted

    deleted = await rt.writer.run(write)
    await run_in_threadpool(_free_bytes, rt, deleted)
    rt.catalog.invalidate(app_id)
    return JSONResponse({"status": "ok"})


# -- bundles ---------------------------------------------------------------------------------


def _free_bytes(rt: Runtime, deleted: list[dict[str, Any]]) -> None:
    """After a delete's commit: remove the files of deleted bundles (database bytes went in
    the delete's own transaction)."""
    for value in deleted:
        if value.get("storage") == "file":
            rt.bundles.remove(
                BundleBytes(
                    value["id"],
                    value["app_id"],
                    value["storage"],
                    value["storage_path"],
                    value["size"],
                )
            )


def _check_unlocked(conn: Connection, org_id: str) -> None:
    o = s.orgs.c
    reason = conn.scalar(select(o.lock_reason).where(o.id == org_id, o.lock_code.is_not(None)))
    if reason is not None:
        raise ApiError(402, f"Organization is locked: {reason}")


async def upload_bundle(request: Request) -> Response:
    principal = await caller(request)
    rt = runtime(request)
    content_type = request.headers.get("content-type", "")
    staged: StagedUpload | None = None
    if content_type.startswith("multipart/form-data"):
        received = await receive_bundle(
            request, rt.settings.max_bundle_bytes, partial(_begin_upload, request, principal)
        )
        staged = received.staged
        try:
            await run_in_threadpool(_validate_stored, rt, staged)
        except BaseException:
            await _abort(staged)
            raise
        try:
            form = form_model(received.fields, models.BundleFields)
            before = received.fields_before_file
            # Given again after the file, they would name an app the caller was not
            # authorized for.
            if (form.app_id, form.version) != (before["app_id"], before["version"]):
                raise bad_request(CHANGED_AFTER_FILE)
        except BaseException:
            await _abort(staged)
            raise
        app_id, version = form.app_id.strip(), form.version.strip()
        channel = (form.channel or "production").strip()
        event = BundleUpload(
            app_id,
            version,
            received.size,
            to_ms(rt.clock.now()),
            checksum=received.checksum,
            storage_path=staged.bundle.storage_path,
            channel=channel,
            created_by=principal.user_id,
            bundle_id=staged.bundle.id,
            storage=staged.bundle.storage,
        )
    else:
        given = await json_model(request, models.ExternalBundle)
        app_id, version = given.app_id.strip(), given.version.strip()
        external_url = given.external_url.strip()
        checksum = given.checksum.lower() if isinstance(given.checksum, str) else None
        size = given.size if given.size is not msgspec.UNSET else 0
        channel = loose_text(given.channel, "production", 255)
        app = await read_db(request, app_access, principal, app_id, Level.UPLOAD)
        await read_db(request, _check_unlocked, app.owner_org)
        event = BundleUpload(
            app_id,
            version,
            size,
            to_ms(rt.clock.now()),
            external_url=external_url,
            checksum=checksum,
            channel=channel,
            created_by=principal.user_id,
        )
    try:
        (outcome,) = await rt.submit([event])
    except BaseException:
        if staged is not None:
            await _abort(staged)
        raise
    if not outcome.ok:
        if staged is not None:
            await _abort(staged)
        raise _rejection(outcome)
    rt.catalog.invalidate(app_id)
    row = outcome.value
    body = {
        "id": row["id"],
        "app_id": app_id,
        "version": version,
        "size": row["size"],
        "checksum": row["checksum"],
        "external_url": row["external_url"],
        "channel": channel,
        "created_at": iso(row["created_at"]),
    }
    return JSONResponse(body, status_code=201)


async def _begin_upload(
    request: Request, principal: Principal, fields: dict[str, str]
) -> StagedUpload:
    """Authorize a multipart upload from its fields, before any of its bytes is stored."""
    rt = runtime(request)
    form = form_model(fields, models.BundleFields)
    app_id, version = form.app_id.strip(), form.version.strip()

    def check(conn: Connection) -> None:
        app = app_access(conn, principal, app_id, Level.UPLOAD)
        _check_unlocked(conn, app.owner_org)
        b = s.bundles.c
        # Checked again when the bundle is recorded; here it spares storing a doomed upload.
        if conn.scalar(select(b.id).where(b.app_id == app_id, b.version == version)):
            raise ApiError(409, f"version {version!r} already exists for {app_id}")

    await read_db(request, check)
    store = rt.bundles.default
    staged = await run_in_threadpool(store.begin, app_id)
    bundle = staged.bundle
    started_at = to_ms(rt.clock.now())
    u = s.bundle_uploads.c

    def forget() -> None:
        rt.writer.run_blocking(
            lambda conn: conn.execute(
                delete(s.bundle_uploads).where(u.app_id == app_id, u.bundle_id == bundle.id)
            )
        )

    try:
        await rt.writer.run(
            lambda conn: conn.execute(
                s.bundle_uploads.insert().values(
                    bundle_id=bundle.id,
                    app_id=app_id,
                    storage=bundle.storage,
                    storage_path=bundle.storage_path,
                    started_at=started_at,
                )
            )
        )
    except BaseException:
        await run_in_threadpool(staged.abort)
        raise
    return TrackedUpload(staged, forget)


def _validate_stored(rt: Runtime, staged: StagedUpload) -> None:
    store = rt.bundles.of(staged.bundle.storage)
    with store.open(staged.bundle) as source:
        validate_zip(source)


async def _abort(staged: StagedUpload) -> None:
    """Remove an upload's bytes and its in-progress row, even under cancellation."""
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(staged.abort)


async def list_bundles(request: Request) -> Response:
    return JSONResponse(await read_bundles(request, await caller(request)))


async def read_bundles(request: Request, principal: Principal) -> list[models.BundleListItem]:
    """A page of the app's bundles (``GET /bundle``; the dashboard's too)."""
    query = query_model(request, models.BundlesQuery)
    app_id, page = query.app_id, query.page

    def read(conn: Connection) -> list[models.BundleListItem]:
        app_access(conn, principal, app_id, Level.READ)
        b, c = s.bundles.c, s.channels.c
        rows = conn.execute(
            select(s.bundles)
            .where(b.app_id == app_id, b.deleted_at.is_(None))
            .order_by(b.created_at.desc(), b.version.desc())
            .limit(PAGE_SIZE)
            .offset(page * PAGE_SIZE)
        ).all()
        linked: dict[str, list[str]] = {}
        for bundle_id, name in conn.execute(
            select(c.bundle_id, c.name).where(c.app_id == app_id, c.bundle_id.is_not(None))
        ):
            linked.setdefault(bundle_id, []).append(name)
        return [
            {
                "id": r.id,
                "app_id": r.app_id,
                "version": r.version,
                "size": r.size,
                "checksum": r.checksum,
                "external": r.external_url is not None,
                "external_url": r.external_url,
                "created_at": iso(r.created_at),
                "channels": sorted(linked.get(r.id, [])),
            }
            for r in rows
        ]

    return await read_db(request, read)


async def delete_bundle(request: Request) -> Response:
    principal = await caller(request)
    ref = query_model(request, models.BundleRef)
    app_id, version = ref.app_id, ref.version
    rt = runtime(request)
    await read_db(request, app_access, principal, app_id, Level.WRITE)
    (outcome,) = await rt.submit([BundleDelete(app_id, version, to_ms(rt.clock.now()))])
    if not outcome.ok:
        raise not_found(f"Bundle {version} not found for {app_id}")
    await run_in_threadpool(_free_bytes, rt, [outcome.value])
    rt.catalog.invalidate(app_id)
    return JSONResponse({"status": "ok", "app_id": app_id, "version": version})


# -- channels --------------------------------------------------------------------------------

CHANNEL_FLAGS = {
    "public": True,
    "allow_device_self_set": False,
    "allow_emulator": True,
    "allow_dev": True,
    "ios": True,
    "android": True,
    "electron": True,
    "disable_auto_update_under_native": True,
    # Release guard (release_guard.py): a regression of the bundle puts the previous one back.
    "auto_rollback": False,
}
# Devices seen within this many days count in a channel's ``devices`` (the MAU window).
CHANNEL_DEVICE_DAYS = 30


def _channel_json(row: Any, version: str | None) -> models.Channel:
    return {
        "id": row.id,
        "app_id": row.app_id,
        "channel": row.name,
        "version": version,
        # The flags of CHANNEL_FLAGS, in its order.
        "public": bool(row.public),
        "allow_device_self_set": bool(row.allow_device_self_set),
        "allow_emulator": bool(row.allow_emulator),
        "allow_dev": bool(row.allow_dev),
        "ios": bool(row.ios),
        "android": bool(row.android),
        "electron": bool(row.electron),
        "disable_auto_update_under_native": bool(row.disable_auto_update_under_native),
        "auto_rollback": bool(row.auto_rollback),
        "public_ios": bool(row.public_ios),
        "public_android": bool(row.public_android),
        "public_electron": bool(row.public_electron),
        "disable_auto_update": row.disable_auto_update,
    }


def _sent(value: T | msgspec.UnsetType) -> T | None:
    return None if value is msgspec.UNSET else value


async def upsert_channel(request: Request) -> Response:
    """Create or update a channel (``POST /channel``).

    ``public: true`` makes the channel the public channel of every platform it serves, taking
    each of those platforms from the channel that had it (one public channel per platform);
    ``public: false`` makes it public for none. Without ``public`` an existing channel keeps
    its public platforms, less any it no longer serves.
    """
    principal = await caller(request)
    given = await json_model(request, models.ChannelUpdate)
    app_id, name = given.app_id.strip(), given.channel.strip()
    # Absent and null alike: kept (a new channel: the default).
    version = None if given.version is msgspec.UNSET else given.version
    flags = {key: _sent(getattr(given, key)) for key in CHANNEL_FLAGS}
    rule = _sent(given.disable_auto_update)
    rt = runtime(request)
    now_ms = to_ms(rt.clock.now())

    def write(conn: Connection) -> models.Channel:
        app_access(conn, principal, app_id, Level.WRITE)
        c, b = s.channels.c, s.bundles.c
        bundle_id = None
        if version:
            bundle_id = conn.scalar(
                select(b.id).where(b.app_id == app_id, b.version == version, b.deleted_at.is_(None))
            )
            if bundle_id is None:
                raise not_found(f"Bundle {version} not found for {app_id}")
        existing = conn.execute(
            select(s.channels).where(c.app_id == app_id, c.name == name)
        ).first()
        given: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
        if rule is not None:
            given["disable_auto_update"] = rule
        public = given.pop("public", None)
        if existing is None:
            values: dict[str, Any] = {**CHANNEL_FLAGS, "disable_auto_update": "none", **given}
            values.update(public_for_served(values, public if public is not None else True))
            channel_id = insert_channel(
                conn,
                {
                    "app_id": app_id,
                    "name": name,
                    "bundle_id": bundle_id,
                    "created_at": now_ms,
                    "updated_at": now_ms,
                    **{k: v for k, v in values.items() if k != "public"},
                },
            )
        else:
            channel_id = existing.id
            merged = {p: given.get(p, getattr(existing, p)) for p in PLATFORMS}
            if public is not None:
                values = {**given, **public_for_served(merged, public)}
            else:
                # A channel is never the public channel of a platform it does not serve.
                values = {
                    **given,
                    **{
                        public_column(p): bool(getattr(existing, public_column(p)) and merged[p])
                        for p in PLATFORMS
                    },
                }
            if version is not None:
                values["bundle_id"] = bundle_id
                if bundle_id != existing.bundle_id and existing.bundle_id is not None:
                    # What auto_rollback goes back to.
                    values["previous_bundle_id"] = existing.bundle_id
            conn.execute(
                update(s.channels)
                .where(c.app_id == app_id, c.id == channel_id)
                .values(updated_at=now_ms, **values)
            )
        claim_public(conn, app_id, channel_id, now_ms)
        row = conn.execute(select(s.channels).where(c.app_id == app_id, c.id == channel_id)).one()
        bundle_version = (
            conn.scalar(select(b.version).where(b.app_id == app_id, b.id == row.bundle_id))
            if row.bundle_id
            else None
        )
        return _channel_json(row, bundle_version)

    result = await rt.writer.run(write)
    rt.catalog.invalidate(app_id)
    return JSONResponse(result)


async def list_channels(request: Request) -> Response:
    return JSONResponse(await read_channels(request, await caller(request)))


async def read_channels(request: Request, principal: Principal) -> list[models.ChannelListItem]:
    """The app's channels, each with ``devices``: the devices seen in the last 30 days whose
    last check-in reported running the bundle the channel serves now (``version_name``, or
    ``version_build`` for a fresh install still on the bundle it ships) on a platform the
    channel serves. A device counts on every channel serving the bundle it runs.
    (``GET /channel``; the dashboard's too.)"""
    app_id = query_model(request, models.AppQuery).app_id
    since_ms = to_ms(runtime(request).clock.now()) - CHANNEL_DEVICE_DAYS * 86_400_000

    def read(conn: Connection) -> list[models.ChannelListItem]:
        app_access(conn, principal, app_id, Level.READ)
        c, b, d = s.channels.c, s.bundles.c, s.devices.c
        rows = conn.execute(
            select(s.channels, b.version)
            .outerjoin(s.bundles, (b.app_id == c.app_id) & (b.id == c.bundle_id))
            .where(c.app_id == app_id)
            .order_by(c.id)
        ).all()
        running: dict[tuple[str, str], int] = {}
        for name, build, platform, count in conn.execute(
            select(d.version_name, d.version_build, d.platform, func.count())
            .where(d.app_id == app_id, d.last_seen >= since_ms)
            .group_by(d.version_name, d.version_build, d.platform)
        ):
            version = build if name == "builtin" else name
            running[(version, platform)] = running.get((version, platform), 0) + int(count)
        result: list[models.ChannelListItem] = []
        for r in rows:
            devices = 0
            if r.version is not None:
                devices = sum(running.get((r.version, p), 0) for p in PLATFORMS if getattr(r, p))
            result.append({**_channel_json(r, r.version), "devices": devices})
        return result

    return await read_db(request, read)


routes = [
    Route("/organization", create_org, methods=["POST"]),
    Route("/organization", list_orgs, methods=["GET"]),
    Route("/organization/members", add_member, methods=["POST"]),
    Route("/apikey", create_key, methods=["POST"]),
    Route("/apikey", list_keys, methods=["GET"]),
    Route("/apikey/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/app", create_app, methods=["POST"]),
    Route("/app", list_apps, methods=["GET"]),
    Route("/app/{app_id}", get_app, methods=["GET"]),
    Route("/app/{app_id}", delete_app, methods=["DELETE"]),
    Route("/bundle", upload_bundle, methods=["POST"]),
    Route("/bundle", list_bundles, methods=["GET"]),
    Route("/bundle", delete_bundle, methods=["DELETE"]),
    Route("/channel", upsert_channel, methods=["POST"]),
    Route("/channel", list_channels, methods=["GET"]),
]


# -- the OpenAPI description of these routes --------------------------------------------------


describe(
    "/organization",
    {
        "post": {
            "tags": ["organizations"],
            "summary": "Create an organization",
            "description": "The caller becomes its `super_admin`. Needs an unrestricted `all` key.",
            "security": AUTH,
            "requestBody": json_body(models.NewOrganization),
            "responses": {
                "201": answer(
                    "Created.",
                    models.CreatedOrganization,
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
                "200": answer("Visible to this key.", list[models.Organization]),
                "401": UNAUTHORIZED,
            },
        },
    },
)

describe(
    "/organization/members",
    {
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
            "requestBody": json_body(models.NewMember),
            "responses": {
                "200": answer(
                    "The membership, or the invitation (the same shape).",
                    models.Membership,
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
)

describe(
    "/apikey",
    {
        "post": {
            "tags": ["keys"],
            "summary": "Create an API key",
            "description": (
                "Needs a key of mode `all` not limited to some apps. The new key is shown "
                "once; it never sees more than the key that made it. With `expires_at` it "
                "gets 401 from that instant on."
            ),
            "security": AUTH,
            "requestBody": json_body(models.NewApiKey),
            "responses": {
                "201": answer(
                    "The key.",
                    models.CreatedApiKey,
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
                "200": answer("The keys.", list[models.ApiKeyInfo]),
                "401": UNAUTHORIZED,
                "403": error("The key is not of mode `all`, or is limited to some apps."),
            },
        },
    },
)

describe(
    "/apikey/{key_id}",
    {
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
                "200": answer("Revoked.", models.RevokedKey),
                "401": UNAUTHORIZED,
                "403": error("The key is not of mode `all`, or is limited to some apps."),
                "404": error("No such key among those the caller may manage."),
            },
        }
    },
)

describe(
    "/app",
    {
        "post": {
            "tags": ["apps"],
            "summary": "Create an app",
            "security": AUTH,
            "requestBody": json_body(models.NewApp),
            "responses": {
                "201": answer("Created.", models.App),
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
                "200": answer("Apps, by id.", list[models.App]),
                "401": UNAUTHORIZED,
            },
        },
    },
)

describe(
    "/app/{app_id}",
    {
        "get": {
            "tags": ["apps"],
            "summary": "One app",
            "security": AUTH,
            "parameters": [app_id_param()],
            "responses": {
                "200": answer("The app.", models.App),
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
                "200": answer("Deleted.", StatusOk),
                "401": UNAUTHORIZED,
                "403": error("Needs `admin`."),
                "404": error("App not found."),
            },
        },
    },
)

describe(
    "/bundle",
    {
        "post": {
            "tags": ["bundles"],
            "summary": "Upload a bundle",
            "description": (
                "multipart: a zip (`file`) stored here; JSON: an external bundle served by "
                "URL, never counted in storage or bandwidth. The channel (default "
                "`production`) then serves the bundle.\n\n"
                "The multipart form is read as it streams in: `app_id` and `version` must come "
                "before `file` (the upload is authorized from them before any byte is stored) "
                "and keep their values after it, "
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
                    "multipart/form-data": {"schema": models.BundleForm},
                    JSON: {"schema": models.ExternalBundle},
                },
            },
            "responses": {
                "201": answer("Stored.", models.Bundle),
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
            "parameters": query_parameters(models.BundlesQuery),
            "responses": {
                "200": answer("Bundles.", list[models.BundleListItem]),
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
            "parameters": query_parameters(models.BundleRef),
            "responses": {
                "200": answer(
                    "Deleted.",
                    models.DeletedBundle,
                ),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": error("Needs `write`."),
                "404": error("App or bundle not found."),
            },
        },
    },
)

describe(
    "/channel",
    {
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
            "requestBody": json_body(models.ChannelUpdate),
            "responses": {
                "200": answer("The channel.", models.Channel),
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
            "parameters": query_parameters(models.AppQuery),
            "responses": {
                "200": answer("Channels.", list[models.ChannelListItem]),
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "404": error("App not found."),
            },
        },
    },
)
