"""Bundle files of an existing PostgreSQL deployment move into the database.

Bundles stored as files before the database store (what migration 0009 marks ``file``) are
served only by the machine holding them; ``otameter bundles move-to-database`` moves them,
resumably, checking the bytes against each bundle's checksum, after which every server
serves them. Also: migration 0009 both ways, on both engines.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text, update

from otameter.bundle_move import move_files_to_database
from otameter.bundle_store import CHUNK_BYTES, BundleBytes, copy_into
from otameter.clock import to_ms
from otameter.metering.events import BundleUpload
from otameter.storage import schema as s
from otameter.storage.db import alembic_config, create_db_engine, migrate
from tests.harness import Harness, running, setup_app
from tests.liveserver import _env
from tests.test_bundle_store import APP, big_zip, download_path, figures


class Interrupted(Exception):
    pass


@pytest.fixture
def two_servers(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Harness, Harness]]:
    with (
        running(postgres_url, tmp_path / "data-a") as a,
        running(postgres_url, tmp_path / "data-b") as b,
    ):
        yield a, b


def file_bundle(h: Harness, version: str, data: bytes) -> BundleBytes:
    """A bundle stored as a file in ``h``'s data directory, as before the database store."""
    stored, checksum = copy_into(h.rt.bundles.files, APP, io.BytesIO(data))
    (outcome,) = h.rt.writer.submit_blocking(
        [
            BundleUpload(
                APP,
                version,
                stored.size,
                to_ms(h.clock.now()),
                checksum=checksum,
                storage_path=stored.storage_path,
                channel="production",
                bundle_id=stored.id,
                storage=stored.storage,
            )
        ]
    )
    assert outcome.ok, outcome.reason
    h.rt.catalog.invalidate(APP)
    return stored


def storage_of(h: Harness, bundle_id: str) -> str:
    with h.rt.read_engine.connect() as conn:
        value = conn.scalar(select(s.bundles.c.storage).where(s.bundles.c.id == bundle_id))
    return str(value)


def chunk_count(h: Harness, bundle_id: str) -> int:
    c = s.bundle_chunks.c
    with h.rt.read_engine.connect() as conn:
        count = conn.scalar(
            select(func.count()).select_from(s.bundle_chunks).where(c.bundle_id == bundle_id)
        )
    return int(count or 0)


