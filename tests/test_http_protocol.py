"""The answer is one socket write: head and body leave together (issue 16, the lean path).

The server's own protocol class runs on a real event loop and a real TCP socket; the only
addition is a transport that counts the protocol's writes before passing them on, since
the client side of a loopback socket cannot tell one write from two.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from otameter.http_protocol import BoundedHttpToolsProtocol

JSON_BODY = b'{"version":"1.0.0"}'


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while True:  # read the whole body, as the handlers do
        message = await receive()
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(JSON_BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": JSON_BODY})


class _CountingTransport:
    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[
    tuple[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]]
]:
    """The server's protocol on a real socket; yields a connection and the server's writes."""
    writes: list[bytes] = []
    config = Config(app=asgi_app, log_level="warning", lifespan="off")
    config.load()
    state = ServerState()

    class Counting(BoundedHttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_CountingTransport(transport, writes))  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Counting(config=config, server_state=state, app_state={}), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # A guard against a hang: every answer here comes at once.
        async with asyncio.timeout(20):
            yield reader, writer, writes
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def exchange(request: bytes, answers: int = 1) -> tuple[bytes, list[bytes]]:
    """Send ``request`` raw; return what came back and the server's writes."""
    async with serving() as (reader, writer, writes):
        writer.write(request)
        received = b""
        while received.count(b"HTTP/1.1 2") < answers or not _complete(received):
            chunk = await reader.read(65536)
            assert chunk, f"closed early: {received!r}"
            received += chunk
    return received, writes


def _complete(data: bytes) -> bool:
    if data.endswith(b"0\r\n\r\n"):
        return True
    head, sep, body = data.rpartition(b"\r\n\r\n")
    if not sep:
        return False
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return bool(lengths) and len(body) >= int(lengths[-1].split(b":")[1])


async def test_a_json_answer_is_one_write() -> None:
    request = b"POST /updates HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"
    received, writes = await exchange(request)
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(JSON_BODY)
    assert received == writes[0]


async def test_two_requests_on_one_connection_are_two_writes() -> None:
    one = b"POST /updates HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"
    received, writes = await exchange(one + one, answers=2)
    assert len(writes) == 2
    assert received.count(JSON_BODY) == 2


async def test_a_streamed_answer_sends_its_head_with_the_first_part() -> None:
    received, writes = await exchange(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"one,\r\n")
    assert b"transfer-encoding: chunked" in writes[0]
    assert received.endswith(b"5\r\nthree\r\n0\r\n\r\n")


async def test_a_head_request_is_answered_without_a_body() -> None:
    async with serving() as (reader, writer, writes):
        writer.write(b"HEAD /updates HTTP/1.1\r\nhost: t\r\n\r\n")
        received = await reader.readuntil(b"\r\n\r\n")
        # The same connection still answers: nothing of the HEAD answer was left behind.
        writer.write(b"POST /updates HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")
        second = await reader.readuntil(JSON_BODY)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 19" in received
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes == [received, second]


async def test_100_continue_is_not_held_back_with_the_answer() -> None:
    """The client sends its body only after the server's ``100 Continue``."""
    request = (
        b"POST /updates HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n"
    )
    async with serving() as (reader, writer, writes):
        writer.write(request)
        received = await reader.readuntil(b"\r\n\r\n")
        assert received == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        while not received.endswith(JSON_BODY):
            chunk = await reader.read(65536)
            assert chunk, f"closed early: {received!r}"
            received += chunk
    assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(writes) == 2 and writes[1].startswith(b"HTTP/1.1 200 OK\r\n")
