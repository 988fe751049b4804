"""A bundle on its way to the server: the zip to send (a folder is zipped), its SHA-256, the
upload with a progress bar."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bundles import has_index_html
from .errors import Problem
from .output import err

if TYPE_CHECKING:
    from ..client import OtameterClient


def sha256_file(path: Path) -> str:
    """The zip's SHA-256 (hex): sent with an external bundle, checked against the server's."""
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


def upload_with_progress(
    client: OtameterClient,
    app_id: str,
    version: str,
    zip_path: Path,
    size: int,
    channel: str | None,
    *,
    quiet: bool,
) -> Any:
    """Send the zip, with a progress bar on a terminal (none when ``quiet``)."""
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
