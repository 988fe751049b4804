"""``otameter plan create|list``: plans and their limits, in the database (``--db``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from .database import DbOption, write_transaction
from .errors import fail

if TYPE_CHECKING:
    from sqlalchemy import Connection

plan_app = typer.Typer(
    help="Manage plans (limits for MAU, storage, bandwidth).", no_args_is_help=True
)


def _quantity(value: str, what: str) -> int:
    from ..billing.plans import parse_quantity

    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise fail(f"--{what}: {exc}", 2) from None


@plan_app.command("create")
def plan_create(
    name: Annotated[str, typer.Argument(help="Plan name.")],
    mau: Annotated[str, typer.Option(help="Monthly active users per billing cycle (e.g. 1000).")],
    storage: Annotated[str, typer.Option(help="Storage in bytes (e.g. 1073741824, 1GB, 2GiB).")],
    bandwidth: Annotated[str, typer.Option(help="Bandwidth in bytes per billing cycle.")],
    default: Annotated[
        bool | None,
        typer.Option(
            "--default/--no-default",
            help="Make it the plan of orgs that have none (unchanged if not given).",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Create or update a plan; orgs on it are re-checked against the new limits at once."""
    from ..billing.enforcement import evaluate_orgs
    from ..billing.plans import orgs_using_plan, upsert_plan

    limits = (
        _quantity(mau, "mau"),
        _quantity(storage, "storage"),
        _quantity(bandwidth, "bandwidth"),
    )

    def write(conn: Connection, now_ms: int) -> dict[str, object]:
        plan = upsert_plan(conn, name, *limits, now_ms, default=default)
        changes = evaluate_orgs(conn, orgs_using_plan(conn, plan), now_ms)
        return {**plan.as_json(), "lock_changes": len(changes)}

    typer.echo(json.dumps(write_transaction(db, write)))


@plan_app.command("list")
def plan_list(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List plans and their limits."""
    from ..billing.plans import list_plans

    plans = write_transaction(db, lambda conn, _now: list_plans(conn))
    if as_json:
        typer.echo(json.dumps([p.as_json() for p in plans]))
        return
    from ..units import format_bytes

    typer.echo(f"{'name':<20} {'MAU':>12} {'storage':>10} {'bandwidth':>10}  default")
    for p in plans:
        mark = "yes" if p.is_default else ""
        typer.echo(
            f"{p.name:<20} {p.mau:>12,} {format_bytes(p.storage):>10} "
            f"{format_bytes(p.bandwidth):>10}  {mark}"
        )
