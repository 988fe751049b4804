"""``otameter bundle upload|list|delete|cleanup``: an app's bundles on a running server."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .cleanup import CleanupPlan, plan_cleanup
from .errors import (
    EXIT_ERROR,
    EXIT_HELP,
    EXIT_NOT_FOUND,
    ForceOption,
    Problem,
    confirm_or_stop,
    reporting,
)
from .output import JsonOption, err, human_bytes, human_time, out, print_json
from .semver import SemVer
from .target import HTTP_URL, ApikeyOption, ServerOption, connect
from .upload import prepare_zip, sha256_file, upload_with_progress

if TYPE_CHECKING:
    from ..client import Bundle

bundle_app = typer.Typer(
    help="Upload, list and remove bundles on a running otameter server.", no_args_is_help=True
)

AppOption = Annotated[str, typer.Option("--app", "-a", help="App id, like com.example.app.")]


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
        if external is not None and not HTTP_URL.match(external):
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
                result = upload_with_progress(
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
    force: ForceOption = False,
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
                plural = "s" if len(removed) != 1 else ""
                confirm_or_stop(f"Remove {len(removed)} bundle{plural}?", "nothing removed")
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
