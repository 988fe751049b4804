"""Metered, resumable bundle downloads.

Bandwidth is billed on the bytes actually handed to the server for a response, so a resumed
download (``Range: bytes=N-``) only counts what it sends. A download the client received in
full must still be counted if the process dies right after, which is why the full count is
recorded *before* the last chunk goes out (see :class:`MeteredFileResponse`).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import anyio
import anyio.lowlevel
import anyio.to_thread
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ByteRange",
    "MeteredFileResponse",
    "OnSent",
    "Opener",
    "Unsatisfiable",
    "parse_range",
]

DEFAULT_CHUNK_SIZE = 64 * 1024

OnSent = Callable[[int, bool], Awaitable[None]]
"""``on_sent(total_bytes, completed)``; see :class:`MeteredFileResponse` for the contract."""


class Reader(Protocol):
    async def read(self, size: int) -> bytes: ...


Opener = Callable[[int, int], AbstractAsyncContextManager[Reader]]
"""``opener(start, length)``: the ``length`` bytes of the body from ``start`` on (a file, or a
bundle store's chunks). Entering it may fail (bytes missing): that happens before the
response starts."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable single byte range; both ends are inclusive, as in ``Content-Range``."""

    start: int
    end_inclusive: int

    @property
    def length(self) -> int:
        return self.end_inclusive - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end_inclusive}/{size}"


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """The range cannot be served: answer 416 with ``Content-Range: bytes */size``."""

    size: int

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


# ASCII digits only: int() would also accept "+1", "1_0" and non-ASCII digits.
_RANGE_SPEC = re.compile(r"[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*")
_OWS = " \t"
# Longer positions are beyond any real file, and int() refuses very long digit strings.
_MAX_DIGITS = 18
_HUGE: int = 10**_MAX_DIGITS


def _position(digits: str) -> int:
    significant = digits.lstrip("0")
    if len(significant) > _MAX_DIGITS:
        return _HUGE
    return int(significant or "0")


