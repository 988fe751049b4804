"""Dashboard routes: sign-in, the pages, and the JSON the pages read with the session.

The pages never see the API key, nor does the cookie hold it: the cookie holds a session id
(``otameter.sessions``), and the session gives the principal of the key that signed in.
Everything the dashboard shows is read through ``data``: the pages' script calls
``/dashboard/api/<path>``, answered by the read function of the API route ``GET /<path>``
called with that principal, and ``/dashboard/data/...`` for the seed's table of apps, which
the public API does not serve.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..api.common import JSONResponse, client_ip, read_db, runtime
from ..api.management import read_app, read_apps, read_orgs
from ..auth import Principal, lookup_key
from ..clock import to_ms
from ..errors import ApiError
from ..sessions import create_session, end_session, session_principal
from ..statistics import parse_range
from . import data, pages, session

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_DAYS = 30
# The JSON the pages' script reads: API + <path> answers as GET <path> (data.READS).
API = "/dashboard/api"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def _json(body: Any, status_code: int = 200) -> JSONResponse:
    headers = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _session(request: Request) -> Principal | None:
    """The principal of the request's session, if it is live and its key still valid."""
    session_id = request.cookies.get(session.COOKIE)
    if not session_id:
        return None
    now_ms = to_ms(runtime(request).clock.now())
    return await read_db(request, session_principal, session_id, now_ms)


def _to_login(request: Request) -> Response:
    target = "/dashboard/login"
    here = request.url.path
    if here != "/dashboard":
        query = f"?{request.url.query}" if request.url.query else ""
        target += "?next=" + quote(here + query, safe="")
    response = RedirectResponse(target, status_code=303)
    if session.COOKIE in request.cookies:
        # A cookie whose session has ended: drop it.
        session.clear_cookie(response, request, runtime(request))
    return response


def _safe_next(value: str | None) -> str:
    # Only paths of the dashboard itself: never an open redirect.
    if value and value.startswith("/dashboard") and "//" not in value and "\\" not in value:
        return value
    return "/dashboard"


def _same_origin(request: Request) -> bool:
    """Refuse form posts from other sites (the cookie is SameSite=Lax; this also covers
    sign-in, which has no cookie yet)."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    allowed = {f"{request.url.scheme}://{request.url.netloc}"}
    public = runtime(request).settings.public_url
    if public:
        parts = urlsplit(public)
        allowed.add(f"{parts.scheme}://{parts.netloc}")
    return origin in allowed


def _range(request: Request) -> tuple[date, date, date, bool]:
    """The page's range from the query, or the last 30 days; never past today."""
    today = runtime(request).clock.now().date()
    compare = request.query_params.get("compare") == "1"
    try:
        start, end = parse_range(request.query_params)
    except ApiError:
        return today - timedelta(days=DEFAULT_DAYS - 1), today, today, compare
    end = min(end, today)
    if start > end:
        start = end
    return start, end, today, compare


# -- sign-in ---------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    if await _session(request):
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    notice = "You are signed out." if request.query_params.get("signed_out") else None
    return _html(pages.login(notice=notice, next_url=request.query_params.get("next", "")))


async def login(request: Request) -> Response:
    if not _same_origin(request):
        return _html(pages.login(error="Sign-in must come from this site."), 403)
    async with request.form(max_files=0, max_fields=5) as form:
        key = str(form.get("key") or "").strip()
        next_url = str(form.get("next") or "")
    if not key:
        return _html(pages.login(error="Enter an API key.", next_url=next_url), 400)
    rt = runtime(request)
    now_ms = to_ms(rt.clock.now())
    principal = await read_db(request, lookup_key, key, now_ms) if len(key) <= 256 else None
    if principal is None:
        # Only failed sign-ins count; a valid key always signs in.
        retry_after = await rt.signin_failures.failed(
            client_ip(request, rt.settings.trusted_proxies)
        )
        if retry_after is not None:
            page = pages.login(
                error="Too many failed sign-ins from this address. Try again later.",
                next_url=next_url,
            )
            refused = _html(page, 429)
            refused.headers["retry-after"] = str(retry_after)
            return refused
        return _html(pages.login(error="This API key is not valid.", next_url=next_url), 401)
    session_id = await rt.writer.run(lambda conn: create_session(conn, principal, now_ms))
    response = RedirectResponse(_safe_next(next_url), status_code=303)
    session.set_cookie(response, request, rt, session_id)
    return response


async def logout(request: Request) -> Response:
    if not _same_origin(request):
        return _html(pages.error("Sign-out must come from this site."), 403)
    rt = runtime(request)
    session_id = request.cookies.get(session.COOKIE)
    if session_id:
        # The session ends on the server: a copy of the cookie opens nothing any more.
        await rt.writer.run(lambda conn: end_session(conn, session_id))
    response = RedirectResponse("/dashboard/login?signed_out=1", status_code=303)
    session.clear_cookie(response, request, rt)
    return response


# -- pages -----------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    principal = await _session(request)
    if principal is None:
        return _to_login(request)
    org_rows = await read_orgs(request, principal)
    app_rows = await read_apps(request, principal)
    return _html(pages.orgs(org_rows, app_rows))


async def org_page(request: Request) -> Response:
    principal = await _session(request)
    if principal is None:
        return _to_login(request)
    org_id = request.path_params["org_id"]
    org = next((o for o in await read_orgs(request, principal) if o["id"] == org_id), None)
    if org is None:
        return _html(pages.not_found(), 404)
    apps = [a for a in await read_apps(request, principal) if a["owner_org"] == org_id]
    start, end, today, compare = _range(request)
    return _html(pages.org_page(org, apps, today, start, end, compare))


async def app_page(request: Request) -> Response:
    principal = await _session(request)
    if principal is None:
        return _to_login(request)
    try:
        app = await read_app(request, principal)
    except ApiError:
        # Missing, deleted or out of the key's reach: the same page.
        return _html(pages.not_found(), 404)
    org_rows = await read_orgs(request, principal)
    org = next((o for o in org_rows if o["id"] == app["owner_org"]), None)
    start, end, today, compare = _range(request)
    return _html(pages.app_page(app, org, today, start, end, compare))


# -- JSON for the pages ----------------------------------------------------------------------


def _unauthorized(request: Request) -> JSONResponse:
    response = _json({"error": "Signed out", "status": "KO"}, 401)
    if session.COOKIE in request.cookies:
        # The session ended (signed out elsewhere, key revoked or expired): drop its cookie.
        session.clear_cookie(response, request, runtime(request))
    return response


def _reading(read: data.Read) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint answering ``read`` for the session's principal, errors as the API's."""

    async def endpoint(request: Request) -> Response:
        principal = await _session(request)
        if principal is None:
            return _unauthorized(request)
        try:
            return _json(await read(request, principal))
        except ApiError as error:
            return _json(error.body(), error.status_code)

    return endpoint


routes: list[BaseRoute] = [
    Route("/dashboard", home, methods=["GET"]),
    Route("/dashboard/login", login_form, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/org/{org_id}", org_page, methods=["GET"]),
    Route("/dashboard/app/{app_id}", app_page, methods=["GET"]),
    *(Route(API + path, _reading(read), methods=["GET"]) for path, read in data.READS.items()),
    Route("/dashboard/data/org/{org_id}/apps", _reading(data.read_org_apps), methods=["GET"]),
    Mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
]
