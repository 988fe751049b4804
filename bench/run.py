"""The otameter benchmark suite: ``python bench/run.py [--quick]`` (or ``make bench``).

Everything runs on 127.0.0.1 and prints one table:

- the CEILING of the stack: uvicorn + Starlette answering /updates with a constant (no
  database), with 1 and 2 processes;
- the NAIVE BASELINE: one UPSERT and one COMMIT per check-in on SQLite, synchronous=FULL
  and NORMAL (one process);
- otameter: check-ins/s over HTTP with 1 and 2 workers on SQLite and PostgreSQL, the
  p50/p99 latency of /updates at 80% of that rate, the peak RSS of the server, and the
  database size per million devices;
- import events/s, statistics latency and bundle transfers (a big bundle through two servers
  on PostgreSQL, and from a file), from bench/bench_import.py, bench/bench_statistics.py and
  bench/bench_bundle_store.py when they exist.

Load comes from ``wrk`` (apt-get install wrk) with bench/updates.lua: valid plugin bodies for
random devices of a pool. Rates are closed-loop maxima; the latency run paces each connection
(wrk's ``delay()``) to 80% of the measured maximum. PostgreSQL runs with its durable defaults
(fsync on, synchronous_commit on), SQLite with otameter's default synchronous=FULL unless the
row says otherwise: every acknowledged check-in survives power loss.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
LUA = BENCH / "updates.lua"
APP_ID = "com.bench.app"
DEVICE_VERSION = "1.0.0"  # the bundle served is the device's: the common "up to date" answer
CONNECTIONS = 64  # wrk connections (--connections)


@dataclass
class Config:
    quick: bool
    duration: int
    pool: int
    only: list[str]
    workdir: Path

    def wanted(self, name: str) -> bool:
        return not self.only or any(part in name for part in self.only)


@dataclass
class Row:
    name: str
    rps: float | None = None
    errors: int = 0
    p50: float | None = None
    p99: float | None = None
    paced_rps: float | None = None
    rss_mb: float | None = None
    bytes_per_million: float | None = None
    devices: int | None = None
    kind: str = "otameter"  # ceiling | naive | otameter
    workers: int = 1
    note: str = ""
    cpu_us: float | None = None
    # Seconds from the end of the load until every logged check-in was folded.
    fold_lag: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tree_rss_kb(pgid: int) -> int:
    """Resident memory of every process in a process group, in KiB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            # Fields after the command name (which may hold spaces): state ppid pgrp ...
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total


