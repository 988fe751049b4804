"""Latency of the statistics API over real HTTP: one big app, and an org of 100 apps.

Run with: python bench/bench_statistics.py [--db URL] [--devices 1000000] [--requests 1000]

How the history is built (fast, but through the real rollups):

- users, the org and its 100 apps are plain rows, written through the single writer;
- device activity is written as ``activity_deltas`` rows, exactly what the pipeline's group
  commits leave behind (one roaring bitmap of device ordinals per app, day and version), and
  then ``Rollups.run_blocking()`` merges them into ``activity_bitmaps`` and computes every
  ``daily_usage`` row, as the background worker does. The ``devices`` table is not filled:
  statistics never read it. Bundles and downloads go through ``Pipeline`` events.
- the big app has ``--devices`` devices (default 1 million) with about 15% of them active each
  day over 90 days (so its MAU is close to the whole population); the 99 others have 2,000.

Then ``otameter serve`` runs as a separate process on that database, and one client with a
kept-alive connection times sequential 90-day calls of ``/statistics/app/`` and
``/statistics/org/``; it prints the median and p99 of each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pyroaring import BitMap
from run import free_port
from sqlalchemy import Connection, select

from otameter.clock import SystemClock, day_start_ms
from otameter.config import Settings
from otameter.metering.events import BundleUpload, Download
from otameter.metering.ingest import DELTA_COLUMNS
from otameter.runtime import Runtime
from otameter.storage import app_rows
from otameter.storage import schema as s
from otameter.storage.db import migrate
from otameter.users import create_user

DAYS = 90
APPS = 100
SMALL_APP_DEVICES = 2_000
DAILY_SHARE = 0.15


def build(db_url: str, data_dir: Path, devices: int, seed: int) -> tuple[str, str, str]:
    """Fill the database; returns (api key, big app id, org id)."""
    rng = random.Random(seed)
    migrate(db_url)
    rt = Runtime(Settings(database_url=db_url, data_dir=data_dir), SystemClock())
    rt.start(background=False)
    try:
        today = rt.clock.now().date()
        first = today - timedelta(days=DAYS - 1)
        created_ms = day_start_ms(first) - 86_400_000
        _, key = rt.writer.run_blocking(
            lambda conn: create_user(conn, "bench@example.com", "", created_ms)
        )
        org_id = str(uuid.uuid4())
        apps = ["com.bench.big"] + [f"com.bench.app{n:02d}" for n in range(1, APPS)]

        def rows(conn: Connection) -> None:
            user_id = conn.scalar(select(s.users.c.id))
            conn.execute(
                s.orgs.insert().values(
                    id=org_id, name="Bench", created_by=user_id, created_at=created_ms
                )
            )
            conn.execute(
                s.org_members.insert().values(
                    org_id=org_id, user_id=user_id, role="super_admin", created_at=created_ms
                )
            )
            conn.execute(
                s.apps.insert(),
                [
                    {"app_id": a, "name": a, "owner_org": org_id, "created_at": created_ms}
                    for a in apps
                ],
            )

        rt.writer.run_blocking(rows)

        started = time.perf_counter()
        for app_id in apps:
            population = devices if app_id == apps[0] else SMALL_APP_DEVICES
            per_day = max(1, int(population * DAILY_SHARE))
            deltas = []
            for n in range(DAYS):
                day = first + timedelta(days=n)
                active = BitMap(rng.sample(range(1, population + 1), per_day))
                deltas.append((app_id, day, "counted", f"1.0.{n // 30}", active.serialize()))
            rt.writer.run_blocking(
                lambda conn, d=deltas: app_rows.insert(conn, "activity_deltas", DELTA_COLUMNS, d)
            )
        events: list[BundleUpload | Download] = []
        for app_id in apps:
            for n in range(0, DAYS, 30):
                at = day_start_ms(first + timedelta(days=n)) + 3_600_000
                events.append(BundleUpload(app_id, f"1.0.{n // 30}", 5_000_000 + n, at))
            downloads_per_day = 200 if app_id == apps[0] else 5
            for n in range(DAYS):
                base = day_start_ms(first + timedelta(days=n)) + 7_200_000
                for i in range(downloads_per_day):
                    events.append(Download(app_id, "", f"1.0.{n // 30}", 5_000_000, base + i))
        for i in range(0, len(events), 2000):
            rt.writer.submit_blocking(events[i : i + 2000])
        written = time.perf_counter() - started
        started = time.perf_counter()
        report = rt.rollups.run_blocking()
        rolled = time.perf_counter() - started
        print(
            f"history: {len(apps)} apps, {devices:,} devices in the big app, {DAYS} days; "
            f"facts written in {written:.1f} s, rollups ({report.days_recomputed} days "
            f"recomputed) in {rolled:.1f} s"
        )
    finally:
        rt.stop()
    return key, apps[0], org_id


# The same server as ``otameter serve`` but without the background workers (rollups, plan
# checks, webhooks), to tell their share of the tail latency apart.
QUIET_SERVER = """
import sys, uvicorn
from pathlib import Path
from otameter.api import create_app
from otameter.config import Settings
from otameter.runtime import Runtime
settings = Settings(database_url=sys.argv[1], data_dir=Path(sys.argv[2]),
                    rollup_interval_seconds=0)
