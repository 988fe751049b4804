"""Plans, billing cycles, usage against plan and locks (plan limits and the 3% rule)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection
from typer.testing import CliRunner

from otameter.billing.plans import (
    cycle_bounds,
    orgs_using_plan,
    parse_quantity,
    set_org_plan,
    upsert_plan,
)
from otameter.billing.usage import EMUDEV_THRESHOLD
from otameter.cli import app as cli_app
from otameter.clock import to_ms
from tests.harness import Harness, zip_bytes

APP = "com.example.plans"
BIG = 10**12


# -- billing cycles (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "today", "start", "end"),
    [
        # Anchor 31 around a 30-day month: April has no 31st, its cycle starts on the 30th.
        (31, date(2024, 4, 15), date(2024, 3, 31), date(2024, 4, 29)),
        (31, date(2024, 4, 29), date(2024, 3, 31), date(2024, 4, 29)),
        (31, date(2024, 4, 30), date(2024, 4, 30), date(2024, 5, 30)),
        (31, date(2024, 5, 30), date(2024, 4, 30), date(2024, 5, 30)),
        (31, date(2024, 5, 31), date(2024, 5, 31), date(2024, 6, 29)),
        # Anchor 31 in February, leap year and not.
        (31, date(2024, 2, 28), date(2024, 1, 31), date(2024, 2, 28)),
        (31, date(2024, 2, 29), date(2024, 2, 29), date(2024, 3, 30)),
        (31, date(2024, 3, 31), date(2024, 3, 31), date(2024, 4, 29)),
        (31, date(2023, 2, 27), date(2023, 1, 31), date(2023, 2, 27)),
        (31, date(2023, 2, 28), date(2023, 2, 28), date(2023, 3, 30)),
        (30, date(2023, 2, 28), date(2023, 2, 28), date(2023, 3, 29)),
        (30, date(2023, 3, 29), date(2023, 2, 28), date(2023, 3, 29)),
        (31, date(2024, 2, 10), date(2024, 1, 31), date(2024, 2, 28)),
        # Ordinary anchors, and across a year end.
        (1, date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 31)),
        (1, date(2024, 5, 15), date(2024, 5, 1), date(2024, 5, 31)),
        (15, date(2024, 5, 15), date(2024, 5, 15), date(2024, 6, 14)),
        (15, date(2024, 5, 14), date(2024, 4, 15), date(2024, 5, 14)),
        (15, date(2024, 12, 20), date(2024, 12, 15), date(2025, 1, 14)),
        (20, date(2025, 1, 5), date(2024, 12, 20), date(2025, 1, 19)),
        (20, date(2024, 1, 5), date(2023, 12, 20), date(2024, 1, 19)),
    ],
)
def test_cycle_bounds(anchor: int, today: date, start: date, end: date) -> None:
    assert cycle_bounds(anchor, today) == (start, end)


def test_cycles_tile_the_calendar() -> None:
    # Every day belongs to exactly one cycle, and consecutive cycles touch.
    for anchor in range(1, 32):
        day = date(2023, 1, 1)
        previous: tuple[date, date] | None = None
        while day < date(2025, 1, 1):
            start, end = cycle_bounds(anchor, day)
            assert start <= day <= end
            if previous is not None and previous != (start, end):
                assert start == previous[1] + timedelta(days=1)
            previous = (start, end)
            day += timedelta(days=1)


def test_parse_quantity() -> None:
    assert parse_quantity("1000") == 1000
    assert parse_quantity("1GB") == 10**9
    assert parse_quantity("1.5 MB") == 1_500_000
    assert parse_quantity("2GiB") == 2 * 2**30
    assert parse_quantity("10k") == 10_000
    for bad in ("", "-5", "0", "1XB", "GB"):
        with pytest.raises(ValueError):
            parse_quantity(bad)


# -- helpers ---------------------------------------------------------------------------------


def setup_org(h: Harness, email: str = "owner@example.com") -> tuple[str, str]:
    _, key = h.user(email)
    org_id = h.org(key)
    h.app(key, org_id, APP)
    h.upload(key, APP, "1.0.0")
    return key, org_id


def put_on_plan(
    h: Harness,
    org_id: str,
    name: str,
    *,
    mau: int = BIG,
    storage: int = BIG,
    bandwidth: int = BIG,
    anchor: int | None = None,
) -> None:
    """What ``otameter plan create`` + ``org set-plan`` do, then the server's re-check."""
    now_ms = to_ms(h.clock.now())

    def write(conn: Connection) -> None:
        upsert_plan(conn, name, mau, storage, bandwidth, now_ms)
        set_org_plan(conn, org_id, name, anchor)

    h.rt.writer.run_blocking(write)
    h.rt.plans.evaluate_blocking([org_id])


