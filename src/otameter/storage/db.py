"""Engines and schema migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept the contract's ``postgresql://`` form and pick the psycopg 3 driver for it."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in {"sqlite", "sqlite+pysqlite", "postgresql+psycopg"}:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def create_db_engine(url: str, *, writer: bool = False, synchronous: str = "FULL") -> Engine:
    """An engine for reads (pooled) or for the single writer (one connection).

    On SQLite the writer takes the write lock at BEGIN (``BEGIN IMMEDIATE``) so a batch never
    fails half-way on a lock upgrade, and readers use WAL snapshots that never block it.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=NullPool if writer else None,
        )
        _configure_sqlite(engine, writer=writer, synchronous=synchronous)
        return engine
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if writer:
        kwargs.update(pool_size=1, max_overflow=0)
    else:
        kwargs.update(pool_size=8, max_overflow=8)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine, *, writer: bool, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Transactions are driven explicitly below, not by the sqlite3 module's heuristics.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


class SqliteWriteLock:
    """Serialises the writers of several processes on one SQLite file: a blocking ``flock``.

    SQLite's own busy handler polls with sleeps of 1 to 100 ms, so a writer waiting for
    another process's commit would often sleep well past it; the kernel wakes a ``flock``
    waiter as soon as the lock is free. Held around each writer transaction only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        import fcntl

        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import fcntl

        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sqlite_write_lock(url: str) -> SqliteWriteLock | None:
    """The write lock of a SQLite database file (None for PostgreSQL or an in-memory database)."""
    url = normalize_url(url)
    path = _sqlite_path(url) if url.startswith("sqlite") else None
    if path is None or os.name != "posix":
        return None
    return SqliteWriteLock(path.with_name(path.name + "-writer.lock"))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


# The newest migration; tests/test_migrations.py checks it against the scripts' head.
HEAD_REVISION = "0010"


def migrate(url: str) -> None:
    """Create or upgrade the schema to the newest revision."""
    if schema_revision(url) == HEAD_REVISION:
        # Up to date, the usual case of a start: alembic, a tenth of a second to import and
        # run, is not needed.
        return
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def schema_revision(url: str) -> str | None:
    """The database's migration revision (None for a database without the schema)."""
    engine = create_engine(normalize_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except DBAPIError:
        return None
    finally:
        engine.dispose()
