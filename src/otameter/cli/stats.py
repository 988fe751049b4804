"""``otameter stats app|org|user|releases`` and ``otameter usage``: figures from a server."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Generic, NamedTuple, TypeVar, get_type_hints

import typer
from rich.markup import escape
from rich.table import Table

from ..clock import SystemClock
from ..releases import RELEASE_ROW_FIELDS
from .errors import EXIT_HELP, Problem, reporting
from .output import CsvOption, JsonOption, human_bytes, out, print_csv, print_json, sparkline
from .target import ApikeyOption, ServerOption, connect

if TYPE_CHECKING:
    from ..client import OtameterClient, Scope, StatRow

T = TypeVar("T")
Ident = TypeVar("Ident", str, str | None)

stats_app = typer.Typer(
    help="Daily MAU, storage and bandwidth from a running otameter server.", no_args_is_help=True
)


FromOption = Annotated[
    str | None,
    typer.Option("--from", help="First day, YYYY-MM-DD (default: 29 days before --to)."),
]
ToOption = Annotated[
    str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (default: today, UTC).")
]


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Problem(f"Invalid date format. Use YYYY-MM-DD (got {text!r})") from None


def date_range(start: str | None, end: str | None) -> tuple[date, date]:
    last = _day(end) if end else SystemClock().now().date()
    first = _day(start) if start else last - timedelta(days=29)
    return first, last


def _one_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise Problem("choose one of --json and --csv")


@dataclass(frozen=True)
class StatsOptions:
    """The options every ``stats`` command takes, declared once: each command's signature is
    its own arguments, then these (typer reads a command's options from its signature)."""

    start: FromOption = None
    end: ToOption = None
    as_json: JsonOption = False
    as_csv: CsvOption = False
    server: ServerOption = None
    apikey: ApikeyOption = None

    def fetch(self, query: Callable[[OtameterClient, date, date], list[T]]) -> Fetched[T]:
        """The rows ``query`` reads for the chosen period, every failure reported one way."""
        with reporting():
            _one_format(self.as_json, self.as_csv)
            first, last = date_range(self.start, self.end)
            with connect(self.server, self.apikey) as client:
                return Fetched(query(client, first, last), first, last)


class Fetched(NamedTuple, Generic[T]):
    """A ``stats`` command's rows and the period they cover."""

    rows: list[T]
    first: date
    last: date


Show = Callable[[Ident, StatsOptions], None]


def _option_parameters() -> list[inspect.Parameter]:
    hints = get_type_hints(StatsOptions, include_extras=True)
    return [
        inspect.Parameter(
            field.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=field.default,
            annotation=hints[field.name],
        )
        for field in fields(StatsOptions)
    ]


def stats_command(
    name: str, help: str, argument: str | None = None, argument_help: str = ""
) -> Callable[[Show[Ident]], Show[Ident]]:
    """Register ``show(ident, options)`` as the command ``stats NAME [ARGUMENT]``: its id
    argument (none for ``user``), then the options of ``StatsOptions``."""

    def register(show: Show[Ident]) -> Show[Ident]:
        arguments: list[inspect.Parameter] = []
        if argument is not None:
            arguments.append(
                inspect.Parameter(
                    argument,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    annotation=Annotated[str, typer.Argument(help=argument_help)],
                )
            )

        def command(**values: Any) -> None:
            ident: Any = values.pop(argument) if argument is not None else None
            show(ident, StatsOptions(**values))

        command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*arguments, *_option_parameters()]
        )
        stats_app.command(name, help=help, epilog=EXIT_HELP)(command)
        return show

    return register


@dataclass(frozen=True)
class Subject:
    """What one of ``stats app|org|user`` shows: a scope of the statistics routes, and its
    id's argument (none for ``user``: every app the API key can read)."""

    scope: Scope
    help: str
    argument: str | None = None
    argument_help: str = ""


