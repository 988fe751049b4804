"""Zips a device cannot unzip safely are refused at upload with a 400 naming the entry.

Each zip below is crafted the way an attacker or a broken tool would make it; none may be
stored (no bundle row, no chunk, no file).
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from collections.abc import Callable

import pytest

from otameter.bundles import unsafe_name, validate_zip
from otameter.errors import ApiError
from tests.harness import Harness, setup_app
from tests.test_bundle_store import counts, post_bundle

INDEX = b"<!doctype html><title>t</title>"


def make_zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def with_entry(name: str) -> bytes:
    return make_zip([("index.html", INDEX), (name, b"alert(1)")])


def symlink() -> bytes:
    link = zipfile.ZipInfo("www/config.js")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return make_zip([("www/index.html", INDEX), (link, b"/etc/passwd")])


def flipped_data() -> bytes:
    """One byte of an entry's data changed, as a damaged disk or transfer would."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("index.html", INDEX)
        archive.writestr("app.js", b"console.log('hello');" * 50)
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        offset = archive.getinfo("app.js").header_offset
    # A local header is 30 bytes, then the name and the extra field, then the data.
    name_len, extra_len = struct.unpack("<HH", data[offset + 26 : offset + 30])
    data[offset + 30 + name_len + extra_len + 10] ^= 0x01
    return bytes(data)


def bad_crc_central() -> bytes:
    """The CRC-32 of an entry in the central directory differs from its data."""
    data = bytearray(make_zip([("index.html", INDEX), ("app.js", b"let x = 1;" * 100)]))
    offset = bytes(data).index(b"PK\x01\x02", bytes(data).index(b"PK\x01\x02") + 4)
    # Central directory header: signature (4), versions (4), flags (2), method (2),
    # time (2), date (2), then the CRC-32.
    data[offset + 16] ^= 0xFF
    return bytes(data)


def corrupt_central_directory() -> bytes:
    data = bytearray(make_zip([("index.html", INDEX)]))
    offset = bytes(data).index(b"PK\x01\x02")
    data[offset : offset + 4] = b"XXXX"
    return bytes(data)


def truncated() -> bytes:
    return make_zip([("index.html", INDEX), ("big.bin", bytes(5000))])[:-30]


def encrypted() -> bytes:
    """An entry whose headers say it is encrypted (general purpose flag bit 0)."""
    data = bytearray(make_zip([("index.html", INDEX), ("secret.js", b"nope")]))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        local = archive.getinfo("secret.js").header_offset
    central = bytes(data).index(b"PK\x01\x02", bytes(data).index(b"PK\x01\x02") + 4)
    data[local + 6] |= 0x01
    data[central + 8] |= 0x01
    return bytes(data)


CASES: list[tuple[str, Callable[[], bytes], str]] = [
    ("dot-dot", lambda: with_entry("../evil.js"), "Zip entry '../evil.js' climbs out"),
    ("inner dot-dot", lambda: with_entry("www/../../x.js"), "Zip entry 'www/../../x.js' climbs"),
    ("backslash dot-dot", lambda: with_entry("www\\..\\..\\x.js"), "climbs out"),
    ("absolute", lambda: with_entry("/etc/cron.d/x"), "Zip entry '/etc/cron.d/x' is an absolute"),
    ("drive", lambda: with_entry("C:\\Windows\\x.dll"), "is an absolute path (drive letter)"),
    ("backslash root", lambda: with_entry("\\share\\x.js"), "is an absolute path"),
    ("symlink", symlink, "Zip entry 'www/config.js' is a symbolic link"),
    ("bad crc", bad_crc_central, "Zip entry 'app.js' is corrupt: Bad CRC-32"),
    ("damaged data", flipped_data, "Zip entry 'app.js' is corrupt: Bad CRC-32"),
    ("central directory", corrupt_central_directory, "central directory is bad"),
    ("truncated", truncated, "central directory is bad"),
    ("encrypted", encrypted, "Zip entry 'secret.js' is encrypted"),
    ("no index", lambda: make_zip([("app.js", b"x")]), "no index.html"),
]


@pytest.mark.parametrize(("name", "build", "message"), CASES, ids=[c[0] for c in CASES])
def test_validate_zip_names_the_fault(name: str, build: Callable[[], bytes], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        validate_zip(io.BytesIO(build()))
    assert caught.value.status_code == 400
    assert message in caught.value.message


def test_valid_zips_pass() -> None:
    validate_zip(io.BytesIO(make_zip([("index.html", INDEX), ("js/app.js", b"x" * 10_000)])))
    # A single top-level folder, directory entries, dots inside names: all fine.
    folder = zipfile.ZipInfo("dist/")
    folder.external_attr = (stat.S_IFDIR | 0o755) << 16
    validate_zip(
        io.BytesIO(
            make_zip(
                [
                    (folder, b""),
                    ("dist/index.html", INDEX),
                    ("dist/a..b.js", b"1"),
                    ("dist/.x", b""),
                ]
            )
        )
    )


@pytest.mark.parametrize(
    ("entry", "unsafe"),
    [
        ("a/b.js", False),
        ("a..b", False),
        ("..a", False),
        ("a/../b", True),
        ("..", True),
        ("/a", True),
        ("\\a", True),
        ("c:x", True),
        ("a\\..\\b", True),
        ("a\x00b", True),
    ],
)
def test_unsafe_names(entry: str, unsafe: bool) -> None:
    assert (unsafe_name(entry) is not None) == unsafe


def test_bad_zips_are_refused_at_upload_and_leave_nothing(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    for n, (name, build, message) in enumerate(CASES):
        r = post_bundle(h, key, f"1.0.{n}", build())
        assert r.status_code == 400, (name, r.text)
        body = r.json()
        assert body["status"] == "KO" and message in body["error"], (name, body)
    assert counts(h) == {"bundles": 0, "chunks": 0, "uploads": 0, "files": 0}
