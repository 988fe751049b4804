"""What differs between SQLite and PostgreSQL in the statements otameter builds itself."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(conn: Connection, table: Table) -> Any:
    """INSERT with ON CONFLICT support for the connection's engine."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def date_param(conn: Connection, day: date) -> Any:
    # SQLAlchemy stores a Date as ISO text on SQLite; statements run with exec_driver_sql
    # bypass its type handling, so the text is passed as is.
    return day if conn.dialect.name == "postgresql" else day.isoformat()


def placeholder(conn: Connection) -> str:
    """The driver's positional parameter mark, for statements run with exec_driver_sql."""
    return "%s" if conn.dialect.name == "postgresql" else "?"
