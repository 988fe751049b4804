"""Rate limits on the plugin endpoints: requests per device, new devices per address.

Every limit must hold however requests are spread over processes (``--workers N``, or several
machines on one PostgreSQL), which share only the database. So the counts that decide live
in the database (``rate_counters``), written in writer transactions, and each check on the
hot path stays as cheap as the traffic it meets allows:

- **Requests per device and minute** (check-ins, ``/stats`` posts). Each process counts every
  device's requests in memory over a sliding minute. A device that sends no more than
  ``SHARE_AFTER`` requests a minute to this process (nearly every device: the plugin checks
  for an update when the app comes to the foreground) is served on that count alone. A busier
  device is counted in the database from then on, its requests so far in this minute
  included, through a writer transaction, and refused once its count over the sliding minute
  reaches the limit. The busy devices' requests of a moment are counted together (one batch,
  two statements, while the next batch gathers), so a load of busy devices costs the writer
  a few statements per group commit, not three per request. A device can thus slip at most
  ``SHARE_AFTER - 1`` requests a minute per process past the shared count, and the count
  never exceeds what the device really sent, so a device within the limit is never refused.
- **New devices per client address, app and hour.** Decided in the transaction that drains
  the check-in log into device rows (``checkin_log.consume`` calls
  :meth:`NewDeviceLimit.refuse` before it stores the drain's facts): the devices the app has
  not seen, counted against the allowance of their address and clock hour; the devices over
  it are refused, so they are never stored and never counted. The check-in was answered
  (200) when it was logged: the answer does not wait for the device table. An IPv6
  address is limited by its /64, which one subscriber usually holds whole. The refusals are
  added up per app and day in ``refused_devices``, which the statistics API and the
  dashboard show to the app's org.

The sliding minute is the usual two-window estimate (the previous fixed window's count,
weighted by how much of it still lies within the last minute, plus the current window's).
A library such as ``limits`` offers it but keeps its state in memory, Redis or Memcached,
and PyRateLimiter's SQL buckets store one row per hit over their own connections; neither
fits counters written inside the single writer's transactions.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import orjson
from sqlalchemy import Connection, bindparam, func, select, update

from .clock import Clock, day_of_ms, to_ms
from .metering.events import CheckIn
from .storage import schema as s
from .storage.dialect import dialect_insert

# Local requests a minute a device may send to one process before it is counted in the
# database (see the module's docstring).
SHARE_AFTER: Final = 3
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
# Local counts kept in memory before the previous window's are dropped early.
_LOCAL_CAP: Final = 200_000

Run = Callable[[Callable[[Connection], Any]], Any]


def address_key(ip: str) -> str:
    """The part of a client address that is limited: an IPv4 address, an IPv6 /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Taken:
    """What :func:`take_many` granted a subject: hits allowed, and its counts after them."""

    allowed: int
    current: int
    previous: int


@dataclass(slots=True)
class Ask:
    """A subject's hits in one window that a batch counts: already served, and asking."""

    served: int = 0
    asking: int = 0


def take_many(
    conn: Connection,
    scope: str,
    asks: dict[tuple[str, str, int], Ask],
    *,
    limit: int,
    previous_weight: float,
) -> dict[tuple[str, str, int], Taken]:
    """Count many subjects' hits in their windows at once, in a writer transaction.

    For each (app, subject, window), ``served`` hits were already answered and are counted
    whatever the limit; of ``asking`` more, as many are allowed as keep
    ``previous * previous_weight + current`` within ``limit``. Two statements for the whole
    batch: one upsert adds the served hits (rolling each row's windows) and returns the
    counts, one update adds the allowed hits. On PostgreSQL the upsert locks the rows, in key
    order (no deadlock between processes), until the transaction ends, so concurrent writers
    of several processes add up. A subject's window older than its row's (the minute turned
    in another process) is left as it is and allowed.
    """
    rows = [[a, s_, w, ask.served] for (a, s_, w), ask in sorted(asks.items())]
    sql = _ADD_POSTGRESQL if conn.dialect.name == "postgresql" else _ADD_SQLITE
    result = conn.exec_driver_sql(sql, (scope, orjson.dumps(rows).decode()))
    taken: dict[tuple[str, str, int], Taken] = {}
    grants: list[dict[str, Any]] = []
    for app_id, subject, window_start, hits, prev_hits in result:
        key = (app_id, subject, window_start)
        ask = asks.get(key)
        if ask is None:
            continue  # the row is in a later window than the one asked: see below
        current, previous = int(hits), int(prev_hits)
        room = math.floor(limit - previous * previous_weight - current + 1e-9)
        allowed = max(0, min(ask.asking, room))
        if allowed:
            grants.append({"a": app_id, "s": subject, "n": allowed})
        taken[key] = Taken(allowed, current + allowed, previous)
    for key, ask in asks.items():
        # The row had moved on to a later window: this minute is over for the subject.
        taken.setdefault(key, Taken(ask.asking, 0, 0))
    if grants:
        rc = s.rate_counters.c
        conn.execute(
            update(s.rate_counters)
            .where(rc.scope == scope, rc.app_id == bindparam("a"), rc.subject == bindparam("s"))
            .values(hits=rc.hits + bindparam("n")),
            grants,
        )
    return taken


