"""Release health: the plugin's own stats sequences replayed through /updates and /stats, and the
release rows they produce (contract.md "Release health"), on both engines."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import uuid
from datetime import timedelta
from typing import Any

from otameter.releases import RELATIVE_ERROR, histogram_quantile, launch_bucket
from tests.harness import Harness, device_body, setup_app

APP = "com.example.app"
DAY = "2024-05-15"


def stat(device: str, action: str, version: str, ts: int, **overrides: Any) -> dict[str, Any]:
    """A stats event as the plugin sends it (createInfoObject fields, plugin-protocol.md §3)."""
    event = device_body(APP, device, action=action, version_name=version, timestamp=ts)
    event.update(overrides)
    return event


def launch(device: str, version: str, ts: int, ms: int, **overrides: Any) -> dict[str, Any]:
    metadata = {"duration_ms": str(ms), "launch_started_at": str(ts - ms), "source": "cold"}
    return stat(device, "app_launch_ready", version, ts, metadata=metadata, **overrides)


def post(h: Harness, batch: list[dict[str, Any]]) -> None:
    answer = h.client.post("/stats", json=batch)
    assert answer.status_code == 200, answer.text
    assert all(r["status"] == "ok" for r in answer.json()["results"]), answer.text


def checkin(h: Harness, device: str, version: str = "builtin", **overrides: Any) -> dict[str, Any]:
    answer = h.checkin(APP, device, version_name=version, **overrides)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def releases(h: Harness, key: str, query: str = f"from={DAY}&to={DAY}") -> list[dict[str, Any]]:
    h.rollup()
    answer = h.client.get(f"/statistics/app/{APP}/releases/?{query}", headers=h.auth(key))
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


def row(version: str, **figures: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": version,
        "active": 0,
        "offered": 0,
        "downloaded": 0,
        "installed": 0,
        "failed": 0,
        "rolled_back": 0,
        "crashed": 0,
        "launches": 0,
        "launch_ms_p50": None,
        "launch_ms_p95": None,
    }
    base.update(figures)
    return base


def clean_install(h: Harness, device: str, ts: int, ms: int) -> list[dict[str, Any]]:
    """Check-in offered 1.0.1, download, set, launch; the batch the plugin flushed."""
    assert checkin(h, device)["version"] == "1.0.1"
    batch = [
        stat(device, "download_zip_start", "1.0.1", ts),
        stat(device, "download_10", "1.0.1", ts + 1),
        stat(device, "download_complete", "1.0.1", ts + 2),
        stat(device, "set", "1.0.1", ts + 3, old_version_name="builtin"),
        stat(device, "app_launch_start", "1.0.1", ts + 4),
        launch(device, "1.0.1", ts + 5, ms),
    ]
    post(h, batch)
    checkin(h, device, "1.0.1")
    return batch


def replay(h: Harness) -> tuple[str, dict[str, str]]:
    """The plugin's sequences, one device each; returns the key and the devices."""
    key = setup_app(h)
    h.upload(key, APP, "1.0.1")
    d = {name: str(uuid.uuid4()) for name in ("clean", "retry", "rollback", "crash", "file")}
    d["emulator"], d["dev"] = str(uuid.uuid4()), str(uuid.uuid4())
    t = 1_715_774_400_000

    # A clean install, then the same batch sent again (the plugin resends its queue when it
    # missed the answer): nothing changes.
    batch = clean_install(h, d["clean"], t, 90)
    post(h, batch)

    # A download failure, then a retry at the next check-in that succeeds.
    checkin(h, d["retry"])
    post(h, [stat(d["retry"], "download_fail", "1.0.1", t + 10)])
    clean_install(h, d["retry"], t + 20, 100)

    # Installed, never called notifyAppReady: the plugin went back (update_fail).
    checkin(h, d["rollback"])
    post(
        h,
        [
            stat(d["rollback"], "download_complete", "1.0.1", t + 30),
            stat(d["rollback"], "set", "1.0.1", t + 31, old_version_name="builtin"),
            stat(d["rollback"], "app_launch_start", "1.0.1", t + 32),
            stat(d["rollback"], "app_launch_timeout", "1.0.1", t + 33),
            stat(d["rollback"], "update_fail", "1.0.1", t + 34, old_version_name="builtin"),
        ],
    )
    checkin(h, d["rollback"], "builtin")

    # A crash after set, while running the new bundle (two crash reports: one device).
    clean_install(h, d["crash"], t + 40, 120)
    post(
        h,
        [
            stat(d["crash"], "app_crash", "1.0.1", t + 46),
            stat(d["crash"], "app_anr", "1.0.1", t + 47),
        ],
    )

    # A per-file failure names "<version>:<file>", and the version is 1.0.1.
    checkin(h, d["file"])
    post(h, [stat(d["file"], "download_manifest_file_fail", "1.0.1:assets/app.js", t + 50)])

    # Emulators and dev builds do all of it and count nowhere.
    for name, flags in (("emulator", {"is_emulator": True}), ("dev", {"is_prod": False})):
        checkin(h, d[name], **flags)
        post(
            h,
            [
                stat(d[name], "download_complete", "1.0.1", t + 60, **flags),
                stat(d[name], "set", "1.0.1", t + 61, **flags),
                stat(d[name], "update_fail", "1.0.1", t + 62, **flags),
                stat(d[name], "app_crash", "1.0.1", t + 63, **flags),
                launch(d[name], "1.0.1", t + 64, 5000, **flags),
            ],
        )
        checkin(h, d[name], "1.0.1", **flags)
    return key, d


