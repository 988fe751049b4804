"""What the server answers is what the OpenAPI document says: each answer converts strictly
into the model its schema is generated from (otameter.models), on both engines.

``msgspec.convert`` checks every required key and every type, and drops the keys a TypedDict
does not name: the converted answer must equal the answer, so an answer that carries a key
its model forgets fails too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect
import pytest

from otameter.models import common, devices, plans, plugin, statistics
from tests.harness import Harness, device_body, running, setup_app
from tests.test_plans import put_on_plan, setup_org
from tests.test_plugin_endpoints import channel, setup_channels
from tests.test_release_guard import device_does, limits, step
from tests.test_webhooks import LOCAL, Receiver, add_webhook, receiver

__all__ = ["receiver"]  # the fixture, used by name

APP = "com.example.app"  # setup_app's and setup_channels'
PLANS_APP = "com.example.plans"  # setup_org's


@pytest.fixture
def harness(db_url: str, tmp_path: Path) -> Iterator[Harness]:
    """Both engines, with loopback webhook targets allowed for the local receiver."""
    with running(db_url, tmp_path / "data", webhook_allow_private=LOCAL) as h:
        yield h


def conforms(answer: Any, model: Any) -> None:
    assert msgspec.convert(answer, model) == answer, answer


def answered(response: Any, status: int, model: Any) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    conforms(body, model)
    return body


def test_no_update_takes_the_optional_keys_of_its_answer() -> None:
    answer = msgspec.inspect.type_info(plugin.PluginError)
    details = msgspec.inspect.type_info(plugin.BlockedDetails)
    assert isinstance(answer, msgspec.inspect.TypedDictType)
    assert isinstance(details, msgspec.inspect.TypedDictType)
    optional = {f.name: f.type for f in answer.fields if not f.required}
    assert set(optional) == {"version", "old", "major", "breaking"}
    assert {f.name: f.type for f in details.fields if not f.required} == optional
    assert all(not f.required for f in details.fields)


def test_plugin_answers_are_their_models(harness: Harness) -> None:
    h = harness
    key = setup_channels(h)  # production (public) serves 1.0.1; beta may be joined
    device = str(uuid.uuid4())

    offered = answered(h.checkin(APP, device), 200, plugin.UpdateAvailable)
    assert offered["version"] == "1.0.1"
    current = answered(h.checkin(APP, device, version_name="1.0.1"), 200, plugin.PluginError)
    assert current["kind"] == "up_to_date"
    # A major step the channel forbids: the blocked answer's own keys.
    h.upload(key, APP, "2.0.0", channel="major")
    channel(h, key, "major", "2.0.0", public=False, allow_device_self_set=True)
    channel(h, key, "major", "2.0.0", disable_auto_update="major")
    blocked = answered(
        h.checkin(APP, device, version_build="1.4.0", defaultChannel="major"),
        200,
        plugin.PluginError,
    )
    assert (blocked["version"], blocked["old"], blocked["major"], blocked["breaking"]) == (
        "2.0.0",
        "1.4.0",
        True,
        True,
    )
    answered(h.client.post("/updates", json={"app_id": APP}), 400, plugin.PluginError)
    answered(h.checkin("com.example.unknown", device), 429, plugin.UnknownApp)

    event = device_body(APP, device, action="set", version_name="1.0.1")
    answered(h.client.post("/stats", json=event), 200, plugin.StatsOk)
    unknown = {**event, "app_id": "com.example.unknown"}
    batch = answered(h.client.post("/stats", json=[event, unknown, {}]), 200, plugin.StatsOk)
    assert [r["status"] for r in batch["results"]] == ["ok", "error", "error"]

    old = device_body(APP, device, plugin_version="7.20.0")
    query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in old.items()}
    listed = answered(
        h.client.get("/channel_self", params=query), 200, list[plugin.ChannelListEntry]
    )
    assert {entry["name"] for entry in listed} == {"production", "beta", "major"}
    answered(h.client.put("/channel_self", json=old), 200, plugin.ChannelGet)
    joined = {**old, "channel": "beta"}
    answered(h.client.post("/channel_self", json=joined), 200, plugin.ChannelSetOk)
    assert answered(h.client.put("/channel_self", json=old), 200, plugin.ChannelGet) == {
        "channel": "beta",
        "status": "override",
        "allowSet": True,
    }
    refused = {**old, "channel": "nope"}
    answered(h.client.post("/channel_self", json=refused), 200, plugin.PluginError)
    answered(h.client.delete("/channel_self", params=query), 200, plugin.ChannelSetOk)
    stranger = {**old, "app_id": "com.example.unknown"}
    answered(h.client.put("/channel_self", json=stranger), 200, plugin.PluginError)


def test_statistics_answers_are_their_models(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    h.upload(key, APP, "1.0.0")
    for _ in range(3):
        device = str(uuid.uuid4())
        assert h.checkin(APP, device).status_code == 200
        events = [
            device_body(APP, device, action=action, version_name="1.0.0")
            for action in ("download_complete", "set", "app_launch_ready")
        ]
        events[-1]["metadata"] = {"duration_ms": "850"}
        assert h.client.post("/stats", json=events).status_code == 200
    h.rollup()
    today = h.clock.now().date()
    start = (today - timedelta(days=2)).isoformat()
    span = f"from={start}&to={today.isoformat()}"
    auth = h.auth(key)
    org_id = h.client.get("/organization", headers=auth).json()[0]["id"]

    for path in (f"app/{APP}", f"org/{org_id}", "user"):
        for options in ("", "&breakdown=true&compare=previous"):
            url = f"/statistics/{path}/?{span}{options}"
            body = answered(h.client.get(url, headers=auth), 200, statistics.StatsAnswer)
            assert len(body["data"]) == 3
    assert body["data"][-1]["mau"] == 3 and body["data"][-1]["previous"]["mau"] == 0

    url = f"/statistics/app/{APP}/bundle_usage/?{span}"
    usage = answered(h.client.get(url, headers=auth), 200, statistics.BundleUsageAnswer)
    assert usage["data"][-1]["versions"][0]["version"] == "builtin"
    for by in ("", "&by=day"):
        url = f"/statistics/app/{APP}/releases/?{span}{by}"
        rows = answered(h.client.get(url, headers=auth), 200, statistics.ReleasesAnswer)
        release = next(row for row in rows["data"] if row["version"] == "1.0.0")
        assert release["installed"] == 3 and release["launch_ms_p50"] is not None
    url = f"/statistics/app/{APP}/refused_devices/?{span}"
    answered(h.client.get(url, headers=auth), 200, statistics.RefusedDevicesAnswer)

    bad = f"/statistics/app/{APP}/?from=2024-13-01&to={today.isoformat()}"
    answered(h.client.get(bad, headers=auth), 400, common.Error)
    answered(h.client.get(f"/statistics/app/{APP}/?{span}"), 401, common.Error)


def test_plan_webhook_and_alert_answers_are_their_models(
    harness: Harness, receiver: Receiver
) -> None:
    h = harness
    key, org_id = setup_org(h)  # PLANS_APP, 1.0.0 on production
    auth = h.auth(key)
    usage_path = f"/organization/{org_id}/usage"
    unmetered = answered(h.client.get(usage_path, headers=auth), 200, plans.Usage)
    assert unmetered["plan"] is None and unmetered["mau"]["limit"] is None
    put_on_plan(h, org_id, "pro")
    metered = answered(h.client.get(usage_path, headers=auth), 200, plans.Usage)
    assert metered["plan"] == "pro" and metered["mau"]["percent"] == 0.0
    listed = answered(h.client.get("/plans", headers=auth), 200, list[plans.Plan])
    assert [(p["name"], p["default"]) for p in listed] == [("pro", False)]

    hooks = f"/organization/{org_id}/webhooks"
    made = answered(
        h.client.post(hooks, json={"url": receiver.url}, headers=auth), 201, plans.Webhook
    )
    assert made["secret"]
    add_webhook(h, key, org_id, receiver.url)
    assert len(answered(h.client.get(hooks, headers=auth), 200, list[plans.Webhook])) == 2

    # A release regression: an alert, and a delivery to each webhook.
    h.upload(key, PLANS_APP, "1.0.1")
    limits(h, release_min_devices=2, release_max_rollback_rate=0.25)
    device_does(h, "download_complete", "set", "update_fail")
    device_does(h, "download_complete", "set", "update_fail")
    receiver.statuses = [500]  # the first delivery fails and stays pending
    step(h)
    alerts = f"/app/{PLANS_APP}/release_alerts"
    raised = answered(h.client.get(alerts, headers=auth), 200, devices.ReleaseAlerts)
    assert raised["data"][0]["version"] == "1.0.1"
    sent = answered(
        h.client.get(f"{hooks}/deliveries", headers=auth), 200, list[plans.WebhookDelivery]
    )
    assert sorted(d["status"] for d in sent) == ["delivered", "pending"]
    pending = next(d for d in sent if d["status"] == "pending")
    assert pending["last_error"] == "HTTP 500" and pending["next_attempt_at"] is not None

    answered(h.client.get(usage_path), 401, common.Error)
    answered(h.client.get("/organization/nope/usage", headers=auth), 404, common.Error)
