"""Webhook targets and signatures against an attacker: no internal addresses, no redirects,
URLs checked as URLs, a delivery log that maps nothing, Standard Webhooks signatures, and the
receiver example in docs/ checking them.

Receivers are real HTTP servers on 127.0.0.1; a server reaches them only where a test allows
127.0.0.0/8 as an operator would (OTAMETER_WEBHOOK_ALLOW_PRIVATE).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from otameter.clock import to_ms
from otameter.config import Settings, parse_networks
from otameter.storage import schema as s
from otameter.webhooks import (
    INVALID_URL_REASON,
    NO_ANSWER_REASON,
    REFUSED_REASON,
    TargetPolicy,
    WebhookDispatcher,
    retry_delay_seconds,
)
from tests.harness import Harness, running
from tests.httpserver import QuietHandler, serving
from tests.test_plans import devices, put_on_plan, setup_org
from tests.test_webhooks import (
    LOCAL,
    SECRET,
    Receiver,
    add_webhook,
    deliveries,
    serving_receiver,
    standard_webhooks_valid,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "webhook_receiver.py"

# Every way of naming a non-public address that the issue and the usual SSRF lists name.
REFUSED_TARGETS = [
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://2130706433/",  # 127.0.0.1 as one decimal integer
    "http://0x7f000001/",  # ... in hex
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",  # ... in octal
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",  # 169.254.169.254, mapped
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://192.0.2.1/",
    "https://198.18.0.1/",
]

MALFORMED_URLS = [
    "http://8.8.8.8/hook\r\nX-Injected: 1",
    "http://8.8.8.8/hook\n",
    "http://8.8.8.8/\thook",
    "http://8.8.8.8/\x00",
    "http://8.8.8.8/\x7f",
    " http://8.8.8.8/",
    "http://8.8.8.8/a b",
    "http://user:password@8.8.8.8/",
    "http://user@8.8.8.8/",
    "ftp://8.8.8.8/",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "gopher://8.8.8.8:70/",
    "//8.8.8.8/",
    "8.8.8.8",
    "http:///hook",
    "http://:80/",
    "http://8.8.8.8:0/",
    "http://8.8.8.8:99999/",
    "http://[fe80::1%25eth0]/",
    "http://exa%20mple.com/",
    "http://" + "a" * 2048 + ".com/",
    "",
    42,
    None,
]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as state:
        yield state


@pytest.fixture
def local(db_url: str, tmp_path: Path) -> Iterator[Harness]:
    """Both engines, loopback allowed: deliveries reach the receivers on 127.0.0.1."""
    with running(db_url, tmp_path / "data", webhook_allow_private=LOCAL) as h:
        yield h


def hooks(h: Harness, key: str, org_id: str) -> list[dict[str, Any]]:
    r = h.client.get(f"/organization/{org_id}/webhooks", headers=h.auth(key))
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


def create(h: Harness, key: str, org_id: str, url: object) -> httpx.Response:
    return h.client.post(
        f"/organization/{org_id}/webhooks", json={"url": url, "secret": SECRET}, headers=h.auth(key)
    )


def alert(h: Harness) -> None:
    """One new event for the org's webhooks (a 50% MAU alert, or the next one)."""
    devices(h, 1)
    h.rollup()


# -- creation ------------------------------------------------------------------------------


