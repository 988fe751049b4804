"""``otameter backup`` / ``otameter restore``: a round trip keeps statistics, usage and
downloads, on both engines; a backup taken while check-ins flow restores consistently."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from otameter.cli import app as cli
from otameter.storage import schema as s
from tests.harness import START, Harness, device_body, running, setup_app, zip_bytes
from tests.liveserver import LiveServer, create_app, create_user

APP = "com.example.app"


@contextlib.contextmanager
def empty_database(request: pytest.FixtureRequest, like: str, path: Path) -> Iterator[str]:
    """A second, empty database on the same engine as ``like``."""
    if like.startswith("sqlite"):
        yield f"sqlite:///{path}"
        return
    from tests.pgserver import fresh_database

    with fresh_database(request.getfixturevalue("postgres_server")) as url:
        yield url


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def snapshot(h: Harness, key: str, org_id: str) -> dict[str, Any]:
    h.rollup()
    auth = h.auth(key)
    apps = h.client.get(f"/statistics/app/{APP}/?from=2024-05-01&to=2024-05-20", headers=auth)
    orgs = h.client.get(f"/statistics/org/{org_id}/?from=2024-05-01&to=2024-05-20", headers=auth)
    usage = h.client.get(f"/organization/{org_id}/usage", headers=auth)
    assert {apps.status_code, orgs.status_code, usage.status_code} == {200}
    return {
        "app": apps.json(),
        "org": orgs.json(),
        "usage": usage.json(),
        "bundles": h.client.get(f"/bundle?app_id={APP}", headers=auth).json(),
    }


def test_round_trip_keeps_statistics_usage_and_downloads(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = zip_bytes(size_hint=40_000)
    with running(db_url, tmp_path / "data") as h:
        key = setup_app(h)
        org_id = h.client.get("/organization", headers=h.auth(key)).json()[0]["id"]
        h.upload(key, APP, "1.0.0", zip_bytes(size_hint=10_000))
        devices = [str(uuid.uuid4()) for _ in range(30)]
        for day in range(5):
            h.clock.set(START + timedelta(days=day))
            for device in devices[: 10 + 4 * day]:
                assert h.checkin(APP, device).status_code == 200
        h.upload(key, APP, "1.1.0", data)
        answer = h.checkin(APP, devices[0]).json()
        path = answer["url"].removeprefix("http://otameter.test")
        assert h.client.get(path).content == data
        # A batch that repeats an event leaves an id unused (ids are not dense).
        first = device_body(APP, devices[0], action="set", version_name="1.1.0", timestamp=1)
        second = {**first, "timestamp": 2}
        assert h.client.post("/stats", json=[first, first, second]).status_code == 200
        before = snapshot(h, key, org_id)
        assert before["app"]["data"][-1]["bandwidth"] == len(data)
        assert max(r["mau"] for r in before["app"]["data"]) == 26
        invoke("backup", str(tmp_path / "backup"), "--db", db_url, "--data-dir", str(h.data_dir))
        now = h.clock.now()

    with empty_database(request, db_url, tmp_path / "restored.db") as target:
        out = invoke(
            "restore", str(tmp_path / "backup"), "--db", target, "--data-dir", str(tmp_path / "r")
        )
        assert "restored" in out
        with running(target, tmp_path / "r", start=now) as h:
            assert snapshot(h, key, org_id) == before
            # The same signed link serves the same bytes.
            assert h.client.get(path).content == data
            # The restored database goes on: a new device gets a new ordinal and counts.
            assert h.checkin(APP, str(uuid.uuid4())).status_code == 200
            h.rollup()
            rows = h.stats(key, f"app/{APP}", now.date().isoformat(), now.date().isoformat())
            assert rows[-1]["mau"] == before["app"]["data"][-1]["mau"] + 1
            # Rows get new ids after the restored ones (SQLite: rowid kept equal to id).
            third = {**first, "timestamp": 3}
            assert h.client.post("/stats", json=[third]).status_code == 200
            events = h.client.get(
                f"/app/{APP}/devices/{devices[0]}/events", headers=h.auth(key)
            ).json()["data"]
            assert [e["id"] for e in events][1:] == [3, 1] and events[0]["id"] > 3

        # Restore fills only an empty database and data directory.
        again = CliRunner().invoke(
            cli,
            [
                "restore",
                str(tmp_path / "backup"),
                "--db",
                target,
                "--data-dir",
                str(tmp_path / "x"),
            ],
        )
        assert again.exit_code == 2 and "not empty" in again.output


def test_backup_refuses_a_directory_in_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    invoke("migrate", "--db", url)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = CliRunner().invoke(cli, ["backup", str(tmp_path / "full"), "--db", url])
    assert result.exit_code == 2 and "not an empty directory" in result.output
    result = CliRunner().invoke(cli, ["restore", str(tmp_path / "nothing"), "--db", url])
    assert result.exit_code == 2 and "not a complete otameter backup" in result.output

    # A backup made by a newer otameter, whose schema this one does not know.
    invoke("backup", str(tmp_path / "b"), "--db", url, "--data-dir", str(tmp_path / "d"))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({**manifest, "revision": "9999"}))
    target = f"sqlite:///{tmp_path}/new.db"
    result = CliRunner().invoke(cli, ["restore", str(tmp_path / "b"), "--db", target])
    assert result.exit_code == 2 and "revision 9999 is unknown" in " ".join(result.output.split())


def test_backup_under_load_restores_consistently(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    key = create_user(db_url)
    acked: list[str] = []
    stop = threading.Event()
    with LiveServer(db_url, tmp_path / "data") as server:
        create_app(server.url, key, APP, bundle=zip_bytes(size_hint=5_000))

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    device = str(uuid.uuid4())
                    if http.post("/updates", json=device_body(APP, device)).status_code == 200:
                        acked.append(device)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            while len(acked) < 100:  # check-ins are flowing (a wait, not a timing check)
                assert all(t.is_alive() for t in threads)
                threading.Event().wait(0.05)
            before = len(acked)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "otameter",
                    "backup",
                    str(tmp_path / "b"),
                    "--db",
                    db_url,
                    "--data-dir",
                    str(tmp_path / "data"),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            after = len(acked)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert done.returncode == 0, done.stderr
        assert after > before  # the backup ran while check-ins were acknowledged

    with empty_database(request, db_url, tmp_path / "restored.db") as target:
        invoke("restore", str(tmp_path / "b"), "--db", target, "--data-dir", str(tmp_path / "r"))
        # Acknowledged check-ins may still be in the check-in log of the backup: the restored
        # server folds them into the device table.
        with running(target, tmp_path / "r", start=datetime.now(UTC)) as h:
            h.rollup()
            today = h.clock.now().date().isoformat()
            with h.rt.read_engine.connect() as conn:
                restored = set(conn.scalars(select(s.devices.c.device_id)))
                assert not conn.scalar(select(func.count()).select_from(s.checkin_log))
            # Everything acknowledged before the backup began is in it; nothing never sent.
            assert set(acked[:before]) <= restored <= set(acked)
            # Facts and figures agree: the restored activity counts exactly the restored devices.
            rows = h.stats(key, f"app/{APP}", today, today)
            assert rows[-1]["mau"] == len(restored)
            assert rows[-1]["storage"] == len(zip_bytes(size_hint=5_000))


def test_a_sqlite_backup_restores_into_postgresql(tmp_path: Path, postgres_url: str) -> None:
    source = f"sqlite:///{tmp_path}/source.db"
    with running(source, tmp_path / "data") as h:
        key = setup_app(h)
        org_id = h.client.get("/organization", headers=h.auth(key)).json()[0]["id"]
        h.upload(key, APP, "1.0.0", zip_bytes(size_hint=10_000))
        for n in range(12):
            h.clock.set(START + timedelta(days=n % 3))
            assert h.checkin(APP, str(uuid.UUID(int=n + 1))).status_code == 200
        before = snapshot(h, key, org_id)
        invoke("backup", str(tmp_path / "b"), "--db", source, "--data-dir", str(h.data_dir))
        now = h.clock.now()
    invoke("restore", str(tmp_path / "b"), "--db", postgres_url, "--data-dir", str(tmp_path / "r"))
    with running(postgres_url, tmp_path / "r", start=now) as h:
        assert snapshot(h, key, org_id) == before
        # PostgreSQL's identity sequences continue after the restored ids.
        assert h.checkin(APP, str(uuid.uuid4())).status_code == 200
        h.rollup()
        day = now.date().isoformat()
        assert (
            h.stats(key, f"app/{APP}", day, day)[-1]["mau"] == before["app"]["data"][-1]["mau"] + 1
        )
