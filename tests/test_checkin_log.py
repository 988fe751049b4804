"""The check-in log: records round-trip, the rollup drains each record exactly once (a failed
drain leaves no trace, a drain racing another one stores nothing twice), the fold judges the
Google window at the check-in's own time, and migration 0008 goes down without losing it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from alembic import command
from sqlalchemy import func, inspect, select

from otameter.clock import ManualClock, to_ms
from otameter.config import Settings
from otameter.metering import checkin_log, ingest
from otameter.metering.checkin_log import RecordError, decode_record, encode_record
from otameter.metering.events import CheckIn
from otameter.metering.rollups import load_day_bitmaps
from otameter.runtime import Runtime
from otameter.storage import app_rows
from otameter.storage import schema as s
from otameter.storage.db import alembic_config, create_db_engine, migrate
from tests.harness import Harness, setup_app

APP = "com.example.app"
GOOGLE_V4 = "8.8.8.8"


def checkin(device: str, at_ms: int = 1_715_774_400_000, **fields: Any) -> CheckIn:
    values: dict[str, Any] = {
        "app_id": APP,
        "device_id": device,
        "at_ms": at_ms,
        "platform": "android",
        "version_name": "1.0.0",
        "is_emulator": False,
        "is_prod": True,
        "version_build": "1.0.0",
        "version_os": "14",
        "plugin_version": "8.51.14",
        "ip": "203.0.113.7",
    }
    values.update(fields)
    return CheckIn(**values)


def count(h: Harness, table: Any) -> int:
    with h.rt.read_engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def logged(h: Harness) -> int:
    with h.rt.read_engine.connect() as conn:
        return checkin_log.pending_checkins(conn)


def day_devices(h: Harness, app_id: str = APP) -> dict[Any, set[int]]:
    day = h.clock.now().date()
    with h.rt.read_engine.connect() as conn:
        bitmaps = load_day_bitmaps(conn, app_id, day - timedelta(days=1), day)
    return {d: set(bitmap) for d, bitmap in bitmaps.items()}


def ordinals(h: Harness, app_id: str = APP) -> dict[str, int]:
    d = s.devices.c
    with h.rt.read_engine.connect() as conn:
        return dict(conn.execute(select(d.device_id, d.id).where(d.app_id == app_id)).all())


# -- the record ----------------------------------------------------------------------------------


def test_a_record_round_trips_and_is_compact() -> None:
    batch = [
        checkin(str(uuid.uuid4()), 1_715_774_400_000 + n * 37, custom_id=f"user-{n}")
        for n in range(32)
    ]
    batch[3] = checkin(str(uuid.uuid4()), ip=None, is_emulator=True, version_name="é-1.0 ✓")
    batch[5] = checkin(str(uuid.uuid4()), event_id="e-5", platform="ios")
    record = encode_record(batch)
    assert record[0] == checkin_log.FORMAT
    assert decode_record(record) == batch
    # A few dozen bytes a check-in: the batch's repeated strings cost next to nothing.
    assert len(record) / len(batch) < 64


def test_records_of_older_and_newer_writers_decode() -> None:
    device = str(uuid.uuid4())
    full = checkin(device)
    fields = list(msgspec.structs.astuple(full))
    # A newer writer appended a field this version does not know: it is ignored.
    newer = bytes([checkin_log.FORMAT]) + _compressed([[*fields, "offered-1.0.1"]])
    assert decode_record(newer) == [full]
    # An older writer knew fewer trailing fields: they take their defaults.
    older = bytes([checkin_log.FORMAT]) + _compressed([fields[:7]])
    assert decode_record(older) == [CheckIn(*fields[:7])]
    with pytest.raises(RecordError):
        decode_record(bytes([99]) + _compressed([fields]))
    with pytest.raises(RecordError):
        decode_record(b"")


def _compressed(value: Any) -> bytes:
    import zlib

    return zlib.compress(msgspec.msgpack.encode(value), 1)


def test_a_batch_of_several_apps_is_one_row_per_app() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [checkin(a), checkin(b, app_id="com.example.other"), checkin(b)]
    rows = checkin_log.log_rows(batch)
    assert [(app, n) for app, n, _ in rows] == [(APP, 2), ("com.example.other", 1)]
    assert decode_record(rows[0][2]) == [batch[0], batch[2]]


# -- live check-ins are logged, then folded --------------------------------------------------------


def test_a_checkin_is_logged_then_folded_once(harness: Harness) -> None:
    h = harness
    setup_app(h)
    devices = [str(uuid.uuid4()) for _ in range(5)]
    for device in devices:
        assert h.checkin(APP, device).status_code == 200
    assert h.checkin(APP, devices[0]).status_code == 200
    # Acknowledged means logged: nothing is folded until the rollup runs.
    assert logged(h) == 6
    assert count(h, s.devices) == 0
    # The frequent pass drains the log into the device table (and deltas) ...
    assert h.rt.rollups.drain_log_blocking() == 6
    assert logged(h) == 0
    assert set(ordinals(h)) == set(devices)
    assert count(h, s.activity_deltas)
    # ... the rollup merges the deltas into the day's bitmap.
    h.rollup()
    assert day_devices(h) == {h.clock.now().date(): set(ordinals(h).values())}
    h.rollup()  # nothing left: nothing doubles
    assert count(h, s.devices) == 5
    assert day_devices(h) == {h.clock.now().date(): set(ordinals(h).values())}


def test_a_failed_drain_leaves_the_log_whole(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    setup_app(h)
    devices = [str(uuid.uuid4()) for _ in range(20)]
    for device in devices:
        assert h.checkin(APP, device).status_code == 200

    def store_then_fail(conn: Any, facts: Any) -> None:
        ingest.store_facts(conn, facts)  # the facts are written ...
        raise RuntimeError("the drain dies before its commit")  # ... and then it fails

    with monkeypatch.context() as patch:
        patch.setattr(checkin_log, "store_facts", store_then_fail)
        with pytest.raises(RuntimeError, match="drain dies"):
            h.rollup()
    # Nothing of the failed transaction stayed: the records, and no facts.
    assert logged(h) == 20
    assert count(h, s.devices) == 0
    assert count(h, s.activity_deltas) == 0
    h.rollup()
    assert logged(h) == 0
    assert set(ordinals(h)) == set(devices)
    assert day_devices(h) == {h.clock.now().date(): set(ordinals(h).values())}


def test_a_drain_that_another_drain_got_to_first_stores_nothing(
    harness: Harness, second: Runtime
) -> None:
    h = harness
    setup_app(h)
    devices = [str(uuid.uuid4()) for _ in range(10)]
    for device in devices:
        assert h.checkin(APP, device).status_code == 200
    # Both processes read and fold the same records ...
    mine = h.rt.rollups._prepare_log()
    theirs = second.rollups._prepare_log()
    assert mine is not None and theirs is not None and mine.ids == theirs.ids
    # ... the other one consumes them first; this one then finds them gone.
    assert second.writer.run_blocking(lambda conn: checkin_log.consume(conn, theirs))
    assert not h.rt.writer.run_blocking(lambda conn: checkin_log.consume(conn, mine))
    h.rollup()
    assert count(h, s.devices) == 10
    assert day_devices(h) == {h.clock.now().date(): set(ordinals(h).values())}


def test_a_fold_late_to_rows_whose_ids_were_given_again_stores_and_deletes_nothing(
    harness: Harness, second: Runtime
) -> None:
    """SQLite gives the ids of deleted newest rows again: a late drain must not take new rows."""
    h = harness
    setup_app(h)
    first = [str(uuid.uuid4()) for _ in range(10)]
    for device in first:
        assert h.checkin(APP, device).status_code == 200
    mine = h.rt.rollups._prepare_log()
    theirs = second.rollups._prepare_log()
    assert mine is not None and theirs is not None and mine.ids == theirs.ids
    assert second.writer.run_blocking(lambda conn: checkin_log.consume(conn, theirs))
    # The log is empty again: the next check-ins are logged under the same ids (on SQLite).
    later = [str(uuid.uuid4()) for _ in range(10)]
    for device in later:
        assert h.checkin(APP, device).status_code == 200
    assert not h.rt.writer.run_blocking(lambda conn: checkin_log.consume(conn, mine))
    assert logged(h) == 10
    h.rollup()
    assert logged(h) == 0
    assert set(ordinals(h)) == set(first) | set(later)
    assert len(day_devices(h)[h.clock.now().date()]) == 20


def test_rollups_racing_in_two_processes_drain_each_record_once(
    harness: Harness, second: Runtime
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    h = harness
    setup_app(h)
    # Small drains, so that the two processes take turns over many of them.
    h.rt.rollups.max_log_rows = second.rollups.max_log_rows = 3
    devices = [str(uuid.uuid4()) for _ in range(60)]
    for n, device in enumerate(devices):
        assert h.checkin(APP, device).status_code == 200
        if n % 3 == 0:
            assert h.checkin(APP, device).status_code == 200  # seen twice: still one device
    barrier = threading.Barrier(2)

    def fold(rt: Runtime) -> int:
        barrier.wait()
        folded = 0
        for _ in range(100):
            folded += rt.rollups.run_blocking().checkins_folded
            with rt.read_engine.connect() as conn:
                if not checkin_log.pending_checkins(conn):
                    break
        return folded

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(fold, rt) for rt in (h.rt, second)]]
    assert sum(results) == 80  # every logged check-in folded once, by one process or the other
    assert logged(h) == 0
    assert set(ordinals(h)) == set(devices)
    bitmaps = day_devices(h)
    assert bitmaps == {h.clock.now().date(): set(ordinals(h).values())}


@pytest.fixture
def second(harness: Harness, db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A second otameter on the same database, sharing nothing else with the harness."""
    rt = Runtime(
        Settings(database_url=db_url, data_dir=tmp_path / "data2", rollup_interval_seconds=0),
        ManualClock(harness.clock.now()),
    )
    rt.start(background=False)
    try:
        yield rt
    finally:
        rt.stop()


