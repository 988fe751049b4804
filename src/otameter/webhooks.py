"""Org webhooks: an outbox of signed event deliveries, retried with backoff.

Events are written to ``webhook_deliveries`` in the same transaction as the change that
raised them, one row per webhook of the org, so they survive a restart. A dispatcher
(one thread per process) claims due rows, POSTs them and records the outcome.

Each delivery is a POST of the JSON event with the headers
``X-Otameter-Event`` (event name), ``X-Otameter-Delivery`` (delivery id) and
``X-Otameter-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body with the
webhook's secret. Any 2xx answer is a success. Otherwise the delivery is retried after
RETRY_BASE_SECONDS * 2**(attempt-1) seconds (capped at RETRY_MAX_SECONDS), and marked
``failed`` after MAX_ATTEMPTS attempts. Scheduling reads the injected clock.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from sqlalchemy import Connection, select, update

from . import metrics
from . import schema as s
from .clock import Clock, to_ms
from .writer import Writer

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Otameter-Signature"
EVENT_HEADER = "X-Otameter-Event"
DELIVERY_HEADER = "X-Otameter-Delivery"
MAX_ATTEMPTS = 10
RETRY_BASE_SECONDS = 10
RETRY_MAX_SECONDS = 3600
# A claimed delivery is not claimed again for this long (covers a crash mid-request).
LEASE_SECONDS = 300
TIMEOUT_SECONDS = 10.0
BATCH = 20

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


def retry_delay_seconds(attempts: int) -> int:
    """Wait after the ``attempts``-th failed attempt: 10 s, 20 s, 40 s, ... at most 1 h."""
    return int(min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)))


def enqueue_event(
    conn: Connection, org_id: str, event: str, data: dict[str, Any], now_ms: int
) -> int:
    """Queue ``event`` for every webhook of the org; returns how many deliveries were queued."""
    w = s.webhooks.c
    hook_ids = list(
        conn.scalars(select(w.id).where(w.org_id == org_id, w.deleted_at.is_(None)).order_by(w.id))
    )
    if not hook_ids:
        return 0
    payload = orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "event": event,
            "org_id": org_id,
            "created_at": datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(),
            "data": data,
        }
    ).decode()
    conn.execute(
        s.webhook_deliveries.insert(),
        [
            {
                "webhook_id": hook_id,
                "org_id": org_id,
                "event": event,
                "payload": payload,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now_ms,
                "created_at": now_ms,
            }
            for hook_id in hook_ids
        ],
    )
    return len(hook_ids)


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    url: str
    secret: str
    event: str
    payload: str
    attempts: int
    webhook_deleted: bool


@dataclass(frozen=True, slots=True)
class _Result:
    id: int
    attempts: int
    ok: bool
    status_code: int | None
    error: str | None
    final: bool = False


def _claim(conn: Connection, now_ms: int, limit: int) -> list[_Claimed]:
    d, w = s.webhook_deliveries.c, s.webhooks.c
    query = (
        select(d.id, d.event, d.payload, d.attempts, w.url, w.secret, w.deleted_at)
        .join(s.webhooks, w.id == d.webhook_id)
        .where(d.status == PENDING, d.next_attempt_at <= now_ms)
        .order_by(d.next_attempt_at, d.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        # Several processes may deliver: each row goes to one of them.
        query = query.with_for_update(skip_locked=True, of=s.webhook_deliveries)
    rows = conn.execute(query).all()
    if rows:
        conn.execute(
            update(s.webhook_deliveries)
            .where(d.id.in_([r.id for r in rows]))
            .values(next_attempt_at=now_ms + LEASE_SECONDS * 1000)
        )
    return [
        _Claimed(r.id, r.url, r.secret, r.event, r.payload, r.attempts, r.deleted_at is not None)
        for r in rows
    ]


def _record(conn: Connection, results: list[_Result], now_ms: int) -> None:
    for r in results:
        values: dict[str, Any] = {
            "attempts": r.attempts,
            "last_status_code": r.status_code,
            "last_error": r.error,
        }
        if r.ok:
            values.update(status=DELIVERED, delivered_at=now_ms, next_attempt_at=None)
        elif r.final or r.attempts >= MAX_ATTEMPTS:
            values.update(status=FAILED, next_attempt_at=None)
        else:
            values["next_attempt_at"] = now_ms + retry_delay_seconds(r.attempts) * 1000
        conn.execute(
            update(s.webhook_deliveries).where(s.webhook_deliveries.c.id == r.id).values(**values)
        )


def partial_claim(now_ms: int, limit: int) -> Callable[[Connection], list[_Claimed]]:
    return lambda conn: _claim(conn, now_ms, limit)


def partial_record(results: list[_Result], now_ms: int) -> Callable[[Connection], None]:
    return lambda conn: _record(conn, results, now_ms)


class WebhookDispatcher:
    """Delivers due webhook events; ``deliver_due`` is one pass (the worker calls it)."""

    def __init__(
        self, writer: Writer, clock: Clock, *, timeout: float = TIMEOUT_SECONDS, batch: int = BATCH
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.batch = batch
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def deliver_due(self) -> int:
        """Send every delivery due now; returns how many were attempted."""
        total = 0
        while True:
            claimed = self.writer.run_blocking(partial_claim(to_ms(self.clock.now()), self.batch))
            if not claimed:
                return total
            results = [self._send(item) for item in claimed]
            self.writer.run_blocking(partial_record(results, to_ms(self.clock.now())))
            for r in results:
                outcome = (
                    "delivered"
                    if r.ok
                    else "failed"
                    if r.final or r.attempts >= MAX_ATTEMPTS
                    else "retry"
                )
                metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
            total += len(claimed)
            if len(claimed) < self.batch:
                return total

    def _send(self, item: _Claimed) -> _Result:
        attempts = item.attempts + 1
        if item.webhook_deleted:
            return _Result(item.id, item.attempts, False, None, "webhook deleted", final=True)
        body = item.payload.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "otameter-webhooks",
            EVENT_HEADER: item.event,
            DELIVERY_HEADER: str(item.id),
            SIGNATURE_HEADER: sign(item.secret, body),
        }
        try:
            response = self._client.post(item.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _Result(item.id, attempts, False, None, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= response.status_code < 300:
            return _Result(item.id, attempts, True, response.status_code, None)
        return _Result(
            item.id, attempts, False, response.status_code, f"HTTP {response.status_code}"
        )


def delivery_json(row: Any) -> dict[str, Any]:
    def iso(ms: int | None) -> str | None:
        return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()

    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "event": row.event,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at) if row.status == PENDING else None,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
        "payload": orjson.loads(row.payload),
    }
