"""Client commands: manage bundles and read statistics and plan usage on a running server.

The server and API key come from ``--server``/``--apikey``, else OTAMETER_SERVER/OTAMETER_APIKEY,
else the config file (OTAMETER_CONFIG, or ~/.config/otameter/config.toml).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import total_ordering
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .bundles import has_index_html
from .clock import SystemClock
from .csv_cells import CsvWriter
from .releases import RELEASE_ROW_FIELDS
from .units import format_bytes

if TYPE_CHECKING:
    from .client import Bundle, ClientError, OtameterClient, StatRow

DEFAULT_SERVER = "http://127.0.0.1:8000"

EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_CONFLICT = 6
EXIT_LOCKED = 7

EXIT_HELP = (
    "Exit codes: 0 success; 1 other error (server error, unexpected answer, not confirmed); "
    "2 invalid input (options, files, no API key, HTTP 400); 3 server unreachable; "
    "4 bad API key or not allowed (HTTP 401/403); 5 not found (HTTP 404); "
    "6 already exists (HTTP 409); 7 organization locked, over its plan (HTTP 402)."
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

bundle_app = typer.Typer(
    help="Upload, list and remove bundles on a running otameter server.", no_args_is_help=True
)
stats_app = typer.Typer(
    help="Daily MAU, storage and bandwidth from a running otameter server.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``otameter`` command line."""
    app.add_typer(bundle_app, name="bundle")
    app.add_typer(stats_app, name="stats")
    app.command("usage", epilog=EXIT_HELP)(usage)


# -- errors ----------------------------------------------------------------------------------


