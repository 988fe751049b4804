"""What readiness means: the database answers, its schema is current, the writer runs, and
the data directory takes files. ``otameter serve`` checks the data directory before it starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sqlalchemy import Connection, text

from .storage.db import HEAD_REVISION


def data_dir_problem(path: Path, *, create: bool = False) -> str | None:
    """Why bundle files cannot be written under ``path`` (None when they can)."""
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.is_dir():
            return f"data directory {path} does not exist"
        # A real write: access(2) does not see every reason a write fails.
        handle, name = tempfile.mkstemp(prefix=".otameter-check-", dir=path)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        return f"data directory {path} is not writable: {exc.strerror or exc}"
    return None


def schema_problem(conn: Connection) -> str | None:
    """Why the database is not ready to serve (None when it is)."""
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if revision != HEAD_REVISION:
        return f"database schema is at revision {revision}, this server needs {HEAD_REVISION}"
    return None
