"""Bundle transfers cut short on a real ``otameter serve``, on both engines.

A client that goes away in the middle of an upload leaves nothing stored; one that goes away
in the middle of a download is counted for what was sent, with no error on the server.
"""

from __future__ import annotations

import io
import random
import socket
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from otameter.bundle_store import CHUNK_BYTES
from otameter.storage import schema as s
from otameter.storage.db import create_db_engine
from tests.harness import device_body
from tests.liveserver import LiveServer, create_app, create_user

APP = "com.example.live"


def bundle(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("index.html", b"<!doctype html>")
        archive.writestr("app.bin", random.Random(9).randbytes(size))
    return buffer.getvalue()


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    key = create_user(db_url)
    with LiveServer(db_url, tmp_path / "data") as server:
        yield server, key


def wait_for(check: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def stored_rows(db_url: str) -> tuple[int, int, int]:
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                int(conn.scalar(select(func.count()).select_from(t)) or 0)
                for t in (s.bundles, s.bundle_chunks, s.bundle_uploads)
            )
    finally:
        engine.dispose()


def bundle_files(data_dir: Path) -> list[Path]:
    root = data_dir / "bundles"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_an_upload_cut_short_leaves_nothing(live: tuple[LiveServer, str], db_url: str) -> None:
    server, key = live
    create_app(server.url, key, APP)
    data = bundle(3 * CHUNK_BYTES)
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="app_id"\r\n\r\n{APP}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0.0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + len(data) + len(tail)
    request = (
        f"POST /bundle HTTP/1.1\r\nHost: 127.0.0.1\r\nauthorization: {key}\r\n"
        f"content-type: multipart/form-data; boundary={boundary}\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()
    port = int(urlsplit(server.url).port or 0)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request + head + data[: 2 * CHUNK_BYTES + 1000])
        # The server has stored chunks (or a partial file) and waits for the rest.
        wait_for(lambda: stored_rows(db_url)[2] == 1, "the upload in progress is recorded")
    # Gone mid-upload: the bytes and the in-progress row are removed.
    wait_for(lambda: stored_rows(db_url) == (0, 0, 0), "nothing stored of the cut upload")
    assert bundle_files(server.data_dir) == []

    # The same upload in full goes in.
    with httpx.Client(base_url=server.url, headers={"authorization": key}, timeout=60) as c:
        r = c.post(
            "/bundle",
            data={"app_id": APP, "version": "1.0.0"},
            files={"file": ("b.zip", data, "application/zip")},
        )
    assert r.status_code == 201, r.text
    assert "Traceback" not in server.log.read_text()


def test_a_download_cut_short_counts_what_was_sent(live: tuple[LiveServer, str]) -> None:
    server, key = live
    # Larger than what loopback socket buffers can absorb once the client stops reading.
    data = bundle(16 * CHUNK_BYTES)
    create_app(server.url, key, APP, bundle=data)
    answer = httpx.post(f"{server.url}/updates", json=device_body(APP), timeout=30).json()
    url = urlsplit(answer["url"])
    port = int(urlsplit(server.url).port or 0)
    with socket.socket() as sock:
        # Set before connecting, so that the window the server sees stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        while len(received) < CHUNK_BYTES + CHUNK_BYTES // 2:
            piece = sock.recv(65536)
            assert piece, "the server closed the download early"
            received += piece
        assert received.startswith(b"HTTP/1.1 200")
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def bandwidth() -> int:
        r = httpx.get(
            f"{server.url}/statistics/app/{APP}/?from={today}&to={today}",
            headers={"authorization": key},
            timeout=30,
        )
        return int(r.json()["data"][0]["bandwidth"])

    wait_for(lambda: bandwidth() > 0, "the cut download is counted")
    # What was handed to the socket: at least what arrived, never the whole bundle.
    body_received = len(received) - received.index(b"\r\n\r\n") - 4
    assert body_received <= bandwidth() < len(data)
    assert "Traceback" not in server.log.read_text()
