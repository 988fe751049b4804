"""Bulk import of events (JSON lines) through the same pipeline as live traffic.

Bundle uploads and deletes are applied first, in time order, because they decide whether a
check-in falls in a Google window; every other fact is order-independent, so check-ins and
downloads then stream through in large batches. A bad line is reported and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

import orjson

from .clock import Clock, to_ms
from .events import BundleDelete, BundleUpload, CheckIn, Download, Event, Outcome
from .writer import Writer

BATCH = 20_000
# Clocks of the machines that wrote the logs may run a little ahead of ours.
FUTURE_TOLERANCE = timedelta(minutes=5)
UUID_RE = re.compile(r"^[0-9a-fA-F-]{1,36}$")
PLATFORMS = {"ios", "android", "electron"}


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


def parse_time(value: Any, latest: datetime) -> int:
    if not isinstance(value, str):
        raise LineError("'time' must be an ISO 8601 string with a time zone")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise LineError(f"'time' is not ISO 8601: {value!r}") from None
    if when.tzinfo is None:
        raise LineError("'time' must carry a time zone (e.g. 2024-05-01T10:00:00Z)")
    if when > latest:
        raise LineError("'time' is in the future")
    return to_ms(when)


def parse_event(line: bytes, latest: datetime) -> Event:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LineError("a line must be a JSON object")
    kind = data.get("type")
    event_id = data.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 200):
        raise LineError("'id' must be a string of 1 to 200 characters")
    at_ms = parse_time(data.get("time"), latest)
    app_id = _str(data, "app_id")
    if kind == "checkin":
        device_id = _str(data, "device_id", max_len=36)
        if not UUID_RE.match(device_id):
            raise LineError("'device_id' must be a UUID")
        platform = _str(data, "platform", max_len=16)
        if platform not in PLATFORMS:
            raise LineError("'platform' must be ios, android or electron")
        ip = data.get("ip")
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
    if kind == "delete":
        return BundleDelete(
            app_id=app_id, version=_str(data, "version"), at_ms=at_ms, event_id=event_id
        )
    raise LineError("'type' must be checkin, download, upload or delete")


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


class Importer:
    def __init__(self, writer: Writer, clock: Clock, batch_size: int = BATCH) -> None:
        self.writer = writer
        self.clock = clock
        self.batch_size = batch_size

    def run(
        self,
        open_stream: Callable[[], IO[bytes]],
        progress: Callable[[int], None] | None = None,
    ) -> ImportSummary:
        """Import a file; ``open_stream`` is called twice (bundle pass, then the rest)."""
        summary = ImportSummary()
        latest = self.clock.now() + FUTURE_TOLERANCE
        bundle_events: list[tuple[int, int, Event]] = []
        with open_stream() as stream:
            for number, line in _lines(stream):
                summary.lines += 1
                try:
                    event = parse_event(line, latest)
                except LineError as exc:
                    summary.rejected.append((number, str(exc)))
                    continue
                if isinstance(event, BundleUpload | BundleDelete):
                    bundle_events.append((event.at_ms, number, event))
        bundle_events.sort(key=lambda item: (item[0], item[1]))
        self._apply([(n, e) for _, n, e in bundle_events], summary)
        if progress:
            progress(len(bundle_events))

        def others() -> Iterator[tuple[int, Event]]:
            with open_stream() as stream:
                for number, line in _lines(stream):
                    try:
                        event = parse_event(line, latest)
                    except LineError:
                        continue  # reported in the first pass
                    if not isinstance(event, BundleUpload | BundleDelete):
                        yield number, event

        batch: list[tuple[int, Event]] = []
        for item in others():
            batch.append(item)
            if len(batch) >= self.batch_size:
                self._apply(batch, summary)
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            self._apply(batch, summary)
            if progress:
                progress(len(batch))
        summary.rejected.sort()
        return summary

    def _apply(self, numbered: Iterable[tuple[int, Event]], summary: ImportSummary) -> None:
        items = list(numbered)
        if not items:
            return
        outcomes: list[Outcome] = self.writer.submit_blocking([event for _, event in items])
        for (number, _), outcome in zip(items, outcomes, strict=True):
            if outcome.status == "accepted":
                summary.accepted += 1
            elif outcome.status == "duplicate":
                summary.duplicates += 1
            else:
                summary.rejected.append((number, outcome.reason or "rejected"))