def raise_plan(h: Harness, name: str, **limits: int) -> None:
    now_ms = to_ms(h.clock.now())

    def write(conn: Connection) -> list[str]:
        plan = upsert_plan(
            conn,
            name,
            limits.get("mau", BIG),
            limits.get("storage", BIG),
            limits.get("bandwidth", BIG),
            now_ms,
        )
        return orgs_using_plan(conn, plan)

    h.rt.plans.evaluate_blocking(h.rt.writer.run_blocking(write))


def usage(h: Harness, key: str, org_id: str) -> dict[str, Any]:
    r = h.client.get(f"/organization/{org_id}/usage", headers=h.auth(key))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def devices(h: Harness, n: int, **overrides: Any) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for device in ids:
        assert h.checkin(APP, device, **overrides).status_code == 200
    return ids


def assert_blocked(h: Harness, code: str, device: str) -> dict[str, Any]:
    # An already counted device, so that probing does not change the figures.
    r = h.checkin(APP, device)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    assert body["error"] == code and body["kind"] == "blocked", body
    assert body["message"]
    return body


def assert_serves_update(h: Harness, device: str) -> None:
    body = h.checkin(APP, device).json()
    assert body.get("version") == "1.0.0" and "error" not in body, body


# -- usage answer ----------------------------------------------------------------------------