uvicorn.run(create_app(Runtime(settings)), host="127.0.0.1", port=int(sys.argv[3]),
            http="httptools", loop="uvloop", access_log=False, log_level="warning")
"""


def serve(db_url: str, data_dir: Path, port: int, quiet: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OTAMETER_SQLITE_SYNCHRONOUS": "NORMAL"}
    if quiet:
        command = [sys.executable, "-c", QUIET_SERVER, db_url, str(data_dir), str(port)]
    else:
        command = [
            sys.executable,
            "-m",
            "otameter",
            "serve",
            "--db",
            db_url,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start")


def timed(client: httpx.Client, url: str, count: int) -> list[float]:
    for _ in range(20):
        client.get(url).raise_for_status()
    out = []
    for _ in range(count):
        started = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
    return out


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{name}: {len(samples)} calls, median {statistics.median(samples):.2f} ms, "
        f"p99 {p99:.2f} ms, max {ordered[-1]:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-background",
        action="store_true",
        help="serve without the background workers (to isolate their effect on latency)",
    )
    parser.add_argument(
        "--keep", type=Path, help="directory to build the SQLite history in once and reuse"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data_dir = work / "data"
        db_url = args.db or f"sqlite:///{work}/bench.db"
        saved = work / "bench.json"
        if args.keep and saved.exists():
            key, app_id, org_id = json.loads(saved.read_text())
        else:
            key, app_id, org_id = build(db_url, data_dir, args.devices, args.seed)
            saved.write_text(json.dumps([key, app_id, org_id]))
        port = free_port()
        server = serve(db_url, data_dir, port, args.no_background)
        try:
            today = datetime.now(UTC).date()
            span = f"from={(today - timedelta(days=DAYS - 1)).isoformat()}&to={today.isoformat()}"
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers={"authorization": key}) as client:
                rows = client.get(f"/statistics/app/{app_id}/?{span}").json()["data"]
                assert len(rows) == DAYS, len(rows)
                print(f"big app, last day: {rows[-1]}")
                report(
                    "GET /statistics/app/ (90 days, 1 app)",
                    timed(client, f"/statistics/app/{app_id}/?{span}", args.requests),
                )
                report(
                    "GET /statistics/org/ (90 days, 100 apps)",
                    timed(client, f"/statistics/org/{org_id}/?{span}", args.requests),
                )
                report(
                    "GET /statistics/app/.../bundle_usage/ (90 days)",
                    timed(client, f"/statistics/app/{app_id}/bundle_usage/?{span}", 200),
                )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
