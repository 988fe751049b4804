"""uvicorn's httptools protocol with the bounds it lacks: header size, header time, connections.

What uvicorn 0.54 enforces by itself (checked with real sockets, see tests/test_bounds.py):

- httptools: no bound on the request head at all (a 16 MB header is parsed and answered), no
  timer on a connection until its first response is sent (a client that connects and sends
  half a header, or nothing, holds the connection forever), ``timeout_keep_alive`` only
  between requests, ``limit_concurrency`` answers 503 but still accepts every connection;
- h11: ``h11_max_incomplete_event_size`` (16 KiB) ends an oversized head with a 400, not a
  431, and has no header timer either.

So the server keeps httptools (the faster parser) and adds, per connection:

- the request head (request line and headers) is at most ``max_header_bytes``: a longer one
  is answered 431 and the connection closed, having read at most that much plus one read;
- the head must be complete within ``header_timeout`` seconds of the connection opening or
  of its first byte (for a later request on a kept-alive connection): otherwise 408, closed;
- a request body must keep arriving: ``body_timeout`` seconds without a byte of it (while the
  server is reading) end the request with a 408 (or a plain close once the answer has
  begun), as nginx's ``client_body_timeout`` does;
- at most ``max_connections`` connections per process: one more is answered 503 and closed
  at once, before it can hold anything.

The time bounds are deadlines that one watch per event loop checks every
``WATCH_INTERVAL`` seconds (so a timeout ends up to that much late), not timers armed and
cancelled three times per request: on the check-in path those cost as much as the handler's
decode.

Answers are written by the protocol itself (the app never sees these requests) in the API's
error shape, with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

# uvloop reads at most this much per call: a head is over its bound at most one read late.
_READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000


_limits = ConnectionLimits()


def configure(limits: ConnectionLimits) -> None:
    """Set the bounds for the connections this process accepts (before it serves)."""
    global _limits
    _limits = limits


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that bounds the request head in size and time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _limits
        self._in_head = True
        # Raw bytes read while a head was incomplete (memory bound, checked per read) and the
        # exact size of the head as parsed (checked when the head is complete).
        self._head_read = 0
        self._head_size = 0
        # Deadlines (the loop's clock) that the process's watch checks, instead of a timer
        # armed and cancelled for every request: a header, a body, or None.
        self._head_deadline: float | None = None
        self._body_deadline: float | None = None
        self.watch: _Watch | None = None
        self._refused = False

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "Too many connections")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self.watch is not None:
            self.watch.protocols.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head and self._head_deadline is None:
            # The first bytes of a request on a kept-alive connection start its head's clock.
            self._arm_head_timer()
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            # Raised by on_headers_complete for a head over the bound (see below).
            if not self._refused:
                self._refuse(400, "Invalid HTTP request received")
            return
        except httptools.HttpParserError:
            self._refuse(400, "Invalid HTTP request received")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and not self._refused:
            self._head_read += len(data)
            if self._head_read > self.limits.max_header_bytes + _READ_SIZE:
                self._refuse(431, "Request header fields too large")

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_size = 0
        if self._head_deadline is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        if self._head_size > self.limits.max_header_bytes:
            self._refuse(431, "Request header fields too large")
            # Stops the parser: data_received sees HttpParserCallbackError.
            raise _HeadTooLarge
        self._in_head = False
        self._head_read = 0
        self._cancel_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope["method"] != "HEAD":
            # The ASGI task only starts on the loop's next turn: it writes through this.
            cycle.transport = _OneWriteTransport(self.transport, cycle)  # type: ignore[assignment]
        self._arm_body_timer()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm_body_timer()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_body_timer()
        # The next bytes on this connection begin another head.
        self._in_head = True
        self._head_read = 0

    # -- refusing --------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_deadline = self.loop.time() + self.limits.header_timeout
        _watch(self)

    def _cancel_head_timer(self) -> None:
        self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._in_head and not self._refused:
            self._refuse(408, "Request header not received in time")

    def _arm_body_timer(self) -> None:
        self._body_deadline = self.loop.time() + self.limits.body_timeout
        _watch(self)

    def _cancel_body_timer(self) -> None:
        self._body_deadline = None

    def _check_deadlines(self, now: float) -> None:
        if self._head_deadline is not None and now >= self._head_deadline:
            self._head_timed_out()
        if self._body_deadline is not None and now >= self._body_deadline:
            self._body_timed_out()

    def _body_timed_out(self) -> None:
        self._body_deadline = None
        if self._refused or self._in_head:
            return
        if self.flow is not None and self.flow.read_paused:
            # The server stopped reading (its handler is busy): not the client's silence.
            self._arm_body_timer()
            return
        self._refuse(408, "Request body not received in time")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` (unless a response is under way) and close the connection."""
        self._refused = True
        self._cancel_head_timer()
        self._cancel_body_timer()
        self._unset_keepalive_if_required()
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if busy and not cycle.response_started:
            # A request whose body stalled: its handler, waiting for the body, is told the
            # client left and writes nothing; this protocol answers for it.
            cycle.disconnected = True
            cycle.message_event.set()
            busy = False
        if not busy:
            body = orjson.dumps({"error": message, "status": "KO"})
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: application/json\r\n",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n\r\n",
                        body,
                    ]
                )
            )
        self.transport.close()


class _HeadTooLarge(Exception):
    pass


# How often the watch looks at the deadlines: a timeout ends at most this much late.
WATCH_INTERVAL = 0.25


class _Watch:
    """One timer per event loop that checks the deadlines of its watched connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.protocols: set[BoundedHttpToolsProtocol] = set()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, protocol: BoundedHttpToolsProtocol) -> None:
        self.protocols.add(protocol)
        if self.timer is None:
            self.timer = self.loop.call_later(WATCH_INTERVAL, self.look)

    def look(self) -> None:
        now = self.loop.time()
        for protocol in list(self.protocols):
            if protocol.transport is None or protocol.transport.is_closing():
                self.protocols.discard(protocol)
            else:
                protocol._check_deadlines(now)
        self.timer = self.loop.call_later(WATCH_INTERVAL, self.look) if self.protocols else None


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = weakref.WeakKeyDictionary()


def _watch(protocol: BoundedHttpToolsProtocol) -> None:
    """Have the loop's watch check this connection's deadlines until it closes."""
    watch = protocol.watch
    if watch is None:
        watch = _watches.get(protocol.loop)
        if watch is None:
            watch = _watches[protocol.loop] = _Watch(protocol.loop)
        protocol.watch = watch
    watch.add(protocol)


class _OneWriteTransport:
    """The transport as one response cycle sees it: its head waits for the body's first write.

    uvicorn writes an answer's status line and headers, then its body, in two ``write`` calls:
    two ``send`` system calls and two TCP segments for a small JSON answer (about a fifth of
    the event loop's time under load). Holding the head until the body's first write, or the
    end of the response for an answer without a body, makes the common answer one write.
    Anything written before the response starts (``100 Continue``) goes straight through; a
    HEAD answer, which uvicorn ends without a body write, is never wrapped.
    """

    __slots__ = ("_cycle", "_head", "_head_seen", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        if not self._head_seen and self._cycle.response_started:
            # uvicorn sets response_started just before it writes the head.
            self._head_seen = True
            self._head = data
            return
        head = self._head
        if head is None:
            self._transport.write(data)
        else:
            self._head = None
            self._transport.write(head + data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
