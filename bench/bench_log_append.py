"""The check-in log's group commit on SQLite before and after migration 0010.

``python bench/bench_log_append.py [--commits N] [--batch N] [--rounds N]``

Migration 0010 keys ``checkin_log`` by ``(app_id, id)``: on SQLite the row is then written
to the table and to its key's index, and its id is given by the insert (``app_rows.py``)
instead of by the INTEGER PRIMARY KEY. This appends
the same records (``--batch`` check-ins of one app each, as a group commit logs them) with
``synchronous=FULL`` and one commit each, on a database at revision 0008 and one at the
head, in alternating rounds, and prints the commits per second and the WAL bytes written
per commit of each. Draining is left out: it is the same on both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from alembic import command

from otameter.metering import checkin_log
from otameter.metering.events import CheckIn
from otameter.storage.db import alembic_config, create_db_engine

APP = "com.example.app"


def checkins(batch: int) -> list[CheckIn]:
    return [
        CheckIn(
            app_id=APP,
            device_id=str(uuid.uuid4()),
            at_ms=1_760_000_000_000 + n,
            platform="android",
            version_name="1.0.3",
            version_build="1.0.0",
            version_os="14",
            plugin_version="7.0.0",
            is_emulator=False,
            is_prod=True,
            ip="203.0.113.7",
        )
        for n in range(batch)
    ]


def run(path: Path, revision: str, commits: int, batch: int) -> tuple[float, float]:
    """Commits per second and WAL bytes per commit."""
    url = f"sqlite:///{path}"
    if not path.exists():
        command.upgrade(alembic_config(url), revision)
    engine = create_db_engine(url, writer=True, synchronous="FULL")
    rows = checkin_log.log_rows(checkins(batch))
    params = checkin_log.flat_params(rows)
    if revision == "0008":
        sql = "INSERT INTO checkin_log (app_id, checkins, record) VALUES (?, ?, ?)"
    else:
        sql = checkin_log.insert_statement(len(rows), postgres=False)
    wal = path.with_name(path.name + "-wal")
    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        assert db is not None
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        started = time.perf_counter()
        for _ in range(commits):
            # As the writer does: BEGIN IMMEDIATE, the append, COMMIT (fsync).
            db.execute("BEGIN IMMEDIATE")
            db.execute(sql, params)
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        wal_bytes = wal.stat().st_size
        # The log is drained between rounds, as the rollup does.
        db.execute("DELETE FROM checkin_log")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
        engine.dispose()
    return commits / elapsed, wal_bytes / commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"0008": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="otameter-log-") as tmp:
        for _ in range(args.rounds):
            for revision in ("0008", "head"):
                path = Path(tmp) / f"{revision}.db"
                results[revision].append(run(path, revision, args.commits, args.batch))
    load = os.getloadavg()[0]
    print(f"{args.commits} commits of {args.batch} check-ins, synchronous=FULL, load {load:.1f}")
    print("revision | commits/s (median of rounds) | each round | WAL bytes a commit")
    for revision, rounds in results.items():
        rates = [rate for rate, _ in rounds]
        each = ", ".join(f"{r:,.0f}" for r in rates)
        wal = statistics.median(b for _, b in rounds)
        print(f"{revision} | {statistics.median(rates):,.0f} | {each} | {wal:,.0f}")


if __name__ == "__main__":
    main()
