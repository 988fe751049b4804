"""Bundle bytes: files on SQLite, chunks in the database on PostgreSQL, served by any server.

Uploads stream through the size limit into the store; nothing of a refused upload stays.
On PostgreSQL two servers (two runtimes with separate data directories) share the bundles
through the database alone: upload through one, download, resume and delete through the
other, with storage and bandwidth exact.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from otameter.bundle_store import CHUNK_BYTES
from otameter.storage import schema as s
from tests.harness import Harness, running, setup_app

APP = "com.example.app"


def big_zip(size: int, seed: int = 1) -> bytes:
    """A valid bundle of about ``size`` bytes that no compression shrinks."""
    rng = __import__("random").Random(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("index.html", b"<!doctype html><title>big</title>")
        archive.writestr("app.bin", rng.randbytes(size))
    return buffer.getvalue()


def counts(h: Harness) -> dict[str, int]:
    """Rows of bundles, chunks and uploads in progress, and files under the data dir."""
    with h.rt.read_engine.connect() as conn:
        rows = {
            name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in [
                ("bundles", s.bundles),
                ("chunks", s.bundle_chunks),
                ("uploads", s.bundle_uploads),
            ]
        }
    bundle_dir = h.rt.settings.bundle_dir
    rows["files"] = (
        sum(1 for p in bundle_dir.rglob("*") if p.is_file()) if bundle_dir.exists() else 0
    )
    return rows


def is_postgres(h: Harness) -> bool:
    return h.rt.read_engine.dialect.name == "postgresql"


def download_path(h: Harness, device: str) -> str:
    answer = h.checkin(APP, device).json()
    assert "error" not in answer, answer
    url: str = answer["url"]
    return url.removeprefix("http://otameter.test")


def figures(h: Harness, key: str, day: str) -> dict[str, int]:
    h.rollup()
    (row,) = h.stats(key, f"app/{APP}", day, day)
    return {"storage": row["storage"], "bandwidth": row["bandwidth"]}


def post_bundle(h: Harness, key: str, version: str, data: bytes) -> httpx.Response:
    return h.client.post(
        "/bundle",
        data={"app_id": APP, "version": version},
        files={"file": ("bundle.zip", data, "application/zip")},
        headers=h.auth(key),
    )


def post_chunked(h: Harness, key: str, version: str, data: bytes, piece: int) -> httpx.Response:
    """The same form sent with no Content-Length (chunked transfer encoding)."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="app_id"\r\n\r\n{APP}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n{version}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), piece):
            yield body[i : i + piece]

    return h.client.post(
        "/bundle",
        content=pieces(),
        headers={**h.auth(key), "content-type": f"multipart/form-data; boundary={boundary}"},
    )


# -- one server, both engines ------------------------------------------------------------------


