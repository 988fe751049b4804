"""The release guard: ``release_regression`` alerts and the opt-in auto_rollback of a channel,
each once per (version, channel) and only past their thresholds, on both engines."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Harness, device_body, running
from tests.test_plans import APP, setup_org  # APP: the app setup_org creates
from tests.test_webhooks import LOCAL, Receiver, add_webhook, receiver, verify_signature

__all__ = ["receiver"]  # the fixture, used by name


@pytest.fixture
def harness(db_url: str, tmp_path: Path) -> Iterator[Harness]:
    """Both engines, with loopback webhook targets allowed for the local receiver."""
    with running(db_url, tmp_path / "data", webhook_allow_private=LOCAL) as h:
        yield h


T = 1_715_774_400_000


def limits(h: Harness, **values: Any) -> None:
    h.rt.release_guard.settings = dataclasses.replace(h.rt.settings, **values)


def device_does(h: Harness, *actions: str, version: str = "1.0.1") -> str:
    """A new device checks in, then sends ``actions`` for ``version``."""
    device = str(uuid.uuid4())
    assert h.checkin(APP, device).status_code == 200
    batch = [
        device_body(APP, device, action=action, version_name=version, timestamp=T + n)
        for n, action in enumerate(actions)
    ]
    answer = h.client.post("/stats", json=batch)
    assert answer.status_code == 200, answer.text
    return device


def step(h: Harness) -> None:
    h.rollup()
    h.rollup()  # a second pass raises nothing new
    h.rt.webhooks.deliver_due()


def channel(h: Harness, key: str) -> dict[str, Any]:
    answer = h.client.get(f"/channel?app_id={APP}", headers=h.auth(key))
    assert answer.status_code == 200, answer.text
    (only,) = answer.json()
    result: dict[str, Any] = only
    return result


def test_alert_fires_once_past_the_rollback_threshold(harness: Harness, receiver: Receiver) -> None:
    h = harness
    key, org_id = setup_org(h)  # 1.0.0 on production
    add_webhook(h, key, org_id, receiver.url)
    h.upload(key, APP, "1.0.1")
    limits(h, release_min_devices=4, release_max_rollback_rate=0.25)

    device_does(h, "download_complete", "set", "update_fail")
    device_does(h, "download_complete", "set")
    device_does(h, "download_complete", "set")
    step(h)
    # 1 of 3 rolled back: above the rate, but under the minimum number of devices.
    assert receiver.events("release_regression") == []
    device_does(h, "download_complete", "set")
    step(h)
    # 1 of 4: exactly at the maximum rate, not past it.
    assert receiver.events("release_regression") == []
    device_does(h, "set", "update_fail")
    step(h)
    (alert,) = receiver.events("release_regression")
    verify_signature(receiver.received[-1])
    assert alert["org_id"] == org_id
    assert alert["data"] == {
        "app_id": APP,
        "version": "1.0.1",
        "channel": "production",
        "devices": 5,
        "rates": {"rollback": 0.4, "crash": 0.0, "failure": 0.0},
        "thresholds": {"rollback": 0.25, "crash": 0.05, "failure": 0.1, "min_devices": 4},
        "breached": ["rollback"],
        "auto_rollback": {"enabled": False, "rolled_back_to": None},
    }
    assert channel(h, key)["version"] == "1.0.1"  # no auto_rollback: the channel stays

    # More rollbacks, failures and later rollups raise nothing more for (1.0.1, production).
    device_does(h, "set", "update_fail")
    device_does(h, "download_fail")
    step(h)
    assert len(receiver.events("release_regression")) == 1


def test_auto_rollback_goes_back_once_past_the_crash_threshold(
    harness: Harness, receiver: Receiver
) -> None:
    h = harness
    key, org_id = setup_org(h)
    add_webhook(h, key, org_id, receiver.url)
    h.upload(key, APP, "1.0.1")
    answer = h.client.post(
        "/channel",
        json={"app_id": APP, "channel": "production", "auto_rollback": True},
        headers=h.auth(key),
    )
    assert answer.status_code == 200 and answer.json()["auto_rollback"] is True
    limits(h, release_min_devices=2, release_max_crash_rate=0.5)

    device_does(h, "set", "app_crash")
    device_does(h, "set")
    step(h)
    # 1 of 2 crashed: at the maximum, not past it.
    assert receiver.events("release_regression") == []
    assert channel(h, key)["version"] == "1.0.1"
    device_does(h, "set", "app_anr")
    step(h)
    (alert,) = receiver.events("release_regression")
    assert alert["data"]["breached"] == ["crash"]
    assert alert["data"]["rates"]["crash"] == round(2 / 3, 4)
    assert alert["data"]["auto_rollback"] == {"enabled": True, "rolled_back_to": "1.0.0"}
    listed_channel = channel(h, key)
    assert (listed_channel["version"], listed_channel["auto_rollback"]) == ("1.0.0", True)
    # Devices are offered the previous bundle again.
    assert h.checkin(APP, str(uuid.uuid4())).json()["version"] == "1.0.0"
    # The release row and the dashboard's list of alerts say what happened.
    alerts = h.client.get(f"/app/{APP}/release_alerts", headers=h.auth(key))
    assert alerts.status_code == 200, alerts.text
    (listed,) = alerts.json()["data"]
    assert (listed["version"], listed["channel"], listed["rolled_back_to"]) == (
        "1.0.1",
        "production",
        "1.0.0",
    )

    # It fires once: more crashes of 1.0.1 neither alert again nor move the channel back.
    device_does(h, "set", "app_crash")
    step(h)
    assert len(receiver.events("release_regression")) == 1
    assert channel(h, key)["version"] == "1.0.0"


def test_failure_rate_counts_devices_that_could_not_install(harness: Harness) -> None:
    h = harness
    key, _ = setup_org(h)
    h.upload(key, APP, "1.0.1")
    limits(h, release_min_devices=3, release_max_failure_rate=0.5)
    device_does(h, "download_fail")
    device_does(h, "checksum_fail", "download_fail")
    device_does(h, "download_complete", "set")
    step(h)
    # 2 of 3 failed: an alert row, even with no webhook to deliver it to.
    alerts = h.client.get(f"/app/{APP}/release_alerts", headers=h.auth(key)).json()["data"]
    assert [(a["version"], a["reason"], a["devices"]) for a in alerts] == [("1.0.1", "failure", 3)]


def test_an_org_sets_its_own_thresholds(harness: Harness, receiver: Receiver) -> None:
    h = harness
    key, org_id = setup_org(h)
    add_webhook(h, key, org_id, receiver.url)
    h.upload(key, APP, "1.0.1")
    path = f"/organization/{org_id}/release_guard"
    # The server's defaults: 20 devices at least, so three devices raise nothing.
    assert h.client.get(path, headers=h.auth(key)).json() == {
        "org_id": org_id,
        "min_devices": 20,
        "max_rollback_rate": 0.05,
        "max_failure_rate": 0.1,
        "max_crash_rate": 0.05,
        "overrides": {},
    }
    device_does(h, "set", "update_fail")
    device_does(h, "set")
    step(h)
    assert receiver.events("release_regression") == []

    answer = h.client.put(
        path, json={"min_devices": 3, "max_rollback_rate": 0.2}, headers=h.auth(key)
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["overrides"] == {"min_devices": 3, "max_rollback_rate": 0.2}
    device_does(h, "set")
    step(h)
    (alert,) = receiver.events("release_regression")
    assert alert["data"]["thresholds"] == {
        "rollback": 0.2,
        "crash": 0.05,
        "failure": 0.1,
        "min_devices": 3,
    }
    # null goes back to the server's value.
    back = h.client.put(path, json={"max_rollback_rate": None}, headers=h.auth(key)).json()
    assert back["overrides"] == {"min_devices": 3} and back["max_rollback_rate"] == 0.05

    for body in ({"min_devices": 0}, {"max_crash_rate": 2}, {"speed": 1}, {"min_devices": True}):
        refused = h.client.put(path, json=body, headers=h.auth(key))
        assert refused.status_code == 400 and refused.json()["status"] == "KO", body
    _, stranger = h.user("stranger@example.com")
    hidden = h.client.put(path, json={"min_devices": 1}, headers=h.auth(stranger))
    missing = h.client.put(
        "/organization/00000000-0000-0000-0000-000000000000/release_guard",
        json={"min_devices": 1},
        headers=h.auth(stranger),
    )
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content
    read_key = h.client.post(
        "/apikey", json={"name": "viewer", "mode": "read"}, headers=h.auth(key)
    ).json()["key"]
    assert h.client.get(path, headers=h.auth(read_key)).status_code == 200
    assert h.client.put(path, json={"min_devices": 1}, headers=h.auth(read_key)).status_code == 403
