"""``otameter user create``: a user and its first API key, written to the database directly."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .database import DbOption, write_transaction

user_app = typer.Typer(help="Manage users.", no_args_is_help=True)


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="The user's email address.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    db: DbOption = None,
) -> None:
    """Create a user and print its first API key (mode 'all') as one JSON line."""
    from ..users import create_user

    user_id, key = write_transaction(
        db, lambda conn, now_ms: create_user(conn, email, name, now_ms)
    )
    typer.echo(json.dumps({"user_id": user_id, "api_key": key}))
