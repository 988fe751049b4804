"""Import lines: reading, checking and folding slices of an events file.

An events file is cut into slices by byte range. A parsing process (or the importing process
itself, for a small file) reads a slice's whole lines, checks each one, and folds the slice's
check-ins and downloads with the same counting code as live traffic (:mod:`otameter.metering.fold`);
the writer then stores the folded slices of each round (one a process) in one transaction.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

import msgspec
import orjson

from ..clock import EPOCH, ONE_MS
from ..metering.events import BundleDelete, BundleUpload, CheckIn, Download, Event, PluginStat
from ..metering.fold import Fold, FoldedBatch, IpPredicate
from ..models.shapes import PLATFORMS as PLATFORM_ORDER
from ..models.shapes import Platform
from ..releases import ACTION_RE as STAT_ACTION_RE
from ..releases import parse_duration, stat_metadata

# What a device id may hold: hex digits and dashes (its length is checked apart).
UUID_CHARS = "0123456789abcdefABCDEF-"
PLATFORMS = frozenset(PLATFORM_ORDER)
_fromisoformat = datetime.fromisoformat
_loads = orjson.loads
# Byte counts and sizes are stored as 64-bit integers.
_INT_MAX = 2**63 - 1


class LineError(ValueError):
    pass


def _str(data: dict[str, Any], key: str, *, required: bool = True, max_len: int = 255) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise LineError(f"'{key}' must be a non-empty string")
    if len(value) > max_len:
        raise LineError(f"'{key}' is longer than {max_len} characters")
    return value


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise LineError(f"'{key}' must be true or false")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT_MAX:
        raise LineError(f"'{key}' must be an integer from 0 to {_INT_MAX}")
    return value


def parse_time(value: Any, latest_ms: int) -> int:
    """Epoch ms of an ISO 8601 time with a zone, no later than ``latest_ms``."""
    if type(value) is not str:
        raise LineError("'time' must be an ISO 8601 string with a time zone")
    try:
        when = _fromisoformat(value)
    except ValueError:
        raise LineError(f"'time' is not ISO 8601: {value!r}") from None
    if when.tzinfo is None:
        raise LineError("'time' must carry a time zone (e.g. 2024-05-01T10:00:00Z)")
    at_ms = (when - EPOCH) // ONE_MS  # clock.to_ms, written out: it runs once a line
    if at_ms > latest_ms:
        raise LineError("'time' is in the future")
    return at_ms


def _parse_in_full(line: bytes, latest_ms: int) -> Event:
    """Any line, each field checked on its own so that an error names the faulty field."""
    try:
        data = _loads(line)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not valid JSON: {exc}") from None
    if type(data) is not dict:
        raise LineError("a line must be a JSON object")
    get = data.get
    kind = get("type")
    event_id = get("id")
    if event_id is not None and (type(event_id) is not str or not 0 < len(event_id) <= 200):
        raise LineError("'id' must be a string of 1 to 200 characters")
    at_ms = parse_time(get("time"), latest_ms)
    app_id = get("app_id")
    if type(app_id) is not str or not 0 < len(app_id) <= 255:
        app_id = _str(data, "app_id")
    if kind == "checkin":
        return _checkin(data, app_id, at_ms, event_id)
    if kind == "download":
        return Download(
            app_id=app_id,
            device_id=_str(data, "device_id", max_len=36).lower(),
            version=_str(data, "version"),
            bytes=_int(data, "bytes"),
            at_ms=at_ms,
            event_id=event_id,
        )
    if kind == "upload":
        return _upload(data, app_id, at_ms, event_id)
    if kind == "delete":
        return BundleDelete(
            app_id=app_id, version=_str(data, "version"), at_ms=at_ms, event_id=event_id
        )
    if kind == "stat":
        return _stat(data, app_id, at_ms, event_id)
    raise LineError("'type' must be checkin, download, upload, delete or stat")


def _device(data: dict[str, Any]) -> tuple[str, str]:
    """The device id (lower case) and platform of a check-in or stats line."""
    device_id = _str(data, "device_id", max_len=36)
    if device_id.strip(UUID_CHARS):
        raise LineError("'device_id' must be a UUID")
    platform = _str(data, "platform", max_len=16)
    if platform not in PLATFORMS:
        raise LineError("'platform' must be ios, android or electron")
    return device_id.lower(), platform


def _stat(data: dict[str, Any], app_id: str, at_ms: int, event_id: str | None) -> PluginStat:
    """A plugin stats event (plugin-protocol.md §3), as ``POST /stats`` records it."""
    device_id, platform = _device(data)
    action = _str(data, "action", max_len=64)
    if not STAT_ACTION_RE.fullmatch(action):
        raise LineError("'action' must be a snake_case identifier")
    metadata = data.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise LineError("'metadata' must be an object of strings")
    timestamp = data.get("timestamp")
    if timestamp is not None:
        timestamp = _int(data, "timestamp")
    old = data.get("old_version_name")
    if old is not None and not isinstance(old, str):
        raise LineError("'old_version_name' must be a string")
    return PluginStat(
        app_id=app_id,
        device_id=device_id,
        action=action,
        version_name=_str(data, "version_name", required=False),
        at_ms=at_ms,
        old_version_name=old,
        metadata=stat_metadata(metadata, timestamp),
        platform=platform,
        is_emulator=_bool(data, "is_emulator"),
        is_prod=_bool(data, "is_prod"),
        custom_id=_str(data, "custom_id", required=False, max_len=36),
        version_build=_str(data, "version_build", required=False),
        plugin_version=_str(data, "plugin_version", required=False, max_len=64),
        device_ts=timestamp,
        duration_ms=parse_duration(metadata),
        event_id=event_id,
    )


def _checkin(data: dict[str, Any], app_id: str, at_ms: int, event_id: str | None) -> CheckIn:
    ip = data.get("ip")
    device_id, platform = _device(data)
    if ip is not None and not isinstance(ip, str):
        raise LineError("'ip' must be a string")
    return CheckIn(
        app_id=app_id,
        device_id=device_id,
        at_ms=at_ms,
        platform=platform,
        version_name=_str(data, "version_name"),
        is_emulator=_bool(data, "is_emulator"),
        is_prod=_bool(data, "is_prod"),
        version_build=_str(data, "version_build", required=False),
        plugin_version=_str(data, "plugin_version", required=False, max_len=64),
        custom_id=_str(data, "custom_id", required=False, max_len=36),
        ip=ip,
        event_id=event_id,
    )


def _upload(data: dict[str, Any], app_id: str, at_ms: int, event_id: str | None) -> BundleUpload:
    external = data.get("external", False)
    if not isinstance(external, bool):
        raise LineError("'external' must be true or false")
    external_url = data.get("external_url")
    if external_url is not None and not (
        isinstance(external_url, str) and external_url.startswith(("https://", "http://"))
    ):
        raise LineError("'external_url' must be an http(s) URL")
    channel = data.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise LineError("'channel' must be a string")
    return BundleUpload(
        app_id=app_id,
        version=_str(data, "version"),
        size=_int(data, "size"),
        at_ms=at_ms,
        # An external bundle whose URL the log does not carry is stored with "".
        external_url=(external_url or "") if external or external_url else None,
        channel=channel,
        event_id=event_id,
    )


# -- the common lines, decoded and checked in one step --------------------------------------
# Check-ins and downloads make up nearly every line. msgspec decodes and type-checks them in
# C; a line it refuses goes through _parse_in_full, which accepts or names the faulty field.
# So these types must accept no line that _parse_in_full would refuse.

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
_EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _CheckinLine(msgspec.Struct, tag_field="type", tag="checkin"):
    # Decoded by parse_time, as in the full parser: one reading of times for both.
    time: str
    app_id: _Text
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=36)]
    platform: Platform
    version_name: _Text
    is_emulator: bool
    is_prod: bool
    id: _EventId | None = None
    ip: str | None = None
    version_build: Annotated[str, msgspec.Meta(max_length=255)] = ""
    plugin_version: Annotated[str, msgspec.Meta(max_length=64)] = ""
    custom_id: Annotated[str, msgspec.Meta(max_length=36)] = ""


class _DownloadLine(msgspec.Struct, tag_field="type", tag="download"):
    time: str
    app_id: _Text
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=36)]
    version: _Text
    bytes: Annotated[int, msgspec.Meta(ge=0, le=_INT_MAX)]
    id: _EventId | None = None


_common_decoder = msgspec.json.Decoder(_CheckinLine | _DownloadLine)
_decode_common = _common_decoder.decode
_decode_common_lines = _common_decoder.decode_lines


def parse_event(line: bytes, latest_ms: int) -> Event:
    """One line as an event; raises LineError naming what is wrong with it."""
    try:
        common = _decode_common(line)
    except msgspec.DecodeError:
        return _parse_in_full(line, latest_ms)
    return _event_of(common, latest_ms)


def _event_of(common: _CheckinLine | _DownloadLine, latest_ms: int) -> Event:
    """The event of a line that msgspec decoded: the checks its types cannot express."""
    at_ms = parse_time(common.time, latest_ms)
    if type(common) is _CheckinLine:
        if common.device_id.strip(UUID_CHARS):
            raise LineError("'device_id' must be a UUID")
        return CheckIn(
            common.app_id,
            common.device_id.lower(),
            at_ms,
            common.platform,
            common.version_name,
            common.is_emulator,
            common.is_prod,
            common.version_build,
            "",
            common.plugin_version,
            common.custom_id,
            common.ip,
            common.id,
        )
    assert type(common) is _DownloadLine
    return Download(
        common.app_id, common.device_id.lower(), common.version, common.bytes, at_ms, common.id
    )


def _event_or_error(common: _CheckinLine | _DownloadLine, latest_ms: int) -> Event | LineError:
    try:
        return _event_of(common, latest_ms)
    except LineError as exc:
        return exc


def _line_event(line: bytes, latest_ms: int) -> Event | LineError | None:
    """The event of one line, or why it was refused; None for a blank line."""
    try:
        return parse_event(line, latest_ms)
    except LineError as exc:
        return exc if line and not line.isspace() else None


# A slice is decoded a block of about this many bytes of lines at a time (see parse_block):
# small enough that a block's events are still in the CPU's cache when they are folded.
BLOCK_BYTES = 16 << 10
_NEWLINE = ord("\n")


def parse_block(block: bytes, latest_ms: int) -> list[Event | LineError | None]:
    """The event (or why it was refused, or None if blank) of each line of ``block``, which
    holds whole lines.

    msgspec decodes a whole block in one call when its lines are plainly one JSON object each:
    every line starts with "{" and ends with "}", so no value can span two lines (a "}" that
    leaves a value open must be followed by ",", "}" or "]", never by "{"), and as many
    values as lines means one a line. Any other block, and any block msgspec refuses, is
    read line by line.
    """
    if not block:
        return []
    lines = block.count(b"\n")
    if block[-1] != _NEWLINE:
        lines += 1
    last = -2 if block[-1] == _NEWLINE else -1
    if (
        block[0] == _OPEN_BRACE
        and block[last] == _CLOSE_BRACE
        and block.count(b"}\n{") == lines - 1
    ):
        try:
            decoded = _decode_common_lines(block)
        except msgspec.DecodeError:
            pass
        else:
            if len(decoded) == lines:
                return [_event_or_error(common, latest_ms) for common in decoded]
    return [_line_event(line, latest_ms) for line in block.split(b"\n")[:lines]]


_OPEN_BRACE, _CLOSE_BRACE = ord("{"), ord("}")


# -- slices ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slice:
    """The lines that start at a byte offset in ``[start, end)`` of the file."""

    start: int
    end: int


def cut_into_slices(size: int, slice_bytes: int, rounds_of: int = 1) -> list[Slice]:
    """Equal slices of at most ``slice_bytes``, as many as a multiple of ``rounds_of`` (the
    parsing processes, which then finish each round together instead of one of them working
    alone on a last slice)."""
    # Byte ranges only: each reader finds its own line boundaries, so nothing scans the file
    # before the parsing starts.
    count = -(-size // slice_bytes)
    count = -(-count // rounds_of) * rounds_of
    bounds = [size * k // count for k in range(count + 1)] if count else [0]
    return [Slice(start, end) for start, end in pairwise(bounds) if start < end]


def read_slice_blocks(path: Path, piece: Slice, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The lines that start in the slice, in blocks of whole lines of about ``block_bytes``;
    each line keeps its newline (the file's last line may have none).

    The file is mapped, not read: a block is copied straight from the page cache, so a
    parsing process holds its fold, not its slice, and allocates no large buffers.
    """
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            # A line starts at the first byte after a newline; the byte before a slice's
            # first byte says whether one starts there.
            start = _line_start(mapped, piece.start, size)
            end = _line_start(mapped, min(piece.end, size), size)
            while start < end:
                stop = mapped.find(b"\n", start + block_bytes - 1, end)
                stop = end if stop < 0 else stop + 1
                yield mapped[start:stop]
                start = stop


