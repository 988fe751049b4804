"""Google data-centre address ranges.

Check-ins from Google's addresses are not counted during the first hours after a new bundle,
because Play Store pre-launch robots install it from there. "Google data-centre addresses" are
the union of Google's published range lists (``RANGE_FILES``). Copies ship as package data;
operators can drop a newer copy of any list into an override directory with
``install_range_file``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import tempfile
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

__all__ = [
    "RANGE_FILES",
    "InstallResult",
    "IpRangeSet",
    "RangeFileError",
    "install_range_file",
    "load_google_ranges",
    "parse_google_json",
]

RANGE_FILES: tuple[str, ...] = (
    "goog.json",
    "cloud.json",
    "googlebot.json",
    "special-crawlers.json",
    "user-triggered-fetchers.json",
)

# ::ffff:0:0/96 holds IPv4 addresses as seen through a dual-stack socket.
_MAPPED_FIRST = 0xFFFF_0000_0000
_MAPPED_LAST = 0xFFFF_FFFF_FFFF

_Interval = tuple[int, int]


class RangeFileError(ValueError):
    """A range list is not in Google's format, or cannot be installed."""


def _merge(intervals: list[_Interval]) -> tuple[list[int], list[int]]:
    """Sort inclusive intervals and merge overlapping or adjacent ones.

    Returns the starts and ends of the disjoint result, both ascending.
    """
    starts: list[int] = []
    ends: list[int] = []
    for first, last in sorted(intervals):
        if ends and first <= ends[-1] + 1:
            if last > ends[-1]:
                ends[-1] = last
        else:
            starts.append(first)
            ends.append(last)
    return starts, ends


class IpRangeSet:
    """A set of IPv4 and IPv6 networks with O(log n) membership tests.

    Networks are merged into sorted, disjoint intervals per family. ``a.b.c.d`` and its
    IPv4-mapped form ``::ffff:a.b.c.d`` are the same address, so either spelling matches a
    network written in either family.
    """

    __slots__ = (
        "_v4_ends",
        "_v4_heads",
        "_v4_prefixes",
        "_v4_starts",
        "_v6_ends",
        "_v6_prefixes",
        "_v6_starts",
    )

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        """Build the set from CIDR strings; host bits are ignored.

        Raises ValueError for a string that is not an IPv4 or IPv6 network.
        """
        v4: list[_Interval] = []
        v6: list[_Interval] = []
        v4_prefixes = 0
        v6_prefixes = 0
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            first = int(net.network_address)
            last = int(net.broadcast_address)
            if net.version == 4:
                v4_prefixes += 1
                v4.append((first, last))
            else:
                v6_prefixes += 1
                v6.append((first, last))
                # Mapped addresses are looked up as IPv4, so the mapped part of an IPv6 network
                # must be in the IPv4 table too.
                lo = max(first, _MAPPED_FIRST)
                hi = min(last, _MAPPED_LAST)
                if lo <= hi:
                    v4.append((lo - _MAPPED_FIRST, hi - _MAPPED_FIRST))
        self._v4_starts, self._v4_ends = _merge(v4)
        self._v6_starts, self._v6_ends = _merge(v6)
        # First octets (as written) of the IPv4 intervals: most addresses are not Google's,
        # and their first octet alone says so, without parsing the address.
        self._v4_heads = frozenset(
            str(octet)
            for start, end in zip(self._v4_starts, self._v4_ends, strict=True)
            for octet in range(start >> 24, (end >> 24) + 1)
        )
        self._v4_prefixes = v4_prefixes
        self._v6_prefixes = v6_prefixes

    def contains(self, ip: str) -> bool:
        """Whether ``ip`` (an address string) is in the set.

        Surrounding whitespace is ignored; anything that is not an address gives False.
        ``::ffff:a.b.c.d`` is treated as ``a.b.c.d``.
        """
        if not isinstance(ip, str):
            return False
        ip = ip.strip()
        # A dotted IPv4 address has its first octet in decimal without leading zeros (other
        # spellings are not addresses), so this test cannot turn away a Google address.
        if ":" not in ip and ip.partition(".")[0] not in self._v4_heads:
            return False
        parsed = _parse_address(ip)
        if parsed is None:
            return False
        value, version = parsed
        if version == 6 and _MAPPED_FIRST <= value <= _MAPPED_LAST:
            value -= _MAPPED_FIRST
            version = 4
        if version == 4:
            starts, ends = self._v4_starts, self._v4_ends
        else:
            starts, ends = self._v6_starts, self._v6_ends
        i = bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, str) and self.contains(ip)

    def __len__(self) -> int:
        """Number of disjoint intervals after merging (IPv4 plus IPv6)."""
        return len(self._v4_starts) + len(self._v6_starts)

    def __repr__(self) -> str:
        return f"<IpRangeSet {self.summary()}>"

    @property
    def v4_prefix_count(self) -> int:
        """IPv4 networks the set was built from, before merging."""
        return self._v4_prefixes

    @property
    def v6_prefix_count(self) -> int:
        """IPv6 networks the set was built from, before merging."""
        return self._v6_prefixes

    @property
    def v4_interval_count(self) -> int:
        """Disjoint IPv4 intervals after merging (including mapped parts of IPv6 networks)."""
        return len(self._v4_starts)

    @property
    def v6_interval_count(self) -> int:
        """Disjoint IPv6 intervals after merging."""
        return len(self._v6_starts)

    def summary(self) -> str:
        """One line for logs, e.g. ``1522 IPv4 + 864 IPv6 prefixes, 53 + 11 intervals``."""
        return (
            f"{self._v4_prefixes} IPv4 + {self._v6_prefixes} IPv6 prefixes, "
            f"{self.v4_interval_count} + {self.v6_interval_count} intervals"
        )