EXPECTED = [
    row(
        "1.0.1",
        active=3,  # clean, retry, crash report running it; rollback went back
        offered=5,
        downloaded=4,
        installed=4,
        failed=2,  # retry's download_fail, file's manifest failure
        rolled_back=1,
        crashed=1,
        launches=3,  # 90, 100, 120 ms; the resent batch is not counted again
        launch_ms_p50=100,
        launch_ms_p95=120,
    ),
    row("builtin", active=5),
]


def test_plugin_sequences_give_every_field(harness: Harness) -> None:
    key, _ = replay(harness)
    assert releases(harness, key) == EXPECTED


def test_sending_everything_again_changes_nothing(harness: Harness) -> None:
    key, d = replay(harness)
    harness.rollup()
    t = 1_715_774_400_000
    # The crash device resends its whole queue, in another order, a minute later.
    harness.clock.advance(timedelta(minutes=1))
    post(
        harness,
        [
            stat(d["crash"], "app_anr", "1.0.1", t + 47),
            launch(d["crash"], "1.0.1", t + 45, 120),
            stat(d["crash"], "set", "1.0.1", t + 43, old_version_name="builtin"),
            stat(d["crash"], "app_crash", "1.0.1", t + 46),
        ],
    )
    assert releases(harness, key) == EXPECTED


def test_per_day_rows_and_csv(harness: Harness) -> None:
    key = setup_app(harness)
    harness.upload(key, APP, "1.0.1")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    clean_install(harness, first, 1_715_774_400_000, 50)
    harness.clock.advance(timedelta(days=1))
    clean_install(harness, second, 1_715_860_800_000, 70)
    checkin(harness, first, "1.0.1")

    query = "from=2024-05-15&to=2024-05-16"
    assert releases(harness, key, query) == [
        row(
            "1.0.1",
            active=2,
            offered=2,
            downloaded=2,
            installed=2,
            launches=2,
            launch_ms_p50=50,
            launch_ms_p95=70,
        ),
        row("builtin", active=2),
    ]
    by_day = releases(harness, key, query + "&by=day")
    assert by_day == [
        {"date": "2024-05-15", **row("1.0.1", active=1, offered=1, downloaded=1, installed=1)}
        | {"launches": 1, "launch_ms_p50": 50, "launch_ms_p95": 50},
        {"date": "2024-05-15", **row("builtin", active=1)},
        {"date": "2024-05-16", **row("1.0.1", active=2, offered=1, downloaded=1, installed=1)}
        | {"launches": 1, "launch_ms_p50": 70, "launch_ms_p95": 70},
        {"date": "2024-05-16", **row("builtin", active=1)},
    ]

    answer = harness.client.get(
        f"/statistics/app/{APP}/releases/?{query}&by=day&format=csv", headers=harness.auth(key)
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(answer.text)))
    assert [line["date"] for line in lines] == ["2024-05-15"] * 2 + ["2024-05-16"] * 2
    assert lines[1]["version"] == "builtin" and lines[1]["launch_ms_p50"] == ""
    assert {k: v for k, v in lines[2].items()} == {
        k: "" if v is None else str(v) for k, v in by_day[2].items()
    }