def _line_start(mapped: mmap.mmap, at: int, size: int) -> int:
    """Where the first line starting at or after byte ``at`` starts (``size`` if none)."""
    if at == 0:
        return 0
    newline = mapped.find(b"\n", at - 1)
    return size if newline < 0 else newline + 1


def count_lines(path: Path, piece: Slice) -> int:
    """How many lines start in the slice (blank ones included)."""
    count = 0
    for block in read_slice_blocks(path, piece):
        count += block.count(b"\n") + (block[-1] != _NEWLINE)
    return count


# -- folding -----------------------------------------------------------------------------

# (index of the line in its slice, event): events applied after every slice is stored.
Deferred = list[tuple[int, Event]]


@dataclass(slots=True)
class FoldedSlice:
    """A slice's lines, checked and folded. Line numbers are indexes into the slice until the
    importer, which knows how many lines the slices before had, turns them into numbers.

    ``batch`` is None when the slice must be applied event by event (a duplicate id inside it
    or an event of an app that does not exist); the importer then reads it again.
    """

    piece: Slice
    line_count: int
    lines: int = 0
    # Events in the fold (the waiting ones are not).
    events: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    deferred: Deferred = field(default_factory=list)
    batch: FoldedBatch | None = None


class SliceReader:
    """Reads and folds slices of one file.

    Two kinds of events wait until every slice is stored: bundle uploads and deletes, and
    check-ins from Google addresses. Only those check-ins depend on the Google windows that
    the bundle events open; every other fact is order-independent. So slices fold at once,
    in any order, and the waiting events are applied at the end, bundles first, in time order.
    """

    def __init__(
        self, path: Path, latest_ms: int, apps: frozenset[str], is_google_ip: IpPredicate
    ) -> None:
        self.path = path
        self.latest_ms = latest_ms
        self.apps = apps
        self.is_google_ip = is_google_ip

    def waits(self, event: Event) -> bool:
        """Whether the event is applied after the slices (see the class docstring)."""
        if type(event) is CheckIn:
            ip = event.ip
            return ip is not None and ip != "" and self.is_google_ip(ip)
        # Stats events are few beside check-ins: the writer applies them one batch at a time.
        return type(event) in _WAITING

    def events(self, piece: Slice) -> Iterator[tuple[int, Event | LineError]]:
        """(index in the slice, event or the reason it was refused) of every line of the
        slice that is not blank."""
        index = -1
        for block in read_slice_blocks(self.path, piece):
            for event in parse_block(block, self.latest_ms):
                index += 1
                if event is not None:
                    yield index, event

    def read(self, piece: Slice) -> FoldedSlice:
        result = FoldedSlice(piece, 0)
        apps, is_google_ip = self.apps, self.is_google_ip
        # The fold sees no upload times: it never meets a check-in from a Google address,
        # the only kind that a Google window can affect.
        fold = Fold(_no_uploads, is_google_ip)
        add_checkin, add_download = fold.add_checkin, fold.add_download
        rejected, deferred = result.rejected, result.deferred
        ids: list[str] = []
        latest_at = 0
        blank = 0
        index = -1
        latest_ms = self.latest_ms
        # The hottest loop of an import: ``events`` and what ``waits`` decides, written out.
        for block in read_slice_blocks(self.path, piece):
            for event in parse_block(block, latest_ms):
                index += 1
                kind = type(event)
                if kind is CheckIn:
                    assert isinstance(event, CheckIn)
                    ip = event.ip
                    if ip and is_google_ip(ip):
                        deferred.append((index, event))
                        continue
                    if event.app_id not in apps:
                        return FoldedSlice(piece, count_lines(self.path, piece))
                    add_checkin(event)
                elif kind is Download:
                    assert isinstance(event, Download)
                    if event.app_id not in apps:
                        return FoldedSlice(piece, count_lines(self.path, piece))
                    add_download(event)
                elif event is None:
                    blank += 1
                    continue
                elif kind is LineError:
                    rejected.append((index, str(event)))
                    continue
                else:
                    assert kind in _WAITING, f"unexpected {event!r}"
                    deferred.append((index, event))  # type: ignore[arg-type]
                    continue
                event_id = event.event_id
                if event_id is not None:
                    ids.append(event_id)
                    if event.at_ms > latest_at:
                        latest_at = event.at_ms
        # Ids repeated inside the slice need no check here: the writer's insert of the ids
        # then adds fewer rows than there are ids, and the slice goes event by event.
        ids.sort()
        facts = fold.seal()
        result.line_count = index + 1
        result.lines = result.line_count - blank
        result.events = result.lines - len(rejected) - len(deferred)
        result.batch = FoldedBatch(
            facts=facts,
            apps=fold.apps(),
            event_ids=orjson.dumps(ids).decode(),
            id_count=len(ids),
            latest_at=latest_at,
        )
        return result


