"""Where bundle bytes live: one interface, two stores, chosen by the database.

* :class:`FileStore` (SQLite): one file per bundle under ``<data dir>/bundles``.
* :class:`DatabaseStore` (PostgreSQL): the bytes in ``bundle_chunks``, in chunks of
  :data:`CHUNK_BYTES`, so that every process and machine on the database serves every bundle
  with nothing shared but the database (and a database backup holds the bundles).

Both are written as an upload streams in (:meth:`BundleStore.begin` gives a
:class:`StagedUpload`), read back through a seekable file object (zip validation, moves,
backups) and streamed to downloads from any offset, holding a few chunks in memory at most,
whatever the bundle's size.
``bundles.storage`` records which store holds a bundle, so a PostgreSQL deployment whose
older bundles are still files keeps serving them until ``otameter bundles
move-to-database`` moves them (``bundle_move.py``).

An upload in progress has a ``bundle_uploads`` row, removed in the transaction that records
the bundle (``metering/ingest.py``); :func:`sweep_abandoned` removes the bytes of uploads that
a crash cut short.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager, closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import anyio
import anyio.abc
import anyio.to_thread
from sqlalchemy import Connection, Engine, delete, select

from .storage import schema as s

__all__ = [
    "CHUNK_BYTES",
    "BundleBytes",
    "BundleStore",
    "BundleStores",
    "DatabaseStore",
    "FileStore",
    "StagedUpload",
    "TrackedUpload",
    "copy_into",
    "delete_chunks",
    "sweep_abandoned",
]

# Chunk size of the database store. Every chunk of a bundle but the last has exactly this
# length, which is how a range finds its first chunk: never change it for stored bundles.
CHUNK_BYTES = 1024 * 1024

# An upload whose row is older than this was cut short (a crash): its bytes are removed.
ABANDONED_AFTER_MS = 24 * 3600 * 1000

Bytes = bytes | bytearray | memoryview

FILE = "file"
DATABASE = "database"


@dataclass(frozen=True, slots=True)
class BundleBytes:
    """What a store needs to find a bundle's bytes."""

    id: str
    app_id: str
    storage: str
    storage_path: str | None
    size: int


class StagedUpload(Protocol):
    """Bytes of one upload being stored; blocking calls, run them in a thread."""

    @property
    def bundle(self) -> BundleBytes: ...

    def write(self, data: Bytes) -> None: ...

    def finish(self) -> None:
        """Make everything written durable; ``bundle.size`` is the final size."""

    def abort(self) -> None:
        """Remove whatever was written."""


class TrackedUpload:
    """A staged upload whose ``abort`` also forgets its ``bundle_uploads`` row."""

    def __init__(self, staged: StagedUpload, forget: Callable[[], object]) -> None:
        self.staged = staged
        self.forget = forget

    @property
    def bundle(self) -> BundleBytes:
        return self.staged.bundle

    def write(self, data: Bytes) -> None:
        self.staged.write(data)

    def finish(self) -> None:
        self.staged.finish()

    def abort(self) -> None:
        try:
            self.staged.abort()
        finally:
            self.forget()


class AsyncReader(Protocol):
    async def read(self, size: int) -> bytes: ...


class BundleStore(Protocol):
    kind: str

    def begin(self, app_id: str) -> StagedUpload: ...

    def open(self, bundle: BundleBytes) -> BinaryIO:
        """A seekable, read-only file object over the bundle's bytes (blocking)."""
        ...

    def reader(self, bundle: BundleBytes, start: int, length: int | None = None) -> Any:
        """An async context manager giving an :class:`AsyncReader` of ``length`` bytes (or
        the rest) from ``start`` on.

        Entering it fails (before any response starts) when the bytes are missing.
        """
        ...

    def exists(self, bundle: BundleBytes) -> bool: ...

    def remove(self, bundle: BundleBytes) -> None: ...


# -- files -----------------------------------------------------------------------------------


