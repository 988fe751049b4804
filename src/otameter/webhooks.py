"""Org webhooks: an outbox of signed event deliveries, retried with backoff.

Events are written to ``webhook_deliveries`` in the same transaction as the change that
raised them, one row per webhook of the org, so they survive a restart. A dispatcher
(one thread per process) claims due rows, POSTs them and records the outcome.

Each delivery is a POST of the JSON event signed as Standard Webhooks do
(https://www.standardwebhooks.com/): ``webhook-id`` (the delivery id, the same on every
retry), ``webhook-timestamp`` (Unix seconds from the injected clock at the attempt) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the
webhook's secret as UTF-8 bytes; ``X-Otameter-Event`` names the event. Any 2xx answer is a
success; redirects are not followed. Otherwise the delivery is retried after
RETRY_BASE_SECONDS * 2**(attempt-1) seconds (capped at RETRY_MAX_SECONDS), and marked
``failed`` after MAX_ATTEMPTS attempts.

Targets must be public addresses (no loopback, private, link-local, multicast, reserved...),
unless the operator allows some networks (``OTAMETER_WEBHOOK_ALLOW_PRIVATE``). The address is
checked when a webhook is created and again at every connection, on the addresses the name
resolves to at that moment, and the connection goes to the address that was checked: a name
that later resolves elsewhere (DNS rebinding) gains nothing. The delivery log records only
generic reasons for refused or failed attempts, so it cannot be used to scan a network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import socket
import ssl
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
import orjson
from sqlalchemy import Connection, select, update

from . import metrics
from .clock import Clock, to_ms
from .config import Network
from .metering.writer import Writer
from .models.plans import WebhookDelivery
from .models.shapes import iso
from .storage import schema as s

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Otameter-Event"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
MAX_ATTEMPTS = 10
RETRY_BASE_SECONDS = 10
RETRY_MAX_SECONDS = 3600
# A claimed delivery is not claimed again for this long (covers a crash mid-request).
LEASE_SECONDS = 300
TIMEOUT_SECONDS = 10.0
BATCH = 20
MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 8

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

# What the delivery log says when no HTTP answer came back: never the socket's own error
# text (connection refused, no route, timed out...), which would map a network.
REFUSED_REASON = "refused: target address is not allowed"
INVALID_URL_REASON = "refused: invalid webhook URL"
NO_ANSWER_REASON = "failed: no HTTP answer from the target"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# -- signatures ----------------------------------------------------------------------------


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``v1`` signature of ``body`` sent as ``msg_id`` at ``timestamp``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers a Standard Webhooks receiver checks; every delivery goes through here."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, msg_id, timestamp, body),
    }


# -- targets -------------------------------------------------------------------------------


class TargetError(Exception):
    """A webhook URL that may not be used; ``str(exc)`` is the message for the caller."""


class TargetRefused(TargetError):
    """The target resolves to an address webhooks may not reach."""


class TargetUnresolved(TargetError):
    """The target's host does not resolve (now)."""


