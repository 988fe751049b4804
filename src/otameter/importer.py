"""Bulk import of events (JSON lines) through the same pipeline as live traffic.

Bundle uploads and deletes are applied first, in time order, because they decide whether a
check-in falls in a Google window; every other fact is order-independent, so check-ins and
downloads then stream through in large batches. A bad line is reported and skipped.

The file is read twice. The first pass only decodes lines that may be bundle events (a
cheap byte search finds them); the second decodes every other line once. While the writer
commits one batch, the next one is being parsed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from .clock import Clock, to_ms
from .events import BundleDelete, BundleUpload, CheckIn, Download, Event, Outcome
from .writer import Writer

BATCH = 200_000
# Files at least this large are parsed in a separate process, in parallel with the writer.
PARSE_PROCESS_MIN_BYTES = 32 * 1024 * 1024
# Clocks of the machines that wrote the logs may run a little ahead of ours.
FUTURE_TOLERANCE = timedelta(minutes=5)
UUID_RE = re.compile(r"^[0-9a-fA-F-]{1,36}$")
PLATFORMS = frozenset({"ios", "android", "electron"})
_uuid_match = UUID_RE.match
_fromisoformat = datetime.fromisoformat
_loads = orjson.loads


class LineError(ValueError):
    pass


@dataclass
class ImportSummary:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "rejections": [{"line": n, "reason": r} for n, r in self.rejected],
        }


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
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LineError(f"'{key}' must be a non-negative integer")
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
    at_ms = int(when.timestamp() * 1000)
    if at_ms > latest_ms:
        raise LineError("'time' is in the future")
    return at_ms


def parse_event(line: bytes, latest_ms: int) -> Event:
    """One line as an event; raises LineError naming what is wrong with it."""
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
    raise LineError("'type' must be checkin, download, upload or delete")


def _checkin(data: dict[str, Any], app_id: str, at_ms: int, event_id: str | None) -> CheckIn:
    get = data.get
    device_id = get("device_id")
    platform = get("platform")
    version_name = get("version_name")
    is_emulator = get("is_emulator")
    is_prod = get("is_prod")
    version_build = get("version_build", "")
    plugin_version = get("plugin_version", "")
    custom_id = get("custom_id", "")
    ip = get("ip")
    # The common, valid line is checked inline; anything else goes through the checks that
    # name the faulty field.
    if (
        type(device_id) is str
        and len(device_id) <= 36
        and _uuid_match(device_id)
        and type(platform) is str
        and platform in PLATFORMS
        and type(version_name) is str
        and 0 < len(version_name) <= 255
        and type(is_emulator) is bool
        and type(is_prod) is bool
        and type(version_build) is str
        and len(version_build) <= 255
        and type(plugin_version) is str
        and len(plugin_version) <= 64
        and type(custom_id) is str
        and len(custom_id) <= 36
        and (ip is None or type(ip) is str)
    ):
        return CheckIn(
            app_id,
            device_id.lower(),
            at_ms,
            platform,
            version_name,
            is_emulator,
            is_prod,
            version_build,
            "",
            plugin_version,
            custom_id,
            ip,
            event_id,
        )
    device_id = _str(data, "device_id", max_len=36)
    if not UUID_RE.match(device_id):
        raise LineError("'device_id' must be a UUID")
    platform = _str(data, "platform", max_len=16)
    if platform not in PLATFORMS:
        raise LineError("'platform' must be ios, android or electron")
    if ip is not None and not isinstance(ip, str):
        raise LineError("'ip' must be a string")
    return CheckIn(
        app_id=app_id,
        device_id=device_id.lower(),
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


def _maybe_bundle_event(line: bytes) -> bool:
    # Cheap and never misses a plainly written bundle event; false hits are decoded and dropped.
    return b"upload" in line or b"delete" in line


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


# (line numbers, events, rejected lines, lines read) of one batch of the second pass.
Batch = tuple[list[int], list[Event], list[tuple[int, str]], int]


def _parsed_batches(
    stream: IO[bytes], latest_ms: int, handled: set[int], batch_size: int
) -> Iterator[Batch]:
    numbers: list[int] = []
    events: list[Event] = []
    rejected: list[tuple[int, str]] = []
    lines = 0
    for number, line in _lines(stream):
        lines += 1
        if number in handled:
            continue
        try:
            event = parse_event(line, latest_ms)
        except LineError as exc:
            rejected.append((number, str(exc)))
            continue
        numbers.append(number)
        events.append(event)
        if len(events) >= batch_size:
            yield numbers, events, rejected, lines
            numbers, events, rejected, lines = [], [], [], 0
    yield numbers, events, rejected, lines


def _pack(event: Event) -> Any:
    # A check-in crosses the process boundary as a plain tuple: far cheaper to unpickle.
    if type(event) is CheckIn:
        e = event
        return (
            e.app_id,
            e.device_id,
            e.at_ms,
            e.platform,
            e.version_name,
            e.is_emulator,
            e.is_prod,
            e.version_build,
            e.version_os,
            e.plugin_version,
            e.custom_id,
            e.ip,
            e.event_id,
        )
    return event


def _parse_process(path: str, latest_ms: int, handled: set[int], batch_size: int, out: Any) -> None:
    """Body of the parsing process: sends packed batches, then None (or the error text)."""
    try:
        with open(path, "rb") as stream:
            for numbers, events, rejected, lines in _parsed_batches(
                stream, latest_ms, handled, batch_size
            ):
                out.put((numbers, [_pack(e) for e in events], rejected, lines))
        out.put(None)
    except BaseException as exc:  # reported by the importing process
        out.put(f"{type(exc).__name__}: {exc}")


def _batches_from_process(
    path: str, latest_ms: int, handled: set[int], batch_size: int
) -> Iterator[Batch]:
    # spawn, not fork: this process runs the writer thread, and a forked child would inherit
    # its locks in whatever state they were.
    context = multiprocessing.get_context("spawn")
    out = context.Queue(maxsize=2)
    child = context.Process(
        target=_parse_process,
        args=(path, latest_ms, handled, batch_size, out),
        name="otameter-import-parser",
        daemon=True,
    )
    child.start()
    try:
        while True:
            try:
                message = out.get(timeout=1)
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(
                        f"the parsing process stopped (exit code {child.exitcode})"
                    ) from None
                continue
            if message is None:
                return
            if isinstance(message, str):
                raise RuntimeError(f"parsing failed: {message}")
            numbers, packed, rejected, lines = message
            events = [CheckIn(*item) if type(item) is tuple else item for item in packed]
            yield numbers, events, rejected, lines
    finally:
        if child.is_alive():
            child.terminate()
        child.join()


class Importer:
    def __init__(
        self,
        writer: Writer,
        clock: Clock,
        batch_size: int = BATCH,
        *,
        parse_process_min_bytes: int = PARSE_PROCESS_MIN_BYTES,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.batch_size = batch_size
        self.parse_process_min_bytes = parse_process_min_bytes

    def run(
        self,
        open_stream: Callable[[], IO[bytes]],
        progress: Callable[[int], None] | None = None,
        *,
        path: Path | None = None,
    ) -> ImportSummary:
        """Import a file; ``open_stream`` is called twice (bundle pass, then the rest).

        With ``path`` (the same file) and a large enough file, the second pass is parsed in
        a separate process, in parallel with the writer.
        """
        summary = ImportSummary()
        latest_ms = to_ms(self.clock.now() + FUTURE_TOLERANCE)

        # Pass 1: bundle events, applied in time order before anything else.
        bundle_events: list[tuple[int, int, Event]] = []
        handled: set[int] = set()
        with open_stream() as stream:
            for number, line in _lines(stream):
                if not _maybe_bundle_event(line):
                    continue
                try:
                    event = parse_event(line, latest_ms)
                except LineError as exc:
                    handled.add(number)
                    summary.rejected.append((number, str(exc)))
                    continue
                if isinstance(event, BundleUpload | BundleDelete):
                    handled.add(number)
                    bundle_events.append((event.at_ms, number, event))
        bundle_events.sort(key=lambda item: (item[0], item[1]))
        if bundle_events:
            self._record(
                [n for _, n, _ in bundle_events],
                self.writer.submit_blocking([e for _, _, e in bundle_events]),
                summary,
            )
            if progress:
                progress(len(bundle_events))

        # Pass 2: everything else, parsing the next batch while the writer commits one.
        in_flight: deque[tuple[list[int], Future[list[Outcome]]]] = deque()

        def settle(keep: int) -> None:
            while len(in_flight) > keep:
                numbers, future = in_flight.popleft()
                self._record(numbers, future.result(), summary)
                if progress:
                    progress(len(numbers))

        use_process = path is not None and path.stat().st_size >= self.parse_process_min_bytes
        with ThreadPoolExecutor(1, thread_name_prefix="otameter-import") as pool:
            with contextlib.ExitStack() as stack:
                if use_process:
                    assert path is not None
                    batches = _batches_from_process(str(path), latest_ms, handled, self.batch_size)
                else:
                    stream = stack.enter_context(open_stream())
                    batches = _parsed_batches(stream, latest_ms, handled, self.batch_size)
                for numbers, events, rejected, lines in batches:
                    summary.lines += lines
                    summary.rejected.extend(rejected)
                    if events:
                        in_flight.append(
                            (numbers, pool.submit(self.writer.submit_blocking, events))
                        )
                        settle(1)
            settle(0)
        summary.rejected.sort()
        return summary

    @staticmethod
    def _record(numbers: list[int], outcomes: list[Outcome], summary: ImportSummary) -> None:
        for number, outcome in zip(numbers, outcomes, strict=True):
            status = outcome.status
            if status == "accepted":
                summary.accepted += 1
            elif status == "duplicate":
                summary.duplicates += 1
            else:
                summary.rejected.append((number, outcome.reason or "rejected"))