def _parse_address(text: str) -> tuple[int, int] | None:
    """Parse an address string into (integer value, IP version), or None if it is not one."""
    # inet_pton is several times faster than ipaddress and accepts the same spellings, except
    # IPv6 scope ids ("fe80::1%eth0"), which the ipaddress fallback handles. Every IPv6
    # spelling has a colon and no IPv4 one does, so one inet_pton call is enough.
    family, version = (socket.AF_INET6, 6) if ":" in text else (socket.AF_INET, 4)
    try:
        return int.from_bytes(socket.inet_pton(family, text), "big"), version
    except (OSError, ValueError):
        pass
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    return int(addr), addr.version


@dataclass(frozen=True)
class _RangeFile:
    prefixes: list[str]
    v4_count: int
    creation_time: str | None


def _read_range_file(text: str | bytes, source: str) -> _RangeFile:
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RangeFileError(
            f"{source}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError as exc:
        raise RangeFileError(f"{source}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(doc, dict):
        raise RangeFileError(
            f"{source}: expected a JSON object with a 'prefixes' list, got a JSON {_json_type(doc)}"
        )
    if "prefixes" not in doc:
        raise RangeFileError(f"{source}: no 'prefixes' key; not one of Google's IP range lists")
    entries = doc["prefixes"]
    if not isinstance(entries, list):
        raise RangeFileError(
            f"{source}: 'prefixes' must be a list, got a JSON {_json_type(entries)}"
        )
    if not entries:
        # An empty list would silently stop recognising a whole family of Google addresses.
        raise RangeFileError(f"{source}: 'prefixes' is empty")
    prefixes: list[str] = []
    v4_count = 0
    for index, entry in enumerate(entries):
        where = f"{source}: prefixes[{index}]"
        if not isinstance(entry, dict):
            raise RangeFileError(f"{where} must be an object, got a JSON {_json_type(entry)}")
        found = False
        for key, version in (("ipv4Prefix", 4), ("ipv6Prefix", 6)):
            if key not in entry:
                continue
            found = True
            value = entry[key]
            if not isinstance(value, str):
                raise RangeFileError(f"{where}.{key} must be a string, got {value!r}")
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise RangeFileError(
                    f"{where}.{key} is not a valid IPv{version} network: {value!r}"
                ) from None
            if net.version != version:
                raise RangeFileError(f"{where}.{key} is an IPv{net.version} network: {value!r}")
            prefixes.append(str(net))
            v4_count += version == 4
        if not found:
            raise RangeFileError(f"{where} has neither 'ipv4Prefix' nor 'ipv6Prefix': {entry!r}")
    creation_time = doc.get("creationTime")
    return _RangeFile(prefixes, v4_count, creation_time if isinstance(creation_time, str) else None)


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def parse_google_json(text: str | bytes, source: str) -> list[str]:
    """Validate one of Google's range lists and return its networks as CIDR strings.

    ``source`` names the file in error messages. Raises RangeFileError if the text is not a JSON
    object with a non-empty ``prefixes`` list of objects, each with an ``ipv4Prefix`` or
    ``ipv6Prefix`` holding a network of that family.
    """
    return _read_range_file(text, source).prefixes


def load_google_ranges(override_dir: Path | None = None) -> IpRangeSet:
    """Load the union of Google's range lists.

    Each list in ``RANGE_FILES`` comes from package data unless ``override_dir`` holds a file of
    the same name, which replaces it. A broken override raises RangeFileError rather than falling
    back, so that an operator's refresh never fails silently. Nothing is cached.
    """
    packaged: Traversable = files("otameter") / "data" / "google-ip-ranges"
    cidrs: list[str] = []
    for name in RANGE_FILES:
        override = override_dir / name if override_dir is not None else None
        if override is not None and override.is_file():
            try:
                data = override.read_bytes()
            except OSError as exc:
                raise RangeFileError(f"{override}: cannot read: {exc.strerror or exc}") from exc
            cidrs.extend(parse_google_json(data, str(override)))
        else:
            cidrs.extend(parse_google_json((packaged / name).read_bytes(), f"packaged {name}"))
    return IpRangeSet(cidrs)


@dataclass(frozen=True)
class InstallResult:
    """What ``install_range_file`` installed."""

    name: str
    path: Path
    v4_prefixes: int
    v6_prefixes: int
    creation_time: str | None


def install_range_file(src: Path, override_dir: Path, name: str | None = None) -> InstallResult:
    """Validate ``src`` and install it into ``override_dir`` as one of ``RANGE_FILES``.

    The list name is ``name`` if given, else the file name of ``src``; either must be in
    ``RANGE_FILES``. The file's bytes are kept unchanged and replace any previous override
    atomically, so a server loading the directory never sees a partial file.

    Raises RangeFileError for an unknown name or an unreadable or invalid ``src`` (nothing is
    written then), and OSError if ``override_dir`` cannot be written.
    """
    target_name = name if name is not None else src.name
    if target_name not in RANGE_FILES:
        allowed = ", ".join(RANGE_FILES)
        if name is not None:
            raise RangeFileError(f"unknown range list name {name!r}; expected one of: {allowed}")
        raise RangeFileError(
            f"{src}: cannot tell which range list this is from its file name; "
            f"name it explicitly as one of: {allowed}"
        )
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise RangeFileError(f"{src}: cannot read: {exc.strerror or exc}") from exc
    parsed = _read_range_file(data, str(src))

    override_dir.mkdir(parents=True, exist_ok=True)
    target = override_dir / target_name
    fd, tmp_name = tempfile.mkstemp(dir=override_dir, prefix=f".{target_name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; the server may run as another user than the operator.
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(override_dir)

    return InstallResult(
        name=target_name,
        path=target,
        v4_prefixes=parsed.v4_count,
        v6_prefixes=len(parsed.prefixes) - parsed.v4_count,
        creation_time=parsed.creation_time,
    )


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; not possible on every platform, so best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
