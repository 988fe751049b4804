"""``otameter backup`` and ``otameter restore``: a consistent copy of the database and the
bundle files, taken while the server runs, and its restore into an empty database.

The database is copied as a logical snapshot: every table read inside one read transaction
(a WAL snapshot on SQLite; ``REPEATABLE READ``, read only, on PostgreSQL), so the copy is the
database as one moment saw it, whatever the writer commits meanwhile. One format serves both
engines, so a backup restores into either (a SQLite installation can move to PostgreSQL), and
nothing depends on ``pg_dump``/``pg_restore`` binaries matching the server's major version.
Rows keep their ids: device ids are the ordinals inside the activity bitmaps.

Layout of a backup directory::

    manifest.json          format, schema revision, engine, time, tables with their columns
    tables/<table>.jsonl   one JSON array a row (bytes base64, dates ISO)
    data/                  the data directory (bundle files, range lists)

Bundle files are copied after the snapshot. A file is written before its bundle row commits
and removed only after its delete commits, so every bundle the snapshot holds has its file,
unless it was deleted in the moment between snapshot and copy: such files are reported.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import (
    Column,
    Connection,
    Date,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    insert,
    select,
    text,
)

from .clock import SystemClock
from .storage.app_rows import DRAWN_ID_TABLES
from .storage.db import create_db_engine, schema_revision

FORMAT = 1
MANIFEST = "manifest.json"
VERSION_TABLE = "alembic_version"
BATCH = 2000
# Rows of these tables are large (bundle_chunks: 1 MiB each): a few at a time keeps the memory
# of a backup or a restore bounded by the chunk size, not the bundles' size.
SMALL_BATCH = {"bundle_chunks": 4}


def _batch(table: str) -> int:
    return SMALL_BATCH.get(table, BATCH)


Progress = Callable[[str], None]


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why."""


@dataclass
class Summary:
    revision: str
    tables: dict[str, int] = field(default_factory=dict)
    files: int = 0
    file_bytes: int = 0
    missing_files: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def _kind(column: Any) -> str | None:
    if isinstance(column.type, LargeBinary):
        return "bytes"
    if isinstance(column.type, Date):
        return "date"
    return None


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _snapshot(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    # SQLite: the first read of this transaction fixes its WAL snapshot.
    conn.execute(text("SELECT 1"))


def backup(db_url: str, data_dir: Path, target: Path, progress: Progress | None = None) -> Summary:
    """Write a backup of ``db_url`` and ``data_dir`` into ``target`` (new or empty)."""
    note = progress or (lambda _message: None)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} exists and is not an empty directory")
    revision = schema_revision(db_url)
    if revision is None:
        raise BackupError("the database has no otameter schema: nothing to back up")
    (target / "tables").mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(db_url)
    encoder = msgspec.json.Encoder()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "engine": engine.dialect.name,
        "created_at": SystemClock().now().isoformat(),
        "tables": [],
    }
    summary = Summary(revision)
    live_files: list[str] = []
    try:
        with engine.connect() as conn, conn.begin():
            _snapshot(conn)
            # Read inside the snapshot, so that rows and revision agree.
            manifest["revision"] = summary.revision = conn.execute(
                text(f"SELECT version_num FROM {VERSION_TABLE}")
            ).scalar_one()
            meta = MetaData()
            meta.reflect(bind=conn)
            for table in meta.sorted_tables:
                if table.name == VERSION_TABLE:
                    continue
                note(f"copying {table.name}")
                columns = list(table.columns)
                count = 0
                with open(target / "tables" / f"{table.name}.jsonl", "wb") as out:
                    result = conn.execution_options(
                        stream_results=True, yield_per=_batch(table.name)
                    ).execute(select(*columns))
                    for row in result:
                        out.write(encoder.encode([_encode(v) for v in row]))
                        out.write(b"\n")
                        count += 1
                manifest["tables"].append(
                    {
                        "name": table.name,
                        "columns": [c.name for c in columns],
                        "kinds": [_kind(c) for c in columns],
                        "rows": count,
                    }
                )
                summary.tables[table.name] = count
            if "bundles" in meta.tables:
                b = meta.tables["bundles"].c
                live_files = [
                    str(p)
                    for p in conn.scalars(
                        select(b.storage_path).where(
                            b.deleted_at.is_(None), b.storage_path.is_not(None)
                        )
                    )
                ]
    finally:
        engine.dispose()
    note("copying bundle files")
    copied = target / "data"
    if data_dir.is_dir():
        shutil.copytree(data_dir, copied, ignore=shutil.ignore_patterns(".otameter-check-*"))
    else:
        copied.mkdir()
    for path in copied.rglob("*"):
        if path.is_file():
            summary.files += 1
            summary.file_bytes += path.stat().st_size
    summary.missing_files = [p for p in live_files if not (copied / "bundles" / p).is_file()]
    manifest["files"] = summary.files
    manifest["missing_files"] = summary.missing_files
    # Written last: a directory without a manifest is an unfinished backup.
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return summary


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(f"{source} is not a complete otameter backup (no {MANIFEST})")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: backup format {manifest.get('format')} is not supported")
    return manifest


