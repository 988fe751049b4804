"""Soak test: a real ``otameter serve`` under mixed traffic for a set time.

``python bench/soak.py --duration 600`` starts a server on a fresh SQLite file (or ``--db``),
creates a user, an org, an app and a bundle, then runs ``--concurrency`` clients that each
loop over a weighted mix of requests until the time is up:

- check-ins (``POST /updates``) of devices drawn from a pool, some on the served version,
  most not (they get a download link);
- stats posts (``POST /stats``, 1 to 20 events);
- downloads of the links the check-ins answered;
- statistics (``GET /statistics/app/...``, JSON and CSV) and the org's usage;
- uploads of a new bundle version;
- bad input, each with the answer it must get: invalid JSON (400), a NUL in a version (400),
  a body over the bound (413), a head over the bound (431), ``%00`` in a path (400), an
  unknown app (429 ``app_not_found``, with Retry-After).

It prints, per kind: requests, unexpected answers (by status or exception), latency
percentiles; then the server's resident memory (all its processes) at the start of the load,
its peak, and at the end. An unexpected answer is anything else than the kind's expected
status; transport errors (timeouts, resets) are reported by exception name.

All traffic comes from 127.0.0.1, so the server runs with the new-devices-per-address limit
raised (the device pool is larger than its default).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from run import free_port, tree_rss_kb

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "com.soak.app"
SERVED = "1.0.0"


def bundle(version: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("index.html", f"<!doctype html><title>{version}</title>")
        archive.writestr("app.js", os.urandom(64 * 1024))
    return buffer.getvalue()


def device_body(device_id: str, version: str) -> dict[str, Any]:
    return {
        "platform": random.choice(["android", "ios"]),
        "device_id": device_id,
        "app_id": APP_ID,
        "custom_id": "",
        "version_build": "1.0.0",
        "version_code": "1",
        "version_os": "14",
        "version_name": version,
        "plugin_version": "8.51.14",
        "is_emulator": False,
        "is_prod": True,
        "defaultChannel": "",
    }


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unexpected: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    links: list[str] = field(default_factory=list)
    uploads: int = 0


class Soak:
    def __init__(self, base: str, key: str, pool: int) -> None:
        self.base = base
        self.key = key
        self.devices = [str(uuid.uuid4()) for _ in range(pool)]
        self.tally = Tally()
        self.day = time.strftime("%Y-%m-%d", time.gmtime())
        self.org_id = ""

    async def call(
        self, client: httpx.AsyncClient, kind: str, expect: int, method: str, url: str, **kw: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = await client.request(method, url, **kw)
            await r.aread()
        except httpx.HTTPError as exc:
            self.tally.unexpected[kind][type(exc).__name__] += 1
            return None
        finally:
            self.tally.latencies[kind].append(time.perf_counter() - started)
        if r.status_code != expect:
            self.tally.unexpected[kind][f"HTTP {r.status_code}"] += 1
        return r

    async def checkin(self, client: httpx.AsyncClient) -> None:
        version = SERVED if random.random() < 0.3 else "builtin"
        body = device_body(random.choice(self.devices), version)
        r = await self.call(client, "check-in", 200, "POST", "/updates", json=body)
        if r is not None and r.status_code == 200 and "url" in r.json():
            links = self.tally.links
            links.append(r.json()["url"])
            if len(links) > 1000:
                del links[:500]

    async def stats(self, client: httpx.AsyncClient) -> None:
        device = random.choice(self.devices)
        events = [
            {
                **device_body(device, SERVED),
                "action": random.choice(["app_moved_to_foreground", "set", "download_complete"]),
                "timestamp": int(time.time() * 1000),
            }
            for _ in range(random.randint(1, 20))
        ]
        await self.call(client, "stats", 200, "POST", "/stats", json=events)

    async def download(self, client: httpx.AsyncClient) -> None:
        if not self.tally.links:
            return await self.checkin(client)
        await self.call(client, "download", 200, "GET", random.choice(self.tally.links))

    async def statistics(self, client: httpx.AsyncClient) -> None:
        auth = {"authorization": self.key}
        choice = random.random()
        if choice < 0.5:
            url = f"/statistics/app/{APP_ID}/?from={self.day}&to={self.day}"
        elif choice < 0.7:
            url = f"/statistics/app/{APP_ID}/?from={self.day}&to={self.day}&format=csv"
        elif choice < 0.85:
            url = f"/statistics/app/{APP_ID}/bundle_usage/?from={self.day}&to={self.day}"
        else:
            url = f"/organization/{self.org_id}/usage"
        await self.call(client, "statistics", 200, "GET", url, headers=auth)

    async def upload(self, client: httpx.AsyncClient) -> None:
        self.tally.uploads += 1
        version = f"2.0.{self.tally.uploads}"
        await self.call(
            client,
            "upload",
            201,
            "POST",
            "/bundle",
            data={"app_id": APP_ID, "version": version, "channel": "beta"},
            files={"file": ("b.zip", bundle(version), "application/zip")},
            headers={"authorization": self.key},
        )

    async def bad(self, client: httpx.AsyncClient) -> None:
        device = random.choice(self.devices)
        case = random.randrange(6)
        if case == 0:
            await self.call(
                client,
                "bad: invalid JSON",
                400,
                "POST",
                "/updates",
                content=b"{not json",
                headers={"content-type": "application/json"},
            )
        elif case == 1:
            body = device_body(device, "1.0\u0000")
            await self.call(client, "bad: NUL", 400, "POST", "/updates", json=body)
        elif case == 2:
            body = {**device_body(device, SERVED), "padding": "x" * 40_000}
            await self.call(client, "bad: body too large", 413, "POST", "/updates", json=body)
        elif case == 3:
            # Its own connection: the server closes it after the 431.
            async with httpx.AsyncClient(base_url=self.base, timeout=30) as one:
                await self.call(
                    one,
                    "bad: head too large",
                    431,
                    "GET",
                    "/health",
                    headers={"x-pad": "y" * 40_000},
                )
        elif case == 4:
            await self.call(
                client,
                "bad: %00 in path",
                400,
                "GET",
                "/app/com.soak.app%00",
                headers={"authorization": self.key},
            )
        else:
            body = {**device_body(device, SERVED), "app_id": "com.unknown.app"}
            await self.call(client, "bad: unknown app", 429, "POST", "/updates", json=body)

    async def worker(self, deadline: float) -> None:
        actions = [
            (self.checkin, 50),
            (self.stats, 20),
            (self.download, 8),
            (self.statistics, 8),
            (self.upload, 1),
            (self.bad, 13),
        ]
        funcs = [f for f, _ in actions]
        weights = [w for _, w in actions]
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            while time.monotonic() < deadline:
                await random.choices(funcs, weights)[0](client)


def run(argv: list[str], env: dict[str, str], **kw: Any) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, **kw)
    return done.stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--devices", type=int, default=20_000, help="device pool")
    parser.add_argument("--db", help="database URL (default: SQLite in a temporary dir)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="otameter-soak-"))
    url = args.db or f"sqlite:///{work}/otameter.db"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")},
        "OTAMETER_DATABASE_URL": url,
        "OTAMETER_DATA_DIR": str(work / "data"),
        "OTAMETER_NEW_DEVICES_PER_IP_HOUR": "100000000",
    }
    py = [sys.executable, "-m", "otameter"]
    run([*py, "migrate"], env)
    key = json.loads(run([*py, "user", "create", "--email", "soak@example.com"], env))["api_key"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(
        [*py, "serve", "--port", str(port), "--workers", str(args.workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {work / 'server.log'}")
            time.sleep(0.2)
        soak = Soak(base, key, args.devices)
        with httpx.Client(base_url=base, headers={"authorization": key}, timeout=30) as c:
            soak.org_id = c.post("/organization", json={"name": "Soak"}).json()["id"]
            c.post("/app", json={"app_id": APP_ID, "name": "Soak", "owner_org": soak.org_id})
            r = c.post(
                "/bundle",
                data={"app_id": APP_ID, "version": SERVED, "channel": "production"},
                files={"file": ("b.zip", bundle(SERVED), "application/zip")},
            )
            r.raise_for_status()
        rss_start = tree_rss_kb(server.pid)
        peak = [rss_start]
        # RSS once a minute: growth that levels off is caches filling, steady growth a leak.
        timeline: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            seconds = 0
            while not stop.wait(1):
                seconds += 1
                rss = tree_rss_kb(server.pid)
                peak[0] = max(peak[0], rss)
                if seconds % 60 == 0:
                    timeline.append(rss)

        threading.Thread(target=sample, daemon=True).start()
        started = time.monotonic()
        end = started + args.duration

        async def load() -> None:
            await asyncio.gather(*(soak.worker(end) for _ in range(args.concurrency)))

        asyncio.run(load())
        elapsed = time.monotonic() - started
        stop.set()
        rss_end = tree_rss_kb(server.pid)
        report(soak.tally, elapsed, rss_start, max(peak[0], rss_end), rss_end, args, url)
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
            # SQLite keeps up to 64 MB of pages per connection: RSS follows the database.
            print(f"database at the end: {size / 1024 / 1024:.0f} MB (with its WAL)")
        if timeline:
            print("server RSS each minute (MB): " + " ".join(f"{kb / 1024:.0f}" for kb in timeline))
        if server.poll() is not None:
            print(f"the server exited during the run; see {work / 'server.log'}")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        log.close()
        if args.db is None:
            shutil.rmtree(work, ignore_errors=True)


def report(
    tally: Tally,
    elapsed: float,
    rss_start: int,
    rss_peak: int,
    rss_end: int,
    args: argparse.Namespace,
    url: str,
) -> None:
    total = sum(len(v) for v in tally.latencies.values())
    engine = url.split(":", 1)[0]
    print(
        f"soak: {elapsed:.0f} s, {args.concurrency} clients, {args.workers} worker(s), "
        f"{engine}, {total} requests ({total / elapsed:.0f}/s)"
    )
    print(
        f"{'kind':24} {'requests':>9} {'unexpected':>10} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}"
    )
    for kind in sorted(tally.latencies):
        values = tally.latencies[kind]
        bad = sum(tally.unexpected[kind].values())
        print(
            f"{kind:24} {len(values):9} {bad:10} {percentile(values, 0.5):8.1f} "
            f"{percentile(values, 0.95):8.1f} {percentile(values, 0.99):8.1f} "
            f"{max(values) * 1000:8.1f}"
        )
    problems = {k: dict(v) for k, v in tally.unexpected.items() if v}
    print(f"unexpected answers by kind: {problems or 'none'}")
    print(
        f"server RSS: start {rss_start / 1024:.0f} MB, peak {rss_peak / 1024:.0f} MB, "
        f"end {rss_end / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
