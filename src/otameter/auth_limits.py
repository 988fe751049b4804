"""Failed authentications per client address: a fixed-window counter kept in the database.

Every process of a deployment (``--workers N``, or several machines on one PostgreSQL)
shares only the database, so the counter lives there: a per-process counter (an in-memory
limiter such as ``limits``' memory storage) would let each process grant the full allowance
again, and the libraries' shared storages (Redis, memcached) are services this deployment
does not have. A fixed window is one row per address and one upsert per failure.

Only failures are written: a valid key is looked up first and never refused here, and once
an address is over its limit this process remembers it until the window ends, so further
failures from it cost no write at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection, case, delete

from .clock import Clock, to_ms
from .metering.writer import Writer
from .storage import schema as s
from .storage.dialect import dialect_insert

# Addresses remembered as blocked, per process, before expired entries are dropped.
_MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class Limit:
    max_failures: int
    window_seconds: int

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0 and self.window_seconds > 0


def count_failure(conn: Connection, scope: str, address: str, now_ms: int, window_ms: int) -> int:
    """Count one failure of ``address`` in the current window; returns the window's count."""
    window_start = now_ms - now_ms % window_ms
    t = s.auth_failures
    # Rows of this scope's earlier windows count for nothing any more (scopes may have
    # windows of different lengths, so each purges only its own).
    conn.execute(delete(t).where(t.c.scope == scope, t.c.window_start < window_start))
    insert = dialect_insert(conn, t).values(
        scope=scope, address=address, window_start=window_start, failures=1
    )
    # Both engines evaluate SET from the old row, so the CASE sees the stored window.
    insert = insert.on_conflict_do_update(
        index_elements=["scope", "address"],
        set_={
            "failures": case(
                (t.c.window_start == insert.excluded.window_start, t.c.failures + 1), else_=1
            ),
            "window_start": insert.excluded.window_start,
        },
    ).returning(t.c.failures)
    return int(conn.execute(insert).scalar_one())


class FailedAuthLimiter:
    """Allows ``limit.max_failures`` failed authentications per address and window."""

    def __init__(self, writer: Writer, clock: Clock, scope: str, limit: Limit) -> None:
        self.writer = writer
        self.clock = clock
        self.scope = scope
        self.limit = limit
        self._blocked_until: dict[str, int] = {}

    async def failed(self, address: str | None) -> int | None:
        """Record a failure; returns the seconds to wait if the address is over its limit."""
        if address is None or not self.limit.enabled:
            return None
        now_ms = to_ms(self.clock.now())
        until = self._blocked_until.get(address)
        if until is not None and until > now_ms:
            return _seconds(until - now_ms)
        window_ms = self.limit.window_seconds * 1000
        failures = await self.writer.run(
            partial(
                count_failure, scope=self.scope, address=address, now_ms=now_ms, window_ms=window_ms
            )
        )
        if failures <= self.limit.max_failures:
            return None
        window_end = now_ms - now_ms % window_ms + window_ms
        if len(self._blocked_until) >= _MAX_REMEMBERED:
            self._blocked_until = {a: t for a, t in self._blocked_until.items() if t > now_ms}
        self._blocked_until[address] = window_end
        return _seconds(window_end - now_ms)


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))