def _rows(path: Path, kinds: list[str | None]) -> Iterator[list[Any]]:
    decoder = msgspec.json.Decoder(list[Any])
    converters = [
        (i, base64.b64decode if kind == "bytes" else date.fromisoformat)
        for i, kind in enumerate(kinds)
        if kind is not None
    ]
    with open(path, "rb") as lines:
        for line in lines:
            row = decoder.decode(line)
            for i, convert in converters:
                if row[i] is not None:
                    row[i] = convert(row[i])
            yield row


def _database_is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        meta = MetaData()
        meta.reflect(bind=conn)
        for table in meta.sorted_tables:
            if table.name == VERSION_TABLE:
                continue
            if conn.execute(select(text("1")).select_from(table).limit(1)).first() is not None:
                return False
    return True


def _reset_sequences(conn: Connection, tables: list[Table]) -> None:
    """PostgreSQL: identity sequences continue after the restored ids, not from 1."""
    for table in tables:
        for column in table.primary_key.columns:
            sequence = conn.scalar(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            )
            if sequence is None:
                continue
            top = conn.scalar(select(text(f'max("{column.name}")')).select_from(table))
            conn.execute(
                text("SELECT setval(:seq, :value, :called)"),
                {"seq": sequence, "value": top or 1, "called": top is not None},
            )


def _keeps_rowid_equal_to_id(conn: Connection, table: Table) -> bool:
    """SQLite: whether the table's rows keep ``rowid`` equal to ``id`` (app_rows.py); if
    so, the table gets a ``rowid`` column for the restore to write."""
    if conn.dialect.name != "sqlite" or table.name not in DRAWN_ID_TABLES:
        return False
    if [column.name for column in table.primary_key.columns] == ["id"]:
        return False  # before migration 0010 the id is the rowid itself
    table.append_column(Column("rowid", Integer))
    return True


def restore(source: Path, db_url: str, data_dir: Path, progress: Progress | None = None) -> Summary:
    """Fill an empty database and data directory from the backup in ``source``."""
    from alembic import command
    from alembic.util.exc import CommandError

    from .storage.db import alembic_config
    from .storage.db import migrate as migrate_to_head

    note = progress or (lambda _message: None)
    manifest = read_manifest(source)
    bundles_dir = data_dir / "bundles"
    if bundles_dir.is_dir() and any(p.is_file() for p in bundles_dir.rglob("*")):
        raise BackupError(f"the data directory {data_dir} already holds bundle files")
    engine = create_db_engine(db_url, writer=True)
    try:
        if schema_revision(db_url) is not None and not _database_is_empty(engine):
            raise BackupError("the database is not empty: restore only fills an empty one")
        note(f"creating the schema (revision {manifest['revision']})")
        # The rows fit the schema they were read from; newer migrations run after them.
        config = alembic_config(db_url)
        current = schema_revision(db_url)
        try:
            if current is not None and current != manifest["revision"]:
                command.downgrade(config, "base")  # empty: nothing is lost
            command.upgrade(config, manifest["revision"])
        except CommandError:
            raise BackupError(
                f"the backup's schema revision {manifest['revision']} is unknown to this "
                "version of otameter: restore it with the version that made it, or a newer one"
            ) from None
        summary = Summary(manifest["revision"])
        with engine.connect() as conn, conn.begin():
            meta = MetaData()
            meta.reflect(bind=conn)
            restored: list[Table] = []
            for entry in manifest["tables"]:
                table = meta.tables.get(entry["name"])
                if table is None:
                    raise BackupError(f"table {entry['name']} is not in the schema")
                note(f"restoring {table.name}")
                names = entry["columns"]
                rowid = _keeps_rowid_equal_to_id(conn, table)
                count = 0
                batch: list[dict[str, Any]] = []
                path = source / "tables" / f"{table.name}.jsonl"
                for row in _rows(path, entry["kinds"]):
                    values = dict(zip(names, row, strict=True))
                    if rowid:
                        values["rowid"] = values["id"]
                    batch.append(values)
                    if len(batch) >= _batch(table.name):
                        conn.execute(insert(table), batch)
                        count += len(batch)
                        batch = []
                if batch:
                    conn.execute(insert(table), batch)
                    count += len(batch)
                if count != entry["rows"]:
                    raise BackupError(
                        f"{path} holds {count} rows, the manifest says {entry['rows']}"
                    )
                summary.tables[table.name] = count
                restored.append(table)
            if conn.dialect.name == "postgresql":
                _reset_sequences(conn, restored)
    finally:
        engine.dispose()
    migrate_to_head(db_url)
    note("copying bundle files")
    copied = source / "data"
    if copied.is_dir():
        shutil.copytree(copied, data_dir, dirs_exist_ok=True)
        for path in copied.rglob("*"):
            if path.is_file():
                summary.files += 1
                summary.file_bytes += path.stat().st_size
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
    return summary
