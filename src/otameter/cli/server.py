"""Commands that run the server and work on its database and data directory directly.

``serve``, ``migrate``, ``import``, ``backup``, ``restore`` and ``google-ranges load``: they
take ``--db``/``--data-dir`` (or their variables) rather than a server URL and an API key.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..config import Settings, parse_networks
from .database import DataDirOption, DbOption, err, settings_or_exit
from .errors import fail
from .output import human_bytes

ranges_app = typer.Typer(help="Google IP range lists (the 4-hour rule).", no_args_is_help=True)


def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Number of API processes.", min=1)] = 1,
    data_dir: DataDirOption = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="URL devices use to reach this server (for download links).",
            envvar="OTAMETER_PUBLIC_URL",
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="CIDR of a proxy whose X-Forwarded-For is trusted.",
            envvar="OTAMETER_TRUSTED_PROXIES",
        ),
    ] = None,
    max_bundle_size: Annotated[
        str | None,
        typer.Option(
            help="Largest bundle zip an upload may store (e.g. 512MiB, 2GB).",
            envvar="OTAMETER_MAX_BUNDLE_SIZE",
        ),
    ] = None,
    demo: Annotated[bool, typer.Option(help="Fill an empty database with demo data.")] = False,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="text, or json: one JSON object a line (time, level, logger, message, fields).",
            envvar="OTAMETER_LOG_FORMAT",
        ),
    ] = "text",
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line per request (client, method, path, route, status, duration).",
            envvar="OTAMETER_ACCESS_LOG",
        ),
    ] = False,
) -> None:
    """Run the HTTP server (creates or upgrades the schema first).

    GET /healthz answers while the process serves, GET /readyz when the database, its schema,
    the writer and the data directory are ready, GET /metrics in Prometheus' text format
    (OTAMETER_METRICS_TOKEN: require that bearer token).
    """
    from ..billing.plans import parse_quantity

    try:
        max_bundle_bytes = parse_quantity(max_bundle_size) if max_bundle_size else None
    except ValueError as exc:
        raise fail(f"--max-bundle-size: {exc}", 2) from None
    from ..logs import log_config

    try:
        logging_config = log_config(log_format.lower())
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    settings = settings_or_exit(
        database_url=db,
        data_dir=data_dir,
        public_url=public_url,
        trusted_proxies=parse_networks(trusted_proxy) if trusted_proxy else None,
        max_bundle_bytes=max_bundle_bytes,
    )
    from ..health import data_dir_problem

    # Checked now rather than as a failed upload later.
    problem = data_dir_problem(settings.data_dir, create=True)
    if problem:
        raise fail(f"{problem}; choose another with --data-dir or OTAMETER_DATA_DIR", 2)
    from ..storage.db import migrate as run_migrations

    run_migrations(settings.database_url)
    _hint_bundle_files(settings)
    if demo:
        _seed_demo(settings, host, port)
    # Worker processes read their settings from the environment.
    os.environ.update(
        {
            "OTAMETER_DATABASE_URL": settings.database_url,
            "OTAMETER_DATA_DIR": str(settings.data_dir),
            "OTAMETER_TRUSTED_PROXIES": ",".join(str(n) for n in settings.trusted_proxies),
            "OTAMETER_MAX_BUNDLE_SIZE": str(settings.max_bundle_bytes),
            "OTAMETER_ACCESS_LOG": "1" if access_log else "",
            **settings.limit_environment(),
        }
    )
    metrics_dir = _metrics_dir(workers)
    if settings.public_url:
        os.environ["OTAMETER_PUBLIC_URL"] = settings.public_url
    import logging
    import logging.config

    from ..server import serve as run_server

    logging.config.dictConfig(logging_config)
    logging.getLogger("otameter").info(
        "otameter listening on http://%s:%d (%s)", host, port, settings.database_url
    )
    try:
        run_server(replace(settings, access_log=access_log), host, port, workers, logging_config)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


# prometheus_client reads it when imported: set before any worker imports otameter.metrics.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_dir(workers: int) -> Path | None:
    """With several workers, a fresh directory for prometheus_client's multiprocess mode.

    A scrape reaches one worker at random: each must be able to answer for all of them.
    A directory given in PROMETHEUS_MULTIPROC_DIR is used as it is (and kept).
    """
    if workers < 2 or os.environ.get(MULTIPROC_ENV):
        return None
    path = Path(tempfile.mkdtemp(prefix="otameter-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _hint_bundle_files(settings: Settings) -> None:
    """On PostgreSQL, say when bundles are still files that only this machine can serve."""
    if settings.database_url.startswith("sqlite"):
        return
    from ..bundle_move import files_left
    from ..storage.db import create_db_engine

    engine = create_db_engine(settings.database_url)
    try:
        left = files_left(engine)
    finally:
        engine.dispose()
    if left:
        err.print(
            f"[yellow]{left} bundles are files in a data directory[/yellow]: only the machine "
            "holding them serves them. Move them into the database with "
            "`otameter bundles move-to-database --db URL --data-dir DIR` on that machine."
        )


def _seed_demo(settings: Settings, host: str, port: int) -> None:
    from datetime import timedelta

    from ..demo import ensure_demo, is_empty
    from ..runtime import Runtime

    rt = Runtime(settings)
    rt.start(background=False)
    try:
        with rt.read_engine.connect() as conn:
            empty = is_empty(conn)
        with err.status("Generating 90 days of demo traffic...") if empty else nullcontext():
            key, generated = ensure_demo(rt)
        today = rt.clock.now().date()
    finally:
        rt.stop()
    if key is None:
        err.print("The database already has data: demo data not added.")
        return
    if not generated:
        err.print(
            "The demo data is already here. API keys are stored hashed, so here is a new "
            "demo key (the earlier ones still work)."
        )
    base = f"http://{host}:{port}"
    start = today - timedelta(days=29)
    err.print(f"Demo API key: [bold]{key}[/bold]", soft_wrap=True)
    err.print(f"Dashboard: {base}/dashboard  (sign in with the key above)", soft_wrap=True)
    err.print(
        f"Try: curl -H 'authorization: {key}' '{base}/statistics/user/?from={start}&to={today}'",
        soft_wrap=True,
        highlight=False,
    )


def migrate(db: DbOption = None) -> None:
    """Create or upgrade the database schema, then exit."""
    settings = settings_or_exit(database_url=db)
    from ..storage.db import migrate as run_migrations

    run_migrations(settings.database_url)
    err.print("schema is up to date")
    _hint_bundle_files(settings)


def import_events(
    file: Annotated[Path, typer.Argument(help="JSON lines file of events ('-' for stdin).")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Parsing processes for a large file (default: one per CPU, at most 4; "
            "0: parse in this process).",
        ),
    ] = None,
) -> None:
    """Replay events through the same counting code as live traffic (idempotent by id).

    Exit codes: 0 done (duplicates and some rejected lines included); 1 every line was
    rejected, or the import failed; 2 no such file or invalid options.
    """
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from ..importing.lines import parsing_pool_for

    settings = settings_or_exit(database_url=db, data_dir=data_dir)
    spool: Path | None = None
    if str(file) == "-":
        # The importer reads its input in slices, so stdin is kept in a temporary file.
        handle, name = tempfile.mkstemp(suffix=".jsonl")
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        spool = file = Path(name)
    elif not file.is_file():
        raise fail(f"no such file: {file}", 2)
    source = file

    # The parsing processes get ready while this process imports the rest of otameter and
    # migrates and opens the database.
    pool = parsing_pool_for(source.stat().st_size, workers)
    from ..importing.importer import Importer, ImportFailed
    from ..runtime import Runtime
    from ..storage.db import migrate as run_migrations

    rt: Runtime | None = None
    try:
        run_migrations(settings.database_url)
        rt = Runtime(settings)
        rt.start(background=False)
        size = source.stat().st_size
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[lines]:,} lines, {task.fields[done]} of " + human_bytes(size)),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(
            *columns, console=err, transient=True, disable=not err.is_terminal
        ) as progress:
            task = progress.add_task("importing events", total=size, lines=0, done="0 B")
            importer = Importer(rt.writer, rt.clock, workers=workers, pool=pool)
            lines_done = 0

            def advance(lines: int, nbytes: int) -> None:
                nonlocal lines_done
                lines_done += lines
                bytes_done = int(progress.tasks[0].completed) + nbytes
                progress.update(
                    task, completed=bytes_done, lines=lines_done, done=human_bytes(bytes_done)
                )

            summary = importer.run(source, advance)
            progress.update(task, description="rolling up")
            rt.rollups.run_blocking()
    except ImportFailed as exc:
        raise fail(str(exc)) from None
    finally:
        if rt is not None:
            rt.stop()
        if pool is not None:
            pool.close()
        if spool is not None:
            spool.unlink(missing_ok=True)
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(
            f"accepted: {summary.accepted}  duplicates: {summary.duplicates}  "
            f"rejected: {len(summary.rejected)}"
        )
        for number, reason in summary.rejected[:100]:
            typer.echo(f"  line {number}: {reason}")
        if len(summary.rejected) > 100:
            typer.echo(f"  ... and {len(summary.rejected) - 100} more (use --json for all)")
    if summary.rejected and not summary.accepted and not summary.duplicates:
        hint = ""
        if any("unknown app" in reason for _, reason in summary.rejected):
            hint = " (create the apps first: otameter app create APP_ID --org ORG_ID)"
        raise fail(f"every line was rejected, nothing was imported{hint}", 1)


def backup_command(
    directory: Annotated[Path, typer.Argument(help="Directory to create for the backup.")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Copy the database and the bundle files into DIR, consistently, while the server runs.

    The database is read in one snapshot (one read transaction; REPEATABLE READ on
    PostgreSQL); the copy restores into SQLite or PostgreSQL. Exit codes: 0 done; 1 failed;
    2 invalid options or DIR not empty.
    """
    from ..backup import BackupError, backup

    settings = settings_or_exit(database_url=db, data_dir=data_dir)
    try:
        with err.status("backing up") as status:
            summary = backup(
                settings.database_url,
                settings.data_dir,
                directory,
                lambda message: status.update(message),
            )
    except BackupError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(
        f"backup of revision {summary.revision} in {directory}: {summary.rows:,} rows in "
        f"{len(summary.tables)} tables, {summary.files} files ({human_bytes(summary.file_bytes)})"
    )
    for path in summary.missing_files:
        err.print(f"[yellow]note:[/yellow] bundle file {path} was deleted during the backup")


