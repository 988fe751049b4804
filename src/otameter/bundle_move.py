"""Moving bundle files into the database (``otameter bundles move-to-database``).

A PostgreSQL deployment that stored bundles as files before the database store existed moves
them once, from the data directory of the machine that holds them, while the servers run:

1. for each bundle still stored as a file (and not deleted), the file is copied into
   ``bundle_chunks`` chunk by chunk, each chunk committed on its own, so that an interrupted
   move resumes after the chunks already stored;
2. the file's bytes and then the chunks read back from the database are checked against the
   bundle's SHA-256; a mismatch refuses that bundle (its chunks are removed, it stays a file);
3. one ``UPDATE`` switches the bundle to the database, only if it is still a live file
   bundle, so that a delete meanwhile wins; after that commit every machine serves it, and
   the file is removed (unless kept).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, delete, select, update

from .bundle_store import CHUNK_BYTES, DATABASE, FILE, BundleBytes, DatabaseStore, FileStore
from .storage import schema as s


@dataclass
class MoveReport:
    moved: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


OnChunk = Callable[[BundleBytes, int], None]


def files_left(engine: Engine) -> int:
    """How many live bundles are still files."""
    b = s.bundles.c
    with engine.connect() as conn:
        rows = conn.execute(select(b.id).where(b.storage == FILE, b.deleted_at.is_(None))).all()
    return len(rows)


def move_files_to_database(
    engine: Engine,
    bundle_dir: Path,
    *,
    keep_files: bool = False,
    on_chunk: OnChunk | None = None,
) -> MoveReport:
    """Move every live file bundle found under ``bundle_dir`` into the database."""
    if engine.dialect.name == "sqlite":
        raise ValueError("bundles stay files on SQLite; the database store is for PostgreSQL")
    files = FileStore(bundle_dir)
    chunks = DatabaseStore(engine)
    b = s.bundles.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(b.id, b.app_id, b.version, b.size, b.checksum, b.storage_path)
            .where(b.storage == FILE, b.deleted_at.is_(None))
            .order_by(b.created_at, b.id)
        ).all()
    report = MoveReport()
    for row in rows:
        label = f"{row.app_id} {row.version}"
        bundle = BundleBytes(row.id, row.app_id, DATABASE, None, row.size)
        source = files.path(BundleBytes(row.id, row.app_id, FILE, row.storage_path, row.size))
        if not source.is_file():
            report.missing.append(label)
            continue
        done = chunks.stored_chunks(bundle)
        if done:
            report.resumed.append(label)
        _remove_chunks(engine, bundle, from_seq=done)
        problem = _copy(chunks, bundle, source, done, row.checksum, on_chunk)
        if problem is None:
            problem = _check_stored(chunks, bundle, row.checksum)
        if problem is not None:
            _remove_chunks(engine, bundle)
            report.refused.append((label, problem))
            continue
        with engine.begin() as conn:
            switched = conn.execute(
                update(s.bundles)
                .where(
                    b.app_id == row.app_id,
                    b.id == row.id,
                    b.storage == FILE,
                    b.deleted_at.is_(None),
                )
                .values(storage=DATABASE)
            ).rowcount
        if not switched:
            # Deleted while it was being copied: its bytes are not wanted any more.
            _remove_chunks(engine, bundle)
            continue
        report.moved.append(label)
        if not keep_files:
            source.unlink(missing_ok=True)
    return report


def _remove_chunks(engine: Engine, bundle: BundleBytes, from_seq: int = 0) -> None:
    c = s.bundle_chunks.c
    with engine.begin() as conn:
        conn.execute(
            delete(s.bundle_chunks).where(
                c.app_id == bundle.app_id, c.bundle_id == bundle.id, c.seq >= from_seq
            )
        )


def _copy(
    chunks: DatabaseStore,
    bundle: BundleBytes,
    source: Path,
    done: int,
    checksum: str | None,
    on_chunk: OnChunk | None,
) -> str | None:
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as file:
        seq = 0
        while True:
            piece = file.read(CHUNK_BYTES)
            if not piece and seq > 0:
                break
            digest.update(piece)
            size += len(piece)
            if seq >= done:
                chunks.insert_chunk(bundle, seq, piece)
                if on_chunk is not None:
                    on_chunk(bundle, seq)
            seq += 1
            if not piece:
                break
    if size != bundle.size:
        return f"the file has {size} bytes, the bundle {bundle.size}"
    if checksum is not None and digest.hexdigest() != checksum:
        return "the file does not match the bundle's checksum"
    return None


def _check_stored(chunks: DatabaseStore, bundle: BundleBytes, checksum: str | None) -> str | None:
    """Read the stored bytes back and compare them with the checksum."""
    digest = hashlib.sha256()
    size = 0
    with chunks.open(bundle) as stored:
        while piece := stored.read(CHUNK_BYTES):
            digest.update(piece)
            size += len(piece)
    if size != bundle.size:
        return f"the database holds {size} bytes of it, not {bundle.size}"
    if checksum is not None and digest.hexdigest() != checksum:
        return "the bytes stored in the database do not match the bundle's checksum"
    return None