def count_fixed_windows(
    conn: Connection, scope: str, asking: dict[tuple[str, str, int], int], limit: int
) -> dict[tuple[str, str, int], int]:
    """Count hits of many subjects (app, subject, window) at once; returns how many each may.

    One upsert adds every subject's hits and returns the totals; only the subjects it put
    over ``limit`` are written again, down to the limit (refused hits are not counted). On
    PostgreSQL the upsert locks the rows, in key order (no deadlock between processes),
    until the transaction ends.
    """
    rc = s.rate_counters.c
    # One statement text whatever the number of subjects (the rows as one JSON parameter):
    # building a multi-row INSERT anew for each batch cost more than running it.
    rows = [[app_id, subject, window, n] for (app_id, subject, window), n in sorted(asking.items())]
    sql = _COUNT_POSTGRESQL if conn.dialect.name == "postgresql" else _COUNT_SQLITE
    result = conn.exec_driver_sql(sql, (scope, orjson.dumps(rows).decode()))
    allowed: dict[tuple[str, str, int], int] = {}
    over: list[dict[str, Any]] = []
    for app_id, subject, window, hits in result:
        n = asking[(app_id, subject, window)]
        allowed[(app_id, subject, window)] = max(0, n - max(0, hits - limit))
        if hits > limit:
            over.append({"a": app_id, "s": subject})
    if over:
        conn.execute(
            update(s.rate_counters)
            .where(rc.scope == scope, rc.app_id == bindparam("a"), rc.subject == bindparam("s"))
            .values(hits=limit),
            over,
        )
    return allowed


_COUNT_SET = (
    " ON CONFLICT (scope, app_id, subject) DO UPDATE SET"
    " hits = CASE WHEN rate_counters.window_start = excluded.window_start"
    " THEN rate_counters.hits + excluded.hits ELSE excluded.hits END,"
    " prev_hits = CASE WHEN rate_counters.window_start = excluded.window_start"
    " THEN rate_counters.prev_hits"
    " WHEN rate_counters.window_start = excluded.window_start - 1 THEN rate_counters.hits"
    " ELSE 0 END,"
    " window_start = excluded.window_start"
    " RETURNING app_id, subject, window_start, hits"
)
_COUNT_SQLITE = (
    "INSERT INTO rate_counters (scope, app_id, subject, window_start, hits, prev_hits)"
    " SELECT ?, value->>0, value->>1, value->>2, value->>3, 0 FROM json_each(?)"
    " WHERE true ORDER BY key" + _COUNT_SET
)
_COUNT_POSTGRESQL = (
    "INSERT INTO rate_counters (scope, app_id, subject, window_start, hits, prev_hits)"
    " SELECT %s, e.v->>0, e.v->>1, (e.v->>2)::bigint, (e.v->>3)::integer, 0"
    " FROM json_array_elements(%s::json) WITH ORDINALITY AS e(v, n)"
    " ORDER BY e.n" + _COUNT_SET
)

