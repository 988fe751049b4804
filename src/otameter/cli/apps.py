"""``otameter app create|list|delete``: an organization's apps on a running server.

Like ``bundle``, they talk to a running server (``--server``/``--apikey`` or their variables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .errors import EXIT_HELP, ForceOption, confirm_or_stop, reporting
from .output import JsonOption, err, human_time, out, print_json
from .target import ApikeyOption, ServerOption, connect

if TYPE_CHECKING:
    from ..client import Organization

app_app = typer.Typer(
    help="Create, list and delete apps on a running otameter server.", no_args_is_help=True
)


@app_app.command("create", epilog=EXIT_HELP)
def app_create(
    app_id: Annotated[str, typer.Argument(help="Reverse-domain id, like com.example.app.")],
    org: Annotated[str, typer.Option("--org", "-o", help="Id of the organization that owns it.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Create an app in an organization."""
    with reporting(), connect(server, apikey) as client:
        created = client.create_app(app_id, org, name)
    if as_json:
        print_json(created)
        return
    out.print(
        f"Created app [bold]{escape(created['app_id'])}[/bold] "
        f"({escape(str(created.get('name')))}) in organization {escape(org)}",
        soft_wrap=True,
    )
    err.print(
        f"[dim]next:[/dim] otameter bundle upload --app {escape(created['app_id'])} "
        "--version 1.0.0 ./dist",
        soft_wrap=True,
    )


def _org_names(orgs: list[Organization]) -> dict[str, str]:
    return {str(o.get("id")): str(o.get("name")) for o in orgs}


@app_app.command("list", epilog=EXIT_HELP)
def app_list(
    org: Annotated[
        str | None, typer.Option("--org", "-o", help="Only this organization's apps.")
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """List the apps the API key can see."""
    with reporting(), connect(server, apikey) as client:
        apps = client.list_apps()
        names = {} if as_json else _org_names(client.list_orgs())
    if org is not None:
        apps = [a for a in apps if a.get("owner_org") == org]
    if as_json:
        print_json(apps)
        return
    if not apps:
        out.print("No apps yet." if org is None else f"No apps in organization {escape(org)}.")
        err.print(
            "[dim]next:[/dim] otameter app create com.example.app --org ORG_ID "
            "(otameter org list shows the ids)",
            soft_wrap=True,
        )
        return
    table = Table(title=f"{len(apps)} app{'s' if len(apps) != 1 else ''}")
    for column in ("App id", "Name", "Organization", "Created (UTC)"):
        table.add_column(column, no_wrap=column in {"App id", "Created (UTC)"})
    for a in apps:
        owner = str(a.get("owner_org"))
        table.add_row(
            escape(str(a.get("app_id"))),
            escape(str(a.get("name"))),
            escape(names.get(owner, owner)),
            human_time(a.get("created_at")),
        )
    out.print(table)


@app_app.command("delete", epilog=EXIT_HELP)
def app_delete(
    app_id: Annotated[str, typer.Argument(help="The app to delete.")],
    force: ForceOption = False,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Delete an app and its bundles (their storage is freed; statistics stay)."""
    with reporting(), connect(server, apikey) as client:
        client.get_app(app_id)  # an unknown app fails here, before any question
        if not force:
            confirm_or_stop(f"Delete {app_id} and all its bundles?", "nothing deleted")
        client.delete_app(app_id)
    if as_json:
        print_json({"app_id": app_id, "deleted": True})
        return
    out.print(f"Deleted app [bold]{escape(app_id)}[/bold]", soft_wrap=True)
