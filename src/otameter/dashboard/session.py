"""The dashboard's session cookie: an opaque session id, HTTP-only, scoped to the dashboard.

The session itself lives on the server (``otameter.sessions``); the cookie holds only its
random id, never the API key, so a copied cookie ends with sign-out, with the key's
revocation or expiry, and after ``MAX_AGE_SECONDS``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..runtime import Runtime
from ..sessions import MAX_AGE_SECONDS

COOKIE = "otameter_session"
COOKIE_PATH = "/dashboard"

__all__ = ["COOKIE", "COOKIE_PATH", "MAX_AGE_SECONDS", "clear_cookie", "set_cookie"]


def is_secure(request: Request, rt: Runtime) -> bool:
    """Served over https, directly or behind a proxy announced by --public-url."""
    public = rt.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def set_cookie(response: Response, request: Request, rt: Runtime, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=MAX_AGE_SECONDS,
        path=COOKIE_PATH,
        secure=is_secure(request, rt),
        httponly=True,
        samesite="lax",
    )


def clear_cookie(response: Response, request: Request, rt: Runtime) -> None:
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        secure=is_secure(request, rt),
        httponly=True,
        samesite="lax",
    )
