"""The client commands (bundle, stats, usage) against a live server on a real port."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import update
from typer.testing import CliRunner

from otameter.api import create_app
from otameter.cli import app as cli
from otameter.cli.cleanup import plan_cleanup
from otameter.cli.output import sparkline
from otameter.cli.semver import SemVer
from otameter.clock import SystemClock, to_ms
from otameter.config import Settings
from otameter.runtime import Runtime
from otameter.storage import schema as s
from otameter.storage.db import migrate
from otameter.units import format_bytes
from otameter.users import create_user
from tests.harness import device_body, zip_bytes

APP_ID = "com.example.cli"


@dataclass
class Live:
    url: str
    rt: Runtime
    data_dir: Path
    key: str
    org_id: str
    http: httpx.Client
    db_url: str

    def bundle_files(self) -> list[Path]:
        return sorted(p for p in (self.rt.settings.bundle_dir).rglob("*.zip"))

    def today(self) -> str:
        return SystemClock().now().date().isoformat()

    def storage_today(self) -> int:
        self.rt.rollups.run_blocking()
        day = self.today()
        r = self.http.get(f"/statistics/app/{APP_ID}/", params={"from": day, "to": day})
        assert r.status_code == 200, r.text
        storage: int = r.json()["data"][-1]["storage"]
        return storage

    def lock_org(self, reason: str) -> None:
        def write(conn: Any) -> None:
            conn.execute(
                update(s.orgs)
                .where(s.orgs.c.id == self.org_id)
                .values(lock_code="need_plan_upgrade", lock_reason=reason)
            )

        self.rt.writer.run_blocking(write)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray server, key or config file from the machine running the tests."""
    for name in ("OTAMETER_SERVER", "OTAMETER_APIKEY", "OTAMETER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    url = f"sqlite:///{tmp_path}/otameter.db"
    settings = Settings(database_url=url, data_dir=tmp_path / "data", rollup_interval_seconds=0)
    migrate(url)
    rt = Runtime(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(rt), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:  # readiness wait, not a timing assertion
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    try:
        now = to_ms(SystemClock().now())
        _, key = rt.writer.run_blocking(lambda conn: create_user(conn, "cli@example.com", "", now))
        with httpx.Client(base_url=base, headers={"authorization": key}) as http:
            r = http.post("/organization", json={"name": "CLI org"})
            assert r.status_code == 201, r.text
            org_id = r.json()["id"]
            r = http.post("/app", json={"app_id": APP_ID, "name": "CLI", "owner_org": org_id})
            assert r.status_code == 201, r.text
            yield Live(base, rt, settings.data_dir, key, org_id, http, url)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def run(live: Live | None, *args: str, input: str | None = None, **env: str) -> Any:
    """Run ``otameter ARGS`` in-process; the server and key come from the environment."""
    environ = {"COLUMNS": "200"}
    if live is not None:
        environ |= {"OTAMETER_SERVER": live.url, "OTAMETER_APIKEY": live.key}
    environ |= env
    return CliRunner().invoke(cli, list(args), input=input, env=environ)


def web_build(root: Path, marker: str = "v1", nested: bool = False) -> Path:
    folder = root / f"dist-{marker}"
    base = folder / "www" if nested else folder
    (base / "assets").mkdir(parents=True)
    (base / "index.html").write_text(f"<!doctype html><title>{marker}</title>")
    (base / "assets" / "app.js").write_text(f"console.log({marker!r});" * 200)
    return folder


def upload(live: Live, version: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    folder = web_build(tmp_path, version)
    result = run(
        live, "bundle", "upload", str(folder), "--app", APP_ID, "-v", version, "--json", *extra
    )
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def listed(live: Live) -> list[dict[str, Any]]:
    result = run(live, "bundle", "list", "--app", APP_ID, "--json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


# -- upload and list -------------------------------------------------------------------------


def test_upload_folder_and_zip_then_list(live: Live, tmp_path: Path) -> None:
    body = upload(live, "1.0.0", tmp_path)
    (stored,) = live.bundle_files()
    assert body["size"] == stored.stat().st_size
    assert body["checksum"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    with zipfile.ZipFile(stored) as archive:
        assert sorted(archive.namelist()) == ["assets/app.js", "index.html"]

    # A zip whose index.html sits inside a single top-level folder, human output.
    data = zip_bytes({"www/index.html": b"<html></html>", "www/a.js": b"1"})
    archive_path = tmp_path / "bundle.zip"
    archive_path.write_bytes(data)
    result = run(
        live,
        "bundle",
        "upload",
        str(archive_path),
        "--app",
        APP_ID,
        "--version",
        "1.1.0",
        "--channel",
        "beta",
    )
    assert result.exit_code == 0, result.output
    assert "Uploaded com.example.cli 1.1.0; channel beta now serves it" in result.stdout
    assert f"size      {format_bytes(len(data))}" in result.stdout
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" in result.stdout

    rows = listed(live)
    assert [r["version"] for r in rows] == ["1.1.0", "1.0.0"]
    assert rows[0]["channels"] == ["beta"] and rows[1]["channels"] == ["production"]

    table = run(live, "bundle", "list", "--app", APP_ID)
    assert table.exit_code == 0, table.output
    assert table.stdout.index("1.1.0") < table.stdout.index("1.0.0")
    assert "2 bundles" in table.stdout and "production" in table.stdout


def test_same_folder_gives_the_same_checksum(live: Live, tmp_path: Path) -> None:
    folder = web_build(tmp_path, "same")
    sums = []
    for version in ("1.0.0", "1.0.1"):
        result = run(live, "bundle", "upload", str(folder), "-a", APP_ID, "-v", version, "--json")
        assert result.exit_code == 0, result.output
        sums.append(json.loads(result.stdout)["checksum"])
    assert sums[0] == sums[1]


def test_list_pages_through_every_bundle(live: Live, tmp_path: Path) -> None:
    data = zip_bytes()
    for i in range(55):  # more than one server page of 50
        r = live.http.post(
            "/bundle",
            data={"app_id": APP_ID, "version": f"0.0.{i:02d}"},
            files={"file": ("b.zip", data, "application/zip")},
        )
        assert r.status_code == 201, r.text
    rows = listed(live)
    assert len(rows) == 55 and rows[0]["version"] == "0.0.54" and rows[-1]["version"] == "0.0.00"


def test_refuses_a_bundle_without_index_html(live: Live, tmp_path: Path) -> None:
    folder = tmp_path / "no-index"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "index.html").write_text("x")
    (folder / "b.js").write_text("x")
    result = run(live, "bundle", "upload", str(folder), "-a", APP_ID, "-v", "1.0.0")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "no index.html" in result.stderr
    not_zip = tmp_path / "notes.txt"
    not_zip.write_text("hello")
    result = run(live, "bundle", "upload", str(not_zip), "-a", APP_ID, "-v", "1.0.0")
    assert result.exit_code == 2 and "neither a folder nor a zip" in result.stderr
    result = run(live, "bundle", "upload", str(tmp_path / "missing"), "-a", APP_ID, "-v", "1.0.0")
    assert result.exit_code == 2 and "no such file or folder" in result.stderr
    assert listed(live) == [] and live.bundle_files() == []


def test_external_bundle_is_registered_and_never_stored(live: Live, tmp_path: Path) -> None:
    url = "https://cdn.example.com/app-2.0.0.zip"
    result = run(live, "bundle", "upload", "--external", url, "-a", APP_ID, "-v", "2.0.0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["external_url"] == url
    # With a local copy, its size and checksum are registered too.
    folder = web_build(tmp_path, "ext")
    result = run(
        live,
        "bundle",
        "upload",
        str(folder),
        "--external",
        url.replace("2.0", "2.1"),
        "-a",
        APP_ID,
        "-v",
        "2.1.0",
        "--json",
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["checksum"] and len(body["checksum"]) == 64 and body["size"] > 0
    rows = listed(live)
    assert [(r["version"], r["external"]) for r in rows] == [("2.1.0", True), ("2.0.0", True)]
    assert live.bundle_files() == [] and live.storage_today() == 0
    human = run(live, "bundle", "list", "-a", APP_ID)
    assert "cdn.example.com" in human.stdout and "0 B stored" in human.stdout
    bad = run(live, "bundle", "upload", "--external", "ftp://x", "-a", APP_ID, "-v", "3.0.0")
    assert bad.exit_code == 2 and "http(s) URL" in bad.stderr


# -- errors ----------------------------------------------------------------------------------


def test_existing_version_is_refused_and_nothing_is_left_counted(
    live: Live, tmp_path: Path
) -> None:
    first = upload(live, "1.0.0", tmp_path)
    assert live.storage_today() == first["size"]
    other = web_build(tmp_path / "other", "other-content")
    result = run(live, "bundle", "upload", str(other), "-a", APP_ID, "-v", "1.0.0")
    assert result.exit_code == 6, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "(HTTP 409)" in result.stderr
    assert "already exists" in result.stderr
    rows = listed(live)
    assert [(r["version"], r["checksum"]) for r in rows] == [("1.0.0", first["checksum"])]
    assert len(live.bundle_files()) == 1
    assert live.storage_today() == first["size"]


def test_locked_org_is_refused_and_nothing_is_stored(live: Live, tmp_path: Path) -> None:
    live.lock_org("MAU over the plan limit")
    folder = web_build(tmp_path, "locked")
    result = run(live, "bundle", "upload", str(folder), "-a", APP_ID, "-v", "1.0.0")
    assert result.exit_code == 7, result.output
    assert "Organization is locked: MAU over the plan limit (HTTP 402)" in result.stderr
    assert "otameter usage" in result.stderr
    assert listed(live) == [] and live.bundle_files() == []
    assert live.storage_today() == 0


def test_interrupted_upload_leaves_nothing(live: Live) -> None:
    host, port = live.url.removeprefix("http://").split(":")
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="app_id"\r\n\r\n{APP_ID}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n9.9.9\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    partial = head + zip_bytes(size_hint=200_000)[:100_000]
    request = (
        f"POST /bundle HTTP/1.1\r\nHost: {host}\r\nauthorization: {live.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(partial) + 200_000}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(request + partial)
        conn.shutdown(socket.SHUT_WR)
        # The server has given up on the request once it answers or closes the connection.
        with contextlib.suppress(ConnectionResetError):
            conn.recv(65536)
    assert listed(live) == []
    assert live.bundle_files() == [] and live.storage_today() == 0


def test_bad_key_unreachable_server_and_unknown_app(live: Live, tmp_path: Path) -> None:
    result = run(live, "bundle", "list", "-a", APP_ID, OTAMETER_APIKEY="nope")
    assert result.exit_code == 4
    assert result.stderr.startswith("error: Missing or invalid API key (HTTP 401)")
    assert "hint:" in result.stderr

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    result = run(live, "bundle", "list", "-a", APP_ID, "--server", closed)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: cannot reach the server at {closed}")

    result = run(live, "bundle", "list", "-a", "com.example.unknown")
    assert result.exit_code == 5 and "App not found (HTTP 404)" in result.stderr
    folder = web_build(tmp_path, "x")
    result = run(live, "bundle", "upload", str(folder), "-a", "com.example.unknown", "-v", "1")
    assert result.exit_code == 5 and live.bundle_files() == []


def test_config_file_environment_and_flag_precedence(
    live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "xdg" / "otameter" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'server = "{live.url}"\napikey = "{live.key}"\n')
    assert run(None, "bundle", "list", "-a", APP_ID, "--json").exit_code == 0

    config.write_text(f'server = "{live.url}"\napikey = "wrong"\n')
    assert run(None, "bundle", "list", "-a", APP_ID).exit_code == 4
    env_wins = run(None, "bundle", "list", "-a", APP_ID, OTAMETER_APIKEY=live.key)
    assert env_wins.exit_code == 0, env_wins.output
    flag_wins = run(
        None, "bundle", "list", "-a", APP_ID, "--apikey", live.key, OTAMETER_APIKEY="also-wrong"
    )
    assert flag_wins.exit_code == 0, flag_wins.output

    elsewhere = tmp_path / "ci.toml"
    elsewhere.write_text(f'server = "{live.url}"\napikey = "{live.key}"\n')
    assert run(None, "bundle", "list", "-a", APP_ID, OTAMETER_CONFIG=str(elsewhere)).exit_code == 0
    missing = run(None, "bundle", "list", "-a", APP_ID, OTAMETER_CONFIG=str(tmp_path / "none"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr

    config.write_text("server = [1, 2]\n")
    assert run(None, "bundle", "list", "-a", APP_ID).exit_code == 2
    config.unlink()
    no_key = run(None, "bundle", "list", "-a", APP_ID, "--server", live.url)
    assert no_key.exit_code == 2 and no_key.stderr.startswith("error: no API key")
    bad_url = run(None, "bundle", "list", "-a", APP_ID, "--server", "localhost:1", "--apikey", "k")
    assert bad_url.exit_code == 2 and "http://" in bad_url.stderr


def test_installed_command_in_a_subprocess(live: Live, tmp_path: Path) -> None:
    upload(live, "1.0.0", tmp_path)
    otameter = Path(sys.executable).with_name("otameter")
    env = {**os.environ, "OTAMETER_SERVER": live.url, "OTAMETER_APIKEY": live.key}
    done = subprocess.run(
        [str(otameter), "bundle", "list", "--app", APP_ID, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [r["version"] for r in json.loads(done.stdout)] == ["1.0.0"]
    env["OTAMETER_APIKEY"] = "bad"
    done = subprocess.run(
        [str(otameter), "bundle", "delete", "1.0.0", "--app", APP_ID],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 4 and done.stderr.startswith("error: ") and done.stdout == ""


# -- delete and cleanup ----------------------------------------------------------------------


def test_delete_frees_storage_and_says_the_channel_is_unlinked(live: Live, tmp_path: Path) -> None:
    old = upload(live, "1.0.0", tmp_path, "--channel", "beta")
    new = upload(live, "1.0.1", tmp_path)
    assert live.storage_today() == old["size"] + new["size"]
    result = run(live, "bundle", "delete", "1.0.0", "--app", APP_ID)
    assert result.exit_code == 0, result.output
    assert "Deleted com.example.cli 1.0.0" in result.stdout
    assert "channel beta served 1.0.0 and now serves no bundle" in result.stderr
    assert [r["version"] for r in listed(live)] == ["1.0.1"]
    assert live.storage_today() == new["size"]
    channels = live.http.get("/channel", params={"app_id": APP_ID}).json()
    assert {c["channel"]: c["version"] for c in channels} == {"beta": None, "production": "1.0.1"}

    again = run(live, "bundle", "delete", "1.0.0", "--app", APP_ID)
    assert again.exit_code == 5 and "bundle 1.0.0 not found" in again.stderr
    as_json = run(live, "bundle", "delete", "1.0.1", "--app", APP_ID, "--json")
    assert json.loads(as_json.stdout) == {
        "app_id": APP_ID,
        "version": "1.0.1",
        "freed_bytes": new["size"],
        "unlinked_channels": ["production"],
    }


def _seed_versions(live: Live, tmp_path: Path) -> dict[str, int]:
    """0.9.0 on channel beta, then 1.0.0 .. 1.0.5 (production follows the newest)."""
    sizes = {"0.9.0": upload(live, "0.9.0", tmp_path, "--channel", "beta")["size"]}
    for patch in range(6):
        version = f"1.0.{patch}"
        sizes[version] = upload(live, version, tmp_path)["size"]
    return sizes


def test_cleanup_keeps_the_newest_and_linked_bundles(live: Live, tmp_path: Path) -> None:
    sizes = _seed_versions(live, tmp_path)

    declined = run(live, "bundle", "cleanup", "--app", APP_ID, "--keep", "2", input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "not confirmed: nothing removed" in declined.stderr
    assert "❌" in declined.stdout and "✅ linked" in declined.stdout
    assert len(listed(live)) == 7

    result = run(live, "bundle", "cleanup", "--app", APP_ID, "--keep", "2", input="y\n")
    assert result.exit_code == 0, result.output
    removed = ["1.0.3", "1.0.2", "1.0.1", "1.0.0"]
    for version in removed:
        assert f"Removed {version}" in result.stdout
    freed = sum(sizes[v] for v in removed)
    assert "freed" in result.stdout
    assert [r["version"] for r in listed(live)] == ["1.0.5", "1.0.4", "0.9.0"]
    assert live.storage_today() == sizes["1.0.5"] + sizes["1.0.4"] + sizes["0.9.0"]
    assert freed > 0

    nothing = run(live, "bundle", "cleanup", "--app", APP_ID, "--keep", "2", "--json")
    assert nothing.exit_code == 0
    assert json.loads(nothing.stdout)["removed"] == []

    # --ignore-channel removes the old bundle beta serves; the channel then serves nothing.
    forced = run(live, "bundle", "cleanup", "-a", APP_ID, "-k", "2", "--ignore-channel", "-f")
    assert forced.exit_code == 0, forced.output
    assert "Removed 0.9.0" in forced.stdout
    assert "channel beta served 0.9.0 and now serves no bundle" in forced.stderr
    channels = live.http.get("/channel", params={"app_id": APP_ID}).json()
    assert {c["channel"]: c["version"] for c in channels} == {"beta": None, "production": "1.0.5"}


def test_cleanup_within_a_semver_range_as_json(live: Live, tmp_path: Path) -> None:
    sizes = _seed_versions(live, tmp_path)
    upload(live, "2.0.0", tmp_path, "--channel", "next")
    result = run(live, "bundle", "cleanup", "-a", APP_ID, "-b", "1.0.1", "-k", "1", "-f", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    # Considered: 1.0.5 (production since 2.0.0 went to "next"), 1.0.4, 1.0.3, 1.0.2.
    assert body["kept"] == ["1.0.5"]
    assert body["removed"] == ["1.0.4", "1.0.3", "1.0.2"]
    assert body["freed_bytes"] == sizes["1.0.4"] + sizes["1.0.3"] + sizes["1.0.2"]
    assert body["unlinked_channels"] == []
    left = [r["version"] for r in listed(live)]
    assert left == ["2.0.0", "1.0.5", "1.0.1", "1.0.0", "0.9.0"]
    bad = run(live, "bundle", "cleanup", "-a", APP_ID, "-b", "1.0", "-f")
    assert bad.exit_code == 2 and "not a semantic version" in bad.stderr


def test_cleanup_rule_and_semver_order() -> None:
    def bundle(version: str, channels: list[str] | None = None) -> Any:
        return {"version": version, "channels": channels or [], "size": 1, "external": False}

    rows = [
        bundle("1.0.6"),
        bundle("1.0.5", ["a"]),
        bundle("1.0.4"),
        bundle("1.0.3", ["b"]),
        bundle("1.0.2"),
        bundle("nightly"),
        bundle("1.0.1"),
    ]
    plan = plan_cleanup(rows, 1, None, ignore_channel=False)
    assert [b["version"] for b in plan.kept] == ["1.0.6", "1.0.5", "1.0.3"]
    plan = plan_cleanup(rows, 1, None, ignore_channel=True)
    assert [b["version"] for b in plan.kept] == ["1.0.6"]
    plan = plan_cleanup(rows, 0, SemVer.parse("1.0.2"), ignore_channel=False)
    assert [b["version"] for b in plan.considered] == ["1.0.6", "1.0.5", "1.0.4", "1.0.3"]
    assert [b["version"] for b in plan.removed] == ["1.0.6", "1.0.4"]
    assert plan.skipped_not_semver == ["nightly"]

    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.2.0",
        "1.10.0",
    ]
    parsed = [SemVer.parse(v) for v in ordered]
    assert all(p is not None for p in parsed)
    assert sorted(parsed) == parsed  # type: ignore[type-var]
    assert str(SemVer.parse("1.2.3").next_major()) == "2.0.0"  # type: ignore[union-attr]
    assert str(SemVer.parse("2.0.0-rc.1").next_major()) == "2.0.0"  # type: ignore[union-attr]
    assert SemVer.parse("1.0") is None and SemVer.parse("01.0.0") is None


# -- statistics and usage --------------------------------------------------------------------


def test_statistics_tables_json_and_csv(live: Live, tmp_path: Path) -> None:
    body = upload(live, "1.0.0", tmp_path)
    for _ in range(2):
        r = live.http.post("/updates", json=device_body(APP_ID))
        assert r.status_code == 200, r.text
    live.rt.rollups.run_blocking()
    today = SystemClock().now().date()
    start = (today - timedelta(days=2)).isoformat()

    as_json = run(
        live, "stats", "app", APP_ID, "--from", start, "--to", today.isoformat(), "--json"
    )
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)["data"]
    assert [r["date"] for r in rows][-1] == today.isoformat() and len(rows) == 3
    assert rows[-1]["mau"] == 2 and rows[-1]["storage"] == body["size"]

    as_csv = run(live, "stats", "org", live.org_id, "--from", start, "--csv")
    assert as_csv.exit_code == 0, as_csv.output
    lines = as_csv.stdout.splitlines()
    assert lines[0] == "date,mau,storage,bandwidth"
    assert lines[-1] == f"{today.isoformat()},2,{body['size']},0"

    table = run(live, "stats", "user", "--from", start)
    assert table.exit_code == 0, table.output
    assert "MAU  ▁▁█  latest 2, peak 2" in table.stdout
    assert today.isoformat() in table.stdout and "all your apps" in table.stdout

    default_range = run(live, "stats", "app", APP_ID, "--json")
    assert len(json.loads(default_range.stdout)["data"]) == 30

    both = run(live, "stats", "user", "--json", "--csv")
    assert both.exit_code == 2
    bad = run(live, "stats", "app", APP_ID, "--from", "2024-13-01")
    assert bad.exit_code == 2 and "Invalid date format" in bad.stderr
    too_long = run(live, "stats", "app", APP_ID, "--from", "2024-01-01", "--to", "2024-06-01")
    assert too_long.exit_code == 2 and "Date range cannot exceed 90 days (HTTP 400)" in (
        too_long.stderr
    )
    other = run(live, "stats", "org", "00000000-0000-0000-0000-000000000000")
    assert other.exit_code == 5 and "App/Organization not found" in other.stderr


def test_stats_app_org_and_user_take_the_same_options(live: Live) -> None:
    """The three scopes are one command path: each has its id argument (user none), then the
    same options, and names its subject in the table's title."""
    options = ("--from", "--to", "--json", "--csv", "--server", "--apikey", "Exit codes")
    for scope, argument in (("app", "app_id"), ("org", "org_id"), ("user", None)):
        helped = run(None, "stats", scope, "--help")
        assert helped.exit_code == 0, helped.output
        assert all(option in helped.stdout for option in options), (scope, helped.stdout)
        assert (argument is not None) == ("Arguments" in helped.stdout), scope
        if argument is not None:
            assert argument in helped.stdout
            assert run(live, "stats", scope).exit_code == 2  # the id is required
    assert run(live, "stats", "user", APP_ID).exit_code == 2  # and user takes none

    day = SystemClock().now().date().isoformat()
    for args, title in (
        (("app", APP_ID), f"app {APP_ID}, {day} to {day}"),
        (("org", live.org_id), f"org {live.org_id}, {day} to {day}"),
        (("user",), f"all your apps, {day} to {day}"),
    ):
        shown = run(live, "stats", *args, "--from", day, "--to", day)
        assert shown.exit_code == 0, shown.output
        # The title wraps at the table's width.
        assert title in " ".join(shown.stdout.split()), shown.stdout


def _options_help(text: str) -> list[str]:
    """The option lines of a command's --help, from the first option to the epilog."""
    lines = text.splitlines()
    first = next(n for n, line in enumerate(lines) if "--from" in line)
    last = next(n for n, line in enumerate(lines) if "Exit codes" in line)
    return lines[first:last]


def test_stats_releases_takes_the_options_of_stats_app(live: Live) -> None:
    """``stats releases`` is built on the same options as ``stats app|org|user``: the same
    help, the same checks and messages, the same default period, server and key."""
    assert _options_help(run(None, "stats", "releases", "--help").stdout) == _options_help(
        run(None, "stats", "app", "--help").stdout
    )
    for args in (
        ("--json", "--csv"),
        ("--from", "2024-13-01"),
        ("--to", "yesterday"),
        ("--from", "2024-01-01", "--to", "2024-06-01"),
    ):
        app = run(live, "stats", "app", APP_ID, *args)
        releases = run(live, "stats", "releases", APP_ID, *args)
        assert app.exit_code == releases.exit_code == 2, (args, app.output, releases.output)
        assert app.stderr == releases.stderr and app.stderr.startswith("error: "), args
    # The same period: 29 days before --to, or the given --from; each names it in its title.
    for period, (first, last) in (
        (("--to", "2026-01-30"), ("2026-01-01", "2026-01-30")),
        (("--from", "2026-01-10", "--to", "2026-01-12"), ("2026-01-10", "2026-01-12")),
    ):
        app = run(live, "stats", "app", APP_ID, *period)
        releases = run(live, "stats", "releases", APP_ID, *period)
        assert app.exit_code == releases.exit_code == 0, (app.output, releases.output)
        assert f"app {APP_ID}, {first} to {last}" in " ".join(app.stdout.split())
        assert releases.stdout == f"releases of {APP_ID}, {first} to {last}: no data\n"
    # The server and the key from the options, over the environment.
    for command in ("app", "releases"):
        moved = run(
            live,
            "stats",
            command,
            APP_ID,
            "--json",
            "--server",
            live.url,
            "--apikey",
            live.key,
            OTAMETER_SERVER="http://127.0.0.1:9",
            OTAMETER_APIKEY="otm_wrong",
        )
        assert moved.exit_code == 0 and "data" in json.loads(moved.stdout), moved.output
        refused = run(live, "stats", command, APP_ID, "--apikey", "otm_wrong")
        assert refused.exit_code == 4, refused.output
    unreachable = [
        run(live, "stats", command, APP_ID, "--server", "http://127.0.0.1:9")
        for command in ("app", "releases")
    ]
    assert [r.exit_code for r in unreachable] == [3, 3]
    assert unreachable[0].stderr == unreachable[1].stderr


def test_usage_of_an_org(live: Live, tmp_path: Path) -> None:
    probe = live.http.get(f"/organization/{live.org_id}/usage")
    assert probe.status_code == 200, probe.text
    body = upload(live, "1.0.0", tmp_path)
    r = live.http.post("/updates", json=device_body(APP_ID))
    assert r.status_code == 200, r.text
    live.rt.rollups.run_blocking()

    as_json = run(live, "usage", "--org", live.org_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    usage = json.loads(as_json.stdout)
    assert usage["org_id"] == live.org_id and isinstance(usage["locked"], bool)
    for key in ("plan", "cycle_start", "cycle_end", "lock_reason", "trial_ends"):
        assert key in usage
    assert usage["mau"]["used"] == 1
    assert usage["storage"]["used"] == body["size"]
    assert set(usage["emulator_dev"]) >= {"ratio", "threshold"}

    as_csv = run(live, "usage", "--org", live.org_id, "--csv")
    lines = as_csv.stdout.splitlines()
    assert lines[0] == "metric,used,limit,percent" and lines[1].startswith("mau,1,")

    table = run(live, "usage", "--org", live.org_id)
    assert table.exit_code == 0, table.output
    assert "Billing cycle" in table.stdout and "Storage" in table.stdout
    assert "Emulator/dev devices" in table.stdout and "MAU  " in table.stdout

    unknown = run(live, "usage", "--org", "00000000-0000-0000-0000-000000000000")
    assert unknown.exit_code == 5

    # On a plan: limits, percentages and the plan's name.
    limits = ["--mau", "4", "--storage", str(body["size"] * 2), "--bandwidth", "1000000"]
    created = run(None, "plan", "create", "small", *limits, "--db", live.db_url)
    assert created.exit_code == 0, created.output
    put = run(None, "org", "set-plan", live.org_id, "small", "--db", live.db_url)
    assert put.exit_code == 0, put.output
    usage = json.loads(run(live, "usage", "--org", live.org_id, "--json").stdout)
    assert usage["plan"] == "small" and usage["mau"]["limit"] == 4
    assert usage["mau"]["percent"] == 25 and usage["storage"]["percent"] == 50
    table = run(live, "usage", "--org", live.org_id)
    assert "plan small" in table.stdout and "25.0%" in table.stdout and "50.0%" in table.stdout


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([5, 5]) == "▄▄"
    assert sparkline([0, 7]) == "▁█"
    assert len(sparkline(list(range(90)))) == 60


def test_release_health_table_json_and_csv(live: Live, tmp_path: Path) -> None:
    upload(live, "1.0.0", tmp_path)
    devices = [str(uuid.uuid4()) for _ in range(2)]
    for n, device in enumerate(devices):
        r = live.http.post("/updates", json=device_body(APP_ID, device))
        assert r.status_code == 200 and r.json()["version"] == "1.0.0", r.text
        actions = ["download_complete", "set", *(["app_crash"] if n else [])]
        batch = [
            device_body(APP_ID, device, action=action, version_name="1.0.0", timestamp=1 + i)
            for i, action in enumerate(actions)
        ]
        batch.append(
            device_body(
                APP_ID,
                device,
                action="app_launch_ready",
                version_name="1.0.0",
                timestamp=10,
                metadata={"duration_ms": str(40 + n * 20)},
            )
        )
        assert live.http.post("/stats", json=batch).status_code == 200
    live.rt.rollups.run_blocking()
    today = live.today()

    as_json = run(live, "stats", "releases", APP_ID, "--from", today, "--to", today, "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)["data"]
    assert rows[0] == {
        "version": "1.0.0",
        "active": 0,
        "offered": 2,
        "downloaded": 2,
        "installed": 2,
        "failed": 0,
        "rolled_back": 0,
        "crashed": 1,
        "launches": 2,
        "launch_ms_p50": 40,
        "launch_ms_p95": 60,
    }
    as_csv = run(live, "stats", "releases", APP_ID, "--from", today, "--csv")
    assert as_csv.exit_code == 0, as_csv.output
    lines = as_csv.stdout.splitlines()
    assert lines[0] == (
        "version,active,offered,downloaded,installed,failed,rolled_back,crashed,launches,"
        "launch_ms_p50,launch_ms_p95"
    )
    assert lines[1] == "1.0.0,0,2,2,2,0,0,1,2,40,60"
    table = run(live, "stats", "releases", APP_ID, "--from", today)
    assert table.exit_code == 0, table.output
    assert "releases of com.example.cli" in table.stdout
    assert "1.0.0" in table.stdout and "50.0%" in table.stdout  # crash-free: 1 of 2
    missing = run(live, "stats", "releases", "com.missing.app")
    assert missing.exit_code == 5 and "App/Organization not found" in missing.stderr


# -- key create, list, revoke ----------------------------------------------------------------


def test_key_create_list_revoke(live: Live) -> None:
    made = run(
        live, "key", "create", "--mode", "read", "--org", live.org_id, "--name", "ci", "--json"
    )
    assert made.exit_code == 0, made.output
    assert len(made.stdout.strip().splitlines()) == 1
    body = json.loads(made.stdout)
    assert set(body) == {"id", "key"}
    key_id, key = body["id"], body["key"]
    assert key.startswith("otm_")
    # The new key works, read-only.
    assert live.http.get("/app", headers={"authorization": key}).status_code == 200
    # Human output: the key alone on stdout, what it is on stderr.
    human = run(live, "key", "create", "--mode", "upload", "--app", APP_ID)
    assert human.exit_code == 0, human.output
    (printed,) = human.stdout.strip().splitlines()
    assert printed.startswith("otm_") and "shown only now" in human.stderr

    listed = run(live, "key", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert len(listed.stdout.strip().splitlines()) == 1
    rows = json.loads(listed.stdout)
    assert isinstance(rows, list) and all("id" in r for r in rows)
    assert key_id in {r["id"] for r in rows} and len(rows) == 3
    (made_row,) = [r for r in rows if r["id"] == key_id]
    assert made_row["limited_to_orgs"] == [live.org_id] and made_row["mode"] == "read"
    assert (
        key not in listed.stdout and printed not in listed.stdout and live.key not in listed.stdout
    )
    table = run(live, "key", "list")
    assert table.exit_code == 0 and "ci" in table.stdout and key_id in table.stdout

    revoked = run(live, "key", "revoke", key_id)
    assert revoked.exit_code == 0, revoked.output
    assert f"Revoked key {key_id}" in revoked.stdout
    assert live.http.get("/app", headers={"authorization": key}).status_code == 401
    again = run(live, "key", "revoke", key_id)
    assert again.exit_code == 5 and "not found" in again.stderr.lower()
    assert key_id not in {r["id"] for r in json.loads(run(live, "key", "list", "--json").stdout)}
    # A key that may not manage keys is told so (exit 4).
    refused = run(live, "key", "list", OTAMETER_APIKEY=printed)
    assert refused.exit_code == 4 and "mode 'all'" in refused.stderr
    bad = run(live, "key", "create", "--mode", "root")
    assert bad.exit_code == 2 and "mode" in bad.stderr
