"""The plugin endpoints through real HTTP, with the request and answer shapes of
plugin-protocol.md: /updates, /stats and /channel_self."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from otameter.metering import checkin_log
from otameter.storage import schema as s
from tests.harness import Harness, device_body, setup_app, zip_bytes

APP = "com.example.app"


def device_rows(h: Harness) -> int:
    h.rollup()  # check-ins reach the device table through the rollup's fold of their log
    with h.rt.read_engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(s.devices)) or 0)


def device_events(h: Harness) -> list[tuple[str, str]]:
    with h.rt.read_engine.connect() as conn:
        rows = conn.execute(
            select(s.device_events.c.device_id, s.device_events.c.action).order_by(
                s.device_events.c.id
            )
        )
        return [(r.device_id, r.action) for r in rows]


def today_mau(h: Harness, key: str) -> int:
    h.rollup()
    day = h.clock.now().date().isoformat()
    (row,) = h.stats(key, f"app/{APP}", day, day)
    mau: int = row["mau"]
    return mau


# -- /updates ------------------------------------------------------------------------------


def test_update_available_answer(harness: Harness) -> None:
    key = setup_app(harness)
    data = zip_bytes(size_hint=5000)
    bundle = harness.upload(key, APP, "1.0.1", data)
    device = str(uuid.uuid4())

    answer = harness.checkin(APP, device)

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert "error" not in body and "kind" not in body
    assert body["version"] == "1.0.1"
    assert re.fullmatch(r"[0-9a-f]{64}", body["checksum"])
    assert body["checksum"] == bundle["checksum"]
    assert body["url"].startswith(f"http://otameter.test/download/{bundle['id']}.zip?")
    download = harness.client.get(body["url"].removeprefix("http://otameter.test"))
    assert download.status_code == 200 and download.content == data
    assert device_rows(harness) == 1
    assert today_mau(harness, key) == 1


def test_up_to_date_answer_has_kind(harness: Harness) -> None:
    key = setup_app(harness)
    harness.upload(key, APP, "1.0.1")

    answer = harness.checkin(APP, str(uuid.uuid4()), version_name="1.0.1")

    assert answer.status_code == 200
    assert answer.json() == {
        "error": "no_new_version_available",
        "message": "No new version available",
        "kind": "up_to_date",
    }
    # An up-to-date device is still active.
    assert today_mau(harness, key) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"device_id": "not-a-uuid"}, "invalid_device_id"),
        ({"app_id": "no dots"}, "invalid_app_id"),
        ({"platform": "windows"}, "invalid_platform"),
        ({"is_emulator": "false"}, "invalid_is_emulator"),
        ({"is_prod": 1}, "invalid_is_prod"),
        ({"version_name": ""}, None),
        ({"version_build": None}, None),
    ],
)
def test_invalid_update_bodies_are_refused_and_not_counted(
    harness: Harness, body: dict[str, Any], code: str | None
) -> None:
    key = setup_app(harness)
    harness.upload(key, APP, "1.0.1")
    request = {**device_body(APP, str(uuid.uuid4())), **body}
    request = {k: v for k, v in request.items() if v is not None}

    answer = harness.client.post("/updates", json=request)

    assert answer.status_code == 400
    error = answer.json()
    assert error["kind"] == "failed" and error["message"]
    if code is not None:
        assert error["error"] == code
    assert device_rows(harness) == 0
    assert today_mau(harness, key) == 0


def test_not_json_and_not_object_are_refused(harness: Harness) -> None:
    key = setup_app(harness)
    for raw in (b"", b"{not json", b"[]", b'"text"'):
        answer = harness.client.post(
            "/updates", content=raw, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_json_body"
        assert answer.json()["kind"] == "failed"
    assert device_rows(harness) == 0
    assert today_mau(harness, key) == 0


def test_unknown_app(harness: Harness) -> None:
    """An update check for an app that does not exist makes the device back off: HTTP 429
    with Retry-After, which the plugin honours (plugin-protocol.md §2, "HTTP 429")."""
    key = setup_app(harness)

    answer = harness.checkin("com.unknown.app", str(uuid.uuid4()))

    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "3600"
    body = answer.json()
    assert body["error"] == "app_not_found" and body["retryAfterSeconds"] == 3600
    assert "kind" not in body
    assert device_rows(harness) == 0
    assert today_mau(harness, key) == 0


def test_an_unexpected_failure_answers_500_in_the_error_shape(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # POST /updates skips Starlette's middleware (OtameterApp): its errors are answered here.
    setup_app(harness)

    def broken(checkins: Any) -> Any:
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        # The writer fails to log the check-in (both engines build the log rows here).
        patch.setattr(checkin_log, "log_rows", broken)
        answer = harness.checkin(APP, str(uuid.uuid4()))
    assert answer.status_code == 500
    assert answer.json() == {"error": "Internal server error", "status": "KO"}
    assert device_rows(harness) == 0
    assert harness.checkin(APP, str(uuid.uuid4())).status_code == 200
    assert device_rows(harness) == 1


def test_other_methods_on_updates_take_the_router(harness: Harness) -> None:
    assert harness.client.get("/updates").status_code == 405


# -- /stats --------------------------------------------------------------------------------


def stat(device: str, action: str = "set", **overrides: Any) -> dict[str, Any]:
    event = device_body(APP, device, action=action, version_name="1.0.1")
    event["old_version_name"] = "builtin"
    event["timestamp"] = 1715774400000
    event.update(overrides)
    return event


def test_stats_single_object(harness: Harness) -> None:
    setup_app(harness)
    device = str(uuid.uuid4())

    answer = harness.client.post("/stats", json=stat(device, "download_zip_start"))

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}
    assert device_events(harness) == [(device, "download_zip_start")]


def test_stats_array_keeps_good_elements(harness: Harness) -> None:
    setup_app(harness)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [
        stat(first, "download_complete"),
        stat(first, "set", device_id="bad id"),
        "not an object",
        stat(second, "update_fail"),
        stat(second, "set", app_id="com.unknown.app"),
    ]

    answer = harness.client.post("/stats", json=batch)

    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == ["ok", "error", "error", "ok", "error"]
    assert results[1]["error"] == "invalid_device_id"
    assert results[4]["error"] == "app_not_found"
    assert device_events(harness) == [(first, "download_complete"), (second, "update_fail")]


def test_stats_do_not_count_as_activity(harness: Harness) -> None:
    key = setup_app(harness)
    harness.client.post("/stats", json=[stat(str(uuid.uuid4()), "app_launch_start")])
    assert device_rows(harness) == 0
    assert today_mau(harness, key) == 0


def test_stats_invalid_single_object(harness: Harness) -> None:
    setup_app(harness)
    answer = harness.client.post("/stats", json=stat(str(uuid.uuid4()), "Bad Action"))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_action"
    assert device_events(harness) == []


# -- /channel_self ---------------------------------------------------------------------------


def channel(h: Harness, key: str, name: str, version: str, **flags: Any) -> dict[str, Any]:
    r = h.client.post(
        "/channel",
        json={"app_id": APP, "channel": name, "version": version, **flags},
        headers=h.auth(key),
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def setup_channels(h: Harness) -> str:
    key = setup_app(h)
    h.upload(key, APP, "1.0.1")  # production, the public channel
    h.upload(key, APP, "2.0.0-beta", channel="beta")
    channel(h, key, "beta", "2.0.0-beta", public=False, allow_device_self_set=True)
    h.upload(key, APP, "3.0.0-internal", channel="internal")
    channel(h, key, "internal", "3.0.0-internal", public=False, allow_device_self_set=False)
    return key


def test_channel_list_is_a_bare_array_with_integer_ids(harness: Harness) -> None:
    setup_channels(harness)
    query = {
        k: str(v).lower() if isinstance(v, bool) else v
        for k, v in device_body(APP, str(uuid.uuid4())).items()
    }

    answer = harness.client.get("/channel_self", params=query)

    assert answer.status_code == 200
    listed = answer.json()
    assert isinstance(listed, list)
    for entry in listed:
        assert set(entry) == {"id", "name", "public", "allow_self_set"}
        assert type(entry["id"]) is int
    by_name = {entry["name"]: entry for entry in listed}
    # The private channel that devices may not join is not offered.
    assert set(by_name) == {"production", "beta"}
    assert by_name["production"]["public"] is True
    assert by_name["beta"] == {
        "id": by_name["beta"]["id"],
        "name": "beta",
        "public": False,
        "allow_self_set": True,
    }


def test_channel_get_set_and_override_honoured_by_updates(harness: Harness) -> None:
    """Plugins older than 7.34 / 8.2 keep a server-side override (plugin-protocol.md §4)."""
    setup_channels(harness)
    device = str(uuid.uuid4())
    info = device_body(APP, device, plugin_version="7.20.0")

    got = harness.client.put("/channel_self", json=info)
    assert got.status_code == 200
    assert got.json()["channel"] == "production" and got.json()["status"] == "default"
    assert "error" not in got.json()

    joined = harness.client.post("/channel_self", json={**info, "channel": "beta"})
    assert joined.status_code == 200
    assert joined.json()["status"] == "ok" and "error" not in joined.json()

    got = harness.client.put("/channel_self", json=info)
    assert got.json()["channel"] == "beta" and got.json()["status"] == "override"
    assert "error" not in got.json()
    body = harness.checkin(APP, device, plugin_version="7.20.0").json()
    assert body["version"] == "2.0.0-beta" and "error" not in body
    # Other devices keep the default channel.
    assert harness.checkin(APP, str(uuid.uuid4())).json()["version"] == "1.0.1"

    # Choosing the default channel again removes the override.
    back = harness.client.post("/channel_self", json={**info, "channel": "production"})
    assert back.status_code == 200 and "error" not in back.json()
    assert harness.checkin(APP, device, plugin_version="7.20.0").json()["version"] == "1.0.1"


def test_channel_self_set_refused_when_not_allowed(harness: Harness) -> None:
    setup_channels(harness)
    device = str(uuid.uuid4())
    info = device_body(APP, device)

    refused = harness.client.post("/channel_self", json={**info, "channel": "internal"})

    assert refused.status_code == 200
    assert refused.json()["error"] == "channel_self_set_not_allowed"
    assert harness.client.put("/channel_self", json=info).json()["status"] == "default"
    assert harness.checkin(APP, device).json()["version"] == "1.0.1"

    missing = harness.client.post("/channel_self", json={**info, "channel": "nope"})
    assert missing.json()["error"] == "channel_not_found"


def test_channel_self_unknown_app(harness: Harness) -> None:
    setup_app(harness)
    info = device_body("com.unknown.app", str(uuid.uuid4()))
    answer = harness.client.put("/channel_self", json=info)
    assert answer.status_code == 200
    assert answer.json()["error"] == "app_not_found"
