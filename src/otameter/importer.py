"""Bulk import of events (JSON lines) through the same counting code as live traffic.

How a file goes in:

1. The file is cut into slices by byte range; each slice is read as whole lines, checked and
   folded (:mod:`otameter.import_lines`), in parsing processes when the file is large.
2. The writer stores each folded slice in one transaction: seen event ids, device rows,
   activity deltas, downloads. Every one of these facts is order-independent.
3. A slice whose fold cannot be stored whole (an event id applied before, an unknown app) is
   applied event by event through ``Pipeline.apply``, which tells duplicates and rejected
   lines apart exactly.
4. Last come the events that waited: bundle uploads and deletes in time order, then the
   check-ins from Google addresses, which the Google windows of those bundles may exclude.

A bad line is reported with its number and skipped; it never stops the good ones.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from .clock import Clock, to_ms
from .events import CheckIn, Event, Outcome
from .fold import merge_batches
from .import_lines import (
    FoldedSlice,
    LineError,
    Slice,
    SliceFolder,
    cut_into_slices,
    fold_in_worker,
    init_worker,
    read_slice,
)
from .writer import Writer

# Slices of about this size: large enough that a device seen many times in a file is
# upserted few times, small enough that parsing and storing overlap.
SLICE_BYTES = 128 * 1024 * 1024
# Files at least this large are folded in parsing processes, in parallel with the writer.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
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


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class Importer:
    def __init__(
        self,
        writer: Writer,
        clock: Clock,
        *,
        slice_bytes: int = SLICE_BYTES,
        workers: int | None = None,
        parallel_min_bytes: int = PARALLEL_MIN_BYTES,
    ) -> None:
        if slice_bytes < 1:
            raise ValueError("slice_bytes must be positive")
        self.writer = writer
        self.clock = clock
        self.slice_bytes = slice_bytes
        self.workers = default_workers() if workers is None else workers
        self.parallel_min_bytes = parallel_min_bytes

    def run(self, path: Path, progress: Callable[[int], None] | None = None) -> ImportSummary:
        """Import the events file at ``path``; ``progress`` is told of lines as they are done."""
        summary = ImportSummary()
        latest_ms = to_ms(self.clock.now() + FUTURE_TOLERANCE)
        # An import allocates millions of objects and no cycles: the cyclic garbage collector
        # would only walk them again and again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            size = path.stat().st_size
            slices = cut_into_slices(size, self.slice_bytes)
            apps = self.writer.run_blocking(_live_apps)
            folder = SliceFolder(path, latest_ms, apps, self.writer.pipeline.google_predicate)
            parallel = self.workers > 0 and len(slices) > 1 and size >= self.parallel_min_bytes
            folded_slices = (
                self._fold_in_workers(folder, slices) if parallel else map(folder.fold, slices)
            )
            store = _SliceStore(self, folder, summary, progress)
            first_line = 1
            for folded in folded_slices:
                store.add(folded, first_line)
                first_line += folded.line_count
            store.flush()
            self._apply_waiting(store.waiting, summary)
        finally:
            if collecting:
                gc.enable()
        summary.rejected.sort()
        return summary

    def _fold_in_workers(self, folder: SliceFolder, slices: list[Slice]) -> Iterator[FoldedSlice]:
        # spawn, not fork: this process runs the writer thread, and a forked child would
        # inherit its locks in whatever state they were.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=init_worker, initargs=(folder,)
        ) as pool:
            pending: deque[Future[FoldedSlice]] = deque()
            remaining = iter(slices)
            try:
                # One slice more than there are workers: each worker always has the next one.
                for piece in remaining:
                    pending.append(pool.submit(fold_in_worker, piece))
                    if len(pending) > self.workers:
                        break
                while pending:
                    try:
                        folded = pending.popleft().result()
                    except BrokenProcessPool as exc:
                        raise ImportFailed(
                            "a parsing process stopped unexpectedly (out of memory?). The "
                            "slices stored so far stay; importing the file again skips the "
                            "events with ids among them."
                        ) from exc
                    following = next(remaining, None)
                    if following is not None:
                        pending.append(pool.submit(fold_in_worker, following))
                    yield folded
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

    While the writer stores one batch, the slices that arrive wait; they are then stored
    together, merged, in one transaction, so that a device seen in several is written once.
    A slow writer thus gets larger batches, not a longer queue.
    """

    def __init__(
        self,
        importer: Importer,
        folder: SliceFolder,
        summary: ImportSummary,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.importer = importer
        self.folder = folder
        self.summary = summary
        self.progress = progress
        # Events applied after every slice (see SliceFolder), with their line numbers.
        self.waiting: list[tuple[int, Event]] = []
        self._backlog: list[tuple[FoldedSlice, int]] = []
        self._in_flight: tuple[list[tuple[FoldedSlice, int]], Future[bool]] | None = None

    def add(self, folded: FoldedSlice, first_line: int) -> None:
        if folded.batch is None:
            self.flush()
            self._event_by_event(folded, first_line)
            self._advance(folded)
            return
        self._backlog.append((folded, first_line))
        in_flight = self._in_flight
        if in_flight is None or in_flight[1].done() or len(self._backlog) >= MERGE_MAX:
            self._settle()
            self._launch()

    def flush(self) -> None:
        self._settle()
        if self._backlog:
            self._launch()
            self._settle()

    def _launch(self) -> None:
        batch = merge_batches([folded.batch for folded, _ in self._backlog if folded.batch])
        apply = partial(self.importer.writer.pipeline.apply_folded, batch=batch)
        self._in_flight = (self._backlog, self.importer.writer.run_later(apply))
        self._backlog = []

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
        folder, summary = self.folder, self.summary
        raw_lines, _ = read_slice(folder.path, folded.piece)
        numbers: list[int] = []
        events: list[Event] = []
        for index, event in folder.events(raw_lines):
            summary.lines += 1
            if isinstance(event, LineError):
                summary.rejected.append((first_line + index, str(event)))
            elif folder.waits(event):
                self.waiting.append((first_line + index, event))
            else:
                numbers.append(first_line + index)
                events.append(event)
        if events:
            outcomes = self.importer.writer.submit_blocking(events)
            _record(numbers, outcomes, summary)

    def _advance(self, folded: FoldedSlice) -> None:
        if self.progress:
            self.progress(folded.line_count)
