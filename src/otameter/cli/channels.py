"""Client commands for channels: ``otameter channel set`` and ``otameter channel list``.

They talk to a running server like the ``bundle`` commands (``--server``/``--apikey``, or
OTAMETER_SERVER/OTAMETER_APIKEY, or the config file) through ``POST /channel`` and
``GET /channel``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, TypeVar

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from ..models.management import ChannelUpdate
from ..models.shapes import PLATFORMS
from .errors import EXIT_HELP, reporting
from .output import JsonOption, out, print_json
from .target import ApikeyOption, ServerOption, connect

if TYPE_CHECKING:
    from ..client import Channel

T = TypeVar("T")

channel_app = typer.Typer(
    help="Create, change and list an app's channels on a running otameter server.",
    no_args_is_help=True,
)


class AutoUpdateRule(StrEnum):
    none = "none"
    major = "major"
    minor = "minor"
    patch = "patch"


AppArgument = Annotated[str, typer.Argument(help="App id, like com.example.app.")]


@channel_app.command("set", epilog=EXIT_HELP)
def channel_set(
    app_id: AppArgument,
    channel: Annotated[str, typer.Argument(help="Channel name, like production or beta.")],
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Bundle version the channel serves.")
    ] = None,
    public: Annotated[
        bool | None,
        typer.Option(
            "--public/--private",
            help="Public: the default channel of every platform it serves (replacing that "
            "platform's previous one). New channels are public.",
            show_default=False,
        ),
    ] = None,
    self_set: Annotated[
        bool | None,
        typer.Option(
            "--self-set/--no-self-set",
            help="Whether devices may join it themselves (setChannel).",
            show_default=False,
        ),
    ] = None,
    ios: Annotated[bool | None, typer.Option("--ios/--no-ios", show_default=False)] = None,
    android: Annotated[
        bool | None, typer.Option("--android/--no-android", show_default=False)
    ] = None,
    electron: Annotated[
        bool | None, typer.Option("--electron/--no-electron", show_default=False)
    ] = None,
    disable_auto_update: Annotated[
        AutoUpdateRule | None,
        typer.Option(
            "--disable-auto-update",
            help="The semver step devices may not auto-update across (none for any).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Create a channel or change it, as POST /channel does; options left out keep their value."""
    update = ChannelUpdate(
        app_id,
        channel,
        version=_given(version),
        public=_given(public),
        allow_device_self_set=_given(self_set),
        ios=_given(ios),
        android=_given(android),
        electron=_given(electron),
        disable_auto_update=_given(disable_auto_update.value if disable_auto_update else None),
    )
    with reporting(), connect(server, apikey) as client:
        row = client.set_channel(update)
    if as_json:
        print_json(row)
        return
    serves = row.get("version") or "no bundle"
    out.print(
        f"Channel {escape(row['channel'])} of {escape(app_id)} serves {escape(serves)}; "
        f"{_public_text(row)}; {_rules_text(row)}"
    )


def _given(value: T | None) -> T | msgspec.UnsetType:
    """An option left out is not sent: the channel keeps its value."""
    return msgspec.UNSET if value is None else value


def _public_text(row: Channel) -> str:
    platforms = [p for p in PLATFORMS if row.get(f"public_{p}")]
    return f"public for {', '.join(platforms)}" if platforms else "private"


def _rules_text(row: Channel) -> str:
    rule = row.get("disable_auto_update") or "none"
    text = "any update" if rule == "none" else f"no auto-update across a {rule} version"
    if row.get("disable_auto_update_under_native"):
        text += ", never below the native build"
    return text


@channel_app.command("list", epilog=EXIT_HELP)
def channel_list(
    app_id: AppArgument,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """List an app's channels: platforms, public per platform, self-set, rules, devices."""
    with reporting(), connect(server, apikey) as client:
        rows = client.list_channels(app_id)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(f"{escape(app_id)} has no channels")
        return
    table = Table(title=f"{escape(app_id)}: {len(rows)} channels", title_justify="left")
    for name in ("Id", "Channel", "Bundle", "Platforms", "Public for", "Self-set"):
        table.add_column(name, no_wrap=name in ("Id", "Self-set"))
    table.add_column("Auto-update")
    table.add_column("Devices", justify="right")
    for row in rows:
        table.add_row(
            str(row["id"]),
            escape(row["channel"]),
            escape(row.get("version") or "-"),
            ", ".join(p for p in PLATFORMS if row.get(p)) or "-",
            ", ".join(p for p in PLATFORMS if row.get(f"public_{p}")) or "-",
            "yes" if row.get("allow_device_self_set") else "no",
            escape(_rules_text(row)),
            f"{row.get('devices', 0):,}",
        )
    out.print(table)
