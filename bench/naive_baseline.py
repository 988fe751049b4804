"""The naive baseline: one UPSERT and one COMMIT per check-in on SQLite.

What a straightforward implementation does: a Starlette endpoint that writes each check-in
in its own transaction before answering. ``BENCH_NAIVE_DB`` is the SQLite file and
``BENCH_NAIVE_SYNCHRONOUS`` is FULL (durable against power loss) or NORMAL. Run by
bench/run.py with one uvicorn process (SQLite has one writer).
"""

from __future__ import annotations

import os
import sqlite3
import time

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DB = os.environ.get("BENCH_NAIVE_DB", "naive.db")
SYNCHRONOUS = os.environ.get("BENCH_NAIVE_SYNCHRONOUS", "FULL")

conn = sqlite3.connect(DB, isolation_level=None, check_same_thread=False)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
conn.execute(
    "CREATE TABLE IF NOT EXISTS devices (app_id TEXT NOT NULL, device_id TEXT NOT NULL,"
    " first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, platform TEXT NOT NULL,"
    " version_name TEXT NOT NULL, PRIMARY KEY (app_id, device_id))"
)
UPSERT = (
    "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (app_id, device_id) DO UPDATE"
    " SET last_seen = excluded.last_seen, platform = excluded.platform,"
    " version_name = excluded.version_name"
)
ANSWER = orjson.dumps(
    {
        "error": "no_new_version_available",
        "message": "No new version available",
        "kind": "up_to_date",
    }
)


async def updates(request: Request) -> Response:
    body = orjson.loads(await request.body())
    now = int(time.time() * 1000)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        UPSERT,
        (body["app_id"], body["device_id"], now, now, body["platform"], body["version_name"]),
    )
    conn.execute("COMMIT")
    return Response(ANSWER, media_type="application/json")


async def health(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[Route("/updates", updates, methods=["POST"]), Route("/health", health)])
