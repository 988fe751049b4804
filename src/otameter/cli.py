"""The ``otameter`` command line."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .cli_channels import register as register_channel_commands
from .cli_client import register as register_client_commands
from .cli_common import DataDirOption, DbOption, err, settings_or_exit, write_transaction
from .cli_common import fail as _fail
from .cli_keys import key_app
from .cli_plans import org_app, plan_app
from .config import Settings, parse_networks

app = typer.Typer(
    help="Usage metering and statistics for Capacitor live updates.",
    no_args_is_help=True,
    add_completion=False,
)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
ranges_app = typer.Typer(help="Google IP range lists (the 4-hour rule).", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(ranges_app, name="google-ranges")
app.add_typer(plan_app, name="plan")
app.add_typer(org_app, name="org")
app.add_typer(key_app, name="key")


@app.command()
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
    demo: Annotated[bool, typer.Option(help="Fill an empty database with demo data.")] = False,
) -> None:
    """Run the HTTP server (creates or upgrades the schema first)."""
    settings = settings_or_exit(
        database_url=db,
        data_dir=data_dir,
        public_url=public_url,
        trusted_proxies=parse_networks(trusted_proxy) if trusted_proxy else None,
    )
    from .db import migrate as run_migrations

    run_migrations(settings.database_url)
    if demo:
        _seed_demo(settings, host, port)
    # Worker processes read their settings from the environment.
    os.environ.update(
        {
            "OTAMETER_DATABASE_URL": settings.database_url,
            "OTAMETER_DATA_DIR": str(settings.data_dir),
            "OTAMETER_TRUSTED_PROXIES": ",".join(str(n) for n in settings.trusted_proxies),
        }
    )
    if settings.public_url:
        os.environ["OTAMETER_PUBLIC_URL"] = settings.public_url
    from .server import serve as run_server

    err.print(f"otameter listening on http://{host}:{port} ({settings.database_url})")
    run_server(settings, host, port, workers)


def _seed_demo(settings: Settings, host: str, port: int) -> None:
    from .demo import is_empty, seed_demo
    from .runtime import Runtime

    rt = Runtime(settings)
    rt.start(background=False)
    try:
        with rt.read_engine.connect() as conn:
            empty = is_empty(conn)
        if not empty:
            err.print("The database already has data: demo data not added.")
            return
        with err.status("Generating 90 days of demo traffic..."):
            key = seed_demo(rt)
    finally:
        rt.stop()
    base = f"http://{host}:{port}"
    err.print(f"Demo API key: [bold]{key}[/bold]")
    err.print(f"Dashboard: {base}/dashboard  (sign in with the key above)")
    err.print(f"Try: curl -H 'authorization: {key}' '{base}/statistics/user/?from=...&to=...'")


@app.command()
def migrate(db: DbOption = None) -> None:
    """Create or upgrade the database schema, then exit."""
    settings = settings_or_exit(database_url=db)
    from .db import migrate as run_migrations

    run_migrations(settings.database_url)
    err.print("schema is up to date")


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="The user's email address.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    db: DbOption = None,
) -> None:
    """Create a user and print its first API key (mode 'all') as one JSON line."""
    from .users import create_user

    user_id, key = write_transaction(
        db, lambda conn, now_ms: create_user(conn, email, name, now_ms)
    )
    typer.echo(json.dumps({"user_id": user_id, "api_key": key}))


@app.command("import")
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
    """Replay events through the same counting code as live traffic (idempotent by id)."""
    import shutil
    import tempfile

    from rich.progress import Progress

    from .import_lines import parsing_pool_for

    settings = settings_or_exit(database_url=db, data_dir=data_dir)
    spool: Path | None = None
    if str(file) == "-":
        # The importer reads its input in slices, so stdin is kept in a temporary file.
        handle, name = tempfile.mkstemp(suffix=".jsonl")
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        spool = file = Path(name)
    elif not file.is_file():
        raise _fail(f"no such file: {file}", 2)
    source = file

    # The parsing processes get ready while this process imports the rest of otameter and
    # migrates and opens the database.
    pool = parsing_pool_for(source.stat().st_size, workers)
    from .db import migrate as run_migrations
    from .importer import Importer, ImportFailed
    from .runtime import Runtime

    rt: Runtime | None = None
    try:
        run_migrations(settings.database_url)
        rt = Runtime(settings)
        rt.start(background=False)
        with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("importing events", total=None)
            importer = Importer(rt.writer, rt.clock, workers=workers, pool=pool)
            summary = importer.run(source, lambda n: progress.advance(task, n))
            progress.update(task, description="rolling up")
            rt.rollups.run_blocking()
    except ImportFailed as exc:
        raise _fail(str(exc)) from None
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


@ranges_app.command("load")
def ranges_load(
    file: Annotated[Path, typer.Argument(help="A Google range list (Google's JSON format).")],
    name: Annotated[
        str | None, typer.Option(help="Which list it replaces (e.g. goog.json).")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Replace a packaged Google range list with a newer copy (takes effect on restart)."""
    from .google_ranges import RangeFileError, install_range_file

    settings = settings_or_exit(data_dir=data_dir)
    try:
        result = install_range_file(file, settings.google_ranges_dir, name)
    except (RangeFileError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"{result.name}: {result.v4_prefixes} IPv4 + {result.v6_prefixes} IPv6 prefixes "
        f"(created {result.creation_time}) installed in {result.path}"
    )


# Registered last so that they are listed after the server commands.
register_client_commands(app)  # bundle, stats, usage: commands that talk to a server
register_channel_commands(app)  # channel set, channel list


def main() -> None:
    try:
        app()
    finally:
        # The interpreter's last collection at exit would walk every object only to find
        # them all alive: frozen, they are skipped (a tenth of a second of each command).
        gc.freeze()
