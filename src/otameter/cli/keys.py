"""``otameter key create|list|revoke``: the caller's API keys on a running server.

Client commands like ``bundle``: the server and the key that acts come from ``--server`` and
``--apikey`` (or their variables, or the config file). Managing keys needs a key of mode
``all`` that is not limited to some apps.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .errors import EXIT_HELP, reporting
from .output import JsonOption, err, human_time, out, print_json
from .target import ApikeyOption, ServerOption, connect

key_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

MODES = ("read", "upload", "write", "all")


@key_app.command("create", epilog=EXIT_HELP)
def key_create(
    mode: Annotated[str, typer.Option("--mode", help=f"One of {', '.join(MODES)}.")],
    org: Annotated[
        list[str] | None, typer.Option("--org", help="Limit the key to this org (repeatable).")
    ] = None,
    app_id: Annotated[
        list[str] | None, typer.Option("--app", help="Limit the key to this app (repeatable).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A name to recognise the key by.")] = "",
    expires_at: Annotated[
        str | None,
        typer.Option(
            "--expires-at", help="ISO 8601 date-time with a time zone, e.g. 2026-01-31T00:00Z."
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Create a key; it is printed once and cannot be shown again."""
    with reporting(), connect(server, apikey) as client:
        made = client.create_key(
            mode, name=name, orgs=org or [], apps=app_id or [], expires_at=expires_at
        )
    if as_json:
        # The contract's shape: what a script needs, nothing it could mistake for the secret.
        print_json({"id": made["id"], "key": made["key"]})
        return
    # The key alone on stdout (for a pipe); what it is on stderr.
    typer.echo(made["key"])
    limits = [*made.get("limited_to_orgs", []), *made.get("limited_to_apps", [])]
    err.print(
        f"Created key {escape(str(made['id']))} (mode {escape(str(made['mode']))}"
        + (f", limited to {escape(', '.join(limits))}" if limits else "")
        + (
            f", expires {escape(human_time(made.get('expires_at')))}"
            if made.get("expires_at")
            else ""
        )
        + "). It is shown only now: store it.",
        soft_wrap=True,
    )


@key_app.command("list", epilog=EXIT_HELP)
def key_list(
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """List your keys (never the keys themselves)."""
    with reporting(), connect(server, apikey) as client:
        keys = client.list_keys()
    if as_json:
        print_json(keys)
        return
    if not keys:
        out.print("No keys")
        return
    table = Table(title=f"{len(keys)} key{'s' if len(keys) != 1 else ''}")
    for column in ("id", "name", "mode", "limited to", "created", "expires"):
        table.add_column(column)
    for k in keys:
        limits = [*k.get("limited_to_orgs", []), *k.get("limited_to_apps", [])]
        expires = human_time(k.get("expires_at")) if k.get("expires_at") else "never"
        if k.get("expired"):
            expires += " (expired)"
        table.add_row(
            escape(str(k["id"])),
            escape(str(k.get("name") or "")),
            escape(str(k.get("mode"))),
            escape(", ".join(limits)) or "-",
            escape(human_time(k.get("created_at"))),
            escape(expires),
        )
    out.print(table)


@key_app.command("revoke", epilog=EXIT_HELP)
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `otameter key list`).")],
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Revoke a key: it gets 401 from then on, on every server process."""
    with reporting(), connect(server, apikey) as client:
        client.revoke_key(key_id)
    out.print(f"Revoked key {escape(key_id)}")
