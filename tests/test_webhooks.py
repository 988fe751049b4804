"""Org webhooks: alerts once per cycle, lock/unlock events, spikes, signed and retried deliveries.

Deliveries go to a real HTTP server on 127.0.0.1, which the server reaches because these tests
allow 127.0.0.0/8 as an operator would with OTAMETER_WEBHOOK_ALLOW_PRIVATE (without it,
loopback targets are refused: tests/test_webhook_targets.py). Retries are driven by the
test's clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from otameter.webhooks import NO_ANSWER_REASON, retry_delay_seconds
from tests.harness import Harness, running
from tests.httpserver import QuietHandler, serving
from tests.test_ops import sample
from tests.test_plans import devices, put_on_plan, setup_org

SECRET = "s3cret-for-tests"
LOCAL = "127.0.0.0/8"


@pytest.fixture
def harness(db_url: str, tmp_path: Path) -> Iterator[Harness]:
    """Both engines, with loopback targets allowed for the local receiver."""
    with running(db_url, tmp_path / "data", webhook_allow_private=LOCAL) as h:
        yield h


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    # Status codes to answer with, in order; 200 once they run out.
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            bodies = [r.json for r in self.received]
        return [b for b in bodies if name is None or b["event"] == name]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as state:
        yield state


@contextmanager
def serving_receiver() -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 that records what it accepts (answers from ``statuses``)."""
    state = Receiver(url="")

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                status = state.statuses.pop(0) if state.statuses else 200
                if status == 200:
                    state.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    with serving(Handler) as port:
        state.url = f"http://127.0.0.1:{port}/hook"
        yield state


def add_webhook(h: Harness, key: str, org_id: str, url: str, secret: str = SECRET) -> str:
    r = h.client.post(
        f"/organization/{org_id}/webhooks",
        json={"url": url, "secret": secret},
        headers=h.auth(key),
    )
    assert r.status_code == 201, r.text
    assert "secret" not in r.json()
    hook_id: str = r.json()["id"]
    return hook_id


def deliveries(h: Harness, key: str, org_id: str, **params: str) -> list[dict[str, Any]]:
    r = h.client.get(
        f"/organization/{org_id}/webhooks/deliveries", params=params, headers=h.auth(key)
    )
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


