"""What a wrong-key flood costs: ``python bench/bench_auth.py [--seconds N] [--workers N]``.

Starts ``otameter serve`` on SQLite (127.0.0.1, a free port), creates a user, then drives
``GET /organization`` with ``wrk`` (one thread, 32 connections): first with the valid key,
then with a wrong key from the same address (after the first few failures every answer is
429, which each process decides without a database write), then the valid key again while
the flood goes on. Prints requests/s and answers by status, and the rows the counter holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from run import free_port

PY = sys.executable


def otameter(*args: str) -> str:
    done = subprocess.run([PY, "-m", "otameter", *args], capture_output=True, text=True, check=True)
    return done.stdout


def wrk(url: str, key: str, seconds: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "-H", f"authorization: {key}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, f"{non2xx.group(1) if non2xx else 0} non-2xx"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "auth.db"
        url = f"sqlite:///{db}"
        otameter("migrate", "--db", url)
        key = json.loads(otameter("user", "create", "--email", "b@example.com", "--db", url))[
            "api_key"
        ]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")}
        server = subprocess.Popen(
            [PY, "-m", "otameter", "serve", "--db", url, "--port", str(port),
             "--workers", str(args.workers), "--data-dir", str(Path(tmp) / "data")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            target = base + "/organization"
            print(
                f"otameter serve --workers {args.workers}, SQLite, wrk -t1 -c32 -d{args.seconds}s"
            )
            rate, bad = wrk(target, key, args.seconds)
            print(f"valid key:                        {rate:>9,.0f} req/s ({bad})")
            rate, bad = wrk(target, "otm_wrong", args.seconds)
            print(f"wrong key, address over its limit: {rate:>8,.0f} req/s ({bad}, 429)")
            flood = subprocess.Popen(
                ["wrk", "-t1", "-c32", f"-d{args.seconds + 2}s", "-H", "authorization: otm_x",
                 target],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
            rate, bad = wrk(target, key, args.seconds)
            flood.wait()
            print(f"valid key during the flood:        {rate:>8,.0f} req/s ({bad})")
            with contextlib.closing(sqlite3.connect(db)) as conn:
                rows = conn.execute("SELECT scope, address, failures FROM auth_failures").fetchall()
            print(f"auth_failures rows: {rows}")
        finally:
            os.killpg(server.pid, 15)
            server.wait(30)


if __name__ == "__main__":
    main()