SUBJECTS = (
    Subject("app", "Daily statistics of one app.", "app_id", "App id."),
    Subject(
        "org", "Daily statistics of an organization (all its apps).", "org_id", "Organization id."
    ),
    Subject("user", "Daily statistics of every app the API key can read."),
)


def show_statistics(subject: Subject, ident: str | None, options: StatsOptions) -> None:
    """``stats app|org|user``: daily MAU, storage and bandwidth as a table, JSON or CSV."""
    rows, first, last = options.fetch(
        lambda client, first, last: client.statistics(subject.scope, ident, first, last)
    )
    if options.as_json:
        print_json({"data": rows})
        return
    if options.as_csv:
        print_csv(
            ["date", "mau", "storage", "bandwidth"],
            ([r["date"], r["mau"], r["storage"], r["bandwidth"]] for r in rows),
        )
        return
    shown = "all your apps" if ident is None else f"{subject.scope} {ident}"
    title = f"{escape(shown)}, {first} to {last}"
    if not rows:
        out.print(f"{title}: no data")
        return
    _print_mau_line(rows)
    table = Table(title=title, title_justify="left")
    for name in ("Date", "MAU", "Storage", "Bandwidth"):
        table.add_column(name, justify="left" if name == "Date" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["date"], f"{r['mau']:,}", human_bytes(r["storage"]), human_bytes(r["bandwidth"])
        )
    total = sum(int(r["bandwidth"]) for r in rows)
    table.add_section()
    table.add_row("total", "", "", human_bytes(total))
    out.print(table)


def _print_mau_line(rows: Sequence[StatRow]) -> None:
    values = [int(r["mau"]) for r in rows]
    peak = max(values)
    peak_day = rows[values.index(peak)]["date"]
    out.print(
        f"MAU  {sparkline(values)}  latest {values[-1]:,}, peak {peak:,} on {peak_day}",
        soft_wrap=True,
        highlight=False,
    )


for _subject in SUBJECTS:
    stats_command(_subject.scope, _subject.help, _subject.argument, _subject.argument_help)(
        partial(show_statistics, _subject)
    )


@stats_command(
    "releases",
    # The line break is the one the group's command list has always shown.
    "Release health of an app: per bundle version, the devices that were offered it,\n"
    "downloaded, installed, failed, rolled back or crashed, and its launch times.",
    "app_id",
    "App id.",
)
def show_releases(app_id: str, options: StatsOptions) -> None:
    """``stats releases APP_ID``: release health per bundle version as a table, JSON or CSV."""
    rows, first, last = options.fetch(
        lambda client, first, last: client.releases(app_id, first, last)
    )
    if options.as_json:
        print_json({"data": rows})
        return
    if options.as_csv:
        print_csv(
            RELEASE_ROW_FIELDS,
            (["" if r.get(f) is None else r.get(f) for f in RELEASE_ROW_FIELDS] for r in rows),
        )
        return
    title = f"releases of {escape(app_id)}, {first} to {last}"
    if not rows:
        out.print(f"{title}: no data")
        return
    table = Table(title=title, title_justify="left")
    headers = (
        "Version",
        "Active",
        "Offered",
        "Downloaded",
        "Installed",
        "Failed",
        "Rolled back",
        "Crashed",
        "Crash-free",
        "Launches",
        "p50 ms",
        "p95 ms",
    )
    for name in headers:
        table.add_column(name, justify="left" if name == "Version" else "right", no_wrap=True)

    def count(value: Any) -> str:
        return "-" if value is None else f"{int(value):,}"

    for r in rows:
        # Crash-free devices: of those that ran or installed it, the share that never crashed.
        crashed = int(r.get("crashed") or 0)
        users = max(int(r.get("active") or 0), int(r.get("installed") or 0), crashed)
        crash_free = f"{100 * (users - crashed) / users:.1f}%" if users else "-"
        table.add_row(
            escape(str(r["version"])),
            *(count(r.get(f)) for f in RELEASE_ROW_FIELDS[1:8]),
            crash_free,
            count(r.get("launches")),
            count(r.get("launch_ms_p50")),
            count(r.get("launch_ms_p95")),
        )
    out.print(table)


