"""An otameter webhook receiver that checks every delivery before trusting it.

otameter signs deliveries as Standard Webhooks (https://www.standardwebhooks.com/) do:

    webhook-id: 1234                    the delivery's id, the same on every retry
    webhook-timestamp: 1715774400       Unix seconds when this attempt was sent
    webhook-signature: v1,<base64>      HMAC-SHA256 of "<id>.<timestamp>.<body>", keyed with
                                        the webhook's secret as UTF-8 bytes

A receiver must check, in this order: the signature over the exact bytes received (with a
constant-time comparison), the timestamp (a captured request replayed later is refused),
and the id (a delivery retried after a lost answer is acknowledged, not handled twice).

Run it with the secret that ``POST /organization/ORG_ID/webhooks`` returned (or the one you
gave), standard library only:

    OTAMETER_WEBHOOK_SECRET=... python docs/webhook_receiver.py --port 8000
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Headers(Protocol):
    """A case-insensitive header lookup: http.server's headers, or a lower-case dict."""

    def get(self, name: str, /) -> str | None: ...


# How far the sender's clock may be from ours, and how long a replay stays possible.
TOLERANCE_SECONDS = 5 * 60
MAX_BODY = 1 << 20


class InvalidDelivery(Exception):
    """The request is not a genuine, fresh delivery: answer 400 and ignore it."""


def verify(
    secret: str,
    headers: Headers,
    body: bytes,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> dict[str, Any]:
    """The delivered event, once its signature and timestamp are checked; else InvalidDelivery.

    Header names are looked up in lower case: http.server's headers match any case.
    """
    msg_id = headers.get("webhook-id") or ""
    timestamp = headers.get("webhook-timestamp") or ""
    signatures = headers.get("webhook-signature") or ""
    if not msg_id or not timestamp or not signatures:
        raise InvalidDelivery("missing webhook-id, webhook-timestamp or webhook-signature")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    # The header may list several space-separated signatures (e.g. during a secret rotation).
    if not any(
        version == "v1" and hmac.compare_digest(value.encode(), expected)
        for version, _, value in (item.partition(",") for item in signatures.split(" "))
    ):
        raise InvalidDelivery("bad signature")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        raise InvalidDelivery("timestamp outside the tolerance")
    event: dict[str, Any] = json.loads(body)
    return event


class SeenIds:
    """Ids handled within the tolerance window: older ones cannot come back (timestamp check)."""

    def __init__(self, window: int = TOLERANCE_SECONDS) -> None:
        self.window = window
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, msg_id: str, now: float) -> bool:
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - 2 * self.window:
                self._seen.popitem(last=False)
            if msg_id in self._seen:
                return False
            self._seen[msg_id] = now
            return True


def make_handler(
    secret: str,
    on_event: Callable[[dict[str, Any]], None],
    now: Callable[[], float] = time.time,
) -> type[BaseHTTPRequestHandler]:
    seen = SeenIds()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if not 0 < length <= MAX_BODY:
                self._answer(400, "bad length")
                return
            body = self.rfile.read(length)
            at = now()
            try:
                event = verify(secret, self.headers, body, at)
            except (InvalidDelivery, ValueError) as exc:
                self._answer(400, str(exc))
                return
            if seen.first_time(self.headers["webhook-id"], at):
                on_event(event)
            # A repeat is acknowledged too, or the sender would keep retrying it.
            self._answer(200, "ok")

        def _answer(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    secret = os.environ.get("OTAMETER_WEBHOOK_SECRET", "")
    if len(secret) < 8:
        raise SystemExit("set OTAMETER_WEBHOOK_SECRET to the webhook's secret")

    def show(event: dict[str, Any]) -> None:
        print(event["event"], json.dumps(event["data"]), flush=True)

    server = ThreadingHTTPServer((args.host, args.port), make_handler(secret, show))
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
