"""Bundle zip validation: what a device can unzip safely, or a 400 that names the entry.

The plugin unzips a bundle into its app's files. An entry that climbs out of that folder
(``../``), an absolute path (``/``, ``\\``, ``C:``), a symbolic link, a bad CRC, an
encrypted entry or a broken central directory either fails on the device or writes where it
must not; such zips are refused at upload. Every entry is read through once (decompressed in
pieces, so memory stays small) for its CRC to be checked.
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from typing import BinaryIO

from .errors import bad_request

READ_PIECE = 256 * 1024
# Declared uncompressed bytes a bundle may hold: checking a zip bomb would take minutes.
MAX_UNCOMPRESSED = 4 * 1024 * 1024 * 1024
MAX_ENTRIES = 100_000


def has_index_html(names: list[str]) -> bool:
    """The plugin needs index.html at the root or inside a single top-level folder."""
    names = [n for n in names if not n.startswith("__MACOSX/")]
    if "index.html" in names:
        return True
    tops = {name.split("/", 1)[0] for name in names}
    return len(tops) == 1 and f"{tops.pop()}/index.html" in names


def unsafe_name(name: str) -> str | None:
    """Why an entry name is unsafe to unzip, or None."""
    if not name:
        return "has an empty name"
    if "\x00" in name:
        return "has a NUL byte in its name"
    if name.startswith(("/", "\\")):
        return "is an absolute path"
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        return "is an absolute path (drive letter)"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "climbs out of the bundle folder (..)"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # The high 16 bits of external_attr hold the Unix mode when the zip was made on Unix.
    return stat.S_ISLNK(info.external_attr >> 16)


def validate_zip(source: BinaryIO) -> None:
    """Check a whole zip (a seekable file object); raise a 400 ApiError naming the fault."""
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise bad_request(
            f"'file' is not a readable zip: its central directory is bad ({exc})"
        ) from None
    except (OSError, EOFError, ValueError) as exc:
        raise bad_request(f"'file' is not a readable zip ({exc})") from None
    with archive:
        infos = archive.infolist()
        if not infos:
            raise bad_request("The zip is empty")
        if len(infos) > MAX_ENTRIES:
            raise bad_request(f"The zip has more than {MAX_ENTRIES} entries")
        if sum(info.file_size for info in infos) > MAX_UNCOMPRESSED:
            raise bad_request(f"The zip unpacks to more than {MAX_UNCOMPRESSED} bytes")
        for info in infos:
            name = info.filename
            reason = unsafe_name(name)
            if reason is None and _is_symlink(info):
                reason = "is a symbolic link"
            if reason is None and info.flag_bits & 0x1:
                reason = "is encrypted"
            if reason is not None:
                raise bad_request(f"Zip entry {name!r} {reason}")
        for info in infos:
            if info.is_dir():
                continue
            name = info.filename
            try:
                with archive.open(info) as entry:
                    while entry.read(READ_PIECE):
                        pass
            except zipfile.BadZipFile as exc:
                # "Bad CRC-32 for file ...", a local header that disagrees with the directory
                raise bad_request(f"Zip entry {name!r} is corrupt: {exc}") from None
            except (NotImplementedError, RuntimeError) as exc:
                raise bad_request(f"Zip entry {name!r} cannot be unpacked: {exc}") from None
            except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
                # Damaged compressed data (bz2 raises OSError or ValueError).
                raise bad_request(f"Zip entry {name!r} is corrupt: {exc}") from None
        if not has_index_html([i.filename for i in infos]):
            raise bad_request(
                "The zip has no index.html at its root or inside a single top-level folder"
            )