class FileStore:
    """Bundles as files under one directory (``storage_path`` relative to it)."""

    kind = FILE

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, bundle: BundleBytes) -> Path:
        if not bundle.storage_path:
            raise FileNotFoundError(f"bundle {bundle.id} has no file")
        return self.root / bundle.storage_path

    def begin(self, app_id: str) -> _FileUpload:
        bundle_id = str(uuid.uuid4())
        relative = f"{app_id}/{bundle_id}.zip"
        return _FileUpload(BundleBytes(bundle_id, app_id, FILE, relative, 0), self.root / relative)

    def open(self, bundle: BundleBytes) -> BinaryIO:
        return open(self.path(bundle), "rb")

    @asynccontextmanager
    async def reader(self, bundle: BundleBytes, start: int, length: int | None = None) -> Any:
        file = await anyio.open_file(self.path(bundle), "rb")
        try:
            await file.seek(start)
            yield file
        finally:
            # The descriptor must be released even when the transfer is cancelled.
            with anyio.CancelScope(shield=True):
                await file.aclose()

    def exists(self, bundle: BundleBytes) -> bool:
        return bool(bundle.storage_path) and self.path(bundle).is_file()

    def remove(self, bundle: BundleBytes) -> None:
        if bundle.storage_path:
            (self.root / bundle.storage_path).unlink(missing_ok=True)


