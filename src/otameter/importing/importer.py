"""Bulk import of events (JSON lines) through the same counting code as live traffic.

How a file goes in:

1. The file is cut into slices by byte range; each slice is read as whole lines, checked and
   folded (:mod:`otameter.importing.lines`), in parsing processes when the file is large, a
   round of slices (one a process) at a time.
2. The writer stores each round, merged, in one transaction: seen event ids, device rows,
   activity deltas, downloads. Every one of these facts is order-independent.
3. Slices whose fold cannot be stored whole (an event id applied before, an unknown app) are
   applied event by event through ``Pipeline.apply``, which tells duplicates and rejected
   lines apart exactly.
4. Last come the events that waited: bundle uploads and deletes in time order, then the
   check-ins from Google addresses, which the Google windows of those bundles may exclude.

A bad line is reported with its number and skipped; it never stops the good ones.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from ..clock import Clock, to_ms
from ..metering.events import CheckIn, Event, Outcome
from ..metering.fold import FoldedFacts, merge_batches, merge_facts
from ..metering.writer import Writer
from .lines import (
    PARALLEL_MIN_BYTES,
    FoldedSlice,
    LineError,
    ParsingPool,
    Slice,
    SliceReader,
    cut_into_slices,
    default_workers,
)

# Slices of at most this size: large enough that a device seen many times in a file is
# upserted few times (each round's transaction writes every device it saw), small enough
# that parsing and storing overlap on large files. A parsing process reads its slice a
# block at a time, so its memory follows its fold, not this size.
SLICE_BYTES = 256 * 1024 * 1024
# At most this many folded slices are merged into one writer transaction.
MERGE_MAX = 4
# Waiting events go to the writer in groups of this many.
WAITING_BATCH = 50_000
# Clocks of the machines that wrote the logs may run a little ahead of ours.
FUTURE_TOLERANCE = timedelta(minutes=5)


class ImportFailed(RuntimeError):
    """The import could not go on; what was committed before stays."""


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


class Importer:
    def __init__(
        self,
        writer: Writer,
        clock: Clock,
        *,
        slice_bytes: int = SLICE_BYTES,
        workers: int | None = None,
        parallel_min_bytes: int = PARALLEL_MIN_BYTES,
        pool: ParsingPool | None = None,
    ) -> None:
        if slice_bytes < 1:
            raise ValueError("slice_bytes must be positive")
        self.writer = writer
        self.clock = clock
        self.slice_bytes = slice_bytes
        self.workers = pool.workers if pool else default_workers() if workers is None else workers
        self.parallel_min_bytes = parallel_min_bytes
        # Started by the caller (see ParsingPool); otherwise the import starts its own.
        self.pool = pool

    def run(self, path: Path, progress: Callable[[int, int], None] | None = None) -> ImportSummary:
        """Import the events file at ``path``; ``progress(lines, bytes)`` is told of each slice
        done."""
        summary = ImportSummary()
        latest_ms = to_ms(self.clock.now() + FUTURE_TOLERANCE)
        # An import allocates millions of objects and no cycles: the cyclic garbage collector
        # would only walk them again and again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            size = path.stat().st_size
            parallel = self.workers > 0 and size >= self.parallel_min_bytes
            slices = cut_into_slices(size, self.slice_bytes, self.workers if parallel else 1)
            apps = self.writer.run_blocking(_live_apps)
            reader = SliceReader(path, latest_ms, apps, self.writer.pipeline.google_predicate)
            rounds = (
                self._read_in_workers(reader, slices)
                if parallel and len(slices) > 1
                else ([reader.read(piece)] for piece in slices)
            )
            store = _SliceStore(self, reader, summary, progress)
            for ready in rounds:
                store.add(ready)
            store.flush()
            self._apply_waiting(store.waiting, summary)
        finally:
            if collecting:
                gc.enable()
        summary.rejected.sort()
        return summary

    def _read_in_workers(
        self, reader: SliceReader, slices: list[Slice]
    ) -> Iterator[list[FoldedSlice]]:
        if self.pool is not None:
            yield from self._read_in(self.pool, reader, slices)
            return
        with ParsingPool(self.workers) as pool:
            yield from self._read_in(pool, reader, slices)

    def _read_in(
        self, pool: ParsingPool, reader: SliceReader, slices: list[Slice]
    ) -> Iterator[list[FoldedSlice]]:
        """Folded slices in file order, a round at a time: as many as there are processes.

        The slices of a round are equal and finish nearly together; stored together, their
        devices are written once, where storing each as it came cost a device upsert more.
        """
        pending: deque[Future[FoldedSlice]] = deque()
        remaining = iter(slices)
        try:
            # One slice more than there are workers: each worker always has the next one.
            for piece in remaining:
                pending.append(pool.submit(reader, piece))
                if len(pending) > pool.workers:
                    break
            while pending:
                ready: list[FoldedSlice] = []
                while pending and len(ready) < pool.workers:
                    ready.append(_folded(pending.popleft()))
                    following = next(remaining, None)
                    if following is not None:
                        pending.append(pool.submit(reader, following))
                yield ready
        finally:
            for future in pending:
                future.cancel()

    def _apply_waiting(self, waiting: list[tuple[int, Event]], summary: ImportSummary) -> None:
        """Bundle events in time order, then the check-ins from Google addresses."""
        bundles = sorted(
            ((number, event) for number, event in waiting if not isinstance(event, CheckIn)),
            key=lambda item: (getattr(item[1], "at_ms", 0), item[0]),
        )
        checkins = [(number, event) for number, event in waiting if isinstance(event, CheckIn)]
        for group in (bundles, checkins):
            for at in range(0, len(group), WAITING_BATCH):
                part = group[at : at + WAITING_BATCH]
                outcomes = self.writer.submit_blocking([event for _, event in part])
                _record([number for number, _ in part], outcomes, summary)


def _folded(future: Future[FoldedSlice]) -> FoldedSlice:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise ImportFailed(
            "a parsing process stopped unexpectedly (out of memory?). The slices stored so "
            "far stay; importing the file again skips the events with ids among them."
        ) from exc


def _record(numbers: list[int], outcomes: list[Outcome], summary: ImportSummary) -> None:
    for number, outcome in zip(numbers, outcomes, strict=True):
        status = outcome.status
        if status == "accepted":
            summary.accepted += 1
        elif status == "duplicate":
            summary.duplicates += 1
        else:
            summary.rejected.append((number, outcome.reason or "rejected"))


def _live_apps(conn: Connection) -> frozenset[str]:
    rows = conn.exec_driver_sql("SELECT app_id FROM apps WHERE deleted_at IS NULL")
    return frozenset(row[0] for row in rows)


class _SliceStore:
    """Hands folded slices to the writer.

    The slices that arrive together, and those that arrive while the writer stores a batch,
    are stored together, merged, in one transaction (at most MERGE_MAX of them), so that a
    device seen in several is written once. A slow writer thus gets larger batches, not a
    longer queue.
    """

    def __init__(
        self,
        importer: Importer,
        reader: SliceReader,
        summary: ImportSummary,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.importer = importer
        self.reader = reader
        self.summary = summary
        self.progress = progress
        # Events applied after every slice (see SliceReader), with their line numbers.
        self.waiting: list[tuple[int, Event]] = []
        self._backlog: list[tuple[FoldedSlice, int]] = []
        # Number of the next slice's first line.
        self._next_line = 1
        self._in_flight: tuple[list[tuple[FoldedSlice, int]], Future[bool]] | None = None

    def add(self, ready: list[FoldedSlice]) -> None:
        """The next slices of the file, folded; those that arrive together are stored together."""
        for folded in ready:
            first_line = self._next_line
            self._next_line += folded.line_count
            if folded.batch is None:
                self.flush()
                self._event_by_event(folded, first_line)
                self._advance(folded)
            else:
                self._backlog.append((folded, first_line))
        in_flight = self._in_flight
        if self._backlog and (in_flight is None or in_flight[1].done()):
            self._settle()
            self._launch()
        while len(self._backlog) >= MERGE_MAX:
            self._settle()
            self._launch()

    def flush(self) -> None:
        self._settle()
        while self._backlog:
            self._launch()
            self._settle()

    def _launch(self) -> None:
        """Hands the writer the first slices of the backlog (at most MERGE_MAX), merged."""
        slices, self._backlog = self._backlog[:MERGE_MAX], self._backlog[MERGE_MAX:]
        batches = [folded.batch for folded, _ in slices if folded.batch]
        # Several slices: the writer checks and records their ids while this thread merges
        # their facts (SQLite works without the GIL), then stores the merged facts.
        facts: Future[FoldedFacts] | None = Future() if len(batches) > 1 else None
        batch = merge_batches(batches, facts)
        apply = partial(self.importer.writer.pipeline.apply_folded, batch=batch)
        self._in_flight = (slices, self.importer.writer.run_later(apply))
        if facts is not None:
            try:
                facts.set_result(merge_facts([part.ready_facts() for part in batches]))
            except BaseException as exc:
                facts.set_exception(exc)
                raise

    def _settle(self) -> None:
        if self._in_flight is None:
            return
        slices, future = self._in_flight
        self._in_flight = None
        stored = future.result()
        summary = self.summary
        for folded, first_line in slices:
            if stored:
                summary.lines += folded.lines
                summary.accepted += folded.events
                summary.rejected.extend((first_line + i, why) for i, why in folded.rejected)
                self.waiting.extend((first_line + i, event) for i, event in folded.deferred)
            else:
                self._event_by_event(folded, first_line)
            self._advance(folded)

    def _event_by_event(self, folded: FoldedSlice, first_line: int) -> None:
        """Apply a slice's events one by one: the pipeline decides each one's outcome."""
        reader, summary = self.reader, self.summary
        numbers: list[int] = []
        events: list[Event] = []
        for index, event in reader.events(folded.piece):
            summary.lines += 1
            if isinstance(event, LineError):
                summary.rejected.append((first_line + index, str(event)))
            elif reader.waits(event):
                self.waiting.append((first_line + index, event))
            else:
                numbers.append(first_line + index)
                events.append(event)
        if events:
            outcomes = self.importer.writer.submit_blocking(events)
            _record(numbers, outcomes, summary)

    def _advance(self, folded: FoldedSlice) -> None:
        if self.progress:
            self.progress(folded.line_count, folded.piece.end - folded.piece.start)
