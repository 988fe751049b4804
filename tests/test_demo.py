"""The demo: a plan with room to try things, MAU that moves over the 90 days, and a second
start on the demo database that prints a (new) working key."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

from otameter.demo import DEMO_APPS, ensure_demo
from tests.harness import Harness, zip_bytes


def test_demo_has_room_moves_and_gives_a_key_again(harness: Harness) -> None:
    h = harness
    key, generated = ensure_demo(h.rt)
    assert key is not None and generated
    auth = h.auth(key)
    (org,) = h.client.get("/organization", headers=auth).json()
    usage = h.client.get(f"/organization/{org['id']}/usage", headers=auth).json()
    assert usage["locked"] is False
    assert all(usage[m]["percent"] < 50 for m in ("mau", "storage", "bandwidth")), usage

    # Trying things: an upload of a real-sized bundle and its traffic do not lock the org.
    app_id = DEMO_APPS[0][0]
    h.upload(key, app_id, "9.0.0", zip_bytes(size_hint=20_000_000))
    h.rollup()
    usage = h.client.get(f"/organization/{org['id']}/usage", headers=auth).json()
    assert usage["locked"] is False, usage

    # The 30-day MAU climbs, falls back somewhere, and ends above where it started.
    today = h.clock.now().date()
    start = today - timedelta(days=89)
    rows = h.stats(key, f"org/{org['id']}", start.isoformat(), today.isoformat())
    mau = [r["mau"] for r in rows]
    assert mau[-1] > mau[30] > mau[0]
    assert any(later < earlier for earlier, later in pairwise(mau[30:]))

    # A second start on the demo database: a new key, and the first one still works.
    again, generated = ensure_demo(h.rt)
    assert again is not None and again != key and not generated
    for k in (key, again):
        assert h.client.get("/organization", headers=h.auth(k)).status_code == 200


def test_demo_leaves_other_databases_alone(harness: Harness) -> None:
    harness.user("someone@example.com")
    assert ensure_demo(harness.rt) == (None, False)