def test_errors_and_invisible_apps_answer_like_statistics(harness: Harness) -> None:
    key = setup_app(harness)
    _, stranger = harness.user("other@example.com")
    path = f"/statistics/app/{APP}/releases/"
    cases = [
        (key, "from=2024-05-1&to=2024-05-15", 400, "Invalid date format. Use YYYY-MM-DD"),
        (key, "from=2024-01-01&to=2024-03-31", 400, "Date range cannot exceed 90 days"),
        (key, f"from={DAY}&to={DAY}&by=week", 400, "Invalid by. Use day"),
        (stranger, f"from={DAY}&to={DAY}", 404, "App/Organization not found"),
    ]
    for who, query, status, message in cases:
        answer = harness.client.get(f"{path}?{query}", headers=harness.auth(who))
        assert (answer.status_code, answer.json()) == (status, {"error": message, "status": "KO"})
    missing = harness.client.get(
        f"/statistics/app/com.missing.app/releases/?from={DAY}&to={DAY}",
        headers=harness.auth(stranger),
    )
    invisible = harness.client.get(f"{path}?from={DAY}&to={DAY}", headers=harness.auth(stranger))
    assert (missing.status_code, missing.content) == (invisible.status_code, invisible.content)
    assert harness.client.get(f"{path}?from={DAY}&to={DAY}").status_code == 401


def test_launch_quantiles_are_within_the_documented_bound() -> None:
    rng = random.Random(15)
    for _ in range(20):
        values = [int(rng.lognormvariate(7, 1.2)) for _ in range(rng.randint(1, 3000))]
        histogram: dict[int, int] = {}
        for value in values:
            bucket = launch_bucket(value)
            histogram[bucket] = histogram.get(bucket, 0) + 1
        ordered = sorted(values)
        for q in (0.5, 0.95):
            exact = ordered[max(1, math.ceil(q * len(ordered))) - 1]
            estimate = histogram_quantile(histogram, q)
            assert estimate is not None
            assert abs(estimate - exact) <= RELATIVE_ERROR * exact + 0.5, (q, exact, estimate)
    # Under 128 ms every duration has its own bucket: exact.
    assert histogram_quantile({launch_bucket(v): 1 for v in (3, 60, 127)}, 0.5) == 60


def test_an_import_of_the_same_events_agrees_with_live_traffic(harness: Harness) -> None:
    # The sequences of ``replay`` as import lines (shuffled: an import's order is any), stats
    # as ``"type": "stat"``. Imports carry no update answers, so ``offered`` stays 0.
    from otameter.importing.importer import Importer

    key = setup_app(harness)
    harness.upload(key, APP, "1.0.1")
    time = "2024-05-15T12:00:00Z"
    lines: list[dict[str, Any]] = []
    t = 1_715_774_400_000

    def device(name: str, version: str = "builtin", **flags: Any) -> None:
        body = device_body(APP, name, version_name=version, **flags)
        fields = ("device_id", "platform", "version_name", "is_emulator", "is_prod")
        lines.append(
            {"type": "checkin", "time": time, "app_id": APP} | {f: body[f] for f in fields}
        )

    def event(name: str, action: str, version: str, ts: int, **extra: Any) -> None:
        flags = {k: extra.pop(k) for k in ("is_emulator", "is_prod") if k in extra}
        lines.append(
            {
                "type": "stat",
                "time": time,
                "app_id": APP,
                "device_id": name,
                "platform": "android",
                "action": action,
                "version_name": version,
                "timestamp": ts,
                "is_emulator": flags.get("is_emulator", False),
                "is_prod": flags.get("is_prod", True),
                **extra,
            }
        )

    d = {n: str(uuid.uuid4()) for n in ("clean", "retry", "rollback", "crash", "file", "emu")}
    for name, ms, at in (("clean", 90, t), ("retry", 100, t + 20), ("crash", 120, t + 40)):
        device(d[name])
        device(d[name], "1.0.1")
        for n, action in enumerate(("download_complete", "set")):
            event(d[name], action, "1.0.1", at + n)
        event(d[name], "app_launch_ready", "1.0.1", at + 5, metadata={"duration_ms": str(ms)})
        # Sent twice: the device resent its queue.
        event(d[name], "app_launch_ready", "1.0.1", at + 5, metadata={"duration_ms": str(ms)})
    event(d["retry"], "download_fail", "1.0.1", t + 10)
    device(d["rollback"])
    for n, action in enumerate(("download_complete", "set", "update_fail")):
        event(d["rollback"], action, "1.0.1", t + 30 + n)
    event(d["crash"], "app_crash", "1.0.1", t + 46)
    device(d["file"])
    event(d["file"], "download_manifest_file_fail", "1.0.1:assets/app.js", t + 50)
    device(d["emu"], "1.0.1", is_emulator=True)
    event(d["emu"], "update_fail", "1.0.1", t + 60, is_emulator=True)
    random.Random(4).shuffle(lines)
    path = harness.data_dir / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    summary = Importer(harness.rt.writer, harness.clock, slice_bytes=1024).run(path)

    assert summary.rejected == [] and summary.accepted == len(lines)
    expected = [dict(r, offered=0) for r in EXPECTED]
    assert releases(harness, key) == expected


