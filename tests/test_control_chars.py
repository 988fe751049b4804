"""NUL and other control characters are refused with a 400, alike on both engines (issue 14.8)."""

from __future__ import annotations

import uuid

from tests.harness import Harness, device_body, setup_app, zip_bytes

APP = "com.example.app"
CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\n"]


def test_update_check_fields(harness: Harness) -> None:
    setup_app(harness)
    for field in ["version_name", "custom_id", "version_build", "defaultChannel"]:
        for char in CONTROLS:
            body = device_body(APP, str(uuid.uuid4()), **{field: f"1{char}"})
            r = harness.client.post("/updates", json=body)
            assert r.status_code == 400, r.text
            code = "default_channel" if field == "defaultChannel" else field
            assert r.json() == {
                "error": f"invalid_{code}",
                "message": f"{field} must not contain control characters",
                "kind": "failed",
            }
    with harness.rt.read_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM devices").scalar() == 0


def test_stats_strings_and_metadata(harness: Harness) -> None:
    setup_app(harness)
    event = {**device_body(APP, str(uuid.uuid4())), "action": "set", "version_name": "1.0.0"}
    # A single object: refused with a 400.
    r = harness.client.post("/stats", json={**event, "old_version_name": "0\x00"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_old_version_name"
    # In a batch, the element is refused and the others kept.
    batch = [
        {**event, "version_name": "1.0.0\x00"},
        {**event, "metadata": {"message": "line one\nline two\ttab"}},
        {**event, "metadata": {"message": "nul\x00"}},
        {**event, "metadata": {"k\x00": "v"}},
    ]
    r = harness.client.post("/stats", json=batch)
    assert r.status_code == 200
    assert [(x["status"], x.get("error")) for x in r.json()["results"]] == [
        ("error", "invalid_version_name"),
        ("ok", None),
        ("error", "invalid_metadata"),
        ("error", "invalid_metadata"),
    ]
    with harness.rt.read_engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT metadata FROM device_events").scalars().all()
    assert len(rows) == 1 and "line one\\nline two\\ttab" in rows[0]


def test_management_names(harness: Harness) -> None:
    key = setup_app(harness)
    for char in ["\x00", "\x1f", "\n", "\x9f"]:
        management_names_refused(harness, key, char)


def management_names_refused(harness: Harness, key: str, char: str) -> None:
    auth = harness.auth(key)
    r = harness.client.post("/organization", json={"name": f"Org{char}"}, headers=auth)
    assert r.status_code == 400
    assert r.json() == {"error": "'name' must not contain control characters", "status": "KO"}
    org_id = harness.client.get("/organization", headers=auth).json()[0]["id"]
    r = harness.client.post(
        "/app",
        json={"app_id": "com.example.b", "name": f"B{char}", "owner_org": org_id},
        headers=auth,
    )
    assert r.status_code == 400 and r.json()["status"] == "KO"
    r = harness.client.post(
        "/channel", json={"app_id": APP, "channel": f"beta{char}"}, headers=auth
    )
    assert r.status_code == 400 and r.json()["status"] == "KO"
    r = harness.client.post(
        "/bundle",
        data={"app_id": APP, "version": f"1.0{char}"},
        files={"file": ("b.zip", zip_bytes(), "application/zip")},
        headers=auth,
    )
    assert r.status_code == 400 and r.json()["status"] == "KO"
    with harness.rt.read_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM orgs").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM apps").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM channels").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM bundles").scalar() == 0


def test_nul_anywhere_in_a_json_body(harness: Harness) -> None:
    key = setup_app(harness)
    org_id = harness.client.get("/organization", headers=harness.auth(key)).json()[0]["id"]
    r = harness.client.post(
        f"/organization/{org_id}/webhooks",
        json={"url": "https://example.com/\u0000hook"},
        headers=harness.auth(key),
    )
    assert r.status_code == 400
    assert r.json() == {"error": "'url' must not contain control characters", "status": "KO"}


URLS = [
    "/app/com.example.app%00",
    "/app/%00",
    "/statistics/app/com.example.app%00/?from=2024-05-01&to=2024-05-02",
    "/statistics/app/com.example.app/?from=2024-05-01%00&to=2024-05-02",
    "/bundle?app_id=com.example.app%00",
    "/app/com.example.app%C2%85",
    "/download/x%00.zip?device_id=a&expires=1&sig=b",
]


def test_control_characters_in_urls(harness: Harness) -> None:
    key = setup_app(harness)
    for url in URLS:
        r = harness.client.get(url, headers=harness.auth(key))
        assert r.status_code == 400, url
        assert r.json() == {
            "error": "The request URL must not contain control characters",
            "status": "KO",
        }


def test_control_characters_in_a_plugin_query(harness: Harness) -> None:
    setup_app(harness)
    r = harness.client.get("/channel_self?app_id=com.example.app&platform=ios%00")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_characters" and r.json()["kind"] == "failed"
