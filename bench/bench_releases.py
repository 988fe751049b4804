"""Release health: the ingest cost of ``POST /stats`` batches and what the facts cost to store.

Run with: python bench/bench_releases.py [--devices 20000] [--batch 40] [--clients 16] [--db URL]

1. ``otameter serve`` (a separate process, durable settings: SQLite ``synchronous=FULL``) on a
   fresh database with one app and its bundle; ``--clients`` threads, each with a kept-alive
   connection, POST the plugin's own sequences as arrays of ``--batch`` events (a device:
   progress, ``download_complete``, ``set``, launches with ``duration_ms``; one in ten a
   failure, one in twenty an ``update_fail``, one in twenty a crash), every device once, spread
   over three versions. The figures are events per second through the real HTTP endpoint
   (parsing, the writer's group commit, the raw log, the device sets and launch histograms)
   and the server's CPU time per event (less sensitive to other work on the machine).
2. After the server's rollups merged everything: the bytes of the raw log (``device_events``
   and its indexes) per million events, and the bytes of the aggregates (the release device
   sets in ``activity_bitmaps``, ``release_launches``) per million devices, read from SQLite's
   ``dbstat`` (pages actually used). A device known only from its stats events also has a
   ``devices`` row, shared with MAU: its cost per million devices is printed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from run import free_port

APP = "com.bench.releases"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


def device_events(rng: random.Random, device: str) -> list[dict[str, Any]]:
    """The stats one device sends for one update, as the plugin does (plugin-protocol.md §3)."""
    version = rng.choice(VERSIONS)
    base = {
        "app_id": APP,
        "device_id": device,
        "platform": rng.choice(("android", "ios")),
        "version_build": "1.0.0",
        "version_code": "1",
        "version_os": "14",
        "plugin_version": "8.51.14",
        "is_emulator": False,
        "is_prod": True,
        "custom_id": "",
        "defaultChannel": "",
    }
    ts = 1_733_000_000_000 + rng.randrange(10**9)
    actions = ["download_zip_start", "download_50", "download_complete", "set"]
    roll = rng.random()
    if roll < 0.1:
        actions = ["download_zip_start", "download_fail"]
    elif roll < 0.15:
        actions += ["app_launch_start", "app_launch_timeout", "update_fail"]
    elif roll < 0.2:
        actions += ["app_crash"]
    out = []
    for n, action in enumerate(actions):
        out.append({**base, "action": action, "version_name": version, "timestamp": ts + n})
    if "set" in actions and "update_fail" not in actions:
        ms = str(int(rng.lognormvariate(6.5, 0.6)))
        out.append(
            {
                **base,
                "action": "app_launch_ready",
                "version_name": version,
                "timestamp": ts + 10,
                "metadata": {"duration_ms": ms, "source": "cold"},
            }
        )
    return out


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc): a figure that other work
    on a shared machine does not inflate as much as wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def table_bytes(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="otameter-bench-releases-"))
    db_path = work / "otameter.db"
    db_url = f"sqlite:///{db_path}"
    env = {**os.environ, "OTAMETER_DATABASE_URL": db_url, "OTAMETER_DATA_DIR": str(work / "data")}
    py = sys.executable
    subprocess.run([py, "-m", "otameter", "migrate"], env=env, check=True, capture_output=True)
    made = subprocess.run(
        [py, "-m", "otameter", "user", "create", "--email", "bench@example.com"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    key = json.loads(made.stdout)["api_key"]
    port = free_port()
    server = subprocess.Popen(
        [py, "-m", "otameter", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"authorization": key}, timeout=60) as http:
            for _ in range(600):  # readiness wait
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            org = http.post("/organization", json={"name": "Bench"}).json()["id"]
            http.post("/app", json={"app_id": APP, "name": "Bench", "owner_org": org})

            events = [e for _ in range(args.devices) for e in device_events(rng, str(uuid.uuid4()))]
            batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
            print(
                f"{args.devices:,} devices, {len(events):,} events in {len(batches):,} batches "
                f"of {args.batch}, {args.clients} clients",
                flush=True,
            )
            queue = list(reversed(batches))
            lock = threading.Lock()
            failures: list[str] = []

            def client() -> None:
                with httpx.Client(base_url=base, timeout=60) as own:
                    while True:
                        with lock:
                            if not queue:
                                return
                            batch = queue.pop()
                        answer = own.post("/stats", json=batch)
                        if answer.status_code != 200:
                            failures.append(answer.text[:200])

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            cpu_before = cpu_seconds(server.pid)
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            server_cpu = cpu_seconds(server.pid) - cpu_before
            if failures:
                raise SystemExit(f"{len(failures)} batches failed, first: {failures[0]}")
            print(
                f"ingest: {len(events) / elapsed:,.0f} events/s "
                f"({len(batches) / elapsed:,.0f} batches/s, {elapsed:.1f} s); the server used "
                f"{server_cpu:.1f} s of CPU, {server_cpu / len(events) * 1e6:,.0f} µs an event "
                f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)",
                flush=True,
            )

            # Wait for the background rollups to merge every delta, then read the rows back.
            today = time.strftime("%Y-%m-%d", time.gmtime())
            for _ in range(600):
                with sqlite3.connect(db_path) as conn:
                    left = conn.execute("SELECT COUNT(*) FROM activity_deltas").fetchone()[0]
                if not left:
                    break
                time.sleep(0.5)
            rows = http.get(
                f"/statistics/app/{APP}/releases/", params={"from": today, "to": today}
            ).json()["data"]
            for row in rows:
                print(
                    "  ",
                    {
                        k: row[k]
                        for k in (
                            "version",
                            "downloaded",
                            "installed",
                            "failed",
                            "rolled_back",
                            "crashed",
                            "launches",
                            "launch_ms_p50",
                            "launch_ms_p95",
                        )
                    },
                )
    finally:
        server.terminate()
        server.wait(timeout=30)

    sizes = table_bytes(db_path)
    raw = sum(
        sizes.get(name, 0)
        for name in (
            "device_events",
            "ix_device_events_app_device_at",
            "ux_device_events_event",
            "ix_device_events_at",
        )
    )
    with sqlite3.connect(db_path) as conn:
        (bitmaps, bitmap_rows) = conn.execute(
            "SELECT SUM(LENGTH(bitmap)), COUNT(*) FROM activity_bitmaps WHERE kind IN "
            "('offered','downloaded','installed','failed','rolled_back','crashed')"
        ).fetchone()
        (all_bitmap_rows,) = conn.execute("SELECT COUNT(*) FROM activity_bitmaps").fetchone()
        (device_rows,) = conn.execute("SELECT COUNT(*) FROM devices").fetchone()
    # The release rows' share of activity_bitmaps' pages (and its primary key index).
    share = bitmap_rows / all_bitmap_rows if all_bitmap_rows else 0
    bitmap_pages = share * (
        sizes.get("activity_bitmaps", 0) + sizes.get("sqlite_autoindex_activity_bitmaps_1", 0)
    )
    aggregates = bitmap_pages + sizes.get("release_launches", 0)
    aggregates += sizes.get("sqlite_autoindex_release_launches_1", 0)
    devices_bytes = sum(v for k, v in sizes.items() if "devices" in k and "channel" not in k)
    n_events = len(events)
    print(
        f"raw log: {raw / n_events * 1e6 / 2**20:,.0f} MiB per million events "
        f"({raw / n_events:,.0f} B an event, table and 3 indexes; kept for the retention)"
    )
    print(
        f"aggregates: {aggregates / args.devices * 1e6 / 2**20:,.1f} MiB per million devices "
        f"({bitmaps:,} B of bitmaps in {bitmap_rows} rows, launch histograms "
        f"{sizes.get('release_launches', 0):,} B)"
    )
    print(
        f"device rows (shared with MAU): {devices_bytes / max(device_rows, 1) * 1e6 / 2**20:,.0f}"
        f" MiB per million devices"
    )
    print(f"(database left in {work})")


if __name__ == "__main__":
    main()