def _tree_cpu_seconds(pgid: int) -> float:
    """User and system CPU time used so far by the live processes of a process group."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess in its own process group; samples the group's total RSS."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.argv = argv
        self.port = port
        self.env = env
        self.log = log
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {self.log}")
            time.sleep(0.1)
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        assert self.proc is not None
        while not self._stop.wait(0.25):
            self.peak_rss_kb = max(self.peak_rss_kb, tree_rss_kb(self.proc.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wrk(port: int, seconds: int, pool: int, rate: float = 0) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_APP_ID": APP_ID,
        "BENCH_POOL": str(pool),
        "BENCH_RATE": str(int(rate)),
        "BENCH_CONNECTIONS": str(CONNECTIONS),
    }
    argv = [
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            result["errors"] = sum(v for k, v in result.items() if k.startswith("errors_"))
            return result
    raise RuntimeError(f"no result from wrk:\n{done.stdout}\n{done.stderr}")


def load(row: Row, server: Server, cfg: Config) -> None:
    """Maximum rate, then latency at 80% of it."""
    wrk(server.port, 1 if cfg.quick else 3, cfg.pool)  # warm-up: caches, pools, JIT of plans
    assert server.proc is not None
    cpu = _tree_cpu_seconds(server.proc.pid)
    best = wrk(server.port, cfg.duration, cfg.pool)
    # CPU time per request: what a request costs the server, however busy the machine is
    # (the rates of a shared machine are not comparable from one row to the next).
    row.cpu_us = (_tree_cpu_seconds(server.proc.pid) - cpu) / max(best["requests"], 1) * 1e6
    row.rps = best["rps"]
    row.errors = best["errors"]
    # wrk paces each connection with a delay between its requests; the achieved rate falls
    # short by the time requests take, so the asked rate is corrected until it is reached.
    target = 0.8 * best["rps"]
    asked = target
    for _ in range(3):
        paced = wrk(server.port, cfg.duration, cfg.pool, rate=asked)
        row.errors += paced["errors"]
        if paced["rps"] >= 0.95 * target:
            break
        asked *= target / max(paced["rps"], 1.0)
    row.p50, row.p99, row.paced_rps = paced["p50_ms"], paced["p99_ms"], paced["rps"]
    row.rss_mb = server.peak_rss_kb / 1024


def uvicorn_argv(module: str, port: int, workers: int) -> list[str]:
    return [
        PY,
        "-m",
        "uvicorn",
        f"{module}:app",
        "--app-dir",
        str(BENCH),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


# -- the scenarios ----------------------------------------------------------------------------


def ceiling(cfg: Config, workers: int) -> Row:
    row = Row(f"ceiling: constant answer, {workers} proc", kind="ceiling", workers=workers)
    port = free_port()
    with Server(
        uvicorn_argv("stack_ceiling", port, workers),
        port,
        dict(os.environ),
        cfg.workdir / "ceiling.log",
    ) as server:
        wrk(port, 1, cfg.pool)
        assert server.proc is not None
        cpu = _tree_cpu_seconds(server.proc.pid)
        result = wrk(port, cfg.duration, cfg.pool)
        row.cpu_us = (_tree_cpu_seconds(server.proc.pid) - cpu) / max(result["requests"], 1) * 1e6
        row.rps, row.errors = result["rps"], result["errors"]
        row.rss_mb = server.peak_rss_kb / 1024
    return row


def naive(cfg: Config, synchronous: str) -> Row:
    row = Row(f"naive: UPSERT+COMMIT each, SQLite {synchronous}", kind="naive")
    port = free_port()
    db = cfg.workdir / f"naive-{synchronous}.db"
    env = {**os.environ, "BENCH_NAIVE_DB": str(db), "BENCH_NAIVE_SYNCHRONOUS": synchronous}
    with Server(
        uvicorn_argv("naive_baseline", port, 1), port, env, cfg.workdir / "naive.log"
    ) as server:
        load(row, server, cfg)
    return row


def otameter_cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [PY, "-m", "otameter", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"otameter {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def bundle_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.html", "<!doctype html><title>bench</title>" + "x" * 4000)
    return buffer.getvalue()


def create_app(port: int, key: str) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"authorization": key}) as c:
        org = c.post("/organization", json={"name": "Bench"})
        org.raise_for_status()
        c.post(
            "/app", json={"app_id": APP_ID, "name": "Bench", "owner_org": org.json()["id"]}
        ).raise_for_status()
        c.post(
            "/bundle",
            data={"app_id": APP_ID, "version": DEVICE_VERSION, "channel": "production"},
            files={"file": ("b.zip", bundle_zip(), "application/zip")},
        ).raise_for_status()


def database_size(url: str, path: Path | None) -> int:
    if path is not None:
        return sum(
            p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
        )
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert row is not None
        return int(row[0])


def device_count(url: str, path: Path | None) -> int:
    if path is not None:
        import sqlite3

        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("SELECT count(*) FROM devices").fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM devices").fetchone()
        assert row is not None
        return int(row[0])


def log_backlog(url: str, path: Path | None) -> int:
    """Check-ins logged and not folded yet."""
    sql = "SELECT COALESCE(SUM(checkins), 0) FROM checkin_log"
    if path is not None:
        import sqlite3

        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute(sql).fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def otameter(cfg: Config, engine: str, workers: int, pg: PgCluster | None, sync: str) -> Row:
    label = "SQLite" if engine == "sqlite" else "PostgreSQL"
    if engine == "sqlite":
        label += f" {sync}"
    row = Row(f"otameter: {label}, {workers} worker{'s' if workers > 1 else ''}", workers=workers)
    run_dir = Path(tempfile.mkdtemp(prefix=f"otameter-{engine}-", dir=cfg.workdir))
    path: Path | None = None
    if engine == "sqlite":
        path = run_dir / "otameter.db"
        url = f"sqlite:///{path}"
    else:
        assert pg is not None
        url = pg.new_database()
    env = {
        **os.environ,
        "OTAMETER_DATABASE_URL": url,
        "OTAMETER_DATA_DIR": str(run_dir / "data"),
        "OTAMETER_SQLITE_SYNCHRONOUS": sync,
        # wrk sends every device of its pool from 127.0.0.1: one address, many new devices.
        "OTAMETER_NEW_DEVICES_PER_IP_HOUR": "100000000",
    }
    otameter_cli("migrate", env=env)
    key = json.loads(otameter_cli("user", "create", "--email", "bench@example.com", env=env))[
        "api_key"
    ]
    port = free_port()
    argv = [PY, "-m", "otameter", "serve", "--port", str(port), "--workers", str(workers)]
    with Server(argv, port, env, run_dir / "server.log") as server:
        create_app(port, key)
        empty = database_size(url, path)
        load(row, server, cfg)
        # Check-ins are logged, then folded by the rollup: how long until the last one is
        # in the device table (the contract allows 10 s for statistics).
        t0 = time.monotonic()
        while log_backlog(url, path) and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        row.fold_lag = time.monotonic() - t0
        time.sleep(2.5)  # let the rollup worker merge the last deltas
    row.devices = device_count(url, path)
    if row.devices:
        row.bytes_per_million = (database_size(url, path) - empty) / row.devices * 1e6
    if engine == "sqlite":
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


# -- PostgreSQL -------------------------------------------------------------------------------


class PgCluster:
    """A throwaway PostgreSQL cluster with durable settings (fsync, synchronous_commit)."""

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.pgserver import _Cluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.cluster = _Cluster(bindir)
        self.cluster.initdb()
        self.port = self.cluster.start()
        self.base = f"postgresql://postgres@127.0.0.1:{self.port}"
        import psycopg

        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            # The test cluster starts without durability; benchmarks measure it durable.
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {setting} = on")
            conn.execute("SELECT pg_reload_conf()")
        self.count = 0

    def new_database(self) -> str:
        import psycopg

        self.count += 1
        name = f"bench_{self.count}"
        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"{self.base}/{name}"

    def close(self) -> None:
        try:
            self.cluster.stop()
        finally:
            self.cluster.remove()


@contextlib.contextmanager
def postgres(cfg: Config) -> Iterator[PgCluster | None]:
    if not any(cfg.wanted(f"otameter PostgreSQL {n}") for n in (1, 2)):
        yield None
        return
    try:
        cluster = PgCluster()
    except Exception as exc:
        print(f"PostgreSQL unavailable, its rows are skipped: {exc}", file=sys.stderr)
        yield None
        return
    try:
        yield cluster
    finally:
        cluster.close()


# -- scripts written alongside ---------------------------------------------------------------


QUICK_ARGS = {
    "bench_import.py": ["--events", "100000", "--devices", "20000", "--downloads", "2000"],
    "bench_statistics.py": ["--devices", "100000", "--requests", "200"],
    "bench_bundle_store.py": ["--size-mb", "50", "--rounds", "2"],
}
# Lines of their output that carry the headline figures.
HEADLINE = re.compile(r"events/s|median|p50|p99|MB/s|peak RSS", re.IGNORECASE)


def external(script: str, cfg: Config) -> tuple[str, list[str]]:
    """Run bench/<script> if present (smaller inputs with --quick); returns its output."""
    path = BENCH / script
    if not path.exists():
        return f"{script}: not present", []
    argv = [PY, str(path), *(QUICK_ARGS.get(script, []) if cfg.quick else [])]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    status = "" if done.returncode == 0 else f" (exit {done.returncode})"
    headlines = [line.strip() for line in done.stdout.splitlines() if HEADLINE.search(line)]
    text = f"--- {script}{status}:\n{done.stdout.rstrip()}\n{done.stderr.rstrip()}".rstrip()
    return text, [f"{script}: {line}" for line in headlines]


# -- the report -------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row], cfg: Config) -> None:
    ceilings = {r.workers: r.rps for r in rows if r.kind == "ceiling" and r.rps}
    naive_full = next((r.rps for r in rows if r.kind == "naive" and "FULL" in r.name), None)
    print()
    print(
        f"check-ins over HTTP: wrk -t1 -c{CONNECTIONS}, {cfg.duration} s, pool of {cfg.pool} "
        f"devices, 127.0.0.1, {os.cpu_count()} CPUs; latency at 80% of each row's maximum"
    )
    # Other work on the machine shows in every figure: say how busy it was.
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    header = (
        f"{'setup':<44} {'req/s':>8} {'%ceil':>6} {'xnaive':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'@req/s':>7} {'RSS MB':>7} {'MB/1M dev':>9} {'errors':>6} {'fold s':>6} {'CPU µs':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ceil = ceilings.get(r.workers)
        pct = 100 * r.rps / ceil if r.rps and ceil and r.kind != "ceiling" else None
        ratio = r.rps / naive_full if r.rps and naive_full and r.kind == "otameter" else None
        per_m = r.bytes_per_million / 1e6 if r.bytes_per_million else None
        print(
            f"{r.name:<44} {fmt(r.rps, '8.0f')} {fmt(pct, '5.0f')}% {fmt(ratio, '6.1f')} "
            f"{fmt(r.p50, '7.2f')} {fmt(r.p99, '7.2f')} {fmt(r.paced_rps, '7.0f')} "
            f"{fmt(r.rss_mb, '7.0f')} {fmt(per_m, '9.0f')} {r.errors:>6}"
            f" {fmt(r.fold_lag, '6.1f')} {fmt(r.cpu_us, '6.0f')}"
        )
    print(
        "fold s: seconds from the end of the load until the rollup had folded every logged"
        " check-in into the device table; CPU µs: CPU time of the server's processes per"
        " request at the maximum rate (PostgreSQL's own processes not included)"
    )


def main() -> None:
    global CONNECTIONS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, smaller pool")
    parser.add_argument("--duration", type=int, help="seconds per measurement")
    parser.add_argument("--pool", type=int, help="distinct devices in the load")
    parser.add_argument("--connections", type=int, help=f"wrk connections ({CONNECTIONS})")
    parser.add_argument(
        "--only", action="append", default=[], help="run rows whose name contains this"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk")
    if args.connections:
        CONNECTIONS = args.connections
    with tempfile.TemporaryDirectory(prefix="otameter-bench-") as tmp:
        cfg = Config(
            quick=args.quick,
            duration=args.duration or (4 if args.quick else 15),
            pool=args.pool or (20_000 if args.quick else 100_000),
            only=args.only,
            workdir=Path(tmp),
        )
        rows: list[Row] = []

        def step(name: str, fn: Any, *fn_args: Any) -> None:
            if not cfg.wanted(name):
                return
            print(f"... {name}", file=sys.stderr, flush=True)
            try:
                rows.append(fn(cfg, *fn_args))
            except Exception as exc:
                print(f"    failed: {exc}", file=sys.stderr)
                rows.append(Row(name, note=str(exc)))

        step("ceiling 1", ceiling, 1)
        step("ceiling 2", ceiling, 2)
        step("naive FULL", naive, "FULL")
        step("naive NORMAL", naive, "NORMAL")
        step("otameter SQLite FULL 1", otameter, "sqlite", 1, None, "FULL")
        step("otameter SQLite FULL 2", otameter, "sqlite", 2, None, "FULL")
        step("otameter SQLite NORMAL 1", otameter, "sqlite", 1, None, "NORMAL")
        with postgres(cfg) as pg:
            if pg is not None:
                step("otameter PostgreSQL 1", otameter, "postgresql", 1, pg, "FULL")
                step("otameter PostgreSQL 2", otameter, "postgresql", 2, pg, "FULL")
        outputs: list[str] = []
        extra: list[str] = []
        for script in ("bench_import.py", "bench_statistics.py", "bench_bundle_store.py"):
            if cfg.wanted(script):
                print(f"... {script}", file=sys.stderr, flush=True)
                text, headlines = external(script, cfg)
                outputs.append(text)
                extra += headlines
        if rows:
            print_table(rows, cfg)
        for row in rows:
            if row.note:
                print(f"{row.name}: FAILED {row.note}")
        if extra:
            print()
            print("import, statistics and bundle transfers (full output below):")
            for line in extra:
                print(f"  {line}")
        for text in outputs:
            print()
            print(text)


if __name__ == "__main__":
    main()
