"""Receiving a multipart bundle upload as it streams in.

Starlette's ``request.form()`` spools a whole file part (to memory, then to a temporary
file) before the handler sees a byte of it, so a size limit could only be checked after the
fact. Here python-multipart's push parser is fed the request stream directly: the form
fields come first, the handler authorizes the upload from them, and the file part then
flows through the size limit and SHA-256 into the bundle store a chunk at a time. Past the
limit the request ends with 413 and whatever was stored is removed.

``app_id`` and ``version`` must come before ``file`` (as S3's browser POST uploads require
of their fields), which is the order in which HTML forms, httpx, requests and ``curl -F``
send them when written in that order; ``channel`` may come anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from .bundle_store import CHUNK_BYTES, StagedUpload
from .errors import ApiError, bad_request

MAX_FIELD_BYTES = 4096
MAX_PARTS = 16
# Room for the form's fields and part headers on top of the file, for the Content-Length check.
FORM_OVERHEAD = 64 * 1024

Prepare = Callable[[dict[str, str]], Awaitable[StagedUpload]]


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"Bundle is larger than the limit of {max_bytes} bytes")


@dataclass
class Received:
    fields: dict[str, str]
    # The fields as they stood when the file began: those that authorized it.
    fields_before_file: dict[str, str]
    staged: StagedUpload
    size: int
    checksum: str


@dataclass
class _Part:
    name: str = ""
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


class _Collector:
    """python-multipart callbacks (synchronous): fields are kept, file data is queued for the
    asynchronous side, which drains it after each piece of the stream."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.events: list[tuple[str, Any]] = []
        self.parts = 0
        self._part = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise bad_request(f"The form has more than {MAX_PARTS} parts")
        self._part = _Part()
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise bad_request("A form part has no name")
        self._part.name = name.decode("utf-8", "replace")
        self._part.is_file = b"filename" in options
        if self._part.is_file:
            # The fields as they stand when the file begins: only those can authorize it.
            self.events.append(("file", (self._part.name, dict(self.fields))))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.is_file:
            self.events.append(("data", data[start:end]))
            return
        self._part.value += data[start:end]
        if len(self._part.value) > MAX_FIELD_BYTES:
            raise bad_request(f"Form field {self._part.name!r} is too long")

    def on_part_end(self) -> None:
        if self._part.is_file:
            self.events.append(("end", self._part.name))
        else:
            try:
                self.fields[self._part.name] = self._part.value.decode()
            except UnicodeDecodeError:
                raise bad_request(f"Form field {self._part.name!r} is not UTF-8") from None


class _FilePart:
    """The file part on its way into the store: limit, checksum, chunked writes.

    One chunk is written (in a thread) while the next one is received, so that the store's
    write and the network overlap; at most one write is outstanding.
    """

    def __init__(self, staged: StagedUpload, max_bytes: int) -> None:
        self.staged = staged
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()
        self.buffer = bytearray()
        self.ended = False
        self._writing: asyncio.Future[None] | None = None

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise too_large(self.max_bytes)
        self.digest.update(data)
        self.buffer += data

    async def flush(self, *, final: bool = False) -> None:
        # Whole chunks go to the store in one call each; a thread hop per network read would
        # cost more than the write.
        if self.buffer and (final or len(self.buffer) >= CHUNK_BYTES):
            data = bytes(self.buffer)
            self.buffer.clear()
            await self.settle()
            loop = asyncio.get_running_loop()
            self._writing = loop.run_in_executor(None, self.staged.write, data)
        if final:
            await self.settle()
            await run_in_threadpool(self.staged.finish)
            self.ended = True

    async def settle(self) -> None:
        """Wait for the outstanding write (raising its error)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def abort(self) -> None:
        # Under cancellation (a client gone) too: nothing of the upload may stay.
        with anyio.CancelScope(shield=True):
            # The write in flight must end before its bytes can be removed.
            with suppress(Exception):
                await self.settle()
            await run_in_threadpool(self.staged.abort)


async def receive_bundle(request: Request, max_bytes: int, prepare: Prepare) -> Received:
    """Read a multipart bundle upload; ``prepare(fields)`` authorizes it (raising an ApiError)
    and begins the stored upload. On any failure the stored bytes are removed."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
        raise too_large(max_bytes)
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise bad_request("The multipart body has no boundary")
    collector = _Collector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())
    except (FormParserError, ValueError):
        raise bad_request("The multipart boundary is invalid") from None
    part: _FilePart | None = None
    authorized: dict[str, str] = {}
    try:
        async for piece in request.stream():
            try:
                parser.write(piece)
            except FormParserError:
                raise bad_request("Invalid multipart body") from None
            for kind, value in collector.events:
                if kind == "file":
                    name, fields_before = value
                    if name != "file" or part is not None:
                        raise bad_request("The form takes one file part, named 'file'")
                    if "app_id" not in fields_before or "version" not in fields_before:
                        raise bad_request(
                            "'app_id' and 'version' must come before 'file' in the form"
                        )
                    part = _FilePart(await prepare(fields_before), max_bytes)
                    authorized = fields_before
                elif kind == "data":
                    assert part is not None
                    part.add(value)
                else:
                    assert part is not None
                    await part.flush(final=True)
            collector.events.clear()
            if part is not None and not part.ended:
                await part.flush()
        try:
            parser.finalize()
        except FormParserError:
            raise bad_request("Invalid multipart body") from None
        if part is None or not part.ended:
            raise bad_request("'file' (a zip) is required")
    except ClientDisconnect:
        # An ordinary end of an upload: nobody is left to read the answer.
        if part is not None:
            await part.abort()
        raise bad_request("The upload was cut short") from None
    except BaseException:
        if part is not None:
            await part.abort()
        raise
    return Received(collector.fields, authorized, part.staged, part.size, part.digest.hexdigest())
