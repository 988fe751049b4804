"""Events per second through a real ``otameter import`` into a fresh SQLite file.

Generates a JSON-lines file (by default 1,000,000 check-ins of 100,000 devices over the first
30 days of last month for one app, plus downloads and one bundle upload), runs
``otameter import`` as a subprocess, prints events/s, then checks the figures it produced.
Then, as the storage ceiling of an import, it upserts the same device rows (one per check-in
of the file) into a fresh SQLite file straight from Python: otameter's device UPSERT, batches
of 10,000 rows a transaction, synchronous=FULL; and prints the import's ratio to it.

Run with: python bench/bench_import.py [--events N] [--devices N] [--downloads N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
from pyroaring import BitMap
from sqlalchemy import func, select

from otameter.clock import to_ms
from otameter.metering.rollups import load_day_bitmaps, month_end
from otameter.statistics import month_unique_devices_from_device_table
from otameter.storage import schema as s
from otameter.storage.db import create_db_engine, migrate
from otameter.users import create_user

APP_ID = "com.bench.app"
# Runs the import and prints its usage. Linux carries a process's peak memory over fork and
# exec, so the import is started from this small process, not from the benchmark, which holds
# the generated events. The launcher's own time includes Python's start (about 20 ms).
LAUNCHER = """
import os, subprocess, sys, json
process = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(process.pid, 0)
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime,
                  "peak_mb": usage.ru_maxrss // 1024}))