def restore_command(
    directory: Annotated[Path, typer.Argument(help="A directory written by otameter backup.")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Fill an empty database and data directory from a backup (no migrate needed first).

    Exit codes: 0 done; 1 failed; 2 invalid options, not a backup, or a database or data
    directory that is not empty.
    """
    from ..backup import BackupError, restore

    settings = settings_or_exit(database_url=db, data_dir=data_dir)
    try:
        with err.status("restoring") as status:
            summary = restore(
                directory,
                settings.database_url,
                settings.data_dir,
                lambda message: status.update(message),
            )
    except BackupError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(
        f"restored {summary.rows:,} rows in {len(summary.tables)} tables and "
        f"{summary.files} files ({human_bytes(summary.file_bytes)}) into {settings.database_url}"
    )


@ranges_app.command("load")
def ranges_load(
    file: Annotated[Path, typer.Argument(help="A Google range list (Google's JSON format).")],
    name: Annotated[
        str | None, typer.Option(help="Which list it replaces (e.g. goog.json).")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Replace a packaged Google range list with a newer copy (takes effect on restart)."""
    from ..google_ranges import RangeFileError, install_range_file

    settings = settings_or_exit(data_dir=data_dir)
    try:
        result = install_range_file(file, settings.google_ranges_dir, name)
    except (RangeFileError, OSError) as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"{result.name}: {result.v4_prefixes} IPv4 + {result.v6_prefixes} IPv6 prefixes "
        f"(created {result.creation_time}) installed in {result.path}"
    )