# A host as it goes on the wire: a DNS name (IDNA already applied), an IPv4 or an IPv6
# address. Percent signs (zone ids, encoded bytes) and anything else are refused.
_HOST_RE = re.compile(r"^[A-Za-z0-9._:-]+$")
# NAT64 (RFC 6052) carries an IPv4 address in its low 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_target(url: object) -> httpx.URL:
    """``url`` as an absolute http(s) URL without credentials or control characters."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise TargetError(
            f"'url' must be an absolute http(s) URL of at most {MAX_URL_LENGTH} characters"
        )
    if any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F or c.isspace() for c in url):
        raise TargetError("'url' must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError):
        raise TargetError("'url' is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not url.lower().startswith(parsed.scheme + ":"):
        raise TargetError("'url' must be an absolute http(s) URL")
    host = parsed.raw_host.decode("ascii", "replace")
    if not host or not _HOST_RE.match(host):
        raise TargetError("'url' must name a host")
    if parsed.userinfo:
        raise TargetError("'url' must not carry credentials")
    if port is not None and not 1 <= port <= 65535:
        raise TargetError("'url' has an invalid port")
    return parsed


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _public(address: IPAddress) -> bool:
    # is_global alone lets multicast, some reserved ranges and fec0::/10 through.
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_private
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_unspecified
        and not (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Which addresses webhooks may reach: public ones, and the operator's ``allow`` networks."""

    allow: tuple[Network, ...] = ()

    def permits(self, address: IPAddress) -> bool:
        forms: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            inner = _embedded_ipv4(address)
            if inner is not None:
                forms.append(inner)
        if any(f in net for f in forms for net in self.allow if f.version == net.version):
            return True
        return all(_public(f) for f in forms)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses ``host`` resolves to now; every one must be permitted."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise TargetUnresolved("'url' host does not resolve") from None
        addresses: list[IPAddress] = []
        for info in infos:
            # An IPv6 sockaddr may carry a scope ("fe80::1%eth0"): the address is before it.
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise TargetUnresolved("'url' host does not resolve")
        if not all(self.permits(a) for a in addresses):
            raise TargetRefused(
                "'url' resolves to an address webhooks may not reach (loopback, private, "
                "link-local, multicast or reserved); an operator may allow such networks "
                "with OTAMETER_WEBHOOK_ALLOW_PRIVATE"
            )
        return addresses

    def check(self, url: httpx.URL) -> None:
        """Raise a TargetError unless ``url``'s host resolves, to permitted addresses only."""
        self.resolve(url.raw_host.decode("ascii"), _port(url))


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves each connection's host itself, checks every address, connects to a checked one.

    httpcore then speaks TLS (SNI, certificate name) and HTTP (Host) for the original name,
    so nothing but the address choice changes.
    """

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                return self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise TargetRefused("webhooks do not use unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


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
        self,
        writer: Writer,
        clock: Clock,
        *,
        policy: TargetPolicy | None = None,
        timeout: float = TIMEOUT_SECONDS,
        batch: int = BATCH,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.batch = batch
        self.policy = policy or TargetPolicy()
        self._timeout = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        # httpcore directly: it never follows redirects, reads no proxy settings from the
        # environment, and lets the connection go through GuardedBackend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,  # None: httpcore's default (certifi's CAs)
            network_backend=GuardedBackend(self.policy),
            max_connections=BATCH,
            keepalive_expiry=TIMEOUT_SECONDS,
            retries=0,
        )

    def close(self) -> None:
        self._pool.close()

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
        try:
            url = parse_target(item.url)
        except TargetError:
            # Stored before URLs were checked as they are now: it will not become valid.
            return _Result(item.id, attempts, False, None, INVALID_URL_REASON, final=True)
        body = item.payload.encode()
        timestamp = int(self.clock.now().timestamp())
        headers = {
            "host": url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": "otameter-webhooks",
            EVENT_HEADER: item.event,
            **signed_headers(item.secret, str(item.id), timestamp, body),
        }
        target = httpcore.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
        )
        try:
            # The answer's body is never read: only its status matters.
            with self._pool.stream(
                "POST",
                target,
                headers=list(headers.items()),
                content=body,
                extensions={"timeout": self._timeout},
            ) as response:
                status = response.status
        except TargetRefused:
            return _Result(item.id, attempts, False, None, REFUSED_REASON)
        except (
            TargetUnresolved,
            httpcore.NetworkError,
            httpcore.TimeoutException,
            httpcore.ProtocolError,
            OSError,
            ValueError,
        ) as exc:
            log.info("webhook delivery %s: %s: %s", item.id, type(exc).__name__, exc)
            return _Result(item.id, attempts, False, None, NO_ANSWER_REASON)
        if 200 <= status < 300:
            return _Result(item.id, attempts, True, status, None)
        return _Result(item.id, attempts, False, status, f"HTTP {status}")


def delivery_json(row: Any) -> WebhookDelivery:
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
