"""Prometheus metrics of a process, and their text exposition for ``GET /metrics``.

With several worker processes (``serve --workers N``) a scrape reaches whichever process
the kernel hands the connection to, so per-process scraping cannot work behind one port.
``otameter serve`` then sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts, and
prometheus_client's multiprocess mode keeps each process's values in files there: whichever
process answers the scrape sums them all. The variable must be set before this module is
imported (prometheus_client picks its value store at import time).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The *_created series double every family for little use.
disable_created_metrics()  # type: ignore[no-untyped-call]
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

REQUESTS = Counter(
    "otameter_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "otameter_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
EVENTS = Counter(
    "otameter_events_ingested",
    "Events committed by the writer, by kind (check-in, download, upload, ...).",
    ["kind"],
)
COMMIT_EVENTS = Histogram(
    "otameter_group_commit_events",
    "Events per group commit of the writer.",
    buckets=BATCH_BUCKETS,
)
COMMIT_SECONDS = Histogram(
    "otameter_group_commit_duration_seconds",
    "Duration of a writer transaction, from BEGIN to the end of COMMIT.",
    buckets=LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "otameter_writer_queue_depth",
    "Jobs waiting for the writer after its latest batch was taken (summed over processes).",
    multiprocess_mode="livesum",
)
WEBHOOK_DELIVERIES = Counter(
    "otameter_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retry, failed).",
    ["outcome"],
)

UNMATCHED = "unmatched"  # a path no route knows: never its own label (unbounded otherwise)


class RequestMeter:
    """Request counts and latencies, gathered in plain Python on the event loop and moved
    into the Prometheus metrics by ``flush`` (each second, and before each scrape).

    A request then costs a dict lookup, a bisection and three additions (under a
    microsecond), not a counter increment and a histogram observation through
    prometheus_client (several microseconds, more in multiprocess mode, where every value is
    written to a memory-mapped file; ``bench/bench_metrics.py`` prints both). Only the
    event loop's thread calls both methods.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str, int], list[Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        entry = self._pending.get((route, method, status))
        if entry is None:
            entry = self._pending[(route, method, status)] = [0, 0.0, [0] * _BUCKET_SLOTS]
        entry[0] += 1
        entry[1] += seconds
        entry[2][bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (route, method, status), (count, total, buckets) in pending.items():
            REQUESTS.labels(route, method, str(status)).inc(count)
            _add_observations(REQUEST_SECONDS.labels(route, method), total, buckets)


# One slot per bucket bound, and the last for +Inf (what bisect_left gives past every bound).
_BUCKET_SLOTS = len(LATENCY_BUCKETS) + 1


def _add_observations(child: Histogram, total: float, counts: list[int]) -> None:
    """Add observations counted per bucket to a histogram child at once.

    prometheus_client keeps a child's sum in ``_sum`` and its per-bucket (not cumulative)
    counts in ``_buckets``, one per upper bound and +Inf last: ``Histogram.observe`` adds to
    them one value at a time, this adds many.
    """
    child._sum.inc(total)
    for slot, count in enumerate(counts):
        if count:
            child._buckets[slot].inc(count)


def count_events(kinds: Iterable[str]) -> None:
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    for kind, n in counts.items():
        EVENTS.labels(kind).inc(n)


class _RollupLag:
    """The rollup lag read at scrape time from the database, which every process shares."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "otameter_rollup_lag_seconds",
            "How long acknowledged facts may have waited for the rollup: 0 when none waits, "
            "else the time since the last complete rollup.",
            value=self.seconds,
        )


def exposition(rollup_lag_seconds: float) -> bytes:
    """The text format of every metric of this process (or of all processes, multiprocess)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    extra = CollectorRegistry()
    extra.register(_RollupLag(rollup_lag_seconds))
    return body + generate_latest(extra)


def process_exited(pid: int) -> None:
    """Drop a finished worker's live gauges (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
