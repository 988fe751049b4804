"""The dashboard session: the API key in a signed, HTTP-only cookie.

The key itself is the credential the dashboard presents to the API on the user's behalf, so
it lives only in the cookie (never in JavaScript-readable storage). The signature binds the
key to an expiry so that a copied cookie stops working; a revoked key ends the session at the
next request because every request authenticates the key again.
"""

from __future__ import annotations

import base64
import binascii

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..clock import to_ms
from ..runtime import Runtime

COOKIE = "otameter_session"
COOKIE_PATH = "/dashboard"
MAX_AGE_SECONDS = 12 * 3600
_PURPOSE = "dashboard-session"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(rt: Runtime, key: str) -> str:
    expires = to_ms(rt.clock.now()) + MAX_AGE_SECONDS * 1000
    payload = _b64(orjson.dumps({"k": key, "exp": expires}))
    return f"{payload}.{rt.sign(_PURPOSE, payload)}"


def decode(rt: Runtime, value: str | None) -> str | None:
    """The key in a valid, unexpired cookie value, else None."""
    if not value or "." not in value:
        return None
    payload, signature = value.rsplit(".", 1)
    if not rt.verify(signature, _PURPOSE, payload):
        return None
    try:
        data = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    key, expires = data.get("k"), data.get("exp")
    if not isinstance(key, str) or not isinstance(expires, int):
        return None
    if expires <= to_ms(rt.clock.now()):
        return None
    return key


def is_secure(request: Request, rt: Runtime) -> bool:
    """Served over https, directly or behind a proxy announced by --public-url."""
    public = rt.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def set_cookie(response: Response, request: Request, rt: Runtime, key: str) -> None:
    response.set_cookie(
        COOKIE,
        encode(rt, key),
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