class Problem(Exception):
    """A failure found on this side, before or after talking to the server."""

    def __init__(self, message: str, code: int = EXIT_INVALID, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


def fail(message: str, code: int, hint: str | None = None) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    if hint:
        err.print(f"[dim]hint:[/dim] {escape(hint)}", soft_wrap=True)
    return typer.Exit(code)


def exit_code(error: ClientError) -> int:
    if error.status is None:
        return EXIT_UNREACHABLE
    return {
        400: EXIT_INVALID,
        401: EXIT_AUTH,
        402: EXIT_LOCKED,
        403: EXIT_AUTH,
        404: EXIT_NOT_FOUND,
        409: EXIT_CONFLICT,
        413: EXIT_INVALID,
        422: EXIT_INVALID,
    }.get(error.status, EXIT_ERROR)


def _hint(error: ClientError) -> str | None:
    if error.status is None:
        return "is the server running? Choose it with --server or OTAMETER_SERVER."
    if error.status == 401:
        return "check the API key (--apikey, OTAMETER_APIKEY or the config file)."
    if error.status == 402:
        return "the organization is over its plan; `otameter usage --org ORG` shows its usage."
    if error.status == 404 and error.message.startswith("App "):
        return (
            "create the app with `otameter app create APP_ID --org ORG_ID` "
            "(`otameter org list` shows your organizations, `otameter app list` your apps)."
        )
    if error.status == 404 and error.message.startswith("Organization "):
        return "`otameter org list` shows the organizations this API key can see."
    if error.status == 409 and "already exists" in error.message:
        return None
    if error.status == 409:
        return "a version is uploaded once per app: choose a new --version."
    return None


@contextmanager
def reporting() -> Iterator[None]:
    """Every failure ends here: one line on stderr and an exit code from EXIT_HELP."""
    from .client import ClientError

    try:
        yield
    except Problem as problem:
        raise fail(problem.message, problem.code, problem.hint) from None
    except ClientError as error:
        raise fail(str(error), exit_code(error), _hint(error)) from None


# -- where the server is ---------------------------------------------------------------------


def config_path() -> tuple[Path, bool]:
    """The config file, and whether it was named explicitly (then it must exist)."""
    explicit = os.environ.get("OTAMETER_CONFIG")
    if explicit:
        return Path(explicit).expanduser(), True
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "otameter" / "config.toml", False


def load_config() -> dict[str, str]:
    path, explicit = config_path()
    if not path.is_file():
        if explicit:
            raise Problem(f"config file {path} (from OTAMETER_CONFIG) does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise Problem(f"cannot read config file {path}: {exc}") from None
    values: dict[str, str] = {}
    for key in ("server", "apikey"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise Problem(f"config file {path}: '{key}' must be a non-empty string")
        values[key] = value.strip()
    return values


@dataclass(frozen=True)
class Target:
    server: str
    apikey: str


def resolve_target(server: str | None, apikey: str | None) -> Target:
    """Flag, then environment (typer fills both into the option), then config file."""
    file: dict[str, str] = {}
    if not server or not apikey:
        file = load_config()
    url = (server or file.get("server") or DEFAULT_SERVER).strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", url):
        raise Problem(
            f"server URL {url!r} must start with http:// or https://",
            hint="for example --server http://127.0.0.1:8000",
        )
    key = (apikey or file.get("apikey") or "").strip()
    if not key:
        path, _ = config_path()
        raise Problem(
            "no API key",
            hint=f'pass --apikey, set OTAMETER_APIKEY, or put apikey = "..." in {path}',
        )
    return Target(url, key)


def connect(server: str | None, apikey: str | None) -> OtameterClient:
    from .client import OtameterClient

    target = resolve_target(server, apikey)
    return OtameterClient(target.server, target.apikey)


ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help=f"Server URL (else the config file's 'server', else {DEFAULT_SERVER}).",
        envvar="OTAMETER_SERVER",
        show_envvar=True,
        rich_help_panel="Connection",
    ),
]
ApikeyOption = Annotated[
    str | None,
    typer.Option(
        "--apikey",
        help="API key (else the config file's 'apikey').",
        envvar="OTAMETER_APIKEY",
        show_envvar=True,
        rich_help_panel="Connection",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts and CI).")]
AppOption = Annotated[str, typer.Option("--app", "-a", help="App id, like com.example.app.")]


# -- formatting ------------------------------------------------------------------------------


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


# -- semantic versions (bundle cleanup --bundle) ---------------------------------------------

_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER_RE = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$"
)


@total_ordering
@dataclass(frozen=True)
class SemVer:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemVer | None:
        match = SEMVER_RE.match(text.strip())
        if match is None:
            return None
        pre = tuple(match.group(4).split(".")) if match.group(4) else ()
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)), pre)

    def _key(self) -> tuple[Any, ...]:
        # A release ranks above its pre-releases; numeric identifiers rank below others.
        pre: tuple[Any, ...] = (
            (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease))
            if self.prerelease
            else (1, ())
        )
        return (self.major, self.minor, self.patch, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() < other._key()

    def next_major(self) -> SemVer:
        # As semver's "increment major": 2.0.0-rc.1 goes to 2.0.0, anything else to N+1.0.0.
        if self.prerelease and self.minor == 0 and self.patch == 0:
            return SemVer(self.major, 0, 0)
        return SemVer(self.major + 1, 0, 0)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{'.'.join(self.prerelease)}" if self.prerelease else text


# -- bundle upload ---------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def zip_folder(folder: Path, target: Path) -> None:
    """A reproducible zip: sorted entries, fixed timestamps, so equal content gives equal sums."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".DS_Store" and "__MACOSX" not in p.parts
    )
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            info = zipfile.ZipInfo(file.relative_to(folder).as_posix(), (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(file, "rb") as source, archive.open(info, "w") as dest:
                while chunk := source.read(1024 * 1024):
                    dest.write(chunk)


def prepare_zip(path: Path, workdir: Path) -> Path:
    """The zip to send: ``path`` itself, or a zip of the folder; it must hold an index.html."""
    if path.is_dir():
        target = workdir / f"{path.resolve().name or 'bundle'}.zip"
        zip_folder(path, target)
    elif path.is_file():
        if not zipfile.is_zipfile(path):
            raise Problem(f"{path} is neither a folder nor a zip archive")
        target = path
    else:
        raise Problem(f"no such file or folder: {path}")
    try:
        with zipfile.ZipFile(target) as archive:
            ok = has_index_html(archive.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise Problem(f"cannot read {path}: {exc}") from None
    if not ok:
        raise Problem(
            f"{path} has no index.html at its root or inside a single top-level folder",
            hint="upload the folder of the web build (the one holding index.html).",
        )
    return target


@bundle_app.command("upload", epilog=EXIT_HELP)
def bundle_upload(
    app_id: AppOption,
    version: Annotated[str, typer.Option("--version", "-v", help="Bundle version, e.g. 1.2.3.")],
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Web build folder (zipped for you) or a zip. Optional with --external."
        ),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(
            "--channel", "-c", help="Channel that serves the bundle (default: production)."
        ),
    ] = None,
    external: Annotated[
        str | None,
        typer.Option(
            "--external",
            help="Register a bundle hosted at this URL instead of uploading one "
            "(with PATH, its size and checksum are sent too).",
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Upload a bundle (a folder is zipped first) and point a channel at it."""
    with reporting(), tempfile.TemporaryDirectory(prefix="otameter-") as workdir:
        if not version.strip():
            raise Problem("--version must not be empty")
        if external is not None and not re.match(r"^https?://[^\s/]+", external):
            raise Problem("--external must be an absolute http(s) URL")
        if path is None and external is None:
            raise Problem("give the PATH of the web build (or --external URL)")
        zip_path = None
        if path is not None:
            with err.status("zipping", spinner="dots") if _spin(as_json, path) else nullcontext():
                zip_path = prepare_zip(path, Path(workdir))
        size = zip_path.stat().st_size if zip_path else None
        checksum = sha256_file(zip_path) if zip_path else None
        with connect(server, apikey) as client:
            # Fails fast on a bad key or unknown app before sending the whole file.
            client.get_app(app_id)
            if external is not None:
                if external.startswith("http://") and not as_json:
                    err.print("[yellow]warning:[/yellow] devices may refuse a plain http:// URL")
                result = client.register_external(
                    app_id, version, external, channel=channel, checksum=checksum, size=size
                )
            else:
                assert zip_path is not None and size is not None
                result = _upload_with_progress(
                    client, app_id, version, zip_path, size, channel, quiet=as_json
                )
                if result.get("checksum") and result["checksum"] != checksum:
                    # The bytes were damaged on the way: a bundle devices cannot verify is removed.
                    client.delete_bundle(app_id, version)
                    raise Problem(
                        f"checksum mismatch: the server received {result['checksum']}, "
                        f"the local zip is {checksum}; the bundle was deleted again",
                        EXIT_ERROR,
                        hint="upload it again with a new --version",
                    )
        if as_json:
            print_json(result)
            return
        served_by = result.get("channel") or channel or "production"
        if external is not None:
            out.print(
                f"Registered external bundle [bold]{escape(app_id)} {escape(version)}[/bold] "
                f"at {escape(external)}; channel [bold]{escape(served_by)}[/bold] now serves it",
                soft_wrap=True,
            )
        else:
            out.print(
                f"Uploaded [bold]{escape(app_id)} {escape(version)}[/bold]; "
                f"channel [bold]{escape(served_by)}[/bold] now serves it",
                soft_wrap=True,
            )
        if result.get("size") is not None and (external is None or size is not None):
            out.print(f"  size      {human_bytes(result['size'])}")
        if result.get("checksum"):
            out.print(f"  checksum  sha256:{result['checksum']}", soft_wrap=True)


def _spin(quiet: bool, path: Path) -> bool:
    return not quiet and err.is_terminal and path.is_dir()


def _upload_with_progress(
    client: OtameterClient,
    app_id: str,
    version: str,
    zip_path: Path,
    size: int,
    channel: str | None,
    *,
    quiet: bool,
) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns, console=err, transient=True, disable=quiet or not err.is_terminal
    ) as bar:
        task = bar.add_task("uploading", total=size)

        def advance(sent: int) -> None:
            # Once every byte is out, the server still checks and stores the zip.
            label = "uploading" if sent < size else "server is storing the bundle"
            bar.update(task, completed=min(sent, size), description=label)

        return client.upload_bundle(app_id, version, zip_path, channel=channel, on_progress=advance)


