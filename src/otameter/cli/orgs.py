"""``otameter org ...``: organizations.

``org create`` and ``org list`` talk to a running server, like ``bundle`` (``--server``/
``--apikey`` or their variables), so that a new user goes from an empty database to a first
app with the command line alone; ``org set-plan`` writes to the database (``--db``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .database import DbOption, write_transaction
from .errors import EXIT_HELP, Problem, reporting
from .output import JsonOption, err, human_time, out, print_json
from .target import ApikeyOption, ServerOption, connect

if TYPE_CHECKING:
    from sqlalchemy import Connection

org_app = typer.Typer(help="Manage organizations.", no_args_is_help=True)


@org_app.command("set-plan")
def org_set_plan(
    org_id: Annotated[str, typer.Argument(help="Organization id.")],
    plan: Annotated[str, typer.Argument(help="Plan name.")],
    cycle_anchor: Annotated[
        int | None,
        typer.Option(
            "--cycle-anchor",
            min=1,
            max=31,
            help="Day of the month the billing cycle starts (default: unchanged, "
            "initially the day the org was created).",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Put an org on a plan; its lock is re-decided at once (a bigger plan unlocks it)."""
    from ..billing.enforcement import evaluate_orgs
    from ..billing.plans import set_org_plan
    from ..billing.usage import load_org

    def write(conn: Connection, now_ms: int) -> dict[str, object]:
        set_org_plan(conn, org_id, plan, cycle_anchor)
        evaluate_orgs(conn, [org_id], now_ms)
        org = load_org(conn, org_id)
        return {
            "org_id": org_id,
            "plan": org.plan,
            "cycle_anchor": org.cycle_anchor,
            "locked": org.lock_code is not None,
            "lock_code": org.lock_code,
            "lock_reason": org.lock_reason,
        }

    typer.echo(json.dumps(write_transaction(db, write)))


@org_app.command("create", epilog=EXIT_HELP)
def org_create(
    name: Annotated[str, typer.Argument(help="The organization's name.")],
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Create an organization; the API key's user becomes its super_admin."""
    with reporting():
        if not name.strip():
            raise Problem("the name must not be empty")
        with connect(server, apikey) as client:
            org = client.create_org(name.strip())
    if as_json:
        print_json({"id": org["id"], "name": org["name"]})
        return
    out.print(
        f"Created organization [bold]{escape(org['name'])}[/bold] with id {escape(org['id'])}",
        soft_wrap=True,
    )
    err.print(
        f"[dim]next:[/dim] otameter app create com.example.app --org {escape(org['id'])}",
        soft_wrap=True,
    )


@org_app.command("list", epilog=EXIT_HELP)
def org_list(
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """List the organizations of the API key's user."""
    with reporting(), connect(server, apikey) as client:
        orgs = client.list_orgs()
    if as_json:
        print_json(orgs)
        return
    if not orgs:
        out.print("No organizations yet.")
        err.print('[dim]next:[/dim] otameter org create "My company"', soft_wrap=True)
        return
    table = Table(title=f"{len(orgs)} organization{'s' if len(orgs) != 1 else ''}")
    for column in ("Id", "Name", "Your role", "Plan", "Created (UTC)"):
        table.add_column(column, no_wrap=column != "Name")
    for org in orgs:
        table.add_row(
            escape(str(org.get("id"))),
            escape(str(org.get("name"))),
            escape(str(org.get("role") or "-")),
            escape(str(org.get("plan") or "-")),
            human_time(org.get("created_at")),
        )
    out.print(table)
