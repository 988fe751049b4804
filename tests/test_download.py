"""Range parsing, the on_sent metering contract, and real HTTP downloads through uvicorn."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otameter.download import (
    DEFAULT_CHUNK_SIZE,
    ByteRange,
    MeteredFileResponse,
    Unsatisfiable,
    parse_range,
)

# --------------------------------------------------------------------------- parse_range

U = Unsatisfiable


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        # bytes=a-b, clamped to the last byte
        ("bytes=0-0", 100, ByteRange(0, 0)),
        ("bytes=0-99", 100, ByteRange(0, 99)),
        ("bytes=10-20", 100, ByteRange(10, 20)),
        ("bytes=99-99", 100, ByteRange(99, 99)),
        ("bytes=50-1000", 100, ByteRange(50, 99)),
        ("bytes=0-99999999999999999999999999999", 100, ByteRange(0, 99)),
        ("bytes=007-010", 100, ByteRange(7, 10)),
        # bytes=a-
        ("bytes=0-", 100, ByteRange(0, 99)),
        ("bytes=1000-", 5000, ByteRange(1000, 4999)),
        ("bytes=99-", 100, ByteRange(99, 99)),
        # suffix bytes=-n; longer than the file means all of it
        ("bytes=-1", 100, ByteRange(99, 99)),
        ("bytes=-10", 100, ByteRange(90, 99)),
        ("bytes=-100", 100, ByteRange(0, 99)),
        ("bytes=-500", 100, ByteRange(0, 99)),
        ("bytes=-99999999999999999999999999999", 100, ByteRange(0, 99)),
        # whitespace, unit case, empty list elements
        ("  bytes=10-20  ", 100, ByteRange(10, 20)),
        ("bytes = 10 - 20", 100, ByteRange(10, 20)),
        ("Bytes=\t10-\t", 100, ByteRange(10, 99)),
        ("BYTES= -5", 100, ByteRange(95, 99)),
        ("bytes=10-20,", 100, ByteRange(10, 20)),
        ("bytes=, 10-20 ,,", 100, ByteRange(10, 20)),
        # unsatisfiable: a > b, a >= size, zero-length suffix
        ("bytes=20-10", 100, U(100)),
        ("bytes=100-", 100, U(100)),
        ("bytes=100-200", 100, U(100)),
        ("bytes=5000-", 100, U(100)),
        ("bytes=99999999999999999999999999999-", 100, U(100)),
        ("bytes=-0", 100, U(100)),
        ("bytes=-000", 100, U(100)),
        # empty file: no position exists; a suffix selects nothing expressible
        ("bytes=0-", 0, U(0)),
        ("bytes=0-0", 0, U(0)),
        ("bytes=-0", 0, U(0)),
        ("bytes=-5", 0, None),
        # absent, invalid or multi-range: serve the whole file
        (None, 100, None),
        ("", 100, None),
        ("bytes", 100, None),
        ("bytes=", 100, None),
        ("bytes=-", 100, None),
        ("bytes=abc", 100, None),
        ("bytes=1-2-3", 100, None),
        ("bytes=1", 100, None),
        ("bytes=+1-2", 100, None),
        ("bytes=1_0-20", 100, None),
        ("bytes=-1-2", 100, None),
        ("bytes=0x10-20", 100, None),
        ("bytes=\u0661-2", 100, None),
        ("bytes=1 0-20", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("bytes=0-1, -5", 100, None),
        ("items=0-10", 100, None),
        ("bytes 0-10", 100, None),
        ("=0-10", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


def test_byte_range_helpers() -> None:
    byte_range = ByteRange(1000, 4999)
    assert byte_range.length == 4000
    assert byte_range.content_range(5000) == "bytes 1000-4999/5000"
    assert ByteRange(7, 7).length == 1
    assert Unsatisfiable(42).content_range == "bytes */42"


def test_parse_range_rejects_negative_size() -> None:
    with pytest.raises(ValueError):
        parse_range("bytes=0-", -1)


# ------------------------------------------------------------ ASGI-level contract tests


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Exchange:
    """One ASGI call against a fake server that logs everything in order."""

    log: list[tuple[Any, ...]] = field(default_factory=list)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)

    @property
    def calls(self) -> list[tuple[int, bool]]:
        return [(entry[1], entry[2]) for entry in self.log if entry[0] == "on_sent"]

    @property
    def body_messages(self) -> list[tuple[int, bool]]:
        return [(entry[1], entry[2]) for entry in self.log if entry[0] == "body"]


SendHook = Callable[[Exchange, Message], Awaitable[None]]
ReportHook = Callable[[Exchange, int, bool], Awaitable[None]]


async def _never_disconnect(exchange: Exchange) -> None:
    await anyio.sleep_forever()


def _respond(
    path: Path,
    exchange: Exchange,
    *,
    chunk_size: int = 1000,
    size: int | None = None,
    on_report: ReportHook | None = None,
) -> MeteredFileResponse:
    async def on_sent(total: int, completed: bool) -> None:
        exchange.log.append(("on_sent", total, completed))
        if on_report is not None:
            await on_report(exchange, total, completed)

    return MeteredFileResponse(
        path,
        size=path.stat().st_size if size is None else size,
        etag="abc123",
        filename="bundle.zip",
        on_sent=on_sent,
        chunk_size=chunk_size,
    )


async def _run(
    response: MeteredFileResponse,
    exchange: Exchange,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    before_send: SendHook | None = None,
    disconnect_when: Callable[[Exchange], Awaitable[None]] = _never_disconnect,
) -> None:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "path": "/",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    request_read = False

    async def receive() -> Message:
        nonlocal request_read
        if not request_read:
            request_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect_when(exchange)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if before_send is not None:
            await before_send(exchange, message)
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            exchange.log.append(("start", message["status"]))
        else:
            body = message.get("body", b"")
            exchange.body += body
            exchange.log.append(("body", len(body), message.get("more_body", False)))

    await response(scope, receive, send)


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, bytes]:
    data = _data(3500)
    path = tmp_path / "bundle.zip"
    path.write_bytes(data)
    return path, data


async def test_full_body_is_recorded_before_last_chunk(payload: tuple[Path, bytes]) -> None:
    path, data = payload
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange)
    assert exchange.log == [
        ("start", 200),
        ("body", 1000, True),
        ("body", 1000, True),
        ("body", 1000, True),
        ("on_sent", 3500, True),
        ("body", 500, False),
    ]
    assert bytes(exchange.body) == data
    assert exchange.headers == {
        "content-type": "application/zip",
        "accept-ranges": "bytes",
        "etag": '"abc123"',
        "content-disposition": 'attachment; filename="bundle.zip"',
        "content-length": "3500",
    }


@pytest.mark.parametrize(
    ("size", "expected_bodies"),
    [
        (1, [(1, False)]),
        (999, [(999, False)]),
        (1000, [(1000, False)]),
        (1001, [(1000, True), (1, False)]),
        (3000, [(1000, True), (1000, True), (1000, False)]),
    ],
)
async def test_chunk_boundaries(tmp_path: Path, size: int, expected_bodies: list[Any]) -> None:
    data = _data(size)
    path = tmp_path / "f.zip"
    path.write_bytes(data)
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange)
    assert exchange.body_messages == expected_bodies
    assert exchange.calls == [(size, True)]
    # The report comes right before the final body message.
    assert exchange.log[-2] == ("on_sent", size, True)
    assert bytes(exchange.body) == data


async def test_default_chunk_size(tmp_path: Path) -> None:
    data = _data(DEFAULT_CHUNK_SIZE * 2 + 5)
    path = tmp_path / "f.zip"
    path.write_bytes(data)
    exchange = Exchange()
    response = MeteredFileResponse(
        path, etag="e", filename="f.zip", on_sent=_respond(path, exchange).on_sent
    )
    await _run(response, exchange)
    assert exchange.body_messages == [
        (DEFAULT_CHUNK_SIZE, True),
        (DEFAULT_CHUNK_SIZE, True),
        (5, False),
    ]
    assert exchange.calls == [(len(data), True)]
    assert exchange.headers["content-length"] == str(len(data))


async def test_range_sends_and_counts_only_the_range(payload: tuple[Path, bytes]) -> None:
    path, data = payload
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, headers={"Range": "bytes=1000-"})
    assert exchange.status == 206
    assert exchange.headers["content-range"] == "bytes 1000-3499/3500"
    assert exchange.headers["content-length"] == "2500"
    assert bytes(exchange.body) == data[1000:]
    assert exchange.calls == [(2500, True)]
    assert exchange.log[-2:] == [("on_sent", 2500, True), ("body", 500, False)]


async def test_suffix_and_bounded_ranges(payload: tuple[Path, bytes]) -> None:
    path, data = payload
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, headers={"Range": "bytes=-10"})
    assert (exchange.status, exchange.headers["content-range"]) == (206, "bytes 3490-3499/3500")
    assert bytes(exchange.body) == data[-10:]
    assert exchange.calls == [(10, True)]

    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, headers={"Range": "bytes=5-1004"})
    assert exchange.headers["content-range"] == "bytes 5-1004/3500"
    assert bytes(exchange.body) == data[5:1005]
    assert exchange.calls == [(1000, True)]


async def test_invalid_or_multi_range_serves_everything(payload: tuple[Path, bytes]) -> None:
    path, data = payload
    for header in ("bytes=0-1,5-6", "bytes=x-", "lines=1-2"):
        exchange = Exchange()
        await _run(_respond(path, exchange), exchange, headers={"Range": header})
        assert exchange.status == 200
        assert "content-range" not in exchange.headers
        assert bytes(exchange.body) == data
        assert exchange.calls == [(3500, True)]


async def test_unsatisfiable_range_is_416_and_not_metered(payload: tuple[Path, bytes]) -> None:
    path, _ = payload
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, headers={"Range": "bytes=3500-"})
    assert exchange.status == 416
    assert exchange.headers["content-range"] == "bytes */3500"
    assert exchange.headers["content-length"] == "0"
    assert exchange.body == b""
    assert exchange.calls == []


async def test_head_sends_headers_only_and_is_not_metered(payload: tuple[Path, bytes]) -> None:
    path, _ = payload
    for headers in ({}, {"Range": "bytes=1000-"}):
        exchange = Exchange()
        await _run(_respond(path, exchange), exchange, method="HEAD", headers=headers)
        # Ranges are defined for GET only.
        assert exchange.status == 200
        assert exchange.headers["content-length"] == "3500"
        assert exchange.headers["etag"] == '"abc123"'
        assert exchange.log == [("start", 200), ("body", 0, False)]


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ('"abc123"', 206),
        (' "abc123" ', 206),
        ('"other"', 200),
        ('W/"abc123"', 200),
        ("abc123", 200),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 200),
    ],
)
async def test_if_range(payload: tuple[Path, bytes], if_range: str, status: int) -> None:
    path, data = payload
    exchange = Exchange()
    headers = {"Range": "bytes=1000-", "If-Range": if_range}
    await _run(_respond(path, exchange), exchange, headers=headers)
    assert exchange.status == status
    expected = data[1000:] if status == 206 else data
    assert bytes(exchange.body) == expected
    assert exchange.calls == [(len(expected), True)]


async def test_if_range_mismatch_also_skips_416(payload: tuple[Path, bytes]) -> None:
    path, data = payload
    exchange = Exchange()
    headers = {"Range": "bytes=9999-", "If-Range": '"stale"'}
    await _run(_respond(path, exchange), exchange, headers=headers)
    assert exchange.status == 200
    assert bytes(exchange.body) == data


async def test_empty_file_is_not_metered(tmp_path: Path) -> None:
    path = tmp_path / "empty.zip"
    path.write_bytes(b"")
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange)
    assert exchange.log == [("start", 200), ("body", 0, False)]
    assert exchange.headers["content-length"] == "0"

    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, headers={"Range": "bytes=0-"})
    assert (exchange.status, exchange.headers["content-range"]) == (416, "bytes */0")
    assert exchange.calls == []


async def test_size_is_read_from_disk_when_not_given(payload: tuple[Path, bytes]) -> None:
    path, data = payload
    exchange = Exchange()

    async def on_sent(total: int, completed: bool) -> None:
        exchange.log.append(("on_sent", total, completed))

    response = MeteredFileResponse(path, etag="e", filename="b.zip", on_sent=on_sent)
    await _run(response, exchange)
    assert exchange.headers["content-length"] == "3500"
    assert bytes(exchange.body) == data


def test_headers_etag_and_filename() -> None:
    async def on_sent(total: int, completed: bool) -> None:
        return None

    def make(**kwargs: Any) -> MeteredFileResponse:
        params: dict[str, Any] = {"etag": "e", "filename": "b.zip", "on_sent": on_sent, "size": 1}
        params.update(kwargs)
        return MeteredFileResponse("x", **params)

    assert make(etag="sha256-ab").headers["etag"] == '"sha256-ab"'
    assert make(etag='"q"').headers["etag"] == '"q"'
    assert make(etag='W/"w"').headers["etag"] == 'W/"w"'
    assert make(filename="näme.zip").headers["content-disposition"] == (
        "attachment; filename*=utf-8''n%C3%A4me.zip"
    )
    extra = make(headers={"Cache-Control": "no-store"})
    assert extra.headers["cache-control"] == "no-store"
    assert extra.headers["content-type"] == "application/zip"
    for bad in ('a"b', "a b", '"', 'W/"x'):
        with pytest.raises(ValueError):
            make(etag=bad)
    with pytest.raises(ValueError):
        make(chunk_size=0)
    with pytest.raises(ValueError):
        make(size=-1)


async def test_missing_file_fails_before_the_response_starts(tmp_path: Path) -> None:
    exchange = Exchange()

    async def on_sent(total: int, completed: bool) -> None:
        exchange.log.append(("on_sent", total, completed))

    response = MeteredFileResponse(
        tmp_path / "gone.zip", size=10, etag="e", filename="g.zip", on_sent=on_sent
    )
    with pytest.raises(FileNotFoundError):
        await _run(response, exchange)
    assert exchange.log == []


def _fail_on_body(index: int) -> SendHook:
    """A send that raises OSError (ASGI 2.4 disconnect) on the index-th body message."""
    seen = 0

    async def hook(exchange: Exchange, message: Message) -> None:
        nonlocal seen
        if message["type"] == "http.response.body":
            seen += 1
            if seen == index:
                raise OSError("client went away")

    return hook


async def test_send_error_midway_reports_what_was_sent(payload: tuple[Path, bytes]) -> None:
    path, _ = payload
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, before_send=_fail_on_body(3))
    assert exchange.calls == [(2000, False)]
    assert len(exchange.body) == 2000


async def test_send_error_on_first_body_reports_zero(payload: tuple[Path, bytes]) -> None:
    path, _ = payload
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, before_send=_fail_on_body(1))
    assert exchange.calls == [(0, False)]


async def test_send_error_on_last_chunk_corrects_the_count(payload: tuple[Path, bytes]) -> None:
    path, _ = payload
    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, before_send=_fail_on_body(4))
    assert exchange.calls == [(3500, True), (3000, False)]
    assert len(exchange.body) == 3000


async def test_disconnect_stops_the_stream(tmp_path: Path) -> None:
    data = _data(100_000)
    path = tmp_path / "big.zip"
    path.write_bytes(data)
    two_chunks_out = anyio.Event()

    async def note(exchange: Exchange, message: Message) -> None:
        if len(exchange.body_messages) == 2:
            two_chunks_out.set()

    async def disconnect(exchange: Exchange) -> None:
        await two_chunks_out.wait()

    exchange = Exchange()
    await _run(_respond(path, exchange), exchange, before_send=note, disconnect_when=disconnect)
    assert len(exchange.calls) == 1
    total, completed = exchange.calls[0]
    assert not completed
    # Exactly what reached send is counted. The disconnect arrives as the third chunk goes
    # out; allow one more chunk in case the watcher is scheduled late.
    assert total == len(exchange.body)
    assert 3000 <= total <= 4000
    assert exchange.body_messages[-1][1] is True


async def test_disconnect_during_report_withholds_last_chunk(
    payload: tuple[Path, bytes],
) -> None:
    path, _ = payload
    gone = anyio.Event()

    async def slow_report(exchange: Exchange, total: int, completed: bool) -> None:
        if completed:
            gone.set()
            # Give the watcher time to see the disconnect; shielding keeps this running.
            await anyio.sleep(0.05)

    async def disconnect(exchange: Exchange) -> None:
        await gone.wait()

    exchange = Exchange()
    response = _respond(path, exchange, on_report=slow_report)
    await _run(response, exchange, disconnect_when=disconnect)
    assert exchange.calls == [(3500, True), (3000, False)]
    assert exchange.body_messages == [(1000, True)] * 3


async def test_failing_report_withholds_last_chunk_and_raises(
    payload: tuple[Path, bytes],
) -> None:
    path, _ = payload

    async def failing(exchange: Exchange, total: int, completed: bool) -> None:
        if completed:
            raise ConnectionError("database down")

    exchange = Exchange()
    with pytest.raises(ConnectionError, match="database down"):
        await _run(_respond(path, exchange, on_report=failing), exchange)
    assert exchange.calls == [(3500, True), (3000, False)]
    assert exchange.body_messages == [(1000, True)] * 3


async def test_file_shorter_than_size_reports_and_raises(payload: tuple[Path, bytes]) -> None:
    path, _ = payload
    exchange = Exchange()
    with pytest.raises(RuntimeError, match="shorter"):
        await _run(_respond(path, exchange, size=5000), exchange)
    assert exchange.calls == [(3500, False)]
    assert len(exchange.body) == 3500
    assert exchange.headers["content-length"] == "5000"


async def test_server_error_from_send_reports_and_raises(payload: tuple[Path, bytes]) -> None:
    path, _ = payload

    async def hook(exchange: Exchange, message: Message) -> None:
        if len(exchange.body_messages) == 1:
            raise RuntimeError("server bug")

    exchange = Exchange()
    with pytest.raises(RuntimeError, match="server bug"):
        await _run(_respond(path, exchange), exchange, before_send=hook)
    assert exchange.calls == [(1000, False)]


async def test_cancellation_reports_once(payload: tuple[Path, bytes]) -> None:
    path, _ = payload
    stuck = anyio.Event()

    async def block_second_chunk(exchange: Exchange, message: Message) -> None:
        if len(exchange.body_messages) == 1:
            stuck.set()
            await anyio.sleep_forever()

    exchange = Exchange()
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(
            lambda: _run(_respond(path, exchange), exchange, before_send=block_second_chunk)
        )
        await stuck.wait()
        task_group.cancel_scope.cancel()
    assert exchange.calls == [(1000, False)]


# --------------------------------------------------------------- real HTTP via uvicorn

SMALL_SIZE = 300_001
BIG_SIZE = 8 * 1024 * 1024


@dataclass
class Meter:
    """Thread-safe record of on_sent calls and finished responses, keyed by request id."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    def record(self, rid: str, total: int, completed: bool) -> None:
        with self.lock:
            self.calls.setdefault(rid, []).append((total, completed))

    def finish(self, rid: str) -> None:
        with self.lock:
            self.finished.add(rid)

    def calls_for(self, rid: str) -> list[tuple[int, bool]]:
        with self.lock:
            return list(self.calls.get(rid, []))

    def wait_finished(self, rid: str, timeout: float = 10.0) -> list[tuple[int, bool]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if rid in self.finished:
                    return list(self.calls.get(rid, []))
            time.sleep(0.01)
        raise AssertionError(f"response {rid} did not finish within {timeout}s")


def _rid(scope: Scope) -> str:
    query_string: bytes = scope["query_string"]
    return parse_qs(query_string.decode()).get("rid", [""])[0]


class _TrackFinished:
    """Marks a request finished once the app (and its metering) has fully returned."""

    def __init__(self, app: ASGIApp, meter: Meter) -> None:
        self.app = app
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.meter.finish(_rid(scope))


def _build_app(files: dict[str, Path], meter: Meter) -> ASGIApp:
    async def download(request: Request) -> MeteredFileResponse:
        name = request.path_params["name"]
        rid = request.query_params["rid"]
        path = files[name]

        async def on_sent(total: int, completed: bool) -> None:
            meter.record(rid, total, completed)

        return MeteredFileResponse(
            path,
            size=path.stat().st_size,
            etag=f"sha-{name}",
            filename=f"{name}.zip",
            on_sent=on_sent,
        )

    app = Starlette(routes=[Route("/bundles/{name}", download, methods=["GET", "HEAD"])])
    return _TrackFinished(app, meter)


@dataclass
class LiveServer:
    host: str
    port: int
    meter: Meter
    data: dict[str, bytes]

    def url(self, name: str, rid: str) -> str:
        return f"http://{self.host}:{self.port}/bundles/{name}?rid={rid}"


@pytest.fixture(scope="module", params=["httptools", "h11"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("bundles")
    data = {"small": _data(SMALL_SIZE, 1), "big": _data(BIG_SIZE, 2)}
    files = {}
    for name, content in data.items():
        files[name] = directory / f"{name}.zip"
        files[name].write_bytes(content)
    meter = Meter()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Accepted sockets inherit this: a small, fixed send buffer keeps a stalled client from
    # absorbing the whole big file into kernel buffers.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    config = uvicorn.Config(
        _build_app(files, meter),
        http=request.param,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start within 10s"
        time.sleep(0.01)
    try:
        yield LiveServer(host, port, meter, data)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as http:
        yield http


def _new_rid() -> str:
    return uuid.uuid4().hex


def test_http_full_download(live: LiveServer, client: httpx.Client) -> None:
    rid = _new_rid()
    response = client.get(live.url("small", rid))
    assert response.status_code == 200
    assert response.content == live.data["small"]
    assert response.headers["content-length"] == str(SMALL_SIZE)
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == '"sha-small"'
    assert response.headers["content-disposition"] == 'attachment; filename="small.zip"'
    # No waiting: the count must exist by the time the client holds the whole body.
    assert live.meter.calls_for(rid) == [(SMALL_SIZE, True)]
    assert live.meter.wait_finished(rid) == [(SMALL_SIZE, True)]


def test_http_big_full_download(live: LiveServer, client: httpx.Client) -> None:
    rid = _new_rid()
    response = client.get(live.url("big", rid))
    assert response.content == live.data["big"]
    assert live.meter.calls_for(rid) == [(BIG_SIZE, True)]


def test_http_resumed_download(live: LiveServer, client: httpx.Client) -> None:
    rid = _new_rid()
    response = client.get(live.url("small", rid), headers={"Range": "bytes=1000-"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 1000-{SMALL_SIZE - 1}/{SMALL_SIZE}"
    assert response.headers["content-length"] == str(SMALL_SIZE - 1000)
    assert response.content == live.data["small"][1000:]
    assert live.meter.calls_for(rid) == [(SMALL_SIZE - 1000, True)]


def test_http_suffix_range(live: LiveServer, client: httpx.Client) -> None:
    rid = _new_rid()
    response = client.get(live.url("small", rid), headers={"Range": "bytes=-500"})
    assert response.status_code == 206
    assert response.headers["content-range"] == (
        f"bytes {SMALL_SIZE - 500}-{SMALL_SIZE - 1}/{SMALL_SIZE}"
    )
    assert response.content == live.data["small"][-500:]
    assert live.meter.calls_for(rid) == [(500, True)]


def test_http_unsatisfiable(live: LiveServer, client: httpx.Client) -> None:
    rid = _new_rid()
    response = client.get(live.url("small", rid), headers={"Range": f"bytes={SMALL_SIZE}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SMALL_SIZE}"
    assert response.content == b""
    assert live.meter.wait_finished(rid) == []


def test_http_head(live: LiveServer, client: httpx.Client) -> None:
    rid = _new_rid()
    response = client.head(live.url("small", rid))
    assert response.status_code == 200
    assert response.headers["content-length"] == str(SMALL_SIZE)
    assert response.content == b""
    assert live.meter.wait_finished(rid) == []


def test_http_if_range(live: LiveServer, client: httpx.Client) -> None:
    rid = _new_rid()
    headers = {"Range": "bytes=1000-", "If-Range": '"stale-etag"'}
    response = client.get(live.url("small", rid), headers=headers)
    assert response.status_code == 200
    assert response.content == live.data["small"]
    assert live.meter.calls_for(rid) == [(SMALL_SIZE, True)]

    rid = _new_rid()
    headers = {"Range": "bytes=1000-", "If-Range": '"sha-small"'}
    response = client.get(live.url("small", rid), headers=headers)
    assert response.status_code == 206
    assert response.content == live.data["small"][1000:]
    assert live.meter.calls_for(rid) == [(SMALL_SIZE - 1000, True)]


def test_http_client_disconnect_counts_partial(live: LiveServer) -> None:
    rid = _new_rid()
    want = 256 * 1024
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as raw:
        # A small receive window keeps the server from racing ahead of this reader.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        raw.settimeout(10)
        raw.connect((live.host, live.port))
        request = f"GET /bundles/big?rid={rid} HTTP/1.1\r\nHost: {live.host}\r\n\r\n"
        raw.sendall(request.encode())
        received = bytearray()
        while len(received) < want:
            chunk = raw.recv(65536)
            assert chunk, "server closed the connection early"
            received += chunk
        head, _, _ = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert f"content-length: {BIG_SIZE}".encode() in head.lower()
        # Reset rather than a graceful close: the client is simply gone.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    calls = live.meter.wait_finished(rid, timeout=15)
    assert len(calls) == 1, calls
    total, completed = calls[0]
    assert completed is False
    assert 0 < total < BIG_SIZE