# Adds served hits without ever moving a row back to an older window (GREATEST/max keep the
# later one): a batch may carry a window another process has already left.
_ADD_SET = (
    " ON CONFLICT (scope, app_id, subject) DO UPDATE SET"
    " hits = CASE WHEN rate_counters.window_start = excluded.window_start"
    " THEN rate_counters.hits + excluded.hits"
    " WHEN rate_counters.window_start < excluded.window_start THEN excluded.hits"
    " ELSE rate_counters.hits END,"
    " prev_hits = CASE WHEN rate_counters.window_start = excluded.window_start"
    " THEN rate_counters.prev_hits"
    " WHEN rate_counters.window_start = excluded.window_start - 1 THEN rate_counters.hits"
    " WHEN rate_counters.window_start < excluded.window_start THEN 0"
    " ELSE rate_counters.prev_hits END,"
    " window_start = {later}(rate_counters.window_start, excluded.window_start)"
    " RETURNING app_id, subject, window_start, hits, prev_hits"
)
_ADD_SQLITE = (
    "INSERT INTO rate_counters (scope, app_id, subject, window_start, hits, prev_hits)"
    " SELECT ?, value->>0, value->>1, value->>2, value->>3, 0 FROM json_each(?)"
    " WHERE true ORDER BY key" + _ADD_SET.format(later="max")
)
_ADD_POSTGRESQL = (
    "INSERT INTO rate_counters (scope, app_id, subject, window_start, hits, prev_hits)"
    " SELECT %s, e.v->>0, e.v->>1, (e.v->>2)::bigint, (e.v->>3)::integer, 0"
    " FROM json_array_elements(%s::json) WITH ORDINALITY AS e(v, n)"
    " ORDER BY e.n" + _ADD_SET.format(later="GREATEST")
)


def sliding_retry_after(current: int, previous: int, fraction: float, limit: int) -> int:
    """Seconds until a sliding minute at ``fraction`` of its window has room for one more."""
    need = limit - 1  # the estimate must fall to this for one more hit
    if current <= need:
        if previous <= 0:
            return 1
        # Within this window: previous * (1 - g) + current <= need.
        g = 1 - (need - current) / previous
        return max(1, math.ceil((g - fraction) * MINUTE_MS / 1000))
    # In the next window, this one's count is the previous: current * (1 - h) <= need.
    h = 1 - need / current
    return max(1, math.ceil((1 - fraction + h) * MINUTE_MS / 1000))


class DeviceRate:
    """Requests of one kind per device over a sliding minute, shared by every process.

    Requests that must be counted in the database wait for a batch: one writer job counts
    every device asking meanwhile (:func:`take_many`, two statements), while the next batch
    gathers, as the writer's group commit does for check-ins. The decisions are those of
    counting each request in turn: the batch sees the shared counts under its rows' locks.
    """

    def __init__(self, scope: str, limit: int, clock: Clock, run: Run) -> None:
        self.scope = scope
        self.limit = limit
        self._clock = clock
        self._run = run
        self._share_after = min(SHARE_AFTER, limit)
        self._window = -1
        self._current: dict[str, int] = {}
        self._previous: dict[str, int] = {}
        # Hits of this window already counted in the database, per device counted there.
        self._reported: dict[str, int] = {}
        self._gathering: _Batch | None = None
        self._counting = False

    def _roll(self, window: int) -> None:
        self._previous = self._current if window == self._window + 1 else {}
        self._current = {}
        self._reported = {}
        self._window = window

    async def admit(self, app_id: str, device_id: str) -> int | None:
        """None when the request may be served, else the seconds to wait (Retry-After)."""
        now_ms = to_ms(self._clock.now())
        window, offset = divmod(now_ms, MINUTE_MS)
        if window != self._window:
            self._roll(window)
        fraction = offset / MINUTE_MS
        key = f"{app_id}\x1f{device_id}"
        current = self._current.get(key, 0)
        local = self._previous.get(key, 0) * (1 - fraction) + current
        if local + 1 <= self._share_after and key not in self._reported:
            if len(self._current) >= _LOCAL_CAP:
                self._previous = {}
            self._current[key] = current + 1
            return None
        served = current - self._reported.get(key, 0)
        # Claimed before waiting: a concurrent request of the device does not count them again.
        self._reported[key] = current
        batch = self._gathering
        if batch is None or batch.window != window:
            if batch is not None:
                self._gathering = None
                self._count(batch)  # an earlier minute's requests: counted on their own
            batch = self._gathering = _Batch(window, fraction)
        batch.fraction = fraction
        ask = batch.asks.setdefault((app_id, device_id, window), Ask())
        ask.served += served
        ask.asking += 1
        waiter: asyncio.Future[Taken] = asyncio.get_running_loop().create_future()
        batch.waiters.append(((app_id, device_id, window), waiter))
        if not self._counting:
            self._gathering = None
            self._count(batch)
        taken = await waiter
        if window != self._window:  # the minute turned while the writer counted
            return None if taken.allowed else 1
        if taken.allowed:
            self._current[key] = self._current.get(key, 0) + 1
            self._reported[key] = self._reported.get(key, 0) + 1
            return None
        return sliding_retry_after(taken.current, taken.previous, fraction, self.limit)

    def _count(self, batch: _Batch) -> None:
        self._counting = True
        task = asyncio.ensure_future(self._count_batch(batch))
        _running.add(task)
        task.add_done_callback(_running.discard)

    async def _count_batch(self, batch: _Batch) -> None:
        try:
            taken = await self._run(
                lambda conn: take_many(
                    conn,
                    self.scope,
                    batch.asks,
                    limit=self.limit,
                    previous_weight=1 - batch.fraction,
                )
            )
        except Exception as exc:
            for _, waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        finally:
            self._counting = False
            following = self._gathering
            if following is not None:
                self._gathering = None
                self._count(following)
        # A device's allowed hits go to its requests in the order they came.
        left = {key: granted.allowed for key, granted in taken.items()}
        for key, waiter in batch.waiters:
            granted = taken[key]
            allowed = left[key] > 0
            left[key] -= allowed
            if not waiter.done():
                waiter.set_result(Taken(int(allowed), granted.current, granted.previous))


