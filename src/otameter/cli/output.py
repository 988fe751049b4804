"""How the client commands print: people's tables and units, or JSON, or CSV, for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from ..csv_cells import CsvWriter
from ..units import format_bytes

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts and CI).")]
CsvOption = Annotated[bool, typer.Option("--csv", help="Print CSV.")]


def human_bytes(size: int | float | None) -> str:
    """Bytes for people: otameter's one way (``units.format_bytes``, decimal units)."""
    return format_bytes(size)


def human_time(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int | float], width: int = 60) -> str:
    """One character per value (per bucket of values, keeping its peak, past ``width``)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [
            max(values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)])
            for i in range(width)
        ]
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[0 if high == 0 else 3] * len(values)
    span = high - low
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in values)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False))


def print_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A header and rows on stdout; string cells cannot start a spreadsheet formula."""
    writer = CsvWriter(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(row)
