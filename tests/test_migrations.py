"""The migrations build exactly the schema the code declares, on both engines."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from otameter.db import create_db_engine, migrate
from otameter.schema import metadata


def test_migrations_match_schema(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # upgrading an up-to-date database changes nothing
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            assert set(inspect(conn).get_table_names()) >= set(metadata.tables)
    finally:
        engine.dispose()


def test_migrate_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/cli.db"
    result = subprocess.run(
        [sys.executable, "-m", "otameter", "migrate", "--db", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr
    assert (tmp_path / "cli.db").exists()
