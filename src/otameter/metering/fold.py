"""Folding check-ins and downloads into the facts of one batch, before any database is touched.

A batch of check-ins becomes one row per device (first and last seen as min and max, the
attributes of its newest check-in) and, per (app, day, verdict, version), the devices that were
active. Every fact is order-independent, so a fold may cover any slice of the events in any
order. The writer folds what live traffic brings; ``otameter import`` folds in its parsing
processes and hands the writer only the result. Either way this code applies the counting
rules, so both count alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date
from operator import attrgetter, itemgetter
from typing import Any

import orjson

from ..clock import day_of_ms
from ..storage import schema as s
from .counting import Verdict, classify, device_verdict
from .events import CheckIn, Download

# (app_id, day, verdict, version_name): one activity delta of the batch (verdict may also be
# "offered", a release-health outcome: see releases.py).
ActivityKey = tuple[str, date, str, str]
# app_id, device_id, version, at, day, bytes
DownloadRow = tuple[str, str, str, int, date, int]

# Columns of a device row: the devices table's, in its order, but the ordinal ``id`` (given on
# insert), with the PostgreSQL type each is cast to in the JSON upsert (text, not the varchar
# of the column: a cast to varchar(n) would cut a long value where the insert must refuse it).
_PG_TYPES = {str: "text", int: "bigint", bool: "boolean"}
DEVICE_FIELDS = tuple(
    (column.name, _PG_TYPES[column.type.python_type])
    for column in s.devices.columns
    if column.name != "id"
)
# Device attributes that follow the newest check-in, whatever order events arrive in.
LATEST_FIELDS = tuple(name for name, _ in DEVICE_FIELDS[5:])
_FIRST_SEEN, _LAST_SEEN, _LAST_COUNTED_AT = 2, 3, 4
# A device row under construction ends with its position in the fold (arrival order), which
# activity refers to; cheaper to carry than the device key.
_POSITION = len(DEVICE_FIELDS)
_app_id, _device_id = itemgetter(0), itemgetter(1)
# A check-in's values of LATEST_FIELDS (the names are CheckIn's), as one tuple.
# (A new row lists them one by one: faster than unpacking the tuple into it.)
_latest = attrgetter(*LATEST_FIELDS)
_COUNTED, _GOOGLE_WINDOW = Verdict.COUNTED, Verdict.GOOGLE_WINDOW

UploadTimes = Callable[[str], Sequence[int]]
IpPredicate = Callable[[str], bool]


@dataclass(slots=True)
class FoldedFacts:
    """What a batch adds to the database, ready to store."""

    # One row per device (columns in the order of DEVICE_FIELDS), in (app, device) order
    # (merged batches: in runs of that order).
    device_rows: list[list[Any]]
    # Devices active per activity key, as indexes into ``device_rows``.
    activity: dict[ActivityKey, list[int]]
    downloads: list[DownloadRow] = field(default_factory=list)

    def __reduce__(self) -> tuple[Any, ...]:
        # Between processes the device rows travel as JSON: hundreds of thousands of small
        # lists encode and decode several times faster that way than through pickle.
        return (_facts_from_json, (orjson.dumps(self.device_rows), self.activity, self.downloads))


def _facts_from_json(
    rows: bytes, activity: dict[ActivityKey, list[int]], downloads: list[DownloadRow]
) -> FoldedFacts:
    return FoldedFacts(orjson.loads(rows), activity, downloads)


class Fold:
    """Accumulates check-ins and downloads; ``seal`` turns them into :class:`FoldedFacts`."""

    __slots__ = (
        "_count",
        "_days",
        "_devices",
        "_downloads",
        "_is_google_ip",
        "_load",
        "_windows",
        "activity",
    )

    def __init__(self, upload_times: UploadTimes, is_google_ip: IpPredicate) -> None:
        self._load = upload_times
        self._is_google_ip = is_google_ip
        # Device rows by app, then by device id (two string lookups cost less than one keyed
        # by a tuple, which is hashed and compared element by element).
        self._devices: dict[str, dict[str, list[Any]]] = {}
        self._count = 0
        self._downloads: list[DownloadRow] = []
        self._days: dict[int, date] = {}
        self.activity: dict[ActivityKey, list[int]] = {}
        # Each app's sorted upload times, loaded once per fold.
        self._windows: dict[str, Sequence[int]] = {}

    def _day(self, at_ms: int) -> date:
        number = at_ms // 86_400_000
        day = self._days.get(number)
        if day is None:
            day = self._days[number] = day_of_ms(at_ms)
        return day

    def add_checkin(self, c: CheckIn) -> Verdict:
        at_ms = c.at_ms
        app_id = c.app_id
        devices = self._devices.get(app_id)
        if devices is None:
            devices = self._devices[app_id] = {}
            self._windows[app_id] = self._load(app_id)
        times = self._windows[app_id]
        if times:
            verdict = classify(c.is_emulator, c.is_prod, c.ip, at_ms, times, self._is_google_ip)
        else:
            verdict = device_verdict(c.is_emulator, c.is_prod)
        counted_at = at_ms if verdict is _COUNTED else None
        row = devices.get(c.device_id)
        if row is None:
            row = devices[c.device_id] = [
                app_id,
                c.device_id,
                at_ms,
                at_ms,
                counted_at,
                c.platform,
                c.version_name,
                c.version_build,
                c.version_os,
                c.plugin_version,
                c.custom_id,
                c.is_emulator,
                c.is_prod,
                self._count,
            ]
            self._count += 1
        else:
            # A device seen again in the batch (the common case in imports): merged inline.
            if at_ms < row[_FIRST_SEEN]:
                row[_FIRST_SEEN] = at_ms
            if counted_at is not None and (
                row[_LAST_COUNTED_AT] is None or counted_at > row[_LAST_COUNTED_AT]
            ):
                row[_LAST_COUNTED_AT] = counted_at
            if at_ms >= row[_LAST_SEEN]:
                row[_LAST_SEEN] = at_ms
                row[5:_POSITION] = _latest(c)
        if verdict is not _GOOGLE_WINDOW:
            day = self._days.get(at_ms // 86_400_000) or self._day(at_ms)
            group = (app_id, day, verdict, c.version_name)
            members = self.activity.get(group)
            if members is None:
                self.activity[group] = [row[_POSITION]]
            else:
                members.append(row[_POSITION])
            # Release health: the counted devices this check-in offered a version to.
            if c.offered_version and verdict is _COUNTED:
                offered = (app_id, day, "offered", c.offered_version)
                members = self.activity.get(offered)
                if members is None:
                    self.activity[offered] = [row[_POSITION]]
                else:
                    members.append(row[_POSITION])
        return verdict

    def add_download(self, d: Download) -> None:
        self._downloads.append(
            (d.app_id, d.device_id, d.version, d.at_ms, self._day(d.at_ms), d.bytes)
        )

    def apps(self) -> frozenset[str]:
        """The apps the fold has facts of."""
        return frozenset(self._devices).union(row[0] for row in self._downloads)

    def seal(self) -> FoldedFacts:
        """The fold's facts. A sealed fold is spent: its rows now belong to the facts."""
        rows = [row for devices in self._devices.values() for row in devices.values()]
        # Stored in key order: SQLite then walks its unique index in order, several times
        # faster than at random, and PostgreSQL writers lock rows in the same order.
        rows.sort(key=_device_id)
        if len(self._devices) > 1:
            rows.sort(key=_app_id)  # stable: (app, device) order, without building tuple keys
        rank = [0] * len(rows)
        for new, row in enumerate(rows):
            rank[row.pop()] = new  # the position goes: the stored row has DEVICE_FIELDS only
        return FoldedFacts(
            rows,
            {group: [rank[i] for i in members] for group, members in self.activity.items()},
            self._downloads,
        )