class _FileUpload:
    def __init__(self, bundle: BundleBytes, target: Path) -> None:
        self.bundle = bundle
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self._out: BinaryIO | None = open(target, "wb")  # noqa: SIM115 (closed in finish/abort)
        self._size = 0

    def write(self, data: Bytes) -> None:
        assert self._out is not None
        self._size += self._out.write(data)

    def finish(self) -> None:
        assert self._out is not None
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        self._out = None
        self.bundle = _sized(self.bundle, self._size)

    def abort(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        self.target.unlink(missing_ok=True)


# -- the database ----------------------------------------------------------------------------


def _chunk_where(bundle: BundleBytes) -> Any:
    c = s.bundle_chunks.c
    return (c.app_id == bundle.app_id) & (c.bundle_id == bundle.id)


_SELECT_CHUNK = "SELECT data FROM bundle_chunks WHERE app_id = %s AND bundle_id = %s AND seq = %s"


def delete_chunks(conn: Connection, app_id: str, bundle_id: str) -> None:
    """Remove a bundle's bytes from the database (inside the caller's transaction)."""
    c = s.bundle_chunks.c
    conn.execute(delete(s.bundle_chunks).where(c.app_id == app_id, c.bundle_id == bundle_id))


class DatabaseStore:
    """Bundles in ``bundle_chunks``; each chunk is written and read in its own short query,
    so neither an upload nor a download holds a connection between chunks."""

    kind = DATABASE

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.chunk_bytes = CHUNK_BYTES
        self._binary = engine.dialect.name == "postgresql"

    def begin(self, app_id: str) -> _DatabaseUpload:
        bundle = BundleBytes(str(uuid.uuid4()), app_id, DATABASE, None, 0)
        return _DatabaseUpload(self, bundle)

    def insert_chunk(self, bundle: BundleBytes, seq: int, data: bytes) -> None:
        with self.engine.begin() as conn:
            if self._binary:
                # No flush per chunk: the commit that records the bundle (or switches it
                # over, in a move) is synchronous and flushes the write-ahead log up to
                # itself, chunks included; chunks of an upload lost in a crash before that
                # belong to no bundle.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            conn.execute(
                s.bundle_chunks.insert().values(
                    app_id=bundle.app_id, bundle_id=bundle.id, seq=seq, data=data
                )
            )

    def chunk(self, bundle: BundleBytes, seq: int) -> bytes:
        c = s.bundle_chunks.c
        with self.engine.connect() as conn:
            if self._binary:
                # bytea in binary format: the text format sends twice the bytes as hex and
                # costs 2 to 4 times as long per chunk to fetch and decode.
                cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                with closing(cursor):
                    cursor.execute(_SELECT_CHUNK, (bundle.app_id, bundle.id, seq), binary=True)
                    row = cursor.fetchone()
                data = row[0] if row else None
            else:
                data = conn.scalar(select(c.data).where(_chunk_where(bundle), c.seq == seq))
        if data is None:
            raise FileNotFoundError(f"bundle {bundle.id} has no chunk {seq} in the database")
        return bytes(data)

    def stored_chunks(self, bundle: BundleBytes) -> int:
        """How many leading chunks (0..n-1) are stored."""
        c = s.bundle_chunks.c
        with self.engine.connect() as conn:
            seqs = list(conn.scalars(select(c.seq).where(_chunk_where(bundle)).order_by(c.seq)))
        count = 0
        for seq in seqs:
            if seq != count:
                break
            count += 1
        return count

    def open(self, bundle: BundleBytes) -> BinaryIO:
        return io.BufferedReader(_ChunkFile(self, bundle), buffer_size=64 * 1024)

    @asynccontextmanager
    async def reader(self, bundle: BundleBytes, start: int, length: int | None = None) -> Any:
        first_seq, offset = divmod(start, self.chunk_bytes)
        end = bundle.size if length is None else min(bundle.size, start + length)
        last_seq = max(end - 1, start) // self.chunk_bytes
        # The first chunk is read before the response starts: missing bytes give a clean 500.
        first = await anyio.to_thread.run_sync(self.chunk, bundle, first_seq)
        # The next chunk is fetched while the current one is sent: at most one waits.
        send, receive = anyio.create_memory_object_stream[bytes](max_buffer_size=1)

        async def fetch_ahead() -> None:
            async with send:
                for seq in range(first_seq + 1, last_seq + 1):
                    data = await anyio.to_thread.run_sync(self.chunk, bundle, seq)
                    try:
                        await send.send(data)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return  # the reader stopped early (a client gone, an error)

        async with anyio.create_task_group() as task_group, receive:
            task_group.start_soon(fetch_ahead)
            try:
                yield _ChunkReader(first, offset, receive)
            finally:
                task_group.cancel_scope.cancel()

    def exists(self, bundle: BundleBytes) -> bool:
        c = s.bundle_chunks.c
        with self.engine.connect() as conn:
            return conn.scalar(select(c.seq).where(_chunk_where(bundle), c.seq == 0)) is not None

    def remove(self, bundle: BundleBytes) -> None:
        with self.engine.begin() as conn:
            delete_chunks(conn, bundle.app_id, bundle.id)


class _DatabaseUpload:
    """Buffers up to one chunk and stores each full chunk as it comes."""

    def __init__(self, store: DatabaseStore, bundle: BundleBytes) -> None:
        self.store = store
        self.bundle = bundle
        self._buffer = bytearray()
        self._seq = 0
        self._size = 0

    def write(self, data: Bytes) -> None:
        view = memoryview(data)
        self._size += len(view)
        size = self.store.chunk_bytes
        while len(view):
            room = size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) == size:
                self._flush()

    def _flush(self) -> None:
        self.store.insert_chunk(self.bundle, self._seq, bytes(self._buffer))
        self._seq += 1
        self._buffer.clear()

    def finish(self) -> None:
        if self._buffer or self._seq == 0:
            self._flush()
        self.bundle = _sized(self.bundle, self._size)

    def abort(self) -> None:
        self._buffer.clear()
        self.store.remove(self.bundle)


