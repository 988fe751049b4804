"""What the commands that open the database themselves share: ``--db``/``--data-dir``,
settings, the error line, one write transaction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from ..config import Settings
from .errors import fail

if TYPE_CHECKING:
    # Imported by the commands that need it: a command that starts parsing processes
    # (import) starts them sooner without SQLAlchemy's import before it.
    from sqlalchemy import Connection

T = TypeVar("T")
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (sqlite:///PATH or postgresql://...).",
        envvar="OTAMETER_DATABASE_URL",
        show_envvar=True,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Directory for bundle files.",
        envvar="OTAMETER_DATA_DIR",
        show_envvar=True,
    ),
]


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


def write_transaction(db: str | None, fn: Callable[[Connection, int], T]) -> T:
    """Run ``fn(conn, now_ms)`` in one write transaction on the (migrated) database.

    A ValueError or LookupError from ``fn`` is the user's mistake: it becomes an error line.
    """
    from ..clock import SystemClock, to_ms
    from ..storage.db import create_db_engine
    from ..storage.db import migrate as run_migrations

    settings = settings_or_exit(database_url=db)
    run_migrations(settings.database_url)
    engine = create_db_engine(settings.database_url, writer=True)
    try:
        with engine.begin() as conn:
            return fn(conn, to_ms(SystemClock().now()))
    except (ValueError, LookupError) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
