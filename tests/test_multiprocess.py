"""Several processes sharing nothing but the database still count exactly.

Two writers (two Runtimes: separate engines, writer threads and caches, as two processes
have) receive check-ins of the same devices at the same moment; rollups run in both at
once. Then ``otameter serve --workers 2`` is loaded over real HTTP. Every count must agree
with a recount from what was sent: each device once, each day's bitmap exact.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from otameter.clock import ManualClock, day_start_ms
from otameter.config import Settings
from otameter.metering.events import CheckIn
from otameter.metering.rollups import MAU_WINDOW_DAYS, load_day_bitmaps
from otameter.runtime import Runtime
from otameter.storage import schema as s
from otameter.storage.db import create_db_engine
from tests.harness import Harness, device_body
from tests.liveserver import LiveServer, create_app, create_user

APP = "com.example.multi"


@pytest.fixture
def second(harness: Harness, db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A second otameter on the same database, sharing nothing else with the harness."""
    clock = ManualClock(harness.clock.now())
    rt = Runtime(
        Settings(database_url=db_url, data_dir=tmp_path / "data2", rollup_interval_seconds=0),
        clock,
    )
    rt.start(background=False)
    try:
        yield rt
    finally:
        rt.stop()


def checkin(device_id: str, at_ms: int) -> CheckIn:
    return CheckIn(
        app_id=APP,
        device_id=device_id,
        at_ms=at_ms,
        platform="android",
        version_name="1.0.0",
        is_emulator=False,
        is_prod=True,
        plugin_version="8.51.14",
    )


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(run, c) for c in calls]]


def ordinals(engine: Engine, app_id: str) -> dict[str, int]:
    d = s.devices.c
    with engine.connect() as conn:
        rows = conn.execute(select(d.device_id, d.id).where(d.app_id == app_id))
        return {device_id: int(ordinal) for device_id, ordinal in rows}


def roll_up_everything(*runtimes: Runtime) -> None:
    """Rollups until no delta is left (on PostgreSQL a busy rollup lock skips a run)."""
    for _ in range(50):
        for rt in runtimes:
            rt.rollups.run_blocking()
        with runtimes[0].read_engine.connect() as conn:
            left = conn.scalar(select(func.count()).select_from(s.activity_deltas))
            left += conn.scalar(select(func.count()).select_from(s.checkin_log))
            queued = conn.scalar(select(func.count()).select_from(s.rollup_queue))
        if not left and not queued:
            return
    raise AssertionError("rollups never drained the deltas")


def assert_matches_recount(engine: Engine, sent: dict[date, set[str]], app_id: str) -> None:
    """Day bitmaps and daily figures equal a recount of what was sent."""
    ids = ordinals(engine, app_id)
    expected = {day: {ids[device] for device in devices} for day, devices in sent.items()}
    lo, hi = min(sent), max(sent)
    u = s.daily_usage.c
    with engine.connect() as conn:
        bitmaps = load_day_bitmaps(conn, app_id, lo, hi)
        usage = {
            row.day: row
            for row in conn.execute(
                select(u.day, u.mau, u.dau).where(u.app_id == app_id, u.day >= lo, u.day <= hi)
            )
        }
    assert {day: set(bitmap) for day, bitmap in bitmaps.items()} == expected
    for day, devices in expected.items():
        window = set().union(
            *(expected.get(day - timedelta(days=n), set()) for n in range(MAU_WINDOW_DAYS))
        )
        assert usage[day].dau == len(devices), day
        assert usage[day].mau == len(window), day