def standard_webhooks_valid(
    secret: str, headers: dict[str, str], body: bytes, now: int, tolerance: int = 300
) -> bool:
    """The receiver's side of https://www.standardwebhooks.com/, written from the spec."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    mac = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    expected = base64.b64encode(mac)
    for candidate in headers.get("webhook-signature", "").split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


def verify_signature(item: Received, secret: str = SECRET) -> None:
    sent_at = int(item.headers["webhook-timestamp"])
    assert standard_webhooks_valid(secret, item.headers, item.body, now=sent_at)
    assert not standard_webhooks_valid(secret, item.headers, item.body + b" ", now=sent_at)
    assert not standard_webhooks_valid("another-secret", item.headers, item.body, now=sent_at)
    assert item.headers["x-otameter-event"] == item.json["event"]
    assert "x-otameter-signature" not in item.headers


def thresholds(receiver: Receiver, metric: str = "mau") -> list[int]:
    return [
        e["data"]["threshold"]
        for e in receiver.events("usage.threshold")
        if e["data"]["metric"] == metric
    ]


# -- alerts ----------------------------------------------------------------------------------


def test_each_alert_is_sent_once_per_cycle(harness: Harness, receiver: Receiver) -> None:
    h = harness
    key, org_id = setup_org(h)
    add_webhook(h, key, org_id, receiver.url)
    put_on_plan(h, org_id, "ten", mau=10, anchor=20)  # cycle 2024-04-20 .. 2024-05-19

    def step(new_devices: int) -> None:
        devices(h, new_devices)
        h.rollup()
        h.rollup()  # a second pass over the same figures raises nothing new
        h.rt.webhooks.deliver_due()

    step(4)
    assert thresholds(receiver) == []
    step(1)  # 5 of 10
    assert thresholds(receiver) == [50]
    step(1)
    assert thresholds(receiver) == [50]
    step(1)  # 7
    step(2)  # 9
    assert thresholds(receiver) == [50, 70, 90]
    step(1)  # 10: 100%, at the limit, not locked
    assert thresholds(receiver) == [50, 70, 90, 100]
    assert receiver.events("org.locked") == []
    step(1)  # 11: over
    (locked,) = receiver.events("org.locked")
    assert locked["org_id"] == org_id
    assert locked["data"]["code"] == "need_plan_upgrade" and locked["data"]["reason"]
    step(3)
    assert len(receiver.events("org.locked")) == 1
    assert thresholds(receiver) == [50, 70, 90, 100]
    for item in receiver.received:
        verify_signature(item)
        assert item.path == "/hook"
    first = receiver.events("usage.threshold")[0]["data"]
    assert first == {
        "metric": "mau",
        "threshold": 50,
        "used": 5,
        "limit": 10,
        "percent": 50.0,
        "plan": "ten",
        "cycle_start": "2024-04-20",
        "cycle_end": "2024-05-19",
    }

    # A new cycle: MAU starts from zero, the org is unlocked, and alerts may fire again.
    h.clock.set(datetime(2024, 5, 20, 0, 1, tzinfo=UTC))
    step(0)
    (unlocked,) = receiver.events("org.unlocked")
    assert unlocked["data"]["previous_code"] == "need_plan_upgrade"
    step(6)
    assert thresholds(receiver) == [50, 70, 90, 100, 50]
    assert receiver.events("usage.threshold")[-1]["data"]["cycle_start"] == "2024-05-20"

    listed = deliveries(h, key, org_id)
    assert len(listed) == len(receiver.received)
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in listed)
    assert listed[0]["id"] > listed[-1]["id"]  # newest first


def test_storage_and_bandwidth_thresholds(harness: Harness, receiver: Receiver) -> None:
    h = harness
    key, org_id = setup_org(h)
    add_webhook(h, key, org_id, receiver.url)
    storage = h.client.get(f"/organization/{org_id}/usage", headers=h.auth(key)).json()["storage"]
    put_on_plan(h, org_id, "s", storage=storage["used"] * 10 // 7 + 1)  # at 69.99%
    h.rollup()
    h.rt.webhooks.deliver_due()
    assert thresholds(receiver, "storage") == [50]
    assert thresholds(receiver, "bandwidth") == []


def test_spike_alert(harness: Harness, receiver: Receiver) -> None:
    h = harness
    key, org_id = setup_org(h)
    add_webhook(h, key, org_id, receiver.url)
    put_on_plan(h, org_id, "pro")
    # A week of 2 new devices a day is the baseline.
    for _ in range(7):
        devices(h, 2)
        h.rollup()
        h.clock.advance(timedelta(days=1))
    devices(h, 2)
    h.rollup()
    h.rt.webhooks.deliver_due()
    assert receiver.events("usage.spike") == []
    devices(h, 25)  # 27 new devices today against a baseline of 2
    h.rollup()
    devices(h, 5)
    h.rollup()
    h.rt.webhooks.deliver_due()
    spikes = {e["data"]["metric"]: e["data"] for e in receiver.events("usage.spike")}
    assert set(spikes) >= {"new_devices"}
    assert spikes["new_devices"]["day"] == "2024-05-22"
    assert spikes["new_devices"]["baseline"] == 2.0
    assert spikes["new_devices"]["value"] == 27  # once, when it crossed
    assert len(receiver.events("usage.spike")) == len(spikes)


# -- deliveries ------------------------------------------------------------------------------


def test_failed_delivery_is_retried_with_backoff_then_delivered(
    harness: Harness, receiver: Receiver
) -> None:
    h = harness
    key, org_id = setup_org(h)
    add_webhook(h, key, org_id, receiver.url)
    receiver.statuses = [500, 503]
    put_on_plan(h, org_id, "tiny", mau=1)
    devices(h, 2)
    h.rollup()  # 50/70/90/100 alerts and the lock: 5 events
    before = h.client.get("/metrics").text

    assert h.rt.webhooks.deliver_due() == 5
    # 500 on the first, 503 on the second, the others arrived.
    assert len(receiver.received) == 3
    pending = deliveries(h, key, org_id, status="pending")
    assert len(pending) == 2
    assert {d["last_status_code"] for d in pending} == {500, 503}
    assert all(d["attempts"] == 1 and d["last_error"] for d in pending)

    # Not due yet: nothing is sent before the backoff has passed.
    assert h.rt.webhooks.deliver_due() == 0
    receiver.statuses = [502]
    h.clock.advance(timedelta(seconds=retry_delay_seconds(1)))
    assert h.rt.webhooks.deliver_due() == 2
    assert len(receiver.received) == 4
    (still,) = deliveries(h, key, org_id, status="pending")
    assert still["attempts"] == 2 and still["last_status_code"] == 502
    h.clock.advance(timedelta(seconds=retry_delay_seconds(2) - 1))
    assert h.rt.webhooks.deliver_due() == 0
    h.clock.advance(timedelta(seconds=1))
    assert h.rt.webhooks.deliver_due() == 1

    assert deliveries(h, key, org_id, status="pending") == []
    done = deliveries(h, key, org_id, status="delivered")
    assert len(done) == 5 and sorted(d["attempts"] for d in done) == [1, 1, 1, 2, 3]
    assert sorted(e["event"] for e in receiver.events()) == ["org.locked"] + ["usage.threshold"] * 4
    ids = [e["id"] for e in receiver.events()]
    assert len(set(ids)) == 5  # each event arrived exactly once
    for item in receiver.received:
        verify_signature(item)

    # Every attempt is counted by its outcome.
    after = h.client.get("/metrics").text
    name = "otameter_webhook_deliveries_total"
    grew = {
        o: sample(after, name, outcome=o) - sample(before, name, outcome=o)
        for o in ("delivered", "retry", "failed")
    }
    assert grew == {"delivered": 5, "retry": 3, "failed": 0}


def test_unreachable_webhook_gives_up_after_max_attempts(harness: Harness) -> None:
    import socket

    from otameter.webhooks import MAX_ATTEMPTS

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    h = harness
    key, org_id = setup_org(h)
    add_webhook(h, key, org_id, f"http://127.0.0.1:{port}/nothing")
    put_on_plan(h, org_id, "tiny", mau=2)
    devices(h, 1)
    h.rollup()  # the 50% alert
    before = h.client.get("/metrics").text
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert h.rt.webhooks.deliver_due() == 1
        h.clock.advance(timedelta(seconds=retry_delay_seconds(attempt)))
    assert h.rt.webhooks.deliver_due() == 0
    (row,) = deliveries(h, key, org_id)
    assert row["status"] == "failed" and row["attempts"] == MAX_ATTEMPTS
    assert row["next_attempt_at"] is None
    # A generic reason, never the socket's error text ("Connection refused" maps ports).
    assert row["last_error"] == NO_ANSWER_REASON and row["last_status_code"] is None
    after = h.client.get("/metrics").text
    name = "otameter_webhook_deliveries_total"
    assert sample(after, name, outcome="retry") - sample(before, name, outcome="retry") == (
        MAX_ATTEMPTS - 1
    )
    assert sample(after, name, outcome="failed") - sample(before, name, outcome="failed") == 1


def test_deliveries_survive_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    db_url = f"sqlite:///{tmp_path}/otameter.db"
    with running(db_url, tmp_path / "data", webhook_allow_private=LOCAL) as h:
        key, org_id = setup_org(h)
        add_webhook(h, key, org_id, receiver.url)
        put_on_plan(h, org_id, "tiny", mau=1)
        devices(h, 2)
        h.rollup()
        assert len(deliveries(h, key, org_id, status="pending")) == 5
    assert receiver.received == []
    # A new process on the same database sends what the old one left.
    with running(db_url, tmp_path / "data", webhook_allow_private=LOCAL) as h:
        assert h.rt.webhooks.deliver_due() == 5
        assert len(deliveries(h, key, org_id, status="delivered")) == 5
    assert len(receiver.events()) == 5
    for item in receiver.received:
        verify_signature(item)


# -- the webhook API -------------------------------------------------------------------------


def test_webhook_api_needs_admin(harness: Harness, receiver: Receiver) -> None:
    h = harness
    key, org_id = setup_org(h)
    _, writer_key = h.user("writer@example.com")
    r = h.client.post(
        "/organization/members",
        json={"orgId": org_id, "email": "writer@example.com", "invite_type": "write"},
        headers=h.auth(key),
    )
    assert r.status_code == 200, r.text
    path = f"/organization/{org_id}/webhooks"
    body = {"url": receiver.url, "secret": SECRET}
    assert h.client.post(path, json=body, headers=h.auth(writer_key)).status_code == 403
    assert h.client.get(path, headers=h.auth(writer_key)).status_code == 403
    assert h.client.get(f"{path}/deliveries", headers=h.auth(writer_key)).status_code == 403
    # The writer may still read usage.
    usage = h.client.get(f"/organization/{org_id}/usage", headers=h.auth(writer_key))
    assert usage.status_code == 200
    _, stranger = h.user("stranger@example.com")
    hidden = h.client.post(path, json=body, headers=h.auth(stranger))
    missing = h.client.post(
        f"/organization/{uuid.uuid4()}/webhooks", json=body, headers=h.auth(stranger)
    )
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()

    bad = h.client.post(path, json={"url": "ftp://x", "secret": SECRET}, headers=h.auth(key))
    assert bad.status_code == 400 and bad.json()["status"] == "KO"
    short = h.client.post(path, json={"url": receiver.url, "secret": "x"}, headers=h.auth(key))
    assert short.status_code == 400

    made = h.client.post(path, json={"url": receiver.url}, headers=h.auth(key))
    assert made.status_code == 201 and len(made.json()["secret"]) >= 32
    hook_id = add_webhook(h, key, org_id, receiver.url)
    listed = h.client.get(path, headers=h.auth(key)).json()
    assert {w["id"] for w in listed} == {made.json()["id"], hook_id}
    assert all("secret" not in w for w in listed)
    assert h.client.delete(f"{path}/{hook_id}", headers=h.auth(key)).status_code == 200
    assert h.client.delete(f"{path}/{hook_id}", headers=h.auth(key)).status_code == 404
    assert [w["id"] for w in h.client.get(path, headers=h.auth(key)).json()] == [made.json()["id"]]


# -- background workers ----------------------------------------------------------------------


def test_background_workers_lock_and_deliver_within_seconds(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A server as deployed: rollups, plan checks and deliveries all run in the background."""
    import time

    from starlette.testclient import TestClient

    from otameter.api import create_app
    from otameter.clock import ManualClock
    from otameter.config import Settings, parse_networks
    from otameter.runtime import Runtime
    from otameter.storage.db import migrate
    from tests.harness import START

    db_url = f"sqlite:///{tmp_path}/otameter.db"
    migrate(db_url)
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        rollup_interval_seconds=0.1,
        public_url="http://otameter.test",
        webhook_allow_private=parse_networks(LOCAL),
    )
    rt = Runtime(settings, ManualClock(START))
    with TestClient(create_app(rt), base_url="http://otameter.test") as client:
        h = Harness(rt, client, rt.clock, tmp_path / "data")  # type: ignore[arg-type]
        key, org_id = setup_org(h)
        add_webhook(h, key, org_id, receiver.url)
        put_on_plan(h, org_id, "tiny", mau=1)
        known = devices(h, 2)
        # The contract: locked within 10 seconds of the event that put the org over.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not receiver.events("org.locked"):
            time.sleep(0.05)
        assert receiver.events("org.locked")
        body = h.checkin("com.example.plans", known[0]).json()
        # The catalog of this process was invalidated by the lock: no stale answer.
        assert body["kind"] == "blocked" and body["error"] == "need_plan_upgrade"