def test_the_fold_judges_the_google_window_at_the_checkins_time(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    upload_at = datetime(2024, 5, 15, 8, tzinfo=UTC)
    early, robot = str(uuid.uuid4()), str(uuid.uuid4())
    # Before any upload a Google address counts, even if the fold runs after an upload.
    h.clock.set(upload_at - timedelta(hours=1))
    assert h.checkin(APP, early, ip=GOOGLE_V4).status_code == 200
    h.clock.set(upload_at)
    h.upload(key, APP, "1.0.1")
    # Inside the window a Google address does not count, even if the fold runs after it.
    h.clock.set(upload_at + timedelta(hours=3))
    assert h.checkin(APP, robot, ip=GOOGLE_V4).status_code == 200
    h.clock.set(upload_at + timedelta(hours=6))
    h.rollup()
    assert set(ordinals(h)) == {early, robot}
    assert day_devices(h) == {upload_at.date(): {ordinals(h)[early]}}


# -- migration 0008 ------------------------------------------------------------------------------


def test_migration_0008_down_drains_the_log_and_up_again(harness: Harness, db_url: str) -> None:
    h = harness
    setup_app(h)
    devices = [str(uuid.uuid4()) for _ in range(4)]
    for device in devices:
        assert h.checkin(APP, device).status_code == 200
    now = to_ms(h.clock.now())
    assert logged(h) == 4
    config = alembic_config(db_url)
    command.downgrade(config, "0004")
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            assert "checkin_log" not in inspect(conn).get_table_names()
            # The logged check-ins became device rows and deltas before the table went.
            d = s.devices.c
            rows = conn.execute(select(d.device_id, d.last_seen).where(d.app_id == APP)).all()
            assert {device: at for device, at in rows} == dict.fromkeys(devices, now)
            assert conn.scalar(select(func.count()).select_from(s.activity_deltas))
        migrate(db_url)
        with engine.connect() as conn:
            assert "checkin_log" in inspect(conn).get_table_names()
    finally:
        engine.dispose()
    assert h.checkin(APP, str(uuid.uuid4())).status_code == 200
    h.rollup()
    assert count(h, s.devices) == 5


def test_a_record_this_version_cannot_read_stays_and_the_rest_is_drained(
    harness: Harness,
) -> None:
    h = harness
    setup_app(h)
    device = str(uuid.uuid4())
    assert h.checkin(APP, device).status_code == 200
    # A record of a format this version does not know, as a newer writer would leave it.
    h.rt.writer.run_blocking(
        lambda conn: app_rows.insert(
            conn, "checkin_log", ("app_id", "checkins", "record"), [(APP, 1, b"\x09unknown")]
        )
    )
    assert h.checkin(APP, str(uuid.uuid4())).status_code == 200
    h.rollup()
    assert count(h, s.devices) == 2
    with h.rt.read_engine.connect() as conn:
        left = conn.execute(select(s.checkin_log.c.record)).scalars().all()
    assert [bytes(record) for record in left] == [b"\x09unknown"]