def test_device_search_and_event_log(harness: Harness) -> None:
    key, d = replay(harness)
    # Found by the start of its id, or by its custom id.
    checkin(harness, d["crash"], "1.0.1", custom_id="user-42")
    harness.rollup()  # the check-in reaches the device table when the log is folded
    answer = harness.client.get(
        f"/app/{APP}/devices?search={d['crash'][:8]}", headers=harness.auth(key)
    )
    assert answer.status_code == 200, answer.text
    (found,) = answer.json()["data"]
    assert found["device_id"] == d["crash"]
    assert (found["platform"], found["version_name"], found["custom_id"]) == (
        "android",
        "1.0.1",
        "user-42",
    )
    assert (found["is_emulator"], found["is_prod"], found["channel"]) == (False, True, None)
    by_custom = harness.client.get(f"/app/{APP}/devices?search=user-4", headers=harness.auth(key))
    assert [r["device_id"] for r in by_custom.json()["data"]] == [d["crash"]]
    emulator = harness.client.get(
        f"/app/{APP}/devices?search={d['emulator']}", headers=harness.auth(key)
    ).json()["data"]
    assert [r["is_emulator"] for r in emulator] == [True]
    listed = harness.client.get(f"/app/{APP}/devices", headers=harness.auth(key)).json()
    assert len(listed["data"]) == 7 and listed["next_page"] is None

    # The log: newest first, each event once although its batch came twice, paged.
    path = f"/app/{APP}/devices/{d['clean']}/events"
    first = harness.client.get(f"{path}?limit=4", headers=harness.auth(key)).json()
    assert [e["action"] for e in first["data"]] == [
        "app_launch_ready",
        "app_launch_start",
        "set",
        "download_complete",
    ]
    assert first["data"][0]["metadata"]["duration_ms"] == "90"
    assert first["data"][2]["old_version_name"] == "builtin"
    rest = harness.client.get(
        f"{path}?limit=4&before={first['next_before']}", headers=harness.auth(key)
    ).json()
    assert [e["action"] for e in rest["data"]] == ["download_10", "download_zip_start"]
    assert rest["next_before"] is None

    # Another org's key: the app's devices answer like a missing app's.
    _, stranger = harness.user("other@example.com")
    for url in (f"/app/{APP}/devices", path):
        hidden = harness.client.get(url, headers=harness.auth(stranger))
        missing = harness.client.get(
            url.replace(APP, "com.missing.app"), headers=harness.auth(stranger)
        )
        assert hidden.status_code == missing.status_code == 404
        assert hidden.content == missing.content
    unknown = harness.client.get(
        f"/app/{APP}/devices/{uuid.uuid4()}/events", headers=harness.auth(key)
    )
    assert unknown.status_code == 404 and unknown.json()["status"] == "KO"
    bad = harness.client.get(f"{path}?limit=0", headers=harness.auth(key))
    assert bad.status_code == 400 and bad.json()["status"] == "KO"


def test_raw_events_are_pruned_after_the_retention_and_figures_stay(harness: Harness) -> None:
    key, d = replay(harness)
    before = releases(harness, key)
    path = f"/app/{APP}/devices/{d['clean']}/events"

    def logged() -> int:
        return len(harness.client.get(path, headers=harness.auth(key)).json()["data"])

    assert logged() == 6
    harness.clock.advance(timedelta(days=7) - timedelta(milliseconds=1))
    assert harness.rt.prune_stats_events() == 0
    assert logged() == 6
    harness.clock.advance(timedelta(milliseconds=2))
    assert harness.rt.prune_stats_events() > 0
    assert logged() == 0
    assert releases(harness, key) == before == EXPECTED


def test_retention_and_thresholds_read_the_environment(monkeypatch: Any) -> None:
    from otameter.config import Settings

    monkeypatch.setenv("OTAMETER_STATS_RETENTION_DAYS", "2.5")
    monkeypatch.setenv("OTAMETER_RELEASE_MIN_DEVICES", "100")
    monkeypatch.setenv("OTAMETER_RELEASE_MAX_CRASH_RATE", "0.02")
    settings = Settings.from_env()
    assert settings.stats_retention_days == 2.5
    assert settings.release_min_devices == 100
    assert settings.release_max_crash_rate == 0.02
    assert Settings().stats_retention_days == 7
    monkeypatch.setenv("OTAMETER_RELEASE_MIN_DEVICES", "many")
    try:
        Settings.from_env()
    except ValueError as exc:
        assert "OTAMETER_RELEASE_MIN_DEVICES" in str(exc)
    else:
        raise AssertionError("a setting that is not a number is refused")