# -- bundle list -----------------------------------------------------------------------------


def bundle_table(
    bundles: Sequence[Bundle], title: str, actions: Sequence[str] = (), *, external: bool = True
) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Version", no_wrap=True)
    table.add_column("Created (UTC)", no_wrap=True)
    table.add_column("Size", justify="right", no_wrap=True)
    table.add_column("Channels", min_width=8, overflow="fold")
    if external:
        table.add_column("External", min_width=8, overflow="fold")
    if actions:
        table.add_column("Keep", no_wrap=True)
    for i, b in enumerate(bundles):
        row = [
            escape(b["version"]),
            human_time(b.get("created_at")),
            "-" if b.get("external") else human_bytes(b.get("size")),
            escape(", ".join(b.get("channels") or [])),
        ]
        if external:
            row.append(escape(b.get("external_url") or "yes") if b.get("external") else "-")
        if actions:
            row.append(actions[i])
        table.add_row(*row)
    return table


def stored_bytes(bundles: Sequence[Bundle]) -> int:
    """What counts in storage: uploaded bundles, never external ones."""
    return sum(int(b.get("size") or 0) for b in bundles if not b.get("external"))


@bundle_app.command("list", epilog=EXIT_HELP)
def bundle_list(
    app_id: AppOption,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """List an app's bundles, newest first."""
    with reporting(), connect(server, apikey) as client:
        bundles = client.list_bundles(app_id)
    if as_json:
        print_json(bundles)
        return
    if not bundles:
        out.print(f"{escape(app_id)} has no bundles")
        return
    title = (
        f"{escape(app_id)}: {len(bundles)} bundle{'s' if len(bundles) != 1 else ''}, "
        f"{human_bytes(stored_bytes(bundles))} stored"
    )
    out.print(bundle_table(bundles, title))


# -- bundle delete and cleanup ---------------------------------------------------------------


def _find(bundles: Sequence[Bundle], version: str) -> Bundle | None:
    return next((b for b in bundles if b["version"] == version), None)


def _unlinked_note(bundle: Bundle) -> str:
    names = ", ".join(bundle.get("channels") or [])
    plural = "s" if len(bundle.get("channels") or []) > 1 else ""
    return (
        f"channel{plural} {names} served {bundle['version']} and now serve{'' if plural else 's'} "
        "no bundle: devices on it get no update until a new bundle is uploaded to it"
    )


@bundle_app.command("delete", epilog=EXIT_HELP)
def bundle_delete(
    version: Annotated[str, typer.Argument(help="The version to delete.")],
    app_id: AppOption,
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Delete one bundle (its storage is freed now; its statistics stay)."""
    with reporting(), connect(server, apikey) as client:
        bundle = _find(client.list_bundles(app_id), version)
        if bundle is None:
            raise Problem(f"bundle {version} not found for {app_id}", EXIT_NOT_FOUND)
        client.delete_bundle(app_id, version)
    freed = 0 if bundle.get("external") else int(bundle.get("size") or 0)
    channels = list(bundle.get("channels") or [])
    if as_json:
        print_json(
            {
                "app_id": app_id,
                "version": version,
                "freed_bytes": freed,
                "unlinked_channels": channels,
            }
        )
        return
    out.print(
        f"Deleted [bold]{escape(app_id)} {escape(version)}[/bold] "
        f"(frees {human_bytes(freed)} of storage)",
        soft_wrap=True,
    )
    if channels:
        err.print(f"[yellow]note:[/yellow] {escape(_unlinked_note(bundle))}", soft_wrap=True)


@dataclass(frozen=True)
class CleanupPlan:
    considered: list[Bundle]
    keep: list[bool]
    skipped_not_semver: list[str]

    @property
    def removed(self) -> list[Bundle]:
        return [b for b, kept in zip(self.considered, self.keep, strict=True) if not kept]

    @property
    def kept(self) -> list[Bundle]:
        return [b for b, kept in zip(self.considered, self.keep, strict=True) if kept]


def plan_cleanup(
    bundles: Sequence[Bundle], keep: int, bundle: SemVer | None, ignore_channel: bool
) -> CleanupPlan:
    """Capgo's rule: newest first, keep ``keep`` bundles plus any a channel serves.

    With ``bundle`` only versions strictly above it and below its next major are considered.
    """
    considered = list(bundles)
    skipped: list[str] = []
    if bundle is not None:
        upper = bundle.next_major()
        in_range = []
        for b in considered:
            parsed = SemVer.parse(b["version"])
            if parsed is None:
                skipped.append(b["version"])
            elif bundle < parsed < upper:
                in_range.append(b)
        considered = in_range
    decisions: list[bool] = []
    kept = 0
    for b in considered:
        linked = bool(b.get("channels"))
        if kept < keep or (linked and not ignore_channel):
            decisions.append(True)
            kept += 1
        else:
            decisions.append(False)
    return CleanupPlan(considered, decisions, skipped)


@bundle_app.command("cleanup", epilog=EXIT_HELP)
def bundle_cleanup(
    app_id: AppOption,
    keep: Annotated[
        int, typer.Option("--keep", "-k", min=0, help="How many of the newest bundles to keep.")
    ] = 4,
    bundle: Annotated[
        str | None,
        typer.Option(
            "--bundle",
            "-b",
            help="Only versions above this semver and below its next major (e.g. 1.2.0).",
        ),
    ] = None,
    ignore_channel: Annotated[
        bool,
        typer.Option(
            "--ignore-channel",
            help="Also remove bundles a channel serves (the channel then serves nothing).",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")] = (
        False
    ),
    as_json: JsonOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Remove old bundles, keeping the newest ones and those a channel serves."""
    with reporting():
        floor: SemVer | None = None
        if bundle is not None:
            floor = SemVer.parse(bundle)
            if floor is None:
                raise Problem(f"--bundle {bundle!r} is not a semantic version like 1.2.0")
        with connect(server, apikey) as client:
            bundles = client.list_bundles(app_id)
            plan = plan_cleanup(bundles, keep, floor, ignore_channel)
            removed = plan.removed
            freed = stored_bytes(removed)
            unlinked = [
                {"channel": name, "version": b["version"]}
                for b in removed
                for name in b.get("channels") or []
            ]
            if not as_json:
                _show_plan(app_id, bundles, plan, floor, freed, keep, ignore_channel)
            if not removed:
                if as_json:
                    print_json(_cleanup_json(app_id, plan, [], 0, []))
                else:
                    out.print("Nothing to be removed.")
                return
            if not force:
                try:
                    confirmed = typer.confirm(
                        f"Remove {len(removed)} bundle{'s' if len(removed) != 1 else ''}?",
                        default=False,
                        err=True,
                    )
                except typer.Abort:
                    confirmed = False
                if not confirmed:
                    raise Problem(
                        "not confirmed: nothing removed", EXIT_ERROR, hint="use --force in scripts"
                    )
            done: list[Bundle] = []
            for b in removed:
                client.delete_bundle(app_id, b["version"])
                done.append(b)
                if not as_json:
                    out.print(
                        f"Removed {escape(b['version'])} "
                        f"(created {human_time(b.get('created_at'))})",
                        soft_wrap=True,
                    )
                    if b.get("channels"):
                        err.print(
                            f"[yellow]note:[/yellow] {escape(_unlinked_note(b))}", soft_wrap=True
                        )
        if as_json:
            print_json(_cleanup_json(app_id, plan, done, freed, unlinked))
        else:
            out.print(
                f"Done: removed {len(done)} bundle{'s' if len(done) != 1 else ''}, "
                f"freed {human_bytes(freed)} of storage"
            )


def _show_plan(
    app_id: str,
    bundles: Sequence[Bundle],
    plan: CleanupPlan,
    floor: SemVer | None,
    freed: int,
    keep: int,
    ignore_channel: bool,
) -> None:
    scope = f" above {floor} and below {floor.next_major()}" if floor else ""
    out.print(
        f"{escape(app_id)}: {len(bundles)} bundles, {len(plan.considered)} considered{scope}",
        soft_wrap=True,
    )
    if plan.skipped_not_semver:
        err.print(
            f"[yellow]note:[/yellow] left alone (not semantic versions): "
            f"{escape(', '.join(plan.skipped_not_semver))}",
            soft_wrap=True,
        )
    if not plan.considered:
        return
    actions = []
    for b, kept in zip(plan.considered, plan.keep, strict=True):
        linked = bool(b.get("channels"))
        if kept:
            actions.append("✅ linked" if linked else "✅")
        else:
            actions.append("❌ unlinks" if linked else "❌")
    rule = f"the newest {keep}" + ("" if ignore_channel else " and those a channel serves")
    title = (
        f"keep {len(plan.kept)} ({rule}), remove {len(plan.removed)} (frees {human_bytes(freed)})"
    )
    external = any(b.get("external") for b in plan.considered)
    out.print(bundle_table(plan.considered, title, actions, external=external))


def _cleanup_json(
    app_id: str,
    plan: CleanupPlan,
    done: Sequence[Bundle],
    freed: int,
    unlinked: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "app_id": app_id,
        "kept": [b["version"] for b in plan.kept],
        "removed": [b["version"] for b in done],
        "freed_bytes": freed,
        "unlinked_channels": unlinked,
        "skipped_not_semver": plan.skipped_not_semver,
    }


# -- statistics and usage --------------------------------------------------------------------

FromOption = Annotated[
    str | None,
    typer.Option("--from", help="First day, YYYY-MM-DD (default: 29 days before --to)."),
]
ToOption = Annotated[
    str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (default: today, UTC).")
]
CsvOption = Annotated[bool, typer.Option("--csv", help="Print CSV.")]


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


def show_statistics(
    scope: str,
    ident: str | None,
    start: str | None,
    end: str | None,
    as_json: bool,
    as_csv: bool,
    server: str | None,
    apikey: str | None,
) -> None:
    with reporting():
        _one_format(as_json, as_csv)
        first, last = date_range(start, end)
        with connect(server, apikey) as client:
            rows = client.statistics(scope, ident, first, last)  # type: ignore[arg-type]
    if as_json:
        print_json({"data": rows})
        return
    if as_csv:
        writer = CsvWriter(sys.stdout, lineterminator="\n")
        writer.writerow(["date", "mau", "storage", "bandwidth"])
        for r in rows:
            writer.writerow([r["date"], r["mau"], r["storage"], r["bandwidth"]])
        return
    subject = "all your apps" if scope == "user" else f"{scope} {ident}"
    title = f"{escape(subject)}, {first} to {last}"
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


@stats_app.command("app", epilog=EXIT_HELP)
def stats_app_command(
    app_id: Annotated[str, typer.Argument(help="App id.")],
    start: FromOption = None,
    end: ToOption = None,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Daily statistics of one app."""
    show_statistics("app", app_id, start, end, as_json, as_csv, server, apikey)


@stats_app.command("org", epilog=EXIT_HELP)
def stats_org_command(
    org_id: Annotated[str, typer.Argument(help="Organization id.")],
    start: FromOption = None,
    end: ToOption = None,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Daily statistics of an organization (all its apps)."""
    show_statistics("org", org_id, start, end, as_json, as_csv, server, apikey)


@stats_app.command("user", epilog=EXIT_HELP)
def stats_user_command(
    start: FromOption = None,
    end: ToOption = None,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Daily statistics of every app the API key can read."""
    show_statistics("user", None, start, end, as_json, as_csv, server, apikey)


@stats_app.command("releases", epilog=EXIT_HELP)
def stats_releases_command(
    app_id: Annotated[str, typer.Argument(help="App id.")],
    start: FromOption = None,
    end: ToOption = None,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
    server: ServerOption = None,
    apikey: ApikeyOption = None,
) -> None:
    """Release health of an app: per bundle version, the devices that were offered it,
    downloaded, installed, failed, rolled back or crashed, and its launch times."""
    with reporting():
        _one_format(as_json, as_csv)
        first, last = date_range(start, end)
        with connect(server, apikey) as client:
            rows = client.releases(app_id, first, last)
    if as_json:
        print_json({"data": rows})
        return
    if as_csv:
        writer = CsvWriter(sys.stdout, lineterminator="\n")
        writer.writerow(RELEASE_ROW_FIELDS)
        for r in rows:
            writer.writerow(["" if r.get(f) is None else r.get(f) for f in RELEASE_ROW_FIELDS])
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
    from .client import ClientError

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
        writer = CsvWriter(sys.stdout, lineterminator="\n")
        writer.writerow(["metric", "used", "limit", "percent"])
        for name, meter in meters:
            writer.writerow([name, meter.get("used"), meter.get("limit"), meter.get("percent")])
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
