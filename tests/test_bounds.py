"""Bounds on what a client may send: heads, bodies, time, connections (issue 14, point 2).

The connection-level bounds are checked with real sockets against a real ``otameter serve``;
the body bounds also through the harness, on both engines, to show that nothing is written.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.harness import Harness, device_body, setup_app
from tests.liveserver import LiveServer

APP = "com.example.app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("bounds")
    env = {
        "OTAMETER_HEADER_TIMEOUT": "1",
        "OTAMETER_BODY_TIMEOUT": "1",
        "OTAMETER_KEEPALIVE_TIMEOUT": "1",
        "OTAMETER_MAX_CONNECTIONS": "8",
    }
    with LiveServer(f"sqlite:///{root}/otameter.db", root / "data", env=env) as live:
        yield live


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    # A guard against a hang, not a measurement: every answer here comes well before it.
    sock.settimeout(20)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer (status, headers, body) read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return status, headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def send_in_background(sock: socket.socket, *parts: bytes) -> threading.Thread:
    """Send while the test reads: the server answers and closes before taking it all."""

    def run() -> None:
        try:
            for part in parts:
                sock.sendall(part)
        except OSError:
            pass  # the server closed the connection, as it should

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_16_mb_header_is_answered_431_and_closed(server: LiveServer) -> None:
    sock = connect(server)
    sender = send_in_background(
        sock, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16_000_000 + b"\r\n\r\n"
    )
    status, headers, body = read_answer(sock)
    assert status == 431
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "Request header fields too large", "status": "KO"}
    assert closed_by_server(sock)
    sender.join(20)
    sock.close()


def test_many_headers_summing_over_the_bound_are_431(server: LiveServer) -> None:
    # Each header is small and the head arrives in one read: the parsed size decides.
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, _, _ = read_answer(sock)
        assert status == 431


def test_a_head_within_the_bound_is_served(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 8000 + b"\r\n\r\n")
        status, _, body = read_answer(sock)
        assert status == 200 and json.loads(body) == {"status": "ok"}


def test_a_half_sent_header_is_answered_408_and_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /updates HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        status, headers, body = read_answer(sock)
        assert status == 408
        assert headers["connection"] == "close"
        assert json.loads(body)["status"] == "KO"
        assert closed_by_server(sock)


def test_a_stalled_body_is_answered_408_and_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /updates HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 500\r\n\r\n{"app_id": '
        )
        status, headers, body = read_answer(sock)
        assert status == 408 and headers["connection"] == "close"
        assert json.loads(body) == {"error": "Request body not received in time", "status": "KO"}
        assert closed_by_server(sock)
    # The handler that waited for the body learns the client is gone, quietly.
    assert "unhandled error" not in server.log.read_text()


def test_a_body_sent_in_pieces_in_time_is_served(server: LiveServer) -> None:
    body = json.dumps(device_body(APP, str(uuid.uuid4()))).encode()
    with connect(server) as sock:
        sock.sendall(
            b"POST /updates HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for start in range(0, len(body), 100):
            sock.sendall(body[start : start + 100])
        status, _, answer = read_answer(sock)
        # No such app on this server: its answer comes after the whole body was read.
        assert status == 429 and json.loads(answer)["error"] == "app_not_found"


def test_a_silent_connection_is_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        status, _, _ = read_answer(sock)
        assert status == 408
        assert closed_by_server(sock)


def test_a_second_request_must_also_send_its_head_in_time(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        assert read_answer(sock)[0] == 408
        assert closed_by_server(sock)


def test_an_idle_kept_alive_connection_is_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_answer(sock)
        assert status == 200 and headers.get("connection") != "close"
        assert closed_by_server(sock)


def test_connections_over_the_bound_are_answered_503(server: LiveServer) -> None:
    # The module's server allows 8 connections; other tests' connections are all closed.
    held = [connect(server) for _ in range(8)]
    try:
        extra = connect(server)
        status, headers, _ = read_answer(extra)
        assert status == 503 and headers["connection"] == "close"
        extra.close()
    finally:
        for sock in held:
            sock.close()
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[0] == 200


@pytest.mark.parametrize("path", ["/stats", "/updates", "/organization"])
def test_a_400_mb_body_is_refused_413_without_reading_it(server: LiveServer, path: str) -> None:
    before = server.rss_kb()
    sock = connect(server)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {400 * 1024 * 1024}\r\n\r\n"
    ).encode()
    sender = send_in_background(sock, head, *([b"[" * 1024 * 1024] * 64))
    status, headers, body = read_answer(sock)
    assert status == 413 and headers["connection"] == "close"
    assert "larger than" in body.decode()
    assert closed_by_server(sock)
    sender.join(20)
    sock.close()
    # Nothing of the body was kept (64 MB of it were sent before the server closed).
    assert server.rss_kb() - before < 16 * 1024


def test_a_chunked_body_is_counted_as_it_arrives(server: LiveServer) -> None:
    before = server.rss_kb()
    sock = connect(server)
    head = (
        b"POST /stats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    sender = send_in_background(sock, head, *([chunk] * 1000))  # 64 MB, no length given
    status, headers, body = read_answer(sock)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"] == "payload_too_large"
    sender.join(20)
    sock.close()
    assert server.rss_kb() - before < 16 * 1024


# -- body bounds through the app, on both engines -------------------------------------------


def test_plugin_bodies_over_their_bound_are_413_and_store_nothing(harness: Harness) -> None:
    key = setup_app(harness)
    device = str(uuid.uuid4())
    padded = device_body(APP, device, custom_id="", padding="x" * 20_000)
    r = harness.client.post("/updates", json=padded)
    assert r.status_code == 413
    assert r.json() == {
        "error": "payload_too_large",
        "message": "Request body is larger than 16384 bytes",
        "kind": "failed",
    }
    event = {**device_body(APP, device), "action": "set", "version_name": "1.0.0"}
    r = harness.client.post("/stats", json=[{**event, "pad": "y" * 6000}] * 200)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    # The plugin's 200 events are taken; one more is refused as a whole.
    r = harness.client.post("/stats", json=[event] * 201)
    assert r.status_code == 413 and r.json()["error"] == "too_many_events"
    r = harness.client.post(
        "/channel_self", json={**device_body(APP, device), "channel": "b" * 20_000}
    )
    assert r.status_code == 413
    r = harness.client.post(
        "/organization", json={"name": "n" * 300_000}, headers=harness.auth(key)
    )
    assert r.status_code == 413
    assert r.json() == {"error": "Request body is larger than 262144 bytes", "status": "KO"}
    # Nothing of the refused requests was stored.
    with harness.rt.read_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM devices").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM device_events").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM orgs").scalar() == 1
    # Within the bounds, the same calls are served.
    assert harness.client.post("/updates", json=device_body(APP, device)).status_code == 200
    r = harness.client.post("/stats", json=[event] * 200)
    assert r.status_code == 200 and len(r.json()["results"]) == 200


def test_a_chunked_body_over_the_bound_is_refused_by_the_app(harness: Harness) -> None:
    setup_app(harness)

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 1000

    r = harness.client.post(
        "/updates", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"


def test_bounds_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from otameter.config import Settings

    monkeypatch.setenv("OTAMETER_STATS_BODY_BYTES", "2048")
    monkeypatch.setenv("OTAMETER_HEADER_TIMEOUT", "2.5")
    settings = Settings.from_env()
    assert settings.stats_body_bytes == 2048 and settings.header_timeout_seconds == 2.5
    monkeypatch.setenv("OTAMETER_MAX_CONNECTIONS", "0")
    with pytest.raises(ValueError, match="OTAMETER_MAX_CONNECTIONS"):
        Settings.from_env()