def parse_range(header: str | None, size: int) -> ByteRange | Unsatisfiable | None:
    """Interpret a ``Range`` header (RFC 9110 section 14) for a file of ``size`` bytes.

    Returns ``None`` when the whole file should be sent with 200: no header, another unit,
    a malformed value, or several ranges (serving the full representation is always
    allowed). ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` give a :class:`ByteRange` with
    ``b`` clamped to the last byte and a suffix longer than the file meaning the whole file.
    ``a > b``, ``a >= size`` and ``bytes=-0`` give :class:`Unsatisfiable`. For an empty file
    a suffix range selects nothing that ``Content-Range`` can express, so it gives ``None``.
    Spaces and tabs around the unit, ``=``, ``-``, the numbers and commas are tolerated.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if header is None:
        return None
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip(_OWS).lower() != "bytes":
        return None
    # Empty list elements are legal in HTTP lists and carry no meaning.
    specs = [spec for spec in range_set.split(",") if spec.strip(_OWS)]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = _position(last)
        if suffix == 0:
            return Unsatisfiable(size)
        if size == 0:
            return None
        return ByteRange(max(size - suffix, 0), size - 1)
    start = _position(first)
    end = _position(last) if last else None
    if (end is not None and start > end) or start >= size:
        return Unsatisfiable(size)
    return ByteRange(start, size - 1 if end is None else min(end, size - 1))


def _is_etagc(char: str) -> bool:
    code = ord(char)
    return code == 0x21 or 0x23 <= code <= 0x7E or 0x80 <= code <= 0xFF


def _quote_etag(etag: str) -> str:
    if not etag.startswith(('"', 'W/"')):
        etag = f'"{etag}"'
    body = etag.removeprefix("W/")
    inner = body[1:-1]
    if len(body) < 2 or not body.endswith('"') or not all(_is_etagc(c) for c in inner):
        raise ValueError(f"invalid ETag: {etag!r}")
    return etag


def _content_disposition(filename: str) -> str:
    quoted = quote(filename)
    if quoted == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quoted}"


class _Transfer:
    """Progress of one body transfer, shared with the disconnect watcher."""

    __slots__ = ("delivered", "disconnected", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.delivered = False
        self.disconnected = False


class _Disconnected(Exception):
    pass


class MeteredFileResponse(Response):
    """Stream ``path`` or ``opener``'s bytes (a zip of ``size`` bytes) and report the bytes
    sent to ``on_sent``.

    Handles ``GET`` and ``HEAD`` with a single ``Range`` (206 / 416), ``If-Range`` against the
    strong ``etag`` (a mismatch, a weak tag or a date sends the full body with 200), and sends
    ``Content-Length``, ``Content-Type``, ``Accept-Ranges: bytes``, ``ETag`` and an attachment
    ``Content-Disposition``. ``Range`` is ignored for ``HEAD``, as RFC 9110 defines ranges for
    ``GET`` only.

    ``on_sent(total, completed)`` contract; ``total`` is always the absolute number of body
    bytes handed to the server's ``send`` for this response, never a delta:

    * No call at all for ``HEAD``, for 416, and for an empty (0 byte) body.
    * For a body of N > 0 bytes, every chunk but the last is sent, then
      ``on_sent(N, True)`` is awaited (shielded from cancellation), and only after it returns
      is the last chunk sent. A client that received the whole body is therefore already
      counted; the callback must make the count durable before returning.
    * If the transfer stops before the last chunk is handed over (client disconnect seen via
      ``http.disconnect``, ``send`` raising ``OSError``, any other error or cancellation), there
      is exactly one call ``on_sent(sent, False)`` with ``0 <= sent < N``.
    * If it stops after ``on_sent(N, True)`` but before the last chunk is handed over
      (disconnect during the callback, ``send`` failing, or the callback itself raising), a
      second call ``on_sent(N - len(last_chunk), False)`` follows. It is a correction: the
      caller must let it supersede the first (store the latest total per response, or
      subtract ``N - total``).

    So a response produces one of: ``(N, True)``; ``(k, False)``; ``(N, True), (k, False)``
    with ``k < N``. Every call is shielded from cancellation. Disconnects are reported
    normally (no exception); other errors are re-raised after the report, and an exception
    from ``on_sent`` propagates. "Sent" means handed to the server: bytes still buffered in
    the kernel when the client goes away are counted, and a disconnect after the last chunk
    was handed over is not observable through ASGI, so such a download stays complete.
    """

    media_type = "application/zip"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        opener: Opener | None = None,
        etag: str,
        filename: str,
        on_sent: OnSent,
        size: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        headers: Mapping[str, str] | None = None,
        media_type: str = "application/zip",
        background: BackgroundTask | None = None,
    ) -> None:
        """The body is the file at ``path``, or what ``opener`` gives (then ``size`` is
        required). ``size`` is the byte count to serve (e.g. from the bundle record); if it
        is ``None`` the file is stat'ed per request. ``etag`` is quoted unless it already is.
        """
        if (path is None) == (opener is None):
            raise ValueError("give either path or opener")
        if opener is not None and size is None:
            raise ValueError("an opener needs the size")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
        if size is not None and size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.path = path
        self.opener: Opener = opener or self._open_file
        self.size = size
        self.etag = _quote_etag(etag)
        self.filename = filename
        self.on_sent = on_sent
        self.chunk_size = chunk_size
        self.status_code = 200
        self.media_type = media_type
        self.background = background
        self.init_headers(headers)
        self.headers.setdefault("accept-ranges", "bytes")
        self.headers.setdefault("etag", self.etag)
        self.headers.setdefault("content-disposition", _content_disposition(filename))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("MeteredFileResponse only serves HTTP requests")
        method = str(scope["method"]).upper()
        size = self.size
        if size is None:
            assert self.path is not None
            size = (await anyio.to_thread.run_sync(os.stat, self.path)).st_size

        selected: ByteRange | None = ByteRange(0, size - 1) if size else None
        status = 200
        if method == "GET":
            request_headers = Headers(scope=scope)
            range_values = request_headers.getlist("range")
            if len(range_values) == 1 and self._if_range_allows(request_headers.get("if-range")):
                parsed = parse_range(range_values[0], size)
                if isinstance(parsed, Unsatisfiable):
                    await self._send_unsatisfiable(send, parsed)
                    return
                if parsed is not None:
                    selected, status = parsed, 206

        raw_headers = list(self.raw_headers)
        length = selected.length if selected is not None else 0
        raw_headers.append((b"content-length", str(length).encode("latin-1")))
        if status == 206 and selected is not None:
            raw_headers.append((b"content-range", selected.content_range(size).encode("latin-1")))
        start: Message = {"type": "http.response.start", "status": status, "headers": raw_headers}

        if method == "HEAD" or selected is None:
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await self._send_metered(start, selected, receive, send)

        if self.background is not None:
            await self.background()

    def _if_range_allows(self, if_range: str | None) -> bool:
        # Only a strong ETag match keeps the range; anything else means "send it all".
        if if_range is None:
            return True
        if_range = if_range.strip(_OWS)
        return not if_range.startswith("W/") and if_range == self.etag

    async def _send_unsatisfiable(self, send: Send, result: Unsatisfiable) -> None:
        headers = [
            (b"content-range", result.content_range.encode("latin-1")),
            (b"content-length", b"0"),
            (b"accept-ranges", b"bytes"),
            (b"etag", self.etag.encode("latin-1")),
        ]
        await send({"type": "http.response.start", "status": 416, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @asynccontextmanager
    async def _open_file(self, start: int, length: int) -> AsyncIterator[Reader]:
        assert self.path is not None
        file = await anyio.open_file(self.path, "rb")
        try:
            await file.seek(start)
            yield file
        finally:
            # The descriptor must be released even when the transfer is cancelled.
            with anyio.CancelScope(shield=True):
                await file.aclose()

    async def _report(self, total: int, completed: bool) -> None:
        # A half-finished metering write would lose bytes; let it finish under cancellation.
        with anyio.CancelScope(shield=True):
            await self.on_sent(total, completed)

    async def _send_metered(
        self, start: Message, selected: ByteRange, receive: Receive, send: Send
    ) -> None:
        transfer = _Transfer()
        # Opened before the response starts, so missing bytes still become a clean 500.
        async with self.opener(selected.start, selected.length) as file:
            try:
                await self._transfer(file, start, selected.length, receive, send, transfer)
            finally:
                if not transfer.delivered:
                    await self._report(transfer.sent, False)

    async def _transfer(
        self,
        file: Reader,
        start: Message,
        length: int,
        receive: Receive,
        send: Send,
        transfer: _Transfer,
    ) -> None:
        error: Exception | None = None
        async with anyio.create_task_group() as task_group:
            body_scope = anyio.CancelScope()
            task_group.start_soon(self._watch_disconnect, receive, body_scope, transfer)
            try:
                with body_scope:
                    await self._stream(file, start, length, send, transfer)
            except _Disconnected:
                # A gone client is an ordinary end of a download; the caller reports it.
                pass
            except Exception as exc:
                # Raised after the task group, so callers see it unwrapped.
                error = exc
            finally:
                task_group.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _watch_disconnect(
        self, receive: Receive, body_scope: anyio.CancelScope, transfer: _Transfer
    ) -> None:
        # Some servers (uvicorn) silently drop sends after a disconnect and only say so here.
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                transfer.disconnected = True
                body_scope.cancel()
                return

    async def _stream(
        self,
        file: Reader,
        start: Message,
        length: int,
        send: Send,
        transfer: _Transfer,
    ) -> None:
        await self._send(send, start)
        remaining = length
        while True:
            chunk = await file.read(min(self.chunk_size, remaining))
            if not chunk:
                source = self.path or "the body's source"
                raise RuntimeError(f"{source} is shorter than the {length} bytes to send")
            remaining -= len(chunk)
            if remaining == 0:
                break
            self._check_connected(transfer)
            await self._send(send, {"type": "http.response.body", "body": chunk, "more_body": True})
            transfer.sent += len(chunk)

        # Record the full count before the client can have the whole body.
        await self._report(length, True)
        # The report may have taken a while; a cancel requested meanwhile lands here.
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._check_connected(transfer)
        await self._send(send, {"type": "http.response.body", "body": chunk, "more_body": False})
        transfer.sent += len(chunk)
        transfer.delivered = True

    @staticmethod
    async def _send(send: Send, message: Message) -> None:
        try:
            await send(message)
        except OSError as exc:
            # Servers implementing ASGI 2.4 signal a gone client this way. Only errors from
            # send mean that: an OSError from on_sent or the file is a real failure.
            raise _Disconnected from exc

    @staticmethod
    def _check_connected(transfer: _Transfer) -> None:
        # A send that never suspends is not a cancellation point, so check explicitly.
        if transfer.disconnected:
            raise _Disconnected
