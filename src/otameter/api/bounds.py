"""Bounds every request meets before a handler runs: body size per route, no control characters.

The body bound is enforced while the body streams in: a declared ``Content-Length`` over the
bound is answered 413 before a byte of the body is read, and a body without one (chunked) is
counted as it arrives and refused as soon as it passes the bound, so at most the bound plus one
chunk is ever held. The 413 carries ``Connection: close``: the server does not read the rest.

Plugin endpoints answer in the plugin's error shape (plugin-protocol.md), the rest in the API's.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from starlette.types import Message, Receive, Scope, Send

from ..config import Settings
from ..errors import ApiError
from ..protocol import KIND_FAILED
from ..text import url_has_control

PLUGIN_PATHS = frozenset({"/updates", "/stats", "/channel_self"})


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class BodyLimits:
    plugin: int
    stats: int
    api: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(settings.plugin_body_bytes, settings.stats_body_bytes, settings.api_body_bytes)

    def for_request(self, method: str, path: str) -> int | None:
        """The bound of a request's body; None where another bound applies."""
        if path == "/stats":
            return self.stats
        if path in PLUGIN_PATHS:
            return self.plugin
        if path == "/bundle" and method == "POST":
            # Uploads are bounded by their own configured maximum as they stream in.
            return None
        return self.api


def error_body(path: str, status: int, code: str, message: str) -> bytes:
    if path in PLUGIN_PATHS:
        return orjson.dumps({"error": code, "message": message, "kind": KIND_FAILED})
    return orjson.dumps({"error": message, "status": "KO"})


async def send_error(
    send: Send, path: str, status: int, code: str, message: str, *, close: bool = False
) -> None:
    body = error_body(path, status, code, message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def too_large_message(limit: int) -> str:
    return f"Request body is larger than {limit} bytes"


async def refuse_early(scope: Scope, send: Send, path: str, limit: int | None) -> bool:
    """Answer a request that is out of bounds before reading it; True when answered."""
    if url_has_control(scope["path"], scope.get("query_string", b"")):
        message = "The request URL must not contain control characters"
        await send_error(send, path, 400, "invalid_characters", message)
        return True
    if limit is None:
        return False
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or int(value) > limit:
                await send_error(
                    send, path, 413, "payload_too_large", too_large_message(limit), close=True
                )
                return True
            break
    return False


def counting_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`BodyTooLarge` once the body passes ``limit`` bytes."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return bounded