class _ChunkFile(io.RawIOBase):
    """A seekable raw file over a bundle's chunks, holding the current chunk only."""

    def __init__(self, store: DatabaseStore, bundle: BundleBytes) -> None:
        self.store = store
        self.bundle = bundle
        self._pos = 0
        self._seq = -1
        self._chunk = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.bundle.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self.bundle.size:
            return 0
        seq, offset = divmod(self._pos, self.store.chunk_bytes)
        if seq != self._seq:
            self._chunk = self.store.chunk(self.bundle, seq)
            self._seq = seq
        piece = self._chunk[offset : offset + len(buffer)]
        if not piece:
            raise OSError(f"bundle {self.bundle.id}: chunk {seq} is shorter than expected")
        buffer[: len(piece)] = piece
        self._pos += len(piece)
        return len(piece)


class _ChunkReader:
    """Async reads over a bundle's chunks as they arrive from :meth:`DatabaseStore.reader`."""

    def __init__(
        self, first: bytes, offset: int, chunks: anyio.abc.ObjectReceiveStream[bytes]
    ) -> None:
        self._chunk = first
        self._offset = offset
        self._chunks = chunks

    async def read(self, size: int) -> bytes:
        if self._offset >= len(self._chunk):
            try:
                self._chunk = await self._chunks.receive()
            except anyio.EndOfStream:
                return b""
            self._offset = 0
        piece = self._chunk[self._offset : self._offset + size]
        self._offset += len(piece)
        return piece


def _sized(bundle: BundleBytes, size: int) -> BundleBytes:
    return BundleBytes(bundle.id, bundle.app_id, bundle.storage, bundle.storage_path, size)


# -- both ------------------------------------------------------------------------------------


def copy_into(store: BundleStore, app_id: str, source: BinaryIO) -> tuple[BundleBytes, str]:
    """Store everything ``source`` holds as a new bundle's bytes (blocking); returns where,
    and the SHA-256. Nothing stays behind on failure."""
    staged = store.begin(app_id)
    digest = hashlib.sha256()
    try:
        while piece := source.read(CHUNK_BYTES):
            digest.update(piece)
            staged.write(piece)
        staged.finish()
    except BaseException:
        staged.abort()
        raise
    return staged.bundle, digest.hexdigest()


class BundleStores:
    """The store new uploads go to (chosen by the database) and the store of each bundle."""

    def __init__(self, engine: Engine, bundle_dir: Path) -> None:
        self.files = FileStore(bundle_dir)
        self.database = DatabaseStore(engine)
        self.default: BundleStore = self.files if engine.dialect.name == "sqlite" else self.database

    def of(self, storage: str) -> BundleStore:
        if storage == DATABASE:
            return self.database
        if storage == FILE:
            return self.files
        raise ValueError(f"unknown bundle storage {storage!r}")

    def remove(self, bundle: BundleBytes) -> None:
        """Free a deleted bundle's file. Database chunks go in the delete's own transaction
        (``metering/ingest.py``), so only files are left to remove; a missing one is fine."""
        if bundle.storage == FILE:
            with suppress(FileNotFoundError):
                self.files.remove(bundle)


def sweep_abandoned(conn: Connection, now_ms: int) -> list[BundleBytes]:
    """Forget uploads cut short longer than :data:`ABANDONED_AFTER_MS` ago and remove their
    database bytes (in ``conn``'s transaction); returns them, so that the caller removes
    their files after the commit."""
    u = s.bundle_uploads.c
    rows = conn.execute(
        select(u.bundle_id, u.app_id, u.storage, u.storage_path).where(
            u.started_at < now_ms - ABANDONED_AFTER_MS
        )
    ).all()
    gone = []
    for row in rows:
        # A bundle row with this id means the upload did finish: only its marker was left.
        b = s.bundles.c
        recorded = conn.scalar(select(b.id).where(b.app_id == row.app_id, b.id == row.bundle_id))
        if recorded is None:
            if row.storage == DATABASE:
                delete_chunks(conn, row.app_id, row.bundle_id)
            gone.append(BundleBytes(row.bundle_id, row.app_id, row.storage, row.storage_path, 0))
        conn.execute(
            delete(s.bundle_uploads).where(u.app_id == row.app_id, u.bundle_id == row.bundle_id)
        )
    return gone