@dataclass(slots=True)
class FoldedBatch:
    """A slice of an import folded by a parsing process, for the writer to store whole.

    It holds what the writer needs to check that the fold still holds: the apps it assumed
    exist and the event ids it assumed were never applied. When either fails, the slice is
    applied event by event.
    """

    # A Future while the importer is still merging the facts of several slices: the writer
    # checks the ids meanwhile (see Pipeline.apply_folded).
    facts: FoldedFacts | Future[FoldedFacts]
    apps: frozenset[str]
    # JSON array of the events' ids, sorted (inserts in key order touch fewer index pages).
    event_ids: str
    id_count: int
    latest_at: int

    def ready_facts(self) -> FoldedFacts:
        """The facts, once merged (waits for them if need be)."""
        facts = self.facts
        return facts.result() if isinstance(facts, Future) else facts


def merge_batches(
    batches: Sequence[FoldedBatch], facts: FoldedFacts | Future[FoldedFacts] | None = None
) -> FoldedBatch:
    """One batch with the facts of several: a device in more than one is stored once.

    ``facts``, when given, stands for ``merge_facts`` of the batches' facts (a Future that the
    caller completes while the writer checks the batch's ids).
    """
    if len(batches) == 1:
        return batches[0]
    if facts is None:
        facts = merge_facts([batch.ready_facts() for batch in batches])
    return FoldedBatch(
        facts=facts,
        apps=frozenset().union(*(batch.apps for batch in batches)),
        event_ids="[" + ",".join(b.event_ids[1:-1] for b in batches if b.id_count) + "]",
        id_count=sum(batch.id_count for batch in batches),
        latest_at=max(batch.latest_at for batch in batches),
    )


def merge_facts(parts: Sequence[FoldedFacts]) -> FoldedFacts:
    """The facts of several folds as one: a device in more than one has one row.

    Rows merge by the rules of ``Fold.add_checkin`` (first seen is the minimum, last counted
    the maximum, the attributes those of the newest check-in). The merged rows stay in runs
    of key order, one run a part, which keeps the writer's index walk nearly in order.
    """
    rows: list[list[Any]] = []
    where: dict[str, dict[str, int]] = {}
    activity: dict[ActivityKey, list[int]] = {}
    downloads: list[DownloadRow] = []
    for facts in parts:
        positions: list[int] = []
        for row in facts.device_rows:
            by_device = where.get(row[0])
            if by_device is None:
                by_device = where[row[0]] = {}
            at = by_device.get(row[1])
            if at is None:
                at = by_device[row[1]] = len(rows)
                rows.append(row)
            else:
                _merge_rows(rows[at], row)
            positions.append(at)
        for group, members in facts.activity.items():
            moved = [positions[i] for i in members]
            known = activity.get(group)
            if known is None:
                activity[group] = moved
            else:
                known.extend(moved)
        downloads.extend(facts.downloads)
    return FoldedFacts(rows, activity, downloads)


def _merge_rows(row: list[Any], other: list[Any]) -> None:
    if other[_FIRST_SEEN] < row[_FIRST_SEEN]:
        row[_FIRST_SEEN] = other[_FIRST_SEEN]
    counted = other[_LAST_COUNTED_AT]
    if counted is not None and (row[_LAST_COUNTED_AT] is None or counted > row[_LAST_COUNTED_AT]):
        row[_LAST_COUNTED_AT] = counted
    if other[_LAST_SEEN] >= row[_LAST_SEEN]:
        row[_LAST_SEEN] = other[_LAST_SEEN]
        row[5:] = other[5:]
