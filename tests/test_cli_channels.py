"""``otameter channel set`` and ``otameter channel list`` against a live server on a real port."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests import test_cli_client as cli_tests
from tests.harness import device_body
from tests.test_cli_client import APP_ID, Live, run, upload

# The live server and the clean environment of the client command tests.
live = cli_tests.live
clean_env = cli_tests.clean_env


def channel_rows(live: Live) -> dict[str, dict[str, Any]]:
    result = run(live, "channel", "list", APP_ID, "--json")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    assert all(type(row["id"]) is int for row in rows)
    return {row["channel"]: row for row in rows}


def test_channel_set_creates_and_changes_channels(live: Live, tmp_path: Path) -> None:
    upload(live, "1.0.0", tmp_path)
    upload(live, "2.0.0", tmp_path, "--channel", "beta")

    made = run(
        live,
        "channel",
        "set",
        APP_ID,
        "beta",
        "--private",
        "--self-set",
        "--no-ios",
        "--disable-auto-update",
        "major",
    )
    assert made.exit_code == 0, made.output
    assert "Channel beta of com.example.cli serves 2.0.0; private" in made.stdout
    assert "no auto-update across a major version" in made.stdout

    rows = channel_rows(live)
    beta = rows["beta"]
    assert beta["version"] == "2.0.0" and beta["public"] is False
    assert beta["allow_device_self_set"] is True
    assert (beta["ios"], beta["android"]) == (False, True)
    assert beta["disable_auto_update"] == "major"
    assert rows["production"]["public"] is True

    # The plugin sees it: an Android device that names beta gets it, an iOS one may not.
    body = device_body(APP_ID, str(uuid.uuid4()), version_build="1.5.0", defaultChannel="beta")
    answer = live.http.post("/updates", json=body).json()
    assert answer["error"] == "disable_auto_update_to_major" and answer["breaking"] is True
    run(live, "channel", "set", APP_ID, "beta", "--disable-auto-update", "none")
    assert live.http.post("/updates", json=body).json()["version"] == "2.0.0"
    ios = live.http.post("/updates", json={**body, "platform": "ios"}).json()
    assert ios["error"] == "no_channel"

    # --public on an Android-only channel replaces production for Android only.
    result = run(live, "channel", "set", APP_ID, "beta", "--public", "--no-self-set", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["public_android"] is True
    rows = channel_rows(live)
    assert rows["production"]["public_android"] is False
    assert rows["production"]["public_ios"] is True

    # A new channel pointed at an existing bundle, with --version.
    result = run(live, "channel", "set", APP_ID, "qa", "--version", "1.0.0", "--private")
    assert result.exit_code == 0, result.output
    assert channel_rows(live)["qa"]["version"] == "1.0.0"


def test_channel_list_table_and_errors(live: Live, tmp_path: Path) -> None:
    upload(live, "1.0.0", tmp_path)
    for _ in range(2):
        live.http.post("/updates", json=device_body(APP_ID, version_name="1.0.0"))
    live.rt.rollups.run_blocking()  # check-ins reach the device table through the rollup

    table = run(live, "channel", "list", APP_ID)
    assert table.exit_code == 0, table.output
    assert "production" in table.stdout and "ios, android, electron" in table.stdout
    assert channel_rows(live)["production"]["devices"] == 2

    unknown = run(live, "channel", "set", APP_ID, "qa", "--version", "9.9.9")
    assert unknown.exit_code == 5 and "9.9.9" in unknown.stderr
    missing = run(live, "channel", "list", "com.nope.app")
    assert missing.exit_code == 5
    bad = run(live, "channel", "set", APP_ID, "qa", "--disable-auto-update", "sometimes")
    assert bad.exit_code == 2
    no_key = run(None, "channel", "list", APP_ID, OTAMETER_SERVER=live.url)
    assert no_key.exit_code == 2 and "no API key" in no_key.stderr
