"""Dashboard routes: sign-in, the pages, and the JSON the pages read with the session.

The pages never see the API key. Their script calls ``/dashboard/api/...``, which forwards
read-only requests to the JSON API in-process with the key from the session cookie, and
``/dashboard/data/...`` for the seed's table of apps, which the public API does not serve.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..api.common import JSONResponse, read_db, runtime
from ..auth import Principal, authenticate
from ..errors import ApiError
from ..statistics import parse_range
from . import data, pages, session

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_DAYS = 30
# Read-only API paths the pages may read through the session (first path segment).
PROXIED = frozenset({"statistics", "organization", "app", "bundle", "channel"})
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


def _session_key(request: Request) -> str | None:
    return session.decode(runtime(request), request.cookies.get(session.COOKIE))


def _to_login(request: Request, *, clear: bool = False) -> Response:
    target = "/dashboard/login"
    here = request.url.path
    if here != "/dashboard":
        query = f"?{request.url.query}" if request.url.query else ""
        target += "?next=" + quote(here + query, safe="")
    response = RedirectResponse(target, status_code=303)
    if clear:
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


async def api_list(request: Request, key: str, path: str) -> tuple[int, list[dict[str, Any]]]:
    """A list answer of the API (status, rows); no rows unless it answered 200."""
    status, body = await api_get(request, key, path)
    rows = body if status == 200 and isinstance(body, list) else []
    return status, [row for row in rows if isinstance(row, dict)]


async def api_get(request: Request, key: str, path: str, params: Any = None) -> tuple[int, Any]:
    """GET from this server's own JSON API, in-process, as the holder of ``key``."""
    # The API's own error handlers answer for it, even for an unexpected error.
    transport = httpx.ASGITransport(app=request.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://otameter.local") as client:
        answer = await client.get(path, params=params, headers={"authorization": key})
    try:
        body = answer.json()
    except ValueError:
        body = None
    return answer.status_code, body


def _range(request: Request) -> tuple[date, date, date, bool]:
    """The page's range from the query, or the last 30 days; never past today."""
    today = runtime(request).clock.now().date()
    compare = request.query_params.get("compare") == "1"
    try:
        start, end = parse_range(request.query_params.get("from"), request.query_params.get("to"))
    except ApiError:
        return today - timedelta(days=DEFAULT_DAYS - 1), today, today, compare
    end = min(end, today)
    if start > end:
        start = end
    return start, end, today, compare


# -- sign-in ---------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    if _session_key(request):
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
    status, _ = await api_get(request, key, "/organization")
    if status == 401:
        return _html(pages.login(error="This API key is not valid.", next_url=next_url), 401)
    if status != 200:
        return _html(pages.login(error="This API key cannot be used here.", next_url=next_url), 403)
    response = RedirectResponse(_safe_next(next_url), status_code=303)
    session.set_cookie(response, request, runtime(request), key)
    return response


async def logout(request: Request) -> Response:
    if not _same_origin(request):
        return _html(pages.error("Sign-out must come from this site."), 403)
    response = RedirectResponse("/dashboard/login?signed_out=1", status_code=303)
    session.clear_cookie(response, request, runtime(request))
    return response


# -- pages -----------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    key = _session_key(request)
    if key is None:
        return _to_login(request)
    status, org_rows = await api_list(request, key, "/organization")
    if status == 401:
        return _to_login(request, clear=True)
    _, app_rows = await api_list(request, key, "/app")
    return _html(pages.orgs(org_rows, app_rows))


async def org_page(request: Request) -> Response:
    key = _session_key(request)
    if key is None:
        return _to_login(request)
    org_id = request.path_params["org_id"]
    status, org_rows = await api_list(request, key, "/organization")
    if status == 401:
        return _to_login(request, clear=True)
    org = next((o for o in org_rows if o.get("id") == org_id), None)
    if org is None:
        return _html(pages.not_found(), 404)
    _, app_rows = await api_list(request, key, "/app")
    apps = [a for a in app_rows if a.get("owner_org") == org_id]
    start, end, today, compare = _range(request)
    return _html(pages.org_page(org, apps, today, start, end, compare))


async def app_page(request: Request) -> Response:
    key = _session_key(request)
    if key is None:
        return _to_login(request)
    app_id = request.path_params["app_id"]
    status, app = await api_get(request, key, f"/app/{quote(app_id, safe='')}")
    if status == 401:
        return _to_login(request, clear=True)
    if status != 200 or not isinstance(app, dict):
        return _html(pages.not_found(), 404)
    _, org_rows = await api_list(request, key, "/organization")
    org = next((o for o in org_rows if o.get("id") == app.get("owner_org")), None)
    start, end, today, compare = _range(request)
    return _html(pages.app_page(app, org, today, start, end, compare))


# -- JSON for the pages ----------------------------------------------------------------------


def _unauthorized() -> JSONResponse:
    return _json({"error": "Signed out", "status": "KO"}, 401)


async def proxy(request: Request) -> Response:
    """Forward a read-only request to the JSON API with the session's key."""
    key = _session_key(request)
    if key is None:
        return _unauthorized()
    path = request.path_params["path"]
    segments = path.split("/")
    # No dot segments: the forwarded path must stay under an allowed prefix.
    if segments[0] not in PROXIED or any(seg in (".", "..") for seg in segments):
        return _json({"error": "Not found", "status": "KO"}, 404)
    status, body = await api_get(request, key, "/" + path, request.query_params)
    response = _json(body, status)
    if status == 401:
        # The key was revoked: the session ends with it.
        session.clear_cookie(response, request, runtime(request))
    return response


async def _principal(request: Request, key: str) -> Principal:
    return await read_db(request, authenticate, key)


async def _data(request: Request, query: Any) -> Response:
    key = _session_key(request)
    if key is None:
        return _unauthorized()
    try:
        principal = await _principal(request, key)
        return _json(await read_db(request, query, principal))
    except ApiError as error:
        return _json(error.body(), error.status_code)


async def org_apps(request: Request) -> Response:
    org_id = request.path_params["org_id"]
    today = runtime(request).clock.now().date()
    return await _data(
        request, lambda conn, principal: data.org_apps(conn, principal, org_id, today)
    )


routes = [
    Route("/dashboard", home, methods=["GET"]),
    Route("/dashboard/login", login_form, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/org/{org_id}", org_page, methods=["GET"]),
    Route("/dashboard/app/{app_id}", app_page, methods=["GET"]),
    Route("/dashboard/api/{path:path}", proxy, methods=["GET"]),
    Route("/dashboard/data/org/{org_id}/apps", org_apps, methods=["GET"]),
    Mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
]