def test_two_writers_count_each_device_once(harness: Harness, second: Runtime, db_url: str) -> None:
    _, key = harness.user("owner@example.com")
    harness.app(key, harness.org(key), APP)
    devices = [str(uuid.UUID(int=n + 1)) for n in range(300)]
    today = harness.clock.now().date()
    days = [today - timedelta(days=2), today - timedelta(days=1), today]
    sent: dict[date, set[str]] = defaultdict(set)
    first_max_id = 0
    for round_number in range(12):
        day = days[round_number % 3]
        at = day_start_ms(day) + 3_600_000 + round_number
        # The same devices at the same instant, in opposite orders (a deadlock without a
        # common lock order), plus a part that only one of them sees.
        mine = devices[: 200 + round_number]
        theirs = list(reversed(devices[100:]))
        at_once(
            lambda mine=mine, at=at: harness.rt.writer.submit_blocking(
                [checkin(d, at) for d in mine]
            ),
            lambda theirs=theirs, at=at: second.writer.submit_blocking(
                [checkin(d, at) for d in theirs]
            ),
        )
        sent[day] |= set(mine) | set(theirs)
        if round_number % 4 == 3:
            at_once(harness.rt.rollups.run_blocking, second.rollups.run_blocking)
        if round_number == 2:
            first_max_id = max(ordinals(harness.rt.read_engine, APP).values())
    roll_up_everything(harness.rt, second)

    ids = ordinals(harness.rt.read_engine, APP)
    assert sorted(ids) == sorted(devices)  # each device exactly once
    # Known devices keep their ordinal and draw no new number (PostgreSQL sequences).
    assert max(ids.values()) == first_max_id
    assert max(ids.values()) < 2 * len(devices)
    assert_matches_recount(harness.rt.read_engine, sent, APP)


def test_rollups_in_two_processes_agree_with_a_recount(harness: Harness, second: Runtime) -> None:
    _, key = harness.user("owner@example.com")
    harness.app(key, harness.org(key), APP)
    today = harness.clock.now().date()
    sent: dict[date, set[str]] = defaultdict(set)
    stop = threading.Event()

    def keep_rolling_up(rt: Runtime) -> None:
        while not stop.is_set():
            rt.rollups.run_blocking()

    rollers = [threading.Thread(target=keep_rolling_up, args=(rt,)) for rt in (harness.rt, second)]
    for t in rollers:
        t.start()
    try:
        for n in range(40):
            day = today - timedelta(days=n % 5)
            rt = harness.rt if n % 2 else second
            batch = [str(uuid.UUID(int=(n * 37 + k) % 500 + 1)) for k in range(60)]
            rt.writer.submit_blocking([checkin(d, day_start_ms(day) + n) for d in batch])
            sent[day] |= set(batch)
    finally:
        stop.set()
        for t in rollers:
            t.join()
    roll_up_everything(second, harness.rt)
    assert_matches_recount(harness.rt.read_engine, sent, APP)


def test_serve_with_two_workers_counts_exactly(db_url: str, tmp_path: Path) -> None:
    key = create_user(db_url)
    devices = [str(uuid.UUID(int=n + 1)) for n in range(60)]
    with LiveServer(db_url, tmp_path / "data", workers=2) as server:
        create_app(server.url, key, APP)
        # New connections each time, so that both worker processes take requests.
        limits = httpx.Limits(max_keepalive_connections=0)

        def send(n: int) -> int:
            with httpx.Client(base_url=server.url, limits=limits, timeout=30) as client:
                ok = 0
                for k in range(20):
                    r = client.post("/updates", json=device_body(APP, devices[(n + k) % 60]))
                    assert r.status_code == 200, r.text
                    assert r.json().get("error") != "app_not_found", r.text
                    ok += 1
                return ok

        with ThreadPoolExecutor(16) as pool:
            assert sum(pool.map(send, range(48))) == 48 * 20
        engine = create_db_engine(db_url)
        try:
            # The servers' rollup workers fold the log and the deltas within a few seconds.
            deadline = time.monotonic() + 60
            while True:
                with engine.connect() as conn:
                    left = conn.scalar(select(func.count()).select_from(s.activity_deltas))
                    left += conn.scalar(select(func.count()).select_from(s.checkin_log))
                    ids = ordinals(engine, APP)
                    today = datetime.now(UTC).date()
                    bitmaps = load_day_bitmaps(conn, APP, today - timedelta(days=1), today)
                if not left and bitmaps:
                    break
                assert time.monotonic() < deadline, "rollups did not run"
                time.sleep(0.2)
        finally:
            engine.dispose()
    assert sorted(ids) == sorted(devices)
    assert max(ids.values()) < 2 * len(devices)
    # One day's bitmap, or two if the test straddled midnight.
    assert set().union(*(set(b) for b in bitmaps.values())) == set(ids.values())
