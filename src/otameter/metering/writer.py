"""The single writer: one thread owns every database write and commits in groups.

Requests hand their events to the writer and wait; the writer takes everything queued,
applies it in one transaction, commits (one fsync), then answers every waiter. Under load
many requests share a commit; an idle server commits each request at once.

Live check-ins (``append``) are only logged: the batch becomes one ``checkin_log`` row per
app (checkin_log.py), which the rollup drains later. On PostgreSQL a batch of nothing but
check-ins is one INSERT on a connection in autocommit mode: one round trip, and no lock
that the writers of other processes would wait for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from .. import metrics
from . import checkin_log
from .events import (
    BundleDelete,
    BundleUpload,
    CheckIn,
    Download,
    DownloadCorrection,
    Event,
    Outcome,
    PluginStat,
)
from .ingest import Pipeline

log = logging.getLogger(__name__)
T = TypeVar("T")

Waiter = asyncio.Future[Any] | concurrent.futures.Future[Any]

# The ``kind`` label of otameter_events_ingested_total.
EVENT_KINDS: dict[type, str] = {
    CheckIn: "checkin",
    Download: "download",
    DownloadCorrection: "download_correction",
    BundleUpload: "upload",
    BundleDelete: "delete",
    PluginStat: "stat",
}


@dataclass(slots=True)
class _Job:
    events: Sequence[Event] | None
    call: Callable[[Connection], Any] | None
    waiter: Waiter
    loop: asyncio.AbstractEventLoop | None = None
    size: int = field(default=1)
    # A live check-in to log (events and call are None).
    checkin: CheckIn | None = None


_STOP = object()


class WriterStopped(RuntimeError):
    pass


class Writer:
    def __init__(
        self,
        engine: Engine,
        pipeline: Pipeline,
        *,
        max_batch: int = 2000,
        lock: AbstractContextManager[None] | None = None,
    ) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.max_batch = max_batch
        # Taken around each transaction: serialises writers of several processes (SQLite).
        self.lock: AbstractContextManager[None] = lock or contextlib.nullcontext()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        # PostgreSQL: the autocommit connection that logs batches of check-ins.
        self._log_conn: Any = None
        self._postgres = engine.dialect.name == "postgresql"
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="otameter-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish everything queued, then stop."""
        if self._thread is None:
            return
        self._stopping = True
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, events: Sequence[Event]) -> list[Outcome]:
        """Apply events; returns once they are committed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[Outcome]] = loop.create_future()
        self._put(_Job(events, None, waiter, loop, max(1, len(events))))
        return await waiter

    async def run(self, call: Callable[[Connection], T]) -> T:
        """Run ``call(conn)`` inside a writer transaction; returns after commit."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._put(_Job(None, call, waiter, loop))
        return await waiter

    async def append(self, checkin: CheckIn) -> None:
        """Log a live check-in; returns once it is committed (the rollup drains it later)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._put(_Job(None, None, waiter, loop, 1, checkin))
        await waiter

    def submit_blocking(self, events: Sequence[Event]) -> list[Outcome]:
        waiter: concurrent.futures.Future[list[Outcome]] = concurrent.futures.Future()
        self._put(_Job(events, None, waiter, None, max(1, len(events))))
        return waiter.result()

    def run_blocking(self, call: Callable[[Connection], T]) -> T:
        return self.run_later(call).result()

    def run_later(self, call: Callable[[Connection], T]) -> concurrent.futures.Future[T]:
        """Queue ``call(conn)`` for a writer transaction; the future settles after commit."""
        waiter: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._put(_Job(None, call, waiter))
        return waiter

    @property
    def alive(self) -> bool:
        """The writer thread runs and takes jobs (readiness)."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def _put(self, job: _Job) -> None:
        if self._thread is None or self._stopping:
            raise WriterStopped("the writer is not running")
        self._queue.put(job)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Job] = [first]
            size = first.size
            stop_after = False
            # Take what is already waiting: these requests share this commit.
            while size < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop_after = True
                    break
                batch.append(job)
                size += job.size
            metrics.QUEUE_DEPTH.set(self._queue.qsize())
            self._execute(batch)
            if stop_after:
                break
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._close_log_connection()

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        return self._conn

    def _execute(self, batch: list[_Job]) -> None:
        if self._postgres and all(job.checkin is not None for job in batch):
            self._log_autocommit(batch)
            return
        try:
            results = self._transaction(batch)
        except Exception:
            log.debug("group commit failed; retrying each job alone", exc_info=True)
            self._reset_connection()
            for job in batch:
                try:
                    (result,) = self._transaction([job])
                except Exception as exc:
                    self._reset_connection()
                    self._resolve([(job, exc)])
                else:
                    self._resolve([(job, result)])
            return
        self._resolve(list(zip(batch, results, strict=True)))

    def _transaction(self, batch: list[_Job]) -> list[Any]:
        conn = self._connection()
        # By the batch's positions: events are applied in groups, check-ins logged at the end.
        results: list[Any] = [None] * len(batch)
        kinds: list[str] = []
        started = time.perf_counter()
        with self.lock, conn.begin():
            pending: list[tuple[int, Sequence[Event]]] = []
            checkins: list[CheckIn] = []

            def flush() -> None:
                if not pending:
                    return
                flat = [event for _, events in pending for event in events]
                outcomes = self.pipeline.apply(conn, flat) if flat else []
                offset = 0
                for position, events in pending:
                    results[position] = outcomes[offset : offset + len(events)]
                    offset += len(events)
                kinds.extend(EVENT_KINDS.get(type(event), "other") for event in flat)
                pending.clear()

            for position, job in enumerate(batch):
                if job.checkin is not None:
                    checkins.append(job.checkin)
                elif job.events is not None:
                    pending.append((position, job.events))
                else:
                    flush()
                    assert job.call is not None
                    results[position] = job.call(conn)
            flush()
            if checkins:
                checkin_log.append(conn, checkins)
                kinds.extend("checkin" for _ in checkins)
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        if kinds:
            metrics.COMMIT_EVENTS.observe(len(kinds))
            metrics.count_events(kinds)
        return results

    def _log_autocommit(self, batch: list[_Job]) -> None:
        """PostgreSQL: log a batch of check-ins with one statement in autocommit mode."""
        checkins = [job.checkin for job in batch if job.checkin is not None]
        started = time.perf_counter()
        try:
            rows = checkin_log.log_rows(checkins)
            if self._log_conn is None or self._log_conn.closed:
                self._log_conn = self._open_log_connection()
            self._log_conn.execute(
                checkin_log.insert_statement(len(rows), postgres=True),
                checkin_log.flat_params(rows),
            )
        except Exception as exc:
            log.warning("logging %d check-ins failed: %s", len(checkins), exc)
            self._close_log_connection()
            self._resolve([(job, exc) for job in batch])
            return
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.COMMIT_EVENTS.observe(len(checkins))
        metrics.count_events(["checkin"] * len(checkins))
        self._resolve([(job, None) for job in batch])

    def _open_log_connection(self) -> Any:
        import psycopg

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        return psycopg.connect(*args, **kwargs, autocommit=True)

    def _close_log_connection(self) -> None:
        if self._log_conn is not None:
            try:
                self._log_conn.close()
            except Exception:
                log.debug("closing the check-in log connection", exc_info=True)
            self._log_conn = None

    def _reset_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                log.debug("closing a failed writer connection", exc_info=True)
            self._conn = None

    @staticmethod
    def _resolve(done: list[tuple[_Job, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for job, result in done:
            if job.loop is None:
                fut = job.waiter
                assert isinstance(fut, concurrent.futures.Future)
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
            else:
                assert isinstance(job.waiter, asyncio.Future)
                by_loop.setdefault(job.loop, []).append((job.waiter, result))
        # One wake-up per event loop for the whole batch, not one per request.
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:
                log.warning("an event loop closed before its writes were acknowledged")


def _settle(items: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, result in items:
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