def test_usage_of_an_org_without_plan(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    known = devices(h, 2)
    devices(h, 1, is_emulator=True)
    h.rollup()
    body = usage(h, key, org_id)
    assert body["org_id"] == org_id
    assert body["plan"] is None and body["locked"] is False and body["lock_reason"] is None
    # The org was created on 2024-05-15: that is its cycle anchor.
    assert (body["cycle_start"], body["cycle_end"]) == ("2024-05-15", "2024-06-14")
    assert body["trial_ends"] == "2024-05-29"
    assert body["mau"] == {"used": 2, "limit": None, "percent": None}
    assert body["storage"]["used"] == len(zip_bytes()) and body["storage"]["limit"] is None
    assert body["bandwidth"] == {"used": 0, "limit": None, "percent": None}
    assert body["emulator_dev"]["ratio"] == pytest.approx(1 / 3, abs=1e-6)
    assert body["emulator_dev"]["threshold"] == EMUDEV_THRESHOLD
    # Unmetered: never locked, even after the trial with a third of emulators.
    h.clock.advance(timedelta(days=20))
    h.rollup()
    assert usage(h, key, org_id)["locked"] is False
    assert_serves_update(h, known[0])


def test_usage_is_private_and_plans_are_listed(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    _, other = h.user("stranger@example.com")
    missing = h.client.get(f"/organization/{uuid.uuid4()}/usage", headers=h.auth(other))
    hidden = h.client.get(f"/organization/{org_id}/usage", headers=h.auth(other))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    assert h.client.get(f"/organization/{org_id}/usage").status_code == 401
    limited = h.client.post(
        "/apikey", json={"mode": "read", "limited_to_apps": [APP]}, headers=h.auth(key)
    ).json()["key"]
    r = h.client.get(f"/organization/{org_id}/usage", headers=h.auth(limited))
    assert r.status_code == 403 and r.json()["status"] == "KO"

    put_on_plan(h, org_id, "starter", mau=1000, storage=10**9, bandwidth=10**10)
    r = h.client.get("/plans", headers=h.auth(other))
    assert r.status_code == 200
    assert r.json() == [
        {"name": "starter", "mau": 1000, "storage": 10**9, "bandwidth": 10**10, "default": False}
    ]
    body = usage(h, key, org_id)
    assert body["plan"] == "starter"
    assert body["mau"] == {"used": 0, "limit": 1000, "percent": 0.0}


# -- locks by plan limits --------------------------------------------------------------------


def test_mau_limit_locks_and_a_bigger_plan_unlocks(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    put_on_plan(h, org_id, "tiny", mau=3)
    known = devices(h, 3)
    h.rollup()
    body = usage(h, key, org_id)
    assert body["mau"] == {"used": 3, "limit": 3, "percent": 100.0}
    assert body["locked"] is False  # at the limit, not over it
    assert_serves_update(h, known[0])

    devices(h, 1)  # the 4th device puts the org over
    h.rollup()
    body = usage(h, key, org_id)
    assert body["locked"] is True and body["mau"]["used"] == 4
    assert "monthly active users" in body["lock_reason"]
    blocked = assert_blocked(h, "need_plan_upgrade", known[0])
    assert blocked["message"] == body["lock_reason"]

    # Uploads are refused with a clear message; statistics stay readable.
    r = h.client.post(
        "/bundle",
        data={"app_id": APP, "version": "1.0.1"},
        files={"file": ("b.zip", zip_bytes(), "application/zip")},
        headers=h.auth(key),
    )
    assert r.status_code == 402 and "locked" in r.json()["error"]
    assert r.json()["status"] == "KO"
    rows = h.stats(key, f"app/{APP}", "2024-05-15", "2024-05-15")
    assert rows[0]["mau"] >= 4

    # Same check-ins again: still locked, the figures come from stored counts only.
    h.rollup()
    assert usage(h, key, org_id)["locked"] is True

    raise_plan(h, "tiny", mau=100)
    body = usage(h, key, org_id)
    assert body["locked"] is False and body["lock_reason"] is None
    assert_serves_update(h, known[0])
    h.upload(key, APP, "1.0.1")


def test_a_new_cycle_unlocks(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    put_on_plan(h, org_id, "tiny", mau=2, anchor=20)
    assert usage(h, key, org_id)["cycle_start"] == "2024-04-20"
    known = devices(h, 3)
    h.rollup()
    assert usage(h, key, org_id)["locked"] is True
    assert_blocked(h, "need_plan_upgrade", known[0])

    # Last moment of the cycle: still locked.
    h.clock.set(datetime(2024, 5, 19, 23, 59, tzinfo=UTC))
    h.rollup()
    assert usage(h, key, org_id)["locked"] is True
    # Cycle MAU starts from zero at the new cycle: the rollup of the new day unlocks.
    h.clock.set(datetime(2024, 5, 20, 0, 0, 5, tzinfo=UTC))
    h.rollup()
    body = usage(h, key, org_id)
    assert body["cycle_start"] == "2024-05-20" and body["cycle_end"] == "2024-06-19"
    assert body["mau"]["used"] == 0 and body["locked"] is False
    assert_serves_update(h, known[0])


def test_storage_limit_locks_until_bundles_are_deleted(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    size = len(zip_bytes())
    put_on_plan(h, org_id, "small", storage=size * 2)
    big = zip_bytes(size_hint=5000)
    h.upload(key, APP, "2.0.0", big)
    h.rollup()
    body = usage(h, key, org_id)
    assert body["storage"]["used"] == size + len(big) and body["locked"] is True
    assert "storage" in body["lock_reason"]
    assert_blocked(h, "need_plan_upgrade", str(uuid.uuid4()))

    r = h.client.delete(f"/bundle?app_id={APP}&version=2.0.0", headers=h.auth(key))
    assert r.status_code == 200
    h.rollup()
    body = usage(h, key, org_id)
    assert body["storage"]["used"] == size and body["locked"] is False


def test_bandwidth_limit_counts_bytes_served_in_the_cycle(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    data = zip_bytes(size_hint=3000)
    h.upload(key, APP, "1.0.1", data)
    put_on_plan(h, org_id, "thin", bandwidth=len(data) + 10)
    answer = h.checkin(APP, str(uuid.uuid4())).json()
    assert h.client.get(answer["url"]).content == data
    h.rollup()
    body = usage(h, key, org_id)
    assert body["bandwidth"]["used"] == len(data) and body["locked"] is False
    assert body["bandwidth"]["percent"] == pytest.approx(len(data) * 100 / (len(data) + 10), 0.01)

    answer = h.checkin(APP, str(uuid.uuid4())).json()
    assert h.client.get(answer["url"]).content == data
    h.rollup()
    body = usage(h, key, org_id)
    assert body["bandwidth"]["used"] == 2 * len(data) and body["locked"] is True
    assert "bandwidth" in body["lock_reason"]


# -- the 3% rule -----------------------------------------------------------------------------


def test_emulator_and_dev_share_locks_only_after_the_trial(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    put_on_plan(h, org_id, "pro")
    h.rt.plans.tick()
    known = devices(h, 10)
    devices(h, 1, is_prod=False)
    h.rollup()
    body = usage(h, key, org_id)
    assert body["emulator_dev"]["ratio"] == pytest.approx(1 / 11, abs=1e-6)
    assert body["emulator_dev"]["threshold"] == 0.03
    assert body["in_trial"] is True and body["locked"] is False  # the trial postpones the rule
    assert_serves_update(h, known[0])

    # The trial ends on 2024-05-29 at 12:00: the periodic pass locks at once.
    h.clock.set(datetime(2024, 5, 29, 11, 59, tzinfo=UTC))
    h.rt.plans.tick()
    assert usage(h, key, org_id)["locked"] is False
    h.clock.set(datetime(2024, 5, 29, 12, 0, 1, tzinfo=UTC))
    h.rt.plans.tick()
    body = usage(h, key, org_id)
    assert body["locked"] is True and body["in_trial"] is False
    assert "emulators or dev builds" in body["lock_reason"]
    blocked = assert_blocked(h, "too_many_emulators_or_dev_builds", known[0])
    assert "3%" in blocked["message"]

    # Enough real devices bring the share down to 3% or less (1 in 34 is 2.9%): unlocked.
    devices(h, 23)
    h.rollup()
    body = usage(h, key, org_id)
    assert body["emulator_dev"]["ratio"] <= 0.03
    assert body["locked"] is False
    assert_serves_update(h, known[0])


def test_emulators_lock_at_once_after_the_trial(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    put_on_plan(h, org_id, "pro")
    known = devices(h, 40)
    h.rollup()
    h.clock.set(datetime(2024, 6, 1, 9, 0, tzinfo=UTC))
    devices(h, 1, is_emulator=True)  # 1 in 41: 2.4%
    h.rollup()
    assert usage(h, key, org_id)["locked"] is False
    devices(h, 1, is_emulator=True)  # 2 in 42: 4.8%
    h.rollup()
    body = usage(h, key, org_id)
    assert body["locked"] is True
    assert body["emulator_dev"]["ratio"] == pytest.approx(2 / 42, abs=1e-6)
    assert_blocked(h, "too_many_emulators_or_dev_builds", known[0])


def test_plan_limits_hold_during_the_trial(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    put_on_plan(h, org_id, "tiny", mau=1)
    known = devices(h, 2)
    h.rollup()
    body = usage(h, key, org_id)
    assert body["in_trial"] is True and body["locked"] is True
    assert_blocked(h, "need_plan_upgrade", known[0])


def test_trial_length_is_configurable(harness: Harness) -> None:
    import dataclasses

    h = harness
    h.rt.settings = dataclasses.replace(h.rt.settings, trial_days=0)
    key, org_id = setup_org(h)
    put_on_plan(h, org_id, "pro")
    devices(h, 10)
    devices(h, 1, is_emulator=True)
    h.rollup()
    body = usage(h, key, org_id)
    assert body["trial_ends"] == "2024-05-15" and body["in_trial"] is False
    assert body["locked"] is True and body["emulator_dev"]["enforced"] is True


def test_default_plan_applies_to_orgs_without_one(harness: Harness) -> None:
    h = harness
    key, org_id = setup_org(h)
    now_ms = to_ms(h.clock.now())
    h.rt.writer.run_blocking(
        lambda conn: upsert_plan(conn, "free", 1, BIG, BIG, now_ms, default=True)
    )
    devices(h, 2)
    h.rollup()
    body = usage(h, key, org_id)
    assert body["plan"] == "free" and body["locked"] is True


# -- command line ----------------------------------------------------------------------------


def test_cli_plan_create_list_and_set_plan(tmp_path: Path, harness: Harness) -> None:
    # The CLI works on the database the server uses; the server sees locks it writes.
    h = harness
    key, org_id = setup_org(h)
    db = h.rt.settings.database_url
    runner = CliRunner()
    r = runner.invoke(
        cli_app, ["plan", "create", "team", "--mau", "5000", "--storage", "1GB",
                  "--bandwidth", "10GiB", "--db", db]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert (plan["mau"], plan["storage"], plan["bandwidth"]) == (5000, 10**9, 10 * 2**30)

    r = runner.invoke(cli_app, ["plan", "list", "--json", "--db", db])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["name"] == "team"
    r = runner.invoke(cli_app, ["plan", "list", "--db", db])
    # Limits in the one byte format (decimal units): 10 GiB is 10.7 GB.
    assert "team" in r.stdout and "5,000" in r.stdout
    assert "1 GB" in r.stdout and "10.7 GB" in r.stdout

    r = runner.invoke(
        cli_app, ["org", "set-plan", org_id, "team", "--cycle-anchor", "31", "--db", db]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["cycle_anchor"] == 31
    body = usage(h, key, org_id)
    assert body["plan"] == "team" and body["mau"]["limit"] == 5000
    assert (body["cycle_start"], body["cycle_end"]) == ("2024-04-30", "2024-05-30")

    r = runner.invoke(cli_app, ["org", "set-plan", org_id, "nope", "--db", db])
    assert r.exit_code == 1 and "no plan" in r.output
    r = runner.invoke(
        cli_app, ["plan", "create", "x", "--mau", "0", "--storage", "1", "--bandwidth", "1",
                  "--db", db]
    )  # fmt: skip
    assert r.exit_code == 2