def test_bytes_live_in_the_store_of_the_engine_and_go_with_a_delete(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    data = big_zip(2 * CHUNK_BYTES + 12_345)
    bundle = h.upload(key, APP, "1.0.0", data)
    assert bundle["checksum"] == hashlib.sha256(data).hexdigest()
    assert bundle["size"] == len(data)
    stored = counts(h)
    if is_postgres(h):
        # Three chunks in the database, nothing in the data directory.
        assert stored == {"bundles": 1, "chunks": 3, "uploads": 0, "files": 0}
    else:
        assert stored == {"bundles": 1, "chunks": 0, "uploads": 0, "files": 1}

    path = download_path(h, str(uuid.uuid4()))
    full = h.client.get(path)
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-length"] == str(len(data))
    # A range that starts inside the second chunk and ends inside the third.
    start, end = CHUNK_BYTES + 100, 2 * CHUNK_BYTES + 99
    part = h.client.get(path, headers={"range": f"bytes={start}-{end}"})
    assert part.status_code == 206 and part.content == data[start : end + 1]
    assert part.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    tail = h.client.get(path, headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]

    r = h.client.delete(f"/bundle?app_id={APP}&version=1.0.0", headers=h.auth(key))
    assert r.status_code == 200, r.text
    # Soft delete: the row (and its statistics) stays, the bytes are gone.
    assert counts(h) == {"bundles": 1, "chunks": 0, "uploads": 0, "files": 0}
    assert h.client.get(path).status_code == 404


def test_a_bundle_of_exactly_one_chunk(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    # Grow the padding until the zip is exactly one chunk long.
    data = big_zip(CHUNK_BYTES - 200)
    data = big_zip(CHUNK_BYTES - 200 + CHUNK_BYTES - len(data))
    assert len(data) == CHUNK_BYTES
    h.upload(key, APP, "1.0.0", data)
    if is_postgres(h):
        assert counts(h)["chunks"] == 1
    path = download_path(h, str(uuid.uuid4()))
    assert h.client.get(path).content == data
    last = h.client.get(path, headers={"range": f"bytes={CHUNK_BYTES - 1}-"})
    assert last.status_code == 206 and last.content == data[-1:]


def test_an_upload_past_the_limit_is_413_and_leaves_nothing(db_url: str, tmp_path: Path) -> None:
    limit = 200_000
    with running(db_url, tmp_path / "data", max_bundle_bytes=limit) as h:
        key = setup_app(h)
        h.upload(key, APP, "1.0.0", big_zip(50_000))
        before = counts(h)

        # Declared too large: refused before the body is read.
        r = post_bundle(h, key, "2.0.0", big_zip(limit + 100_000))
        assert r.status_code == 413, r.text
        assert r.json() == {
            "error": f"Bundle is larger than the limit of {limit} bytes",
            "status": "KO",
        }
        # Within the declared slack, so the stream itself crosses the limit.
        r = post_bundle(h, key, "2.0.0", big_zip(limit + 10_000))
        assert r.status_code == 413, r.text
        # No Content-Length at all (chunked): the limit is still met while streaming.
        r = post_chunked(h, key, "2.0.0", big_zip(3 * limit), 65536)
        assert r.status_code == 413, r.text
        assert counts(h) == before

        # Under the limit, a chunked upload goes in whole.
        data = big_zip(limit - 1000)
        r = post_chunked(h, key, "2.0.0", data, 7000)
        assert r.status_code == 201, r.text
        assert r.json()["checksum"] == hashlib.sha256(data).hexdigest()


def test_fields_must_precede_the_file(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    boundary = "b0undary"
    data = big_zip(1000)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + data
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="app_id"\r\n\r\n{APP}'
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0.0'
            f"\r\n--{boundary}--\r\n"
        ).encode()
    )
    r = h.client.post(
        "/bundle",
        content=body,
        headers={**h.auth(key), "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400
    assert r.json()["error"] == "'app_id' and 'version' must come before 'file' in the form"
    # A body cut off before its closing boundary stores nothing either.
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="app_id"\r\n\r\n{APP}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0.0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.zip"\r\n'
        "\r\n"
    ).encode()
    r = h.client.post(
        "/bundle",
        content=head + big_zip(2 * CHUNK_BYTES)[: CHUNK_BYTES + 5000],
        headers={**h.auth(key), "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400, r.text
    assert counts(h) == {"bundles": 0, "chunks": 0, "uploads": 0, "files": 0}


def test_refused_uploads_leave_nothing(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    h.upload(key, APP, "1.0.0", big_zip(10_000))
    before = counts(h)
    # The version exists: refused before any byte is stored.
    r = post_bundle(h, key, "1.0.0", big_zip(10_000))
    assert r.status_code == 409, r.text
    # Not a zip: stored while streaming, then removed.
    r = post_bundle(h, key, "2.0.0", os.urandom(3 * CHUNK_BYTES // 2))
    assert r.status_code == 400, r.text
    assert counts(h) == before


def test_an_abandoned_upload_is_swept(harness: Harness) -> None:
    h = harness
    setup_app(h)
    rt = h.rt
    store = rt.bundles.default
    staged = store.begin(APP)
    staged.write(os.urandom(CHUNK_BYTES + 10))
    started = int(h.clock.now().timestamp() * 1000)
    rt.writer.run_blocking(
        lambda conn: conn.execute(
            s.bundle_uploads.insert().values(
                bundle_id=staged.bundle.id,
                app_id=APP,
                storage=staged.bundle.storage,
                storage_path=staged.bundle.storage_path,
                started_at=started,
            )
        )
    )
    # A process died here, mid-upload: one chunk (or a partial file) and the marker are left.
    left = counts(h)
    assert left["uploads"] == 1 and left["chunks"] + left["files"] == 1
    h.clock.advance(timedelta(hours=1))
    assert rt.sweep_bundles() == 0  # it may still be going
    h.clock.advance(timedelta(days=1))
    assert rt.sweep_bundles() == 1
    assert counts(h) == {"bundles": 0, "chunks": 0, "uploads": 0, "files": 0}


# -- two servers on one PostgreSQL database ----------------------------------------------------


@pytest.fixture
def two_servers(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Harness, Harness]]:
    with (
        running(postgres_url, tmp_path / "data-a") as a,
        running(postgres_url, tmp_path / "data-b") as b,
    ):
        yield a, b


def test_any_server_serves_and_deletes_what_another_stored(
    two_servers: tuple[Harness, Harness],
) -> None:
    a, b = two_servers
    key = setup_app(a)
    data = big_zip(3 * CHUNK_BYTES + 777, seed=7)
    size = len(data)
    a.upload(key, APP, "1.0.0", data)
    device = str(uuid.uuid4())
    path = download_path(a, device)

    # Through the other server: a download cut after 1.5 chunks, then its resume.
    cut = CHUNK_BYTES + CHUNK_BYTES // 2
    first = b.client.get(path, headers={"range": f"bytes=0-{cut - 1}"})
    assert first.status_code == 206 and first.content == data[:cut]
    rest = b.client.get(path, headers={"range": f"bytes={cut}-"})
    assert rest.status_code == 206 and rest.content == data[cut:]
    assert rest.headers["content-length"] == str(size - cut)
    assert rest.headers["content-range"] == f"bytes {cut}-{size - 1}/{size}"
    whole = b.client.get(path)
    assert whole.status_code == 200 and whole.content == data

    # Storage and bandwidth are the same whichever server is asked.
    assert figures(a, key, "2024-05-15") == {"storage": size, "bandwidth": 2 * size}
    assert figures(b, key, "2024-05-15") == {"storage": size, "bandwidth": 2 * size}
    # Neither data directory holds a bundle file.
    assert counts(a)["files"] == counts(b)["files"] == 0

    # Deleted through the other server the next day: bytes gone for both, storage freed.
    for h in (a, b):
        h.clock.advance(timedelta(days=1))
    r = b.client.delete(f"/bundle?app_id={APP}&version=1.0.0", headers=b.auth(key))
    assert r.status_code == 200, r.text
    assert counts(a) == {"bundles": 1, "chunks": 0, "uploads": 0, "files": 0}
    assert a.client.get(path).status_code == 404
    assert b.client.get(path).status_code == 404
    assert figures(b, key, "2024-05-16") == {"storage": 0, "bandwidth": 0}
    assert figures(a, key, "2024-05-15") == {"storage": size, "bandwidth": 2 * size}


def test_the_size_limit_is_configured_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from otameter.config import DEFAULT_MAX_BUNDLE_BYTES, Settings

    monkeypatch.delenv("OTAMETER_MAX_BUNDLE_SIZE", raising=False)
    assert Settings.from_env().max_bundle_bytes == DEFAULT_MAX_BUNDLE_BYTES
    monkeypatch.setenv("OTAMETER_MAX_BUNDLE_SIZE", "2MiB")
    assert Settings.from_env().max_bundle_bytes == 2 * 1024 * 1024
    monkeypatch.setenv("OTAMETER_MAX_BUNDLE_SIZE", "lots")
    with pytest.raises(ValueError, match="OTAMETER_MAX_BUNDLE_SIZE"):
        Settings.from_env()


def test_a_range_reads_only_its_chunks(postgres_url: str, tmp_path: Path) -> None:
    with running(postgres_url, tmp_path / "data") as h:
        key = setup_app(h)
        data = big_zip(4 * CHUNK_BYTES + 500, seed=11)
        h.upload(key, APP, "1.0.0", data)
        path = download_path(h, str(uuid.uuid4()))
        store = h.rt.bundles.database
        fetched: list[int] = []
        real_chunk = store.chunk

        def chunk(bundle: object, seq: int) -> bytes:
            fetched.append(seq)
            return real_chunk(bundle, seq)  # type: ignore[arg-type]

        store.chunk = chunk  # type: ignore[method-assign]
        last = 4 * CHUNK_BYTES + 10
        r = h.client.get(path, headers={"range": f"bytes={last}-{last + 9}"})
        assert r.status_code == 206 and r.content == data[last : last + 10]
        assert fetched == [4]
        fetched.clear()
        r = h.client.get(path, headers={"range": f"bytes={CHUNK_BYTES - 5}-{CHUNK_BYTES + 4}"})
        assert r.content == data[CHUNK_BYTES - 5 : CHUNK_BYTES + 5]
        assert fetched == [0, 1]
        fetched.clear()
        assert h.client.get(path).content == data
        assert fetched == [0, 1, 2, 3, 4]