def move_command(db_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    argv = ["bundles", "move-to-database", "--db", db_url, "--data-dir", str(data_dir)]
    return subprocess.run(
        [sys.executable, "-m", "otameter", *argv],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_moved_files_are_served_by_every_server(
    two_servers: tuple[Harness, Harness], postgres_url: str
) -> None:
    a, b = two_servers
    key = setup_app(a)
    old = big_zip(50_000, seed=2)
    data = big_zip(2 * CHUNK_BYTES + 5, seed=3)
    first = file_bundle(a, "1.0.0", old)
    second = file_bundle(a, "1.0.1", data)
    path = download_path(a, str(uuid.uuid4()))
    # Before the move only the machine holding the file serves it.
    assert a.client.get(path).content == data
    assert b.client.get(path).status_code == 404
    before = figures(a, key, "2024-05-15")
    # `migrate` says what is left to move.
    hint = subprocess.run(
        [sys.executable, "-m", "otameter", "migrate", "--db", postgres_url],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert hint.returncode == 0 and "2 bundles are files" in hint.stderr, hint.stderr

    done = move_command(postgres_url, a.rt.settings.data_dir)
    assert done.returncode == 0, done.stderr
    assert "moved: 2  refused: 0  not here: 0  still files: 0" in done.stdout
    assert storage_of(a, first.id) == storage_of(a, second.id) == "database"
    assert chunk_count(a, second.id) == 3
    assert not a.rt.bundles.files.path(second).exists()

    start = CHUNK_BYTES - 3
    for h in (a, b):
        assert h.client.get(path).content == data
        part = h.client.get(path, headers={"range": f"bytes={start}-"})
        assert part.status_code == 206 and part.content == data[start:]
    # One download before the move, then a whole one and a resumed one through each server.
    sent = len(data) + 2 * (len(data) + len(data) - start)
    assert figures(b, key, "2024-05-15") == {
        "storage": before["storage"],
        "bandwidth": sent,
    }
    # Nothing left to move: a second run changes nothing.
    again = move_command(postgres_url, a.rt.settings.data_dir)
    assert again.returncode == 0, again.stderr
    assert "moved: 0  refused: 0  not here: 0  still files: 0" in again.stdout


def test_an_interrupted_move_resumes(two_servers: tuple[Harness, Harness]) -> None:
    a, b = two_servers
    setup_app(a)
    data = big_zip(3 * CHUNK_BYTES + CHUNK_BYTES // 2, seed=4)
    bundle = file_bundle(a, "1.0.0", data)
    path = download_path(a, str(uuid.uuid4()))

    def stop_after_two(_bundle: BundleBytes, seq: int) -> None:
        if seq == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        move_files_to_database(a.rt.read_engine, a.rt.settings.bundle_dir, on_chunk=stop_after_two)
    # Two chunks made it; the bundle is still the file, and still served from it.
    assert chunk_count(a, bundle.id) == 2
    assert storage_of(a, bundle.id) == "file"
    assert a.client.get(path).content == data

    stored_seqs: list[int] = []
    report = move_files_to_database(
        a.rt.read_engine,
        a.rt.settings.bundle_dir,
        on_chunk=lambda _b, seq: stored_seqs.append(seq),
    )
    assert report.resumed == [f"{APP} 1.0.0"] and report.moved == [f"{APP} 1.0.0"]
    # Only the chunks missing were written the second time.
    assert stored_seqs == [2, 3]
    assert storage_of(a, bundle.id) == "database"
    assert b.client.get(path).content == data


def test_bytes_that_do_not_match_the_checksum_are_refused(
    two_servers: tuple[Harness, Harness], postgres_url: str
) -> None:
    a, _ = two_servers
    setup_app(a)
    data = big_zip(CHUNK_BYTES + 1000, seed=5)
    bundle = file_bundle(a, "1.0.0", data)
    file = a.rt.bundles.files.path(bundle)

    # A damaged file: refused, nothing stored, the file kept.
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(damaged))
    done = move_command(postgres_url, a.rt.settings.data_dir)
    assert done.returncode == 1
    assert "the file does not match the bundle's checksum" in done.stderr
    assert "moved: 0  refused: 1" in done.stdout
    assert chunk_count(a, bundle.id) == 0 and storage_of(a, bundle.id) == "file"
    assert file.read_bytes() == bytes(damaged)

    # Chunks left by an interrupted run that no longer match: refused and removed.
    file.write_bytes(data)

    def stop(_bundle: BundleBytes, seq: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        move_files_to_database(a.rt.read_engine, a.rt.settings.bundle_dir, on_chunk=stop)
    with a.rt.read_engine.begin() as conn:
        conn.execute(
            update(s.bundle_chunks)
            .where(s.bundle_chunks.c.bundle_id == bundle.id)
            .values(data=b"\0" * CHUNK_BYTES)
        )
    report = move_files_to_database(a.rt.read_engine, a.rt.settings.bundle_dir)
    assert report.moved == []
    assert report.refused == [
        (f"{APP} 1.0.0", "the bytes stored in the database do not match the bundle's checksum")
    ]
    assert chunk_count(a, bundle.id) == 0 and storage_of(a, bundle.id) == "file"
    assert hashlib.sha256(file.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_migration_0009_both_ways(db_url: str, tmp_path: Path) -> None:
    config = alembic_config(db_url)
    # The revision before 0009, whatever it is now.
    previous = str(ScriptDirectory.from_config(config).get_revision("0009").down_revision)
    command.upgrade(config, previous)
    engine = create_db_engine(db_url)

    def bundle_rows() -> list[tuple[str, str | None]]:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version, storage_path FROM bundles ORDER BY 1"))
            return [(r[0], r[1]) for r in rows]

    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users VALUES ('u', 'u@x', '', 0)"))
            conn.execute(
                text("INSERT INTO orgs (id, name, created_by, created_at) VALUES ('o','O','u',0)")
            )
            conn.execute(text("INSERT INTO apps VALUES ('com.x.y', 'x', 'o', 0, NULL)"))
            conn.execute(
                text(
                    "INSERT INTO bundles (id, app_id, version, size, checksum, storage_path, "
                    "external_url, created_at) VALUES "
                    "('b1', 'com.x.y', '1.0.0', 10, NULL, 'com.x.y/b1.zip', NULL, 0), "
                    "('b2', 'com.x.y', '2.0.0', 0, NULL, NULL, 'https://cdn/x.zip', 0)"
                )
            )
        before = bundle_rows()
        migrate(db_url)
        with engine.connect() as conn:
            storage = dict(conn.execute(text("SELECT id, storage FROM bundles")).all())
        # Files stay files until they are moved; external bundles have no bytes here.
        assert storage == {"b1": "file", "b2": None}
        command.downgrade(config, previous)
        assert bundle_rows() == before
        migrate(db_url)
        if engine.dialect.name == "postgresql":
            # Bytes in the database cannot go back to a schema without them: refused.
            with engine.begin() as conn:
                conn.execute(text("UPDATE bundles SET storage = 'database' WHERE id = 'b1'"))
            with pytest.raises(RuntimeError, match="stored in the database"):
                command.downgrade(config, previous)
            migrate(db_url)
    finally:
        engine.dispose()
