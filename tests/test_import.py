"""`otameter import`: idempotency, rejected lines, and order independence."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from otameter.importing.importer import Importer, ImportFailed, ImportSummary
from otameter.importing.lines import ParsingPool
from otameter.metering.fold import FoldedBatch, FoldedFacts
from otameter.metering.ingest import upsert_devices
from otameter.storage import schema as s
from tests.harness import Harness, running, setup_app

APP = "com.example.app"
GOOGLE_V4 = "8.8.8.8"


def checkin(time: str, device: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "checkin",
        "time": time,
        "app_id": APP,
        "device_id": device,
        "platform": "android",
        "version_name": "1.0.0",
        "is_emulator": False,
        "is_prod": True,
        **fields,
    }


def write_lines(path: Path, lines: list[Any]) -> Path:
    with open(path, "w") as out:
        for line in lines:
            out.write(line if isinstance(line, str) else json.dumps(line))
            out.write("\n")
    return path


def run_import(h: Harness, path: Path, slice_bytes: int = 1 << 20) -> ImportSummary:
    summary = Importer(h.rt.writer, h.clock, slice_bytes=slice_bytes).run(path)
    h.rollup()
    return summary


def usage(h: Harness) -> dict[tuple[str, date], tuple[int, ...]]:
    u = s.daily_usage.c
    with h.rt.read_engine.connect() as conn:
        return {
            (r.app_id, r.day): (
                r.mau,
                r.dau,
                r.new_devices,
                r.emudev_devices,
                r.bandwidth,
                r.storage,
            )
            for r in conn.execute(select(s.daily_usage).where(u.day < date(2024, 5, 15)))
        }


def devices(h: Harness) -> dict[str, tuple[Any, ...]]:
    d = s.devices.c
    with h.rt.read_engine.connect() as conn:
        return {
            r.device_id: (
                r.first_seen,
                r.last_seen,
                r.last_counted_at,
                r.version_name,
                r.is_emulator,
                r.is_prod,
            )
            for r in conn.execute(select(s.devices).where(d.app_id == APP))
        }


def mau(h: Harness, day: str) -> int:
    rows = usage(h)
    return rows.get((APP, date.fromisoformat(day)), (0,))[0]


# -- idempotency -----------------------------------------------------------------------------


def test_same_file_twice_counts_once(harness: Harness, tmp_path: Path) -> None:
    h = harness
    setup_app(h)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    path = write_lines(
        tmp_path / "events.jsonl",
        [
            {**checkin("2024-05-10T10:00:00Z", a), "id": "e1"},
            {**checkin("2024-05-11T10:00:00Z", b), "id": "e2"},
            {**checkin("2024-05-11T11:00:00Z", b), "id": "e2"},  # repeated in the same file
            {
                "type": "download",
                "id": "e3",
                "time": "2024-05-11T10:00:05Z",
                "app_id": APP,
                "device_id": b,
                "version": "1.0.0",
                "bytes": 1234,
            },
            {
                "type": "upload",
                "id": "e4",
                "time": "2024-05-09T08:00:00Z",
                "app_id": APP,
                "version": "1.0.0",
                "size": 5000,
            },
        ],
    )
    first = run_import(h, path)
    assert (first.accepted, first.duplicates, first.rejected) == (4, 1, [])
    figures = usage(h)
    assert figures[(APP, date(2024, 5, 11))] == (2, 1, 1, 0, 1234, 5000)

    second = run_import(h, path)
    assert (second.accepted, second.duplicates, second.rejected) == (0, 5, [])
    assert usage(h) == figures
    assert second.as_dict()["duplicates"] == 5


def test_a_rejected_event_is_not_remembered_as_applied(harness: Harness, tmp_path: Path) -> None:
    h = harness
    _, key = h.user("dev@example.com")
    org_id = h.org(key)
    path = write_lines(
        tmp_path / "events.jsonl",
        [{**checkin("2024-05-10T10:00:00Z", str(uuid.uuid4())), "id": "x1"}],
    )
    refused = run_import(h, path)
    assert refused.accepted == 0 and refused.rejected == [(1, f"unknown app {APP!r}")]

    # Once the app exists, the same line is imported, not taken for a duplicate.
    h.app(key, org_id, APP)
    again = run_import(h, path)
    assert (again.accepted, again.duplicates, again.rejected) == (1, 0, [])
    assert mau(h, "2024-05-10") == 1


# -- rejected lines ----------------------------------------------------------------------------


def test_rejected_lines_are_reported_and_never_stop_good_ones(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    setup_app(h)
    good = [str(uuid.uuid4()) for _ in range(4)]
    missing_device = checkin("2024-05-10T10:00:00Z", "x")
    del missing_device["device_id"]
    lines: list[Any] = [
        checkin("2024-05-10T10:00:00Z", good[0]),  # 1
        '{"type": "checkin", "time": ',  # 2: bad JSON
        checkin("2024-05-10T10:00:00Z", good[1], app_id="com.unknown.app"),  # 3
        checkin("10/05/2024 10:00", good[1]),  # 4: bad time
        checkin("2024-05-10T10:00:00", good[1]),  # 5: no time zone
        checkin("2024-05-16T10:00:00Z", good[1]),  # 6: future (the clock says 2024-05-15 12:00)
        missing_device,  # 7
        checkin("2024-05-10T10:00:00Z", good[1], is_prod="yes"),  # 8
        {"type": "checkout", "time": "2024-05-10T10:00:00Z", "app_id": APP},  # 9
        "[1, 2]",  # 10
        "",  # blank lines are skipped, not rejected
        {"type": "delete", "time": "2024-05-10T10:00:00Z", "app_id": APP, "version": "9.9"},
        checkin("2024-05-10T11:00:00+02:00", good[1]),  # 13: a zone other than Z is fine
        {
            "type": "download",
            "time": "2024-05-10T10:00:00Z",
            "app_id": APP,
            "device_id": good[0],
            "version": "1.0.0",
        },
        checkin("2024-05-11T10:00:00Z", good[2]),  # 15
        checkin("2024-05-15T12:03:00Z", good[3]),  # 16: within the clock tolerance
    ]
    path = write_lines(tmp_path / "events.jsonl", lines)

    summary = run_import(h, path, slice_bytes=600)

    reasons = dict(summary.rejected)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14]
    assert "JSON" in reasons[2]
    assert "unknown app" in reasons[3] and "com.unknown.app" in reasons[3]
    assert "time" in reasons[4] and "time" in reasons[5]
    assert "future" in reasons[6]
    assert "device_id" in reasons[7]
    assert "is_prod" in reasons[8]
    assert "type" in reasons[9]
    assert "object" in reasons[10]
    assert "9.9" in reasons[12]
    assert "bytes" in reasons[14]
    assert summary.accepted == 4 and summary.lines == 15
    assert mau(h, "2024-05-10") == 2
    assert mau(h, "2024-05-11") == 3
    assert set(devices(h)) == set(good)


# -- order independence --------------------------------------------------------------------------


def history(seed: int) -> list[dict[str, Any]]:
    """Traffic around a bundle upload, a deletion and a month boundary."""
    rng = random.Random(seed)
    people = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(12)]
    robots = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(3)]
    events: list[dict[str, Any]] = [
        {
            "type": "upload",
            "time": "2024-04-28T09:00:00Z",
            "app_id": APP,
            "version": "1.0.0",
            "size": 7000,
        },
        {
            "type": "upload",
            "time": "2024-05-02T10:00:00Z",
            "app_id": APP,
            "version": "1.1.0",
            "size": 9000,
        },
        {"type": "delete", "time": "2024-05-03T18:00:00Z", "app_id": APP, "version": "1.0.0"},
        {
            "type": "upload",
            "time": "2024-05-04T10:00:00Z",
            "app_id": APP,
            "version": "ext",
            "size": 10**9,
            "external": True,
        },
    ]
    # Google robots right after the 1.1.0 upload (not counted) and a day later (counted).
    for n, robot in enumerate(robots):
        events.append(checkin(f"2024-05-02T1{n + 1}:30:00Z", robot, ip=GOOGLE_V4))
    events.append(checkin("2024-05-03T11:00:00Z", robots[0], ip=GOOGLE_V4))
    days = ["2024-04-27", "2024-04-29", "2024-04-30", "2024-05-01", "2024-05-02", "2024-05-06"]
    for person in people:
        for day in rng.sample(days, 3):
            events.append(
                checkin(
                    f"{day}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
                    person,
                    version_name=rng.choice(["1.0.0", "1.1.0"]),
                    is_emulator=rng.random() < 0.15,
                    ip=rng.choice([None, "203.0.113.9", GOOGLE_V4]),
                )
            )
            events.append(
                {
                    "type": "download",
                    "time": f"{day}T12:00:00Z",
                    "app_id": APP,
                    "device_id": person,
                    "version": "1.1.0",
                    "bytes": rng.randrange(1, 10_000),
                }
            )
    events.sort(key=lambda e: e["time"])
    return events


def test_out_of_order_lines_give_the_sorted_result(harness: Harness, tmp_path: Path) -> None:
    h = harness
    setup_app(h)
    events = history(3)
    shuffled = events[:]
    random.Random(4).shuffle(shuffled)
    # The upload of 1.1.0 comes after the check-ins of the robots it must exclude.
    upload = next(e for e in shuffled if e.get("version") == "1.1.0" and e["type"] == "upload")
    shuffled.remove(upload)
    shuffled.append(upload)
    run_import(h, write_lines(tmp_path / "shuffled.jsonl", shuffled), slice_bytes=1500)

    with sorted_import(tmp_path / "sorted", events) as reference:
        assert usage(h) == usage(reference)
        assert devices(h) == devices(reference)
    rows = usage(h)
    # The robots are not counted on the day of the upload; robot 0 counts the next day.
    assert rows[(APP, date(2024, 5, 3))][1] == 1
    assert rows[(APP, date(2024, 5, 3))][5] == 9000
    assert rows[(APP, date(2024, 5, 2))][5] == 16000


@contextmanager
def sorted_import(base: Path, events: list[dict[str, Any]]) -> Iterator[Harness]:
    base.mkdir()
    with running(f"sqlite:///{base}/otameter.db", base / "data") as h:
        setup_app(h)
        run_import(h, write_lines(base.parent / "sorted.jsonl", events))
        yield h


# -- the command line ------------------------------------------------------------------------------


def test_otameter_import_command(db_url: str, tmp_path: Path) -> None:
    with running(db_url, tmp_path / "data") as h:
        setup_app(h)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    path = write_lines(
        tmp_path / "events.jsonl",
        [
            {**checkin("2024-05-10T10:00:00Z", a), "id": "1"},
            {**checkin("2024-05-10T11:00:00Z", b), "id": "2"},
            "not json",
            {**checkin("2024-05-10T10:00:00Z", a, app_id="com.unknown.app"), "id": "3"},
        ],
    )
    env = {**os.environ, "OTAMETER_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "otameter", "import", str(path), "--db", db_url]

    result = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["accepted"] == 2 and summary["duplicates"] == 0
    assert summary["rejected"] == 2
    assert [r["line"] for r in summary["rejections"]] == [3, 4]
    assert "unknown app" in summary["rejections"][1]["reason"]

    again = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "accepted: 0  duplicates: 2  rejected: 2" in again.stdout
    assert "line 3:" in again.stdout and "line 4: unknown app" in again.stdout

    refused = subprocess.run(
        [*command, "--workers", "-1"], env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "--workers" in refused.stderr

    # A file whose every line is rejected is a failed import (not a rerun of duplicates).
    unknown = write_lines(
        tmp_path / "unknown.jsonl",
        [{**checkin("2024-05-10T10:00:00Z", a, app_id="com.unknown.app"), "id": "u1"}, "{}"],
    )
    failed = subprocess.run(
        [sys.executable, "-m", "otameter", "import", str(unknown), "--db", db_url],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1, failed.stdout
    assert "rejected: 2" in failed.stdout
    assert "every line was rejected" in failed.stderr
    assert "otameter app create" in failed.stderr

    with running(db_url, tmp_path / "data") as h:
        assert set(devices(h)) == {a, b}
        assert mau(h, "2024-05-10") == 2


def test_otameter_import_command_on_a_file_parsed_in_processes(tmp_path: Path) -> None:
    # Above 32 MB the command starts its parsing processes before it opens the database.
    url, data_dir = f"sqlite:///{tmp_path}/big.db", tmp_path / "data"
    with running(url, data_dir) as h:
        setup_app(h)
    pad = "x" * 2000  # unknown fields are ignored: large lines make a large file quickly
    devices_seen = [str(uuid.UUID(int=n)) for n in range(1, 501)]
    lines: list[Any] = [
        {**checkin("2024-05-10T10:00:00Z", devices_seen[n % 500]), "id": f"e{n}", "pad": pad}
        for n in range(17_000)
    ]
    lines[12_345] = "not json"
    path = write_lines(tmp_path / "events.jsonl", lines)
    assert path.stat().st_size > 32 * 1024 * 1024

    env = {**os.environ, "OTAMETER_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "otameter", "import", str(path), "--db", url, "--json"]
    for workers in ("2", "0"):
        result = subprocess.run(
            [*command, "--workers", workers], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        if workers == "2":
            assert (summary["accepted"], summary["duplicates"]) == (16_999, 0)
        else:  # the same file again, in-process: every event is known
            assert (summary["accepted"], summary["duplicates"]) == (0, 16_999)
        assert [r["line"] for r in summary["rejections"]] == [12_346]

    with running(url, data_dir) as again:
        assert set(devices(again)) == set(devices_seen)
        assert mau(again, "2024-05-10") == 500


def test_bundle_events_are_found_however_they_are_written(harness: Harness, tmp_path: Path) -> None:
    h = harness
    setup_app(h)
    robot = str(uuid.uuid4())
    path = tmp_path / "events.jsonl"
    checkin_line = json.dumps(checkin("2024-05-10T11:00:00Z", robot, ip=GOOGLE_V4))
    # JSON escapes hide the type from a byte search; the upload must still open its window.
    upload_line = (
        '{"type": "\\u0075pload", "time": "2024-05-10T10:00:00Z", '
        f'"app_id": "{APP}", "version": "1.0.0", "size": 42}}'
    )
    path.write_text(f"{checkin_line}\n{upload_line}\n")

    summary = run_import(h, path)

    assert (summary.accepted, summary.rejected) == (2, [])
    rows = usage(h)
    assert rows[(APP, date(2024, 5, 10))][5] == 42
    assert rows[(APP, date(2024, 5, 10))][0] == 0


def test_a_large_batch_of_refused_events(harness: Harness, tmp_path: Path) -> None:
    h = harness
    _, key = h.user("dev@example.com")
    org_id = h.org(key)
    # More refused ids in one batch than a PostgreSQL statement may carry parameters.
    count = 70_000
    base = checkin("2024-05-10T10:00:00Z", str(uuid.uuid4()))
    path = write_lines(tmp_path / "events.jsonl", [{**base, "id": f"r{n}"} for n in range(count)])
    refused = run_import(h, path)
    assert refused.accepted == 0 and len(refused.rejected) == count

    h.app(key, org_id, APP)
    again = run_import(h, path)
    assert (again.accepted, again.duplicates, again.rejected) == (count, 0, [])
    assert mau(h, "2024-05-10") == 1


@pytest.mark.parametrize("started_first", [False, True])
def test_parsing_in_a_separate_process_gives_the_same_result(
    harness: Harness, tmp_path: Path, started_first: bool
) -> None:
    h = harness
    setup_app(h)
    events = history(5)
    random.Random(6).shuffle(events)
    for n, event in enumerate(events):
        event["id"] = f"h{n}"
    lines: list[Any] = [*events, "not json", events[3]]
    path = write_lines(tmp_path / "events.jsonl", lines)

    # The command starts its parsing processes before it opens the database.
    with ParsingPool(2) if started_first else nullcontext() as pool:
        importer = Importer(h.rt.writer, h.clock, slice_bytes=2000, parallel_min_bytes=0, pool=pool)
        summary = importer.run(path)
    h.rollup()

    assert summary.lines == len(lines)
    assert (summary.accepted, summary.duplicates) == (len(events), 1)
    assert [n for n, _ in summary.rejected] == [len(events) + 1]
    with sorted_import(tmp_path / "sorted", sorted(events, key=lambda e: e["time"])) as reference:
        assert usage(h) == usage(reference)
        assert devices(h) == devices(reference)


@pytest.mark.parametrize("apps", [["com.a"], ["com.b", "com.a"]])
def test_device_ordinals_come_back_in_row_order(harness: Harness, apps: list[str]) -> None:
    # Merged batches hold runs of key order, so an app's rows may come in several runs.
    h = harness
    setup_app(h, *apps)  # a new device takes its ordinal from its app's counter
    rows = [
        [
            app,
            f"{n:08x}-0000-4000-8000-000000000000",
            1,
            2,
            2,
            "ios",
            "1",
            "",
            "",
            "",
            "",
            False,
            True,
        ]
        for n in (5, 1, 9, 3)
        for app in apps
    ]
    for _ in range(2):  # new devices, then known ones
        ordinals = h.rt.writer.run_blocking(lambda conn: upsert_devices(conn, [*map(list, rows)]))
        d = s.devices.c
        with h.rt.read_engine.connect() as conn:
            ids = {
                (r.app_id, r.device_id): r.id
                for r in conn.execute(select(d.app_id, d.device_id, d.id))
            }
        assert ordinals == [ids[(row[0], row[1])] for row in rows]
        assert len(ids) == len({(row[0], row[1]) for row in rows})


def test_a_merge_that_fails_leaves_nothing_stored(sqlite_harness: Harness) -> None:
    # The writer records a merged batch's ids while the importer merges its facts; if the
    # merge fails, the ids must not stay recorded (they would make the events duplicates).
    h = sqlite_harness
    setup_app(h)
    facts: Future[FoldedFacts] = Future()
    facts.set_exception(MemoryError("merge failed"))
    batch = FoldedBatch(facts, frozenset({APP}), '["e1", "e2"]', 2, 0)
    with pytest.raises(MemoryError, match="merge failed"):
        h.rt.writer.run_blocking(partial(h.rt.pipeline.apply_folded, batch=batch))
    with h.rt.read_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(s.seen_events)) == 0


def _die(ip: str) -> bool:
    os._exit(3)


def test_a_parsing_process_that_dies_stops_the_import_with_a_reason(
    sqlite_harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = sqlite_harness
    setup_app(h)
    lines = [checkin("2024-05-10T10:00:00Z", str(uuid.uuid4()), ip="10.0.0.1") for _ in range(40)]
    path = write_lines(tmp_path / "events.jsonl", lines)
    # The parsing processes receive the pipeline's address lookup: this one ends the process.
    monkeypatch.setattr(h.rt.pipeline, "_is_google_ip", _die)
    importer = Importer(h.rt.writer, h.clock, slice_bytes=2000, parallel_min_bytes=0)
    with pytest.raises(ImportFailed, match="parsing process stopped"):
        importer.run(path)


def test_progress_reports_lines_and_bytes(harness: Harness, tmp_path: Path) -> None:
    setup_app(harness)
    lines = [
        {**checkin("2024-05-10T10:00:00Z", str(uuid.uuid4())), "id": f"p{n}"} for n in range(50)
    ]
    path = write_lines(tmp_path / "events.jsonl", lines)
    seen: list[tuple[int, int]] = []
    importer = Importer(harness.rt.writer, harness.clock, workers=0, slice_bytes=1000)
    importer.run(path, lambda n, size: seen.append((n, size)))
    assert len(seen) > 1  # one report a slice
    assert sum(n for n, _ in seen) == 50
    assert sum(size for _, size in seen) == path.stat().st_size
