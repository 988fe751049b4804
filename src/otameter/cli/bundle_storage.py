"""``otameter bundles ...``: where the server keeps bundle bytes."""

from __future__ import annotations

from typing import Annotated

import typer

from .database import DataDirOption, DbOption, err, settings_or_exit
from .errors import fail

bundles_app = typer.Typer(help="Bundle storage on the server.", no_args_is_help=True)


@bundles_app.command("move-to-database")
def move_to_database(
    db: DbOption = None,
    data_dir: DataDirOption = None,
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Leave each file in place once moved.")
    ] = False,
) -> None:
    """Move bundle files of this data dir into the PostgreSQL database (resumable).

    Run it where the files are, while the servers run; run it again after an interruption.
    Each bundle is checked against its SHA-256 before it is switched over.
    """
    from ..bundle_move import files_left, move_files_to_database
    from ..storage.db import create_db_engine
    from ..storage.db import migrate as run_migrations

    settings = settings_or_exit(database_url=db, data_dir=data_dir)
    run_migrations(settings.database_url)
    engine = create_db_engine(settings.database_url)
    try:
        report = move_files_to_database(engine, settings.bundle_dir, keep_files=keep_files)
        left = files_left(engine)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    finally:
        engine.dispose()
    for label in report.resumed:
        err.print(f"resumed: {label}")
    for label in report.missing:
        err.print(f"[yellow]not in {settings.bundle_dir}:[/yellow] {label}")
    for label, reason in report.refused:
        err.print(f"[red]refused:[/red] {label}: {reason}")
    typer.echo(
        f"moved: {len(report.moved)}  refused: {len(report.refused)}  "
        f"not here: {len(report.missing)}  still files: {left}"
    )
    if report.refused:
        raise typer.Exit(1)
