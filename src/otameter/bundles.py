"""Bundle files: validated zips kept under the data directory."""

from __future__ import annotations

import hashlib
import os
import uuid
import zipfile
from pathlib import Path
from typing import BinaryIO

from .errors import bad_request

CHUNK = 1024 * 1024


def has_index_html(path: Path) -> bool:
    """The plugin needs index.html at the root or inside a single top-level folder."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.startswith("__MACOSX/")]
    if "index.html" in names:
        return True
    tops = {name.split("/", 1)[0] for name in names}
    return len(tops) == 1 and f"{tops.pop()}/index.html" in names


def store_upload(
    source: BinaryIO, bundle_dir: Path, app_id: str, max_bytes: int
) -> tuple[str, int, str]:
    """Copy an uploaded zip into place, durably; returns (relative path, size, sha256).

    The caller removes the file again if the bundle is not recorded.
    """
    relative = f"{app_id}/{uuid.uuid4()}.zip"
    target = bundle_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(target, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise bad_request(f"Bundle is larger than the limit of {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0 or not zipfile.is_zipfile(target):
            raise bad_request("'file' must be a zip archive")
        if not has_index_html(target):
            raise bad_request(
                "The zip has no index.html at its root or inside a single top-level folder"
            )
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return relative, size, digest.hexdigest()


def remove_file(bundle_dir: Path, relative: str | None) -> None:
    if relative:
        (bundle_dir / relative).unlink(missing_ok=True)
