"""SIGKILL under load loses no acknowledged event and counts none twice (both engines).

A live ``otameter serve`` takes check-ins and downloads from several threads and is killed
with SIGKILL mid-load, then restarted on the same database. Acknowledged means a 2xx
answer for a check-in and the whole body received for a download. Afterwards:

- every acknowledged check-in has its device row, and no device exists that was not sent;
- after rollup, the day's bitmap is exactly the stored devices (each counted once);
- every acknowledged download has exactly one downloads row with all its bytes, and no
  download is recorded twice or with more bytes than were sent.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from otameter.metering.rollups import load_day_bitmaps
from otameter.storage import schema as s
from otameter.storage.db import create_db_engine
from tests.harness import device_body, zip_bytes
from tests.liveserver import LiveServer, create_app, create_user

APP = "com.example.crash"
BUNDLE_BYTES = 1_500_000


class Load:
    """Threads sending check-ins and downloads until stopped; they record what was acked."""

    def __init__(self, base_url: str, bundle_size: int) -> None:
        self.base_url = base_url
        self.size = bundle_size
        self.lock = threading.Lock()
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.downloads_sent: set[str] = set()
        self.downloads_acked: set[str] = set()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._next = 0

    def device(self, kind: set[str]) -> str:
        with self.lock:
            self._next += 1
            device = str(uuid.UUID(int=self._next))
            kind.add(device)
            return device

    def checkin(self, client: httpx.Client, device: str) -> httpx.Response | None:
        with self.lock:
            self.sent.add(device)
        try:
            r = client.post("/updates", json=device_body(APP, device, version_name="1.0.0"))
        except httpx.HTTPError:
            return None
        if 200 <= r.status_code < 300:
            with self.lock:
                self.acked.add(device)
            return r
        return None

    def checkins(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.stop.is_set():
                self.checkin(client, self.device(set()))

    def downloads(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.stop.is_set():
                device = self.device(self.downloads_sent)
                r = self.checkin(client, device)
                if r is None:
                    continue
                url = r.json()["url"]
                received = 0
                try:
                    with client.stream("GET", url) as response:
                        if response.status_code != 200:
                            continue
                        for chunk in response.iter_bytes():
                            received += len(chunk)
                except httpx.HTTPError:
                    continue
                if received == self.size:
                    with self.lock:
                        self.downloads_acked.add(device)

    def start(self, checkin_threads: int = 4, download_threads: int = 3) -> None:
        targets: list[Callable[[], None]] = [self.checkins] * checkin_threads
        targets += [self.downloads] * download_threads
        self.threads = [threading.Thread(target=t, daemon=True) for t in targets]
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_sigkill_under_load_keeps_every_acknowledged_event(db_url: str, tmp_path: Path) -> None:
    key = create_user(db_url)
    data_dir = tmp_path / "data"
    server = LiveServer(db_url, data_dir).start()
    try:
        bundle = create_app(server.url, key, APP, bundle=zip_bytes(size_hint=BUNDLE_BYTES))
        load = Load(server.url, int(bundle["size"]))
        load.start()
        wait_until(
            lambda: len(load.acked) >= 300 and len(load.downloads_acked) >= 5,
            "the server acknowledged too little before the kill",
        )
        server.kill()  # mid-load: requests and downloads are in flight
        load.finish()
        assert load.sent - load.acked, "nothing was in flight at the kill"

        # Restarted on the same database, it serves and rolls up again.
        server.start()
        after = Load(server.url, load.size)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(20):
                assert after.checkin(client, str(uuid.uuid4())) is not None
        engine = create_db_engine(db_url)
        try:

            def drained() -> bool:
                with engine.connect() as conn:
                    deltas = conn.scalar(select(func.count()).select_from(s.activity_deltas))
                    # Logged check-ins not folded yet.
                    deltas += conn.scalar(select(func.count()).select_from(s.checkin_log))
                    queue = conn.scalar(select(func.count()).select_from(s.rollup_queue))
                return not deltas and not queue

            wait_until(drained, "rollups did not run after the restart")
            server.stop()
            today = datetime.now(UTC).date()
            d, dl, u = s.devices.c, s.downloads.c, s.daily_usage.c
            with engine.connect() as conn:
                devices = {
                    device_id: int(ordinal)
                    for device_id, ordinal in conn.execute(
                        select(d.device_id, d.id).where(d.app_id == APP)
                    )
                }
                bitmaps = load_day_bitmaps(conn, APP, today - timedelta(days=1), today)
                downloads = conn.execute(
                    select(dl.device_id, dl.bytes).where(dl.app_id == APP)
                ).all()
                usage = conn.execute(
                    select(func.sum(u.bandwidth)).where(u.app_id == APP)
                ).scalar_one()
        finally:
            engine.dispose()
    finally:
        server.stop()

    sent = load.sent | after.sent
    acked = load.acked | after.acked
    assert acked <= devices.keys() <= sent
    # Each stored device is counted, once: the day's set is exactly the device rows.
    counted = set().union(*(set(b) for b in bitmaps.values()))
    assert counted == set(devices.values())
    assert sum(len(b) for b in bitmaps.values()) == len(devices)

    per_device: dict[str, list[int]] = {}
    for device_id, sent_bytes in downloads:
        per_device.setdefault(device_id, []).append(int(sent_bytes))
    assert per_device.keys() <= load.downloads_sent
    assert all(len(rows) == 1 for rows in per_device.values())  # nothing twice
    assert all(0 < rows[0] <= load.size for rows in per_device.values())
    for device in load.downloads_acked:
        assert per_device.get(device) == [load.size], device
    assert usage == sum(sent_bytes for _, sent_bytes in downloads)