"""
DAYS = 30


def first_of_last_month(today: date) -> date:
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


def setup_database(url: str) -> None:
    migrate(url)
    engine = create_db_engine(url, writer=True)
    now = to_ms(datetime.now(UTC))
    with engine.begin() as conn:
        user_id, _ = create_user(conn, "bench@example.com", "", now)
        org_id = str(uuid.uuid4())
        conn.execute(
            s.orgs.insert().values(id=org_id, name="Bench", created_by=user_id, created_at=now)
        )
        conn.execute(
            s.apps.insert().values(app_id=APP_ID, name="Bench", owner_org=org_id, created_at=0)
        )
    engine.dispose()


def generate(path: Path, events: int, devices: int, downloads: int, start: date) -> int:
    """Write the events in random time order; returns the number of lines."""
    rng = random.Random(1)
    start_ms = to_ms(datetime(start.year, start.month, start.day, tzinfo=UTC))
    span_ms = DAYS * 86_400_000
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(devices)]
    versions = ["1.0.0", "1.0.1", "1.1.0"]

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")

    lines = 0
    with open(path, "wb") as out:
        upload = {"type": "upload", "app_id": APP_ID, "version": "1.1.0", "size": 5_000_000}
        out.write(orjson.dumps({**upload, "time": iso(start_ms + 3_600_000), "id": "u1"}) + b"\n")
        lines += 1
        buffer: list[bytes] = []
        # Every device checks in at least once, the rest are repeat visits, and a device's
        # visits are spread over the file as they are over the month in a real log.
        visits = ids + [ids[rng.randrange(devices)] for _ in range(max(events - devices, 0))]
        rng.shuffle(visits)
        for n in range(events):
            device = visits[n]
            at = start_ms + rng.randrange(span_ms)
            record = {
                "type": "checkin",
                "id": f"c{n}",
                "time": iso(at),
                "app_id": APP_ID,
                "device_id": device,
                "platform": "android" if n % 3 else "ios",
                "version_name": versions[n % 3],
                "version_build": "1.0.0",
                "plugin_version": "8.51.14",
                "is_emulator": False,
                "is_prod": True,
                "ip": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
            }
            buffer.append(orjson.dumps(record))
            if len(buffer) >= 100_000:
                out.write(b"\n".join(buffer) + b"\n")
                lines += len(buffer)
                buffer.clear()
        for n in range(downloads):
            record = {
                "type": "download",
                "id": f"d{n}",
                "time": iso(start_ms + rng.randrange(span_ms)),
                "app_id": APP_ID,
                "device_id": ids[rng.randrange(devices)],
                "version": "1.1.0",
                "bytes": 5_000_000,
            }
            buffer.append(orjson.dumps(record))
        if buffer:
            out.write(b"\n".join(buffer) + b"\n")
            lines += len(buffer)
    return lines


def verify(url: str, devices: int, downloads: int, start: date) -> list[str]:
    problems: list[str] = []
    engine = create_db_engine(url)
    last = start + timedelta(days=DAYS - 1)
    with engine.connect() as conn:
        bitmaps = load_day_bitmaps(conn, APP_ID, start, month_end(start))
        union = BitMap.union(*bitmaps.values()) if bitmaps else BitMap()
        u = s.daily_usage.c
        new_sum = conn.scalar(
            select(func.sum(u.new_devices)).where(
                u.app_id == APP_ID, u.day >= start, u.day <= month_end(start)
            )
        )
        mau_last = conn.scalar(select(u.mau).where(u.app_id == APP_ID, u.day == last))
        bandwidth = conn.scalar(select(func.sum(u.bandwidth)).where(u.app_id == APP_ID))
        table_view = month_unique_devices_from_device_table(conn, APP_ID, start)
        device_rows = conn.scalar(select(func.count()).select_from(s.devices))
    engine.dispose()
    figures = {
        "month's unique devices (union of day bitmaps)": len(union),
        "sum of new_devices over the month": new_sum,
        f"30-day mau on {last}": mau_last,
        "month view from the device table": table_view,
        "device rows": device_rows,
    }
    for name, value in figures.items():
        print(f"  {name}: {value}")
        if value != devices:
            problems.append(f"{name} is {value}, expected {devices}")
    print(f"  bandwidth: {bandwidth}")
    if bandwidth != downloads * 5_000_000:
        problems.append(f"bandwidth is {bandwidth}, expected {downloads * 5_000_000}")
    return problems


def raw_upsert_ceiling(events_file: Path, workdir: Path, batch: int = 10_000) -> float:
    """Events/s of a raw batched UPSERT of each check-in's device row (no parsing, no fold)."""
    import sqlite3

    from otameter.metering.ingest import _DEVICE_UPSERT_SQLITE

    rows = []
    # Ordinals given here, before the clock starts (the import draws them from the app's
    # counter as it goes).
    ordinals: dict[str, int] = {}
    with open(events_file, "rb") as lines:
        for line in lines:
            e = orjson.loads(line)
            if e["type"] != "checkin":
                continue
            at = to_ms(datetime.fromisoformat(e["time"]))
            rows.append(
                (
                    e["app_id"],
                    e["device_id"],
                    at,
                    at,
                    at,
                    e["platform"],
                    e["version_name"],
                    e["version_build"],
                    "",
                    e["plugin_version"],
                    "",
                    e["is_emulator"],
                    e["is_prod"],
                    ordinals.setdefault(e["device_id"], len(ordinals) + 1),
                )
            )
    path = workdir / "raw.db"
    for stale in workdir.glob("raw.db*"):
        stale.unlink()
    migrate(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA cache_size=-65536")
    t0 = time.perf_counter()
    for at in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_DEVICE_UPSERT_SQLITE, rows[at : at + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    (stored,) = conn.execute("SELECT count(*) FROM devices").fetchone()
    conn.close()
    rate = len(rows) / elapsed
    print(
        f"raw batched UPSERT (SQLite FULL, {batch:,} rows a transaction, from Python):"
        f" {len(rows):,} check-ins into {stored:,} device rows in {elapsed:.2f} s"
        f" = {rate:,.0f} events/s"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="check-ins")
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--downloads", type=int, default=20_000)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="otameter-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    events_file = workdir / "events.jsonl"
    db_file = workdir / "bench.db"
    for stale in workdir.glob("bench.db*"):
        stale.unlink()
    url = f"sqlite:///{db_file}"
    start = first_of_last_month(datetime.now(UTC).date())

    t0 = time.perf_counter()
    lines = generate(events_file, args.events, args.devices, args.downloads, start)
    print(f"generated {lines} events in {time.perf_counter() - t0:.1f} s ({events_file})")
    # On disk before the clock starts: the kernel writing the file back in the background
    # would slow the import's own fsyncs.
    with open(events_file, "rb") as written:
        os.fsync(written.fileno())
    setup_database(url)

    env = {**os.environ, "OTAMETER_DATA_DIR": str(workdir / "data")}
    command = [sys.executable, "-m", "otameter", "import", str(events_file), "--db", url, "--json"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        launcher = [sys.executable, "-c", LAUNCHER, *command]
        t0 = time.perf_counter()
        subprocess.run(launcher, env=env, stdout=out, stderr=errors, check=False)
        elapsed = time.perf_counter() - t0
        out.seek(0)
        errors.seek(0)
        *output, measured = out.read().splitlines()
        usage = orjson.loads(measured)
        if usage["exit"] != 0:
            sys.exit(f"otameter import failed ({usage['exit']}):\n{errors.read().decode()}")
        summary = orjson.loads(output[-1])
    cpu = usage["cpu"]
    print(
        f"otameter import: {lines} events in {elapsed:.2f} s = {lines / elapsed:,.0f} events/s "
        f"(accepted {summary['accepted']}, duplicates {summary['duplicates']}, "
        f"rejected {summary['rejected']}); synchronous=FULL"
    )
    # The machine may be shared: CPU time says how much work the import itself did.
    print(
        f"  CPU time of the import and its parsing processes: {cpu:.2f} s; largest of their"
        f" peak memories {usage['peak_mb']} MB"
        f" (load average {os.getloadavg()[0]:.1f})"
    )
    problems = verify(url, args.devices, args.downloads, start)
    ceiling = raw_upsert_ceiling(events_file, workdir)
    print(f"import / raw UPSERT: {lines / elapsed / ceiling:.0%}")
    if summary["accepted"] != lines:
        problems.append(f"accepted {summary['accepted']} of {lines} lines")
    if problems:
        sys.exit("FAILED: " + "; ".join(problems))
    print("figures verified")


if __name__ == "__main__":
    main()
