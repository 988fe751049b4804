"""Operating it: /healthz, /readyz, /metrics, logs, and the data directory checked at start."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.harness import Harness, setup_app
from tests.liveserver import free_port

APP = "com.example.app"


def sample(body: str, name: str, **labels: str) -> float:
    """The value of one sample of the text format (0 when absent)."""
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


def scrape(h: Harness) -> str:
    r = h.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def test_healthz_and_health(harness: Harness) -> None:
    for path in ("/healthz", "/health"):
        r = harness.client.get(path)
        assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_is_ready_then_says_why_not(harness: Harness) -> None:
    h = harness
    assert h.client.get("/readyz").json() == {"status": "ok"}

    # A schema this server does not know (another version of otameter migrated it).
    def set_revision(revision: str) -> None:
        h.rt.writer.run_blocking(
            lambda conn: conn.execute(
                text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )
        )

    from otameter.storage.db import HEAD_REVISION

    set_revision("0000")
    r = h.client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {
        "error": f"not ready: database schema is at revision 0000, this server needs "
        f"{HEAD_REVISION}",
        "status": "KO",
    }
    set_revision(HEAD_REVISION)
    assert h.client.get("/readyz").status_code == 200

    # The data directory is gone (a file stands where it was).
    shutil.rmtree(h.data_dir, ignore_errors=True)
    h.data_dir.write_text("not a directory")
    r = h.client.get("/readyz")
    assert r.status_code == 503 and "data directory" in r.json()["error"]
    h.data_dir.unlink()
    h.data_dir.mkdir()
    assert h.client.get("/readyz").status_code == 200

    # The database does not answer (here: an engine on a file that cannot be opened).
    working = h.rt.read_engine
    h.rt.read_engine = create_engine("sqlite:////proc/otameter-nowhere/o.db")
    try:
        r = h.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"].startswith("not ready: the database does not answer")
    finally:
        h.rt.read_engine.dispose()
        h.rt.read_engine = working

    # The writer thread stopped: nothing could be acknowledged any more.
    h.rt.writer.stop()
    r = h.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"] == "not ready: the writer thread is not running"

    # The schema is gone (a database that otameter never migrated).
    with h.rt.write_engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    r = h.client.get("/readyz")
    assert r.json() == {"error": "not ready: the database has no otameter schema", "status": "KO"}


def test_metrics_count_requests_events_and_commits(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    h.upload(key, APP, "1.0.0")
    before = scrape(h)
    for _ in range(3):
        assert h.checkin(APP, str(uuid.uuid4())).status_code == 200
    assert h.client.get(f"/app/{APP}", headers=h.auth(key)).status_code == 200
    assert h.client.get("/no/such/path").status_code == 404
    after = scrape(h)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    updates = {"route": "/updates", "method": "POST", "status": "200"}
    assert grew("otameter_http_requests_total", **updates) == 3
    assert grew(
        "otameter_http_request_duration_seconds_count", route="/updates", method="POST"
    ) == (3)
    # Routes are labelled by their template, unknown paths all alike.
    assert grew("otameter_http_requests_total", route="/app/{app_id}", status="200") == 1
    assert grew("otameter_http_requests_total", route="unmatched", status="404") == 1
    assert f"/app/{APP}" not in after
    assert grew("otameter_events_ingested_total", kind="checkin") == 3
    assert grew("otameter_group_commit_events_count") >= 1
    assert grew("otameter_group_commit_events_sum") >= 3
    assert grew("otameter_group_commit_duration_seconds_count") >= 1
    assert "otameter_writer_queue_depth" in after

    # Facts wait for the rollup: the lag is the time since the last complete rollup.
    h.rollup()
    assert sample(scrape(h), "otameter_rollup_lag_seconds") == 0
    h.checkin(APP, str(uuid.uuid4()))
    h.clock.advance(timedelta(seconds=90))
    assert sample(scrape(h), "otameter_rollup_lag_seconds") == 90
    h.rollup()
    assert sample(scrape(h), "otameter_rollup_lag_seconds") == 0


def test_metrics_token(harness: Harness) -> None:
    h = harness
    h.rt.settings = replace(h.rt.settings, metrics_token="s3cret-token")
    r = h.client.get("/metrics")
    assert r.status_code == 401 and r.json()["status"] == "KO"
    wrong = h.client.get("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = h.client.get("/metrics", headers={"authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and "otameter_http_requests_total" in ok.text


def _serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")}
    return subprocess.run(
        [sys.executable, "-m", "otameter", "serve", "--port", str(free_port()), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_a_data_dir_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for bad in ("/proc/otameter-data", str(tmp_path / "file" / "data")):
        done = _serve("--db", f"sqlite:///{tmp_path}/o.db", "--data-dir", bad, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "data directory" in done.stderr and "--data-dir" in done.stderr
        assert "Traceback" not in done.stderr


def test_json_logs_access_log_and_metrics_of_all_workers(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")}
    log = tmp_path / "server.log"
    argv = [sys.executable, "-m", "otameter", "serve", "--port", str(port), "--workers", "2"]
    argv += ["--db", f"sqlite:///{tmp_path}/o.db", "--data-dir", str(tmp_path / "data")]
    argv += ["--log-format", "json", "--access-log"]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # wait until it serves (not a timing assertion)
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=base) as http:
            for _ in range(40):
                assert http.get("/healthz").status_code == 200
            # Whichever worker answers the scrape counts the requests of both.
            for _ in range(4):
                body = http.get("/metrics").text
                assert sample(body, "otameter_http_requests_total", route="/healthz") == 40
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    access = [e for e in lines if e["logger"] == "otameter.access" and e["path"] == "/healthz"]
    assert len(access) == 40
    assert access[0]["status"] == 200 and access[0]["route"] == "/healthz"
    assert access[0]["method"] == "GET" and access[0]["client"] == "127.0.0.1"


def test_access_log_names_the_client_as_a_trusted_proxy_gives_it(
    sqlite_harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = sqlite_harness
    h.client.app.access_log = True  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="otameter.access"):
        h.client.get("/healthz", headers={"x-forwarded-for": "203.0.113.7"})
        h.client.post("/updates", content=b"{}")
    first, second = (r for r in caplog.records if r.name == "otameter.access")
    assert (first.client, first.route, first.status) == ("203.0.113.7", "/healthz", 200)  # type: ignore[attr-defined]
    assert (second.client, second.route, second.status) == ("127.0.0.1", "/updates", 400)  # type: ignore[attr-defined]