_WAITING = (BundleUpload, BundleDelete, PluginStat)


def _no_uploads(app_id: str) -> tuple[int, ...]:
    return ()


def init_worker() -> None:
    """Prepares a parsing process (its imports come with the unpickling of this function)."""
    # A slice allocates hundreds of thousands of objects and no cycles: the cyclic garbage
    # collector would only walk them again and again.
    gc.disable()


def read_in_worker(reader: SliceReader, piece: Slice) -> FoldedSlice:
    # The reader travels with each slice (a few hundred bytes), so that the processes can be
    # started before the import knows its apps.
    return reader.read(piece)


# Files at least this large are folded in parsing processes, in parallel with the writer.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class ParsingPool:
    """The parsing processes of an import.

    A process takes a few tenths of a second to start (a new interpreter importing otameter),
    so the command starts them first and they get ready while it migrates the database.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a parsing pool needs at least one process")
        self.workers = workers
        # spawn, not fork: the importing process runs the writer thread, and a forked child
        # would inherit its locks in whatever state they were.
        self._executor = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker
        )
        # Processes start on demand: one call each starts them all now.
        for _ in range(workers):
            self._executor.submit(os.getpid)

    def submit(self, reader: SliceReader, piece: Slice) -> Future[FoldedSlice]:
        return self._executor.submit(read_in_worker, reader, piece)

    def close(self) -> None:
        self._executor.shutdown(cancel_futures=True)

    def __enter__(self) -> ParsingPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def parsing_pool_for(
    size: int, workers: int | None = None, *, parallel_min_bytes: int = PARALLEL_MIN_BYTES
) -> ParsingPool | None:
    """The parsing processes for a file of ``size`` bytes; None if it is parsed in-process."""
    count = default_workers() if workers is None else workers
    if count < 1 or size < parallel_min_bytes:
        return None
    return ParsingPool(count)