@dataclass(slots=True)
class _Batch:
    """Requests of one minute waiting to be counted together."""

    window: int
    fraction: float
    asks: dict[tuple[str, str, int], Ask] = field(default_factory=dict)
    waiters: list[tuple[tuple[str, str, int], asyncio.Future[Taken]]] = field(default_factory=list)


# Counting tasks in flight (the event loop keeps only weak references to tasks).
_running: set[asyncio.Future[None]] = set()


class NewDeviceLimit:
    """New devices per client address, app and clock hour; decided when the log is drained."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def refuse(
        self, conn: Connection, arrivals: dict[tuple[str, str], Arrival]
    ) -> set[tuple[str, str]]:
        """The devices of a log drain that are refused (see :func:`refuse_arrivals`)."""
        return refuse_arrivals(conn, self.limit, arrivals)


@dataclass(slots=True)
class Arrival:
    """A device's live check-ins in one drain of the check-in log (for the new-devices limit)."""

    # The limited part of the address of its first check-in, and that check-in's hour.
    address: str
    hour: int
    # The times of its check-ins: each is counted as refused if the device is.
    times: list[int]


def note_arrival(arrivals: dict[tuple[str, str], Arrival], c: CheckIn) -> None:
    """Record a live check-in while the log is drained (first check-in of a device first)."""
    if not c.live or not c.ip:
        return
    key = (c.app_id, c.device_id)
    arrival = arrivals.get(key)
    if arrival is None:
        arrivals[key] = Arrival(address_key(c.ip), c.at_ms // HOUR_MS, [c.at_ms])
    else:
        arrival.times.append(c.at_ms)


def refuse_arrivals(
    conn: Connection, limit: int, arrivals: dict[tuple[str, str], Arrival]
) -> set[tuple[str, str]]:
    """The devices of a log drain over their address's new-devices allowance, in the drain's
    write transaction: counted in ``rate_counters``, their check-ins added to
    ``refused_devices``. The caller stores nothing of them.

    The devices the app has not seen are counted against the allowance of the address and
    clock hour of their first check-in in the drain, in the order they arrived.
    """
    if not arrivals:
        return set()
    unseen = _unseen_devices(conn, list(arrivals))
    if not unseen:
        return set()
    # The new devices of each (app, address, hour), in arrival order; one counting statement
    # per hour (a statement counts each counter row once).
    by_hour: dict[int, dict[tuple[str, str, int], list[str]]] = {}
    for (app_id, device_id), arrival in arrivals.items():
        if (app_id, device_id) in unseen:
            group = (app_id, arrival.address, arrival.hour)
            by_hour.setdefault(arrival.hour, {}).setdefault(group, []).append(device_id)
    refused: set[tuple[str, str]] = set()
    for hour in sorted(by_hour):
        groups = by_hour[hour]
        allowed = count_fixed_windows(
            conn,
            "new_devices",
            {group: len(devices) for group, devices in groups.items()},
            limit,
        )
        for group, devices in groups.items():
            refused.update((group[0], device_id) for device_id in devices[allowed[group] :])
    per_day: dict[tuple[str, date], int] = {}
    for app_id, device_id in refused:
        for at_ms in arrivals[(app_id, device_id)].times:
            day = day_of_ms(at_ms)
            per_day[(app_id, day)] = per_day.get((app_id, day), 0) + 1
    _count_refused(conn, per_day)
    return refused


def _unseen_devices(conn: Connection, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (app, device) pairs that have no device row yet."""
    by_app: dict[str, set[str]] = {}
    for app_id, device_id in pairs:
        by_app.setdefault(app_id, set()).add(device_id)
    postgres = conn.dialect.name == "postgresql"
    sql = _KNOWN_POSTGRESQL if postgres else _KNOWN_SQLITE
    unseen: set[tuple[str, str]] = set()
    for app_id, device_ids in by_app.items():
        ids = orjson.dumps(sorted(device_ids)).decode()
        known = {row[0] for row in conn.exec_driver_sql(sql, (app_id, ids))}
        unseen.update((app_id, device_id) for device_id in device_ids - known)
    return unseen


# The devices of one app, among a JSON array of ids, that have a row (its unique index).
# ORDER BY e.key keeps SQLite's planner driving the join from the array, not the table.
_KNOWN_SQLITE = (
    "SELECT d.device_id FROM json_each(?2) AS e"
    " JOIN devices AS d ON d.app_id = ?1 AND d.device_id = e.value ORDER BY e.key"
)
_KNOWN_POSTGRESQL = (
    "SELECT device_id FROM devices WHERE app_id = %s"
    " AND device_id IN (SELECT json_array_elements_text(%s::json))"
)


def _count_refused(conn: Connection, per_day: dict[tuple[str, date], int]) -> None:
    table = s.refused_devices
    for (app_id, day), count in sorted(per_day.items()):
        stmt = dialect_insert(conn, table).values(app_id=app_id, day=day, checkins=count)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["app_id", "day"],
                set_={"checkins": table.c.checkins + stmt.excluded.checkins},
            )
        )


def refused_by_day(conn: Connection, app_ids: list[str], lo: date, hi: date) -> dict[date, int]:
    """Check-ins refused by the new-devices limit, per day of ``lo..hi``, summed over apps."""
    if not app_ids:
        return {}
    r = s.refused_devices.c
    rows = conn.execute(
        select(r.day, func.sum(r.checkins))
        .where(r.app_id.in_(app_ids), r.day >= lo, r.day <= hi)
        .group_by(r.day)
    )
    return {day: int(total) for day, total in rows}


def prune(conn: Connection, now_ms: int) -> int:
    """Delete counters whose windows are over (run now and then; returns rows deleted)."""
    rc = s.rate_counters.c
    minute_done = conn.execute(
        s.rate_counters.delete().where(
            rc.scope != "new_devices", rc.window_start < now_ms // MINUTE_MS - 1
        )
    ).rowcount
    hour_done = conn.execute(
        s.rate_counters.delete().where(
            rc.scope == "new_devices", rc.window_start < now_ms // HOUR_MS
        )
    ).rowcount
    return int(minute_done or 0) + int(hour_done or 0)


class Limits:
    """The rate limits of one process."""

    def __init__(
        self,
        *,
        checkins_per_minute: int,
        stats_per_minute: int,
        new_devices_per_hour: int,
        clock: Clock,
        run: Run,
    ) -> None:
        self.checkins = DeviceRate("checkins", checkins_per_minute, clock, run)
        self.stats = DeviceRate("stats", stats_per_minute, clock, run)
        self.new_devices = NewDeviceLimit(new_devices_per_hour)