def test_non_public_targets_are_refused_when_created(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    for url in REFUSED_TARGETS:
        r = create(h, key, org_id, url)
        assert r.status_code == 400, (url, r.text)
        assert r.json()["status"] == "KO", url
        # httpx itself refuses a few spellings (leading-zero octets) as invalid URLs.
        assert "may not reach" in r.json()["error"] or "0177" in url, (url, r.text)
    for url in MALFORMED_URLS:
        r = create(h, key, org_id, url)
        assert r.status_code == 400, (url, r.text)
        assert set(r.json()) == {"error", "status"} and "'url'" in r.json()["error"], url
    unknown = create(h, key, org_id, "http://no-such-host.invalid/hook")
    assert unknown.status_code == 400 and "does not resolve" in unknown.json()["error"]
    assert hooks(h, key, org_id) == []

    # Public addresses are fine (nothing is sent at creation).
    for url in ("https://8.8.8.8/hook", "http://[2606:4700:4700::1111]:8443/x?y=1"):
        assert create(h, key, org_id, url).status_code == 201, url
    assert {w["url"] for w in hooks(h, key, org_id)} == {
        "https://8.8.8.8/hook",
        "http://[2606:4700:4700::1111]:8443/x?y=1",
    }


def test_resolution_waits_for_access(harness: Harness) -> None:
    """A caller who may not manage the org gets the same 404 whatever the URL resolves to."""
    h = harness
    _, org_id = setup_org(h)
    _, stranger = h.user("stranger@example.com")
    answers = {
        url: create(h, stranger, org_id, url)
        for url in ("http://10.0.0.1/", "http://no-such-host.invalid/", "https://8.8.8.8/")
    }
    assert {r.status_code for r in answers.values()} == {404}
    assert len({r.text for r in answers.values()}) == 1


def test_operator_allowed_networks(db_url: str, tmp_path: Path) -> None:
    with running(db_url, tmp_path / "data", webhook_allow_private="127.0.0.0/8,fd00::/8") as h:
        key, org_id = setup_org(h)
        for url in ("http://127.0.0.1:9/", "http://localhost:9/", "http://[fd00::5]/"):
            assert create(h, key, org_id, url).status_code == 201, url
        # Only the networks allowed: the rest stays refused.
        for url in ("http://[::1]/", "http://10.0.0.1/", "http://169.254.169.254/"):
            assert create(h, key, org_id, url).status_code == 400, url


def test_allowed_networks_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTAMETER_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8, 10.1.0.0/16,fd00::1")
    settings = Settings.from_env()
    assert settings.webhook_allow_private == parse_networks("127.0.0.0/8,10.1.0.0/16,fd00::1/128")
    policy = TargetPolicy(settings.webhook_allow_private)
    ip = ipaddress.ip_address
    assert policy.permits(ip("10.1.2.3")) and policy.permits(ip("::ffff:127.0.0.9"))
    assert not policy.permits(ip("10.2.0.1")) and not policy.permits(ip("::1"))
    assert policy.permits(ip("8.8.8.8")) and not TargetPolicy().permits(ip("127.0.0.1"))
    monkeypatch.setenv("OTAMETER_WEBHOOK_ALLOW_PRIVATE", "10.0.0.0/33")
    with pytest.raises(ValueError, match="OTAMETER_WEBHOOK_ALLOW_PRIVATE"):
        Settings.from_env()


# -- delivery ------------------------------------------------------------------------------


def test_target_is_checked_again_at_every_connection(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """A name allowed at creation that no longer resolves to an allowed address gets nothing.

    The second server runs without the allowance, as if ``localhost`` now pointed somewhere
    forbidden (DNS rebinding): the check happens when connecting, not only when creating.
    """
    url = receiver.url.replace("127.0.0.1", "localhost")
    port = url.split(":")[2].split("/")[0]
    with running(db_url, tmp_path / "data", webhook_allow_private=LOCAL) as h:
        key, org_id = setup_org(h)
        add_webhook(h, key, org_id, url)
        put_on_plan(h, org_id, "tiny", mau=4)
        alert(h)  # 25%: nothing
        alert(h)  # 50%
        assert h.rt.webhooks.deliver_due() == 1
        (first,) = receiver.received
        # The connection went to the checked address, with the name in Host.
        assert first.headers["host"] == f"localhost:{port}"
    with running(db_url, tmp_path / "data") as h:
        alert(h)  # 75%: the 70% alert
        assert h.rt.webhooks.deliver_due() == 1
        assert len(receiver.received) == 1
        refused = deliveries(h, key, org_id, status="pending")
        assert [(d["last_error"], d["last_status_code"]) for d in refused] == [
            (REFUSED_REASON, None)
        ]


def test_stored_targets_that_no_longer_work(harness: Harness) -> None:
    """Rows stored before URLs were checked, or whose name stopped resolving, are handled."""
    h = harness
    key, org_id = setup_org(h)
    urls = {
        "crlf": "http://8.8.8.8/x\r\nX-Injected: 1",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "gone": "http://no-such-host.invalid/hook",
    }
    now = to_ms(h.clock.now())
    h.rt.writer.run_blocking(
        lambda conn: conn.execute(
            s.webhooks.insert(),
            [
                {"id": name, "org_id": org_id, "url": url, "secret": SECRET, "created_at": now}
                for name, url in urls.items()
            ],
        )
    )
    put_on_plan(h, org_id, "tiny", mau=2)
    alert(h)
    assert h.rt.webhooks.deliver_due() == 3
    outcome = {
        d["webhook_id"]: (d["status"], d["last_error"], d["last_status_code"])
        for d in deliveries(h, key, org_id)
    }
    assert outcome == {
        "crlf": ("failed", INVALID_URL_REASON, None),
        "metadata": ("pending", REFUSED_REASON, None),
        "gone": ("pending", NO_ANSWER_REASON, None),
    }


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the name ``localhost`` only."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_speaks_to_the_name_on_the_checked_address(local: Harness, tmp_path: Path) -> None:
    """TLS verifies the certificate against the URL's name (and sends it as SNI) while the
    connection goes to the address that was checked."""
    h = local
    cert, private_key = _certificate(tmp_path)
    names: list[str | None] = []
    hosts: list[str] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            hosts.append(self.headers["host"])
            self.send_response(204)
            self.end_headers()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, private_key)

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = record_sni
    trusting = ssl.create_default_context(cafile=str(cert))
    dispatcher = WebhookDispatcher(
        h.rt.writer, h.clock, policy=h.rt.webhook_policy, ssl_context=trusting
    )
    with serving(Handler, tls=context) as port:
        try:
            key, org_id = setup_org(h)
            by_name = add_webhook(h, key, org_id, f"https://localhost:{port}/tls")
            by_address = add_webhook(h, key, org_id, f"https://127.0.0.1:{port}/tls")
            put_on_plan(h, org_id, "tiny", mau=2)
            alert(h)
            assert dispatcher.deliver_due() == 2
        finally:
            dispatcher.close()
    outcome = {d["webhook_id"]: (d["status"], d["last_error"]) for d in deliveries(h, key, org_id)}
    assert outcome[by_name] == ("delivered", None)
    assert hosts == [f"localhost:{port}"] and "localhost" in names
    # The certificate names localhost only: by address, verification fails.
    assert outcome[by_address] == ("pending", NO_ANSWER_REASON)


def test_redirects_are_not_followed(local: Harness, receiver: Receiver) -> None:
    h = local
    key, org_id = setup_org(h)
    hits: list[str] = []

    class Redirect(QuietHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(307)
            self.send_header("location", receiver.url)
            self.send_header("content-length", "0")
            self.end_headers()

    with serving(Redirect) as port:
        add_webhook(h, key, org_id, f"http://127.0.0.1:{port}/moved")
        put_on_plan(h, org_id, "tiny", mau=2)
        alert(h)
        assert h.rt.webhooks.deliver_due() == 1
    assert hits == ["/moved"] and receiver.received == []
    (row,) = deliveries(h, key, org_id)
    assert row["status"] == "pending" and row["last_status_code"] == 307


def test_signature_headers_follow_standard_webhooks(local: Harness, receiver: Receiver) -> None:
    h = local
    key, org_id = setup_org(h)
    add_webhook(h, key, org_id, receiver.url)
    put_on_plan(h, org_id, "tiny", mau=2)
    receiver.statuses = [500]  # the first attempt fails, the retry arrives
    alert(h)
    assert h.rt.webhooks.deliver_due() == 1
    assert receiver.received == []
    h.clock.advance(timedelta(seconds=retry_delay_seconds(1)))
    assert h.rt.webhooks.deliver_due() == 1
    (item,) = receiver.received
    (row,) = deliveries(h, key, org_id)
    # The id is the delivery's, kept across retries; the timestamp is this attempt's clock.
    assert item.headers["webhook-id"] == str(row["id"]) and row["attempts"] == 2
    sent_at = int(h.clock.now().timestamp())
    assert item.headers["webhook-timestamp"] == str(sent_at)
    assert item.headers["webhook-signature"].startswith("v1,")
    assert standard_webhooks_valid(SECRET, item.headers, item.body, now=sent_at)
    # Replayed later than a receiver's tolerance, or re-dated, it no longer verifies.
    assert not standard_webhooks_valid(SECRET, item.headers, item.body, now=sent_at + 301)
    redated = {**item.headers, "webhook-timestamp": str(sent_at + 60)}
    assert not standard_webhooks_valid(SECRET, redated, item.body, now=sent_at + 60)
    other_id = {**item.headers, "webhook-id": str(row["id"] + 1)}
    assert not standard_webhooks_valid(SECRET, other_id, item.body, now=sent_at)


def test_generated_secret_signs_deliveries(local: Harness, receiver: Receiver) -> None:
    h = local
    key, org_id = setup_org(h)
    made = h.client.post(
        f"/organization/{org_id}/webhooks", json={"url": receiver.url}, headers=h.auth(key)
    )
    assert made.status_code == 201
    secret = made.json()["secret"]
    put_on_plan(h, org_id, "tiny", mau=2)
    alert(h)
    assert h.rt.webhooks.deliver_due() == 1
    (item,) = receiver.received
    now = int(h.clock.now().timestamp())
    assert standard_webhooks_valid(secret, item.headers, item.body, now=now)
    assert not standard_webhooks_valid(SECRET, item.headers, item.body, now=now)


# -- the receiver example ------------------------------------------------------------------


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_receiver_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example() -> Iterator[ModuleType]:
    module = load_example()
    try:
        yield module
    finally:
        sys.modules.pop("webhook_receiver_example", None)


def test_receiver_example_accepts_deliveries_and_refuses_the_rest(
    local: Harness, receiver: Receiver, example: ModuleType
) -> None:
    h = local
    key, org_id = setup_org(h)
    handled: list[dict[str, Any]] = []
    handler = example.make_handler(SECRET, handled.append, lambda: h.clock.now().timestamp())
    with serving(handler) as port:
        target = f"http://127.0.0.1:{port}/"
        add_webhook(h, key, org_id, target)
        add_webhook(h, key, org_id, receiver.url)  # a copy of each delivery, to replay
        put_on_plan(h, org_id, "tiny", mau=2)
        alert(h)
        assert h.rt.webhooks.deliver_due() == 2
        (event,) = handled
        assert event["event"] == "usage.threshold" and event["data"]["threshold"] == 50
        assert {d["status"] for d in deliveries(h, key, org_id)} == {"delivered"}

        (copy,) = receiver.received
        now = h.clock.now().timestamp()
        assert example.verify(SECRET, copy.headers, copy.body, now) == copy.json
        bad = {
            "tampered body": (copy.headers, copy.body.replace(b"50", b"51")),
            "other id": (
                {**copy.headers, "webhook-id": copy.headers["webhook-id"] + "0"},
                copy.body,
            ),
            "no signature": ({**copy.headers, "webhook-signature": ""}, copy.body),
            "v2 only": (
                {**copy.headers, "webhook-signature": "v2" + copy.headers["webhook-signature"][2:]},
                copy.body,
            ),
        }
        for name, (headers, body) in bad.items():
            with pytest.raises(example.InvalidDelivery):
                example.verify(SECRET, headers, body, now)
                pytest.fail(name)
        with pytest.raises(example.InvalidDelivery):
            example.verify("another-secret", copy.headers, copy.body, now)
        with pytest.raises(example.InvalidDelivery, match="timestamp"):
            example.verify(SECRET, copy.headers, copy.body, now + 301)
        # Several signatures: one valid v1 among them is enough.
        rotated = {
            **copy.headers,
            "webhook-signature": "v1,AAAA " + copy.headers["webhook-signature"],
        }
        assert example.verify(SECRET, rotated, copy.body, now) == copy.json

        # Over HTTP: a replay of a genuine request for the other hook is a new id, handled;
        # the same request again is acknowledged but not handled twice; too late, refused.
        replay_headers = {
            k: v for k, v in copy.headers.items() if k not in ("host", "content-length")
        }
        with httpx.Client() as client:
            first = client.post(target, content=copy.body, headers=replay_headers)
            again = client.post(target, content=copy.body, headers=replay_headers)
            assert first.status_code == again.status_code == 200
            assert len(handled) == 2
            forged = client.post(target, content=copy.body + b" ", headers=replay_headers)
            assert forged.status_code == 400
            h.clock.advance(timedelta(seconds=example.TOLERANCE_SECONDS + 1))
            late = client.post(target, content=copy.body, headers=replay_headers)
            assert late.status_code == 400 and len(handled) == 2