def _percent(meter: dict[str, Any]) -> str:
    value = meter.get("percent")
    return "-" if value is None else f"{float(value):.1f}%"


def _gauge(meter: dict[str, Any], width: int = 20) -> str:
    value = meter.get("percent")
    if value is None:
        return ""
    filled = max(0, min(width, round(float(value) / 100 * width)))
    colour = "red" if float(value) >= 100 else "yellow" if float(value) >= 80 else "green"
    return f"[{colour}]{'█' * filled}[/{colour}]{'░' * (width - filled)}"


def _ratio(value: Any) -> str:
    # The emulator/dev share may come as a fraction (0.03) or a percentage (3).
    if not isinstance(value, int | float):
        return "-"
    return f"{value * 100:.1f}%" if value <= 1 else f"{value:.1f}%"


def usage(
    org_id: Annotated[str, typer.Option("--org", "-o", help="Organization id.")],
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """An organization's plan usage this billing cycle (MAU, storage, bandwidth)."""
    from ..client import ClientError

    with reporting():
        _one_format(as_json, as_csv)
        with connect(server, apikey) as client:
            body: dict[str, Any] = dict(client.usage(org_id))
            history: list[StatRow] = []
            if not (as_json or as_csv):
                try:
                    start = _day(str(body.get("cycle_start")))
                    end = min(_day(str(body.get("cycle_end"))), SystemClock().now().date())
                    if start <= end:
                        history = client.statistics("org", org_id, start, end)
                except (ClientError, Problem):
                    history = []  # the sparkline is a nicety; usage itself is shown anyway
    if as_json:
        print_json(body)
        return
    meters = [(name, body.get(name) or {}) for name in ("mau", "storage", "bandwidth")]
    if as_csv:
        print_csv(
            ["metric", "used", "limit", "percent"],
            ([name, m.get("used"), m.get("limit"), m.get("percent")] for name, m in meters),
        )
        return
    plan = f"plan [bold]{escape(str(body['plan']))}[/bold]" if body.get("plan") else "no plan"
    out.print(
        f"Organization [bold]{escape(str(body.get('org_id', org_id)))}[/bold], {plan}",
        soft_wrap=True,
    )
    cycle = f"Billing cycle {body.get('cycle_start')} to {body.get('cycle_end')}"
    if body.get("trial_ends"):
        cycle += f", trial ends {body.get('trial_ends')}"
    out.print(cycle, highlight=False)
    if body.get("locked"):
        reason = body.get("lock_reason") or "over its plan"
        out.print(f"[bold red]Locked:[/bold red] {escape(str(reason))}", soft_wrap=True)
    else:
        out.print("[green]Active[/green]")
    table = Table(title_justify="left")
    table.add_column("Metric")
    table.add_column("Used", justify="right", no_wrap=True)
    table.add_column("Limit", justify="right", no_wrap=True)
    table.add_column("Used %", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    labels = {"mau": "MAU", "storage": "Storage", "bandwidth": "Bandwidth"}
    for name, meter in meters:
        show = (lambda v: f"{int(v):,}") if name == "mau" else human_bytes
        used, limit = meter.get("used"), meter.get("limit")
        table.add_row(
            labels[name],
            "-" if used is None else show(used),
            "unlimited" if limit is None else show(limit),
            _percent(meter),
            _gauge(meter),
        )
    out.print(table)
    emu = body.get("emulator_dev") or {}
    out.print(
        f"Emulator/dev devices: {_ratio(emu.get('ratio'))} "
        f"(threshold {_ratio(emu.get('threshold'))})",
        highlight=False,
    )
    if history:
        _print_mau_line(history)
