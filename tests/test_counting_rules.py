"""Who counts for MAU: calendar months, the 30-day rolling window, emulators and dev builds,
and the 4-hour window after an upload during which Google's robots are not counted."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from otameter.statistics import month_unique_devices_from_device_table
from otameter.storage import schema as s
from tests.harness import Harness, running, setup_app

APP = "com.example.app"
OTHER = "com.example.other"
# From the packaged lists: goog.json (8.8.8.0/24, 2001:4860::/32) and cloud.json (34.35.0.0/16).
GOOGLE_V4 = "8.8.8.8"
GOOGLE_CLOUD = "34.35.1.2"
GOOGLE_V6 = "2001:4860:4860::8888"
OUTSIDE = "203.0.113.7"


def at(day: str, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=UTC)


def daily(h: Harness, app_id: str = APP) -> dict[date, dict[str, int]]:
    u = s.daily_usage.c
    with h.rt.read_engine.connect() as conn:
        rows = conn.execute(select(s.daily_usage).where(u.app_id == app_id))
        return {
            r.day: {"mau": r.mau, "dau": r.dau, "new": r.new_devices, "emudev": r.emudev_devices}
            for r in rows
        }


def ok(response: object) -> None:
    status = getattr(response, "status_code", None)
    assert status == 200, getattr(response, "text", "")


# -- months and the rolling window ----------------------------------------------------------


def test_mau_across_days_and_a_month_boundary(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    visits = [
        (at("2024-05-15"), a),
        (at("2024-05-20"), a),
        (at("2024-05-31", 23, 59), b),
        (at("2024-06-01", 0, 1), c),
        (at("2024-06-02"), a),
        (at("2024-06-02", 13), a),
    ]
    for when, device in visits:
        h.clock.set(when)
        ok(h.checkin(APP, device))
        h.rollup()  # rolled up as traffic comes, like the background worker

    # The June counter starts from zero: a device of May is new again in June.
    h.clock.set(at("2024-06-02", 18))
    h.rollup()
    with h.rt.read_engine.connect() as conn:
        assert month_unique_devices_from_device_table(conn, APP, date(2024, 6, 1)) == 2
    rows = daily(h)
    assert sum(r["new"] for d, r in rows.items() if d.month == 5) == 2
    assert sum(r["new"] for d, r in rows.items() if d.month == 6) == 2
    assert rows[date(2024, 6, 2)]["new"] == 1 and rows[date(2024, 6, 2)]["dau"] == 1

    # Much later, every past day is still exact.
    h.clock.set(at("2024-07-10"))
    h.rollup()
    stats = {r["date"]: r["mau"] for r in h.stats(key, f"app/{APP}", "2024-05-14", "2024-07-10")}
    expected = {
        "2024-05-14": 0,
        "2024-05-15": 1,
        "2024-05-30": 1,
        "2024-05-31": 2,
        "2024-06-01": 3,
        "2024-06-13": 3,  # 30 days ending June 13 start on May 15
        "2024-06-19": 3,  # a's May 20 visit has left the window, its June 2 visit has not
        "2024-06-29": 3,  # b's last visit (May 31) is the window's first day
        "2024-06-30": 2,
        "2024-07-01": 1,  # only a (June 2): c's June 1 visit has just left the window
        "2024-07-02": 0,
    }
    assert {d: stats[d] for d in expected} == expected
    assert sum(r["new"] for d, r in daily(h).items() if d.month == 7) == 0


def test_device_counts_once_per_month_whatever_its_visits(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    device = str(uuid.uuid4())
    for hour in (13, 15, 17):
        h.clock.set(at("2024-05-15", hour))
        ok(h.checkin(APP, device))
    h.clock.set(at("2024-05-16", 8))
    ok(h.checkin(APP, device))
    h.rollup()
    rows = daily(h)
    assert rows[date(2024, 5, 15)]["new"] == 1 and rows[date(2024, 5, 16)]["new"] == 0
    assert rows[date(2024, 5, 16)]["dau"] == 1
    assert [r["mau"] for r in h.stats(key, f"app/{APP}", "2024-05-15", "2024-05-16")] == [1, 1]


# -- emulators and dev builds ----------------------------------------------------------------


def test_emulators_and_dev_builds_are_recorded_but_never_counted(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    emulator, dev, prod = (str(uuid.uuid4()) for _ in range(3))
    ok(h.checkin(APP, emulator, is_emulator=True))
    ok(h.checkin(APP, dev, is_prod=False))
    ok(h.checkin(APP, prod))
    h.rollup()

    d = s.devices.c
    with h.rt.read_engine.connect() as conn:
        rows = {
            r.device_id: r
            for r in conn.execute(select(d.device_id, d.is_emulator, d.is_prod, d.last_counted_at))
        }
        month_view = month_unique_devices_from_device_table(conn, APP, date(2024, 5, 1))
    assert rows[emulator].is_emulator is True and rows[emulator].last_counted_at is None
    assert rows[dev].is_prod is False and rows[dev].last_counted_at is None
    assert rows[prod].last_counted_at is not None
    assert month_view == 1
    today = daily(h)[date(2024, 5, 15)]
    assert today == {"mau": 1, "dau": 1, "new": 1, "emudev": 2}
    assert h.stats(key, f"app/{APP}", "2024-05-15", "2024-05-15")[0]["mau"] == 1


def test_a_device_counts_from_its_first_counted_checkin(harness: Harness) -> None:
    h = harness
    setup_app(h)
    device = str(uuid.uuid4())
    h.clock.set(at("2024-05-15", 8))
    ok(h.checkin(APP, device, is_prod=False))
    h.clock.set(at("2024-05-17", 8))
    ok(h.checkin(APP, device))
    h.rollup()
    rows = daily(h)
    assert rows[date(2024, 5, 15)]["mau"] == 0 and rows[date(2024, 5, 15)]["emudev"] == 1
    assert rows[date(2024, 5, 17)]["new"] == 1 and rows[date(2024, 5, 17)]["mau"] == 1


# -- the Google window -------------------------------------------------------------------------


def test_google_window_after_an_upload(harness: Harness) -> None:
    h = harness
    key = setup_app(h, APP, OTHER)
    upload_at = at("2024-05-15", 10)
    h.clock.set(upload_at)
    h.upload(key, APP, "1.0.1")

    inside = [
        (timedelta(0), GOOGLE_V4),
        (timedelta(minutes=30), GOOGLE_CLOUD),
        (timedelta(hours=2), GOOGLE_V6),
        (timedelta(hours=3, minutes=59), GOOGLE_V4),
    ]
    robots = []
    for offset, ip in inside:
        h.clock.set(upload_at + offset)
        robots.append(str(uuid.uuid4()))
        ok(h.checkin(APP, robots[-1], ip=ip))
        # The window is per app: the other app, with no new bundle, counts Google addresses.
        ok(h.checkin(OTHER, robots[-1], ip=ip))
    people = [str(uuid.uuid4()), str(uuid.uuid4())]
    h.clock.set(upload_at + timedelta(hours=1))
    ok(h.checkin(APP, people[0], ip=OUTSIDE))
    ok(h.checkin(APP, people[1], ip="2a02:1234::1"))
    h.rollup()
    assert daily(h)[date(2024, 5, 15)]["mau"] == 2
    assert daily(h, OTHER)[date(2024, 5, 15)]["mau"] == 4

    # After 4 hours the same robots count.
    h.clock.set(upload_at + timedelta(hours=4, minutes=1))
    ok(h.checkin(APP, robots[0], ip=GOOGLE_V4))
    ok(h.checkin(APP, robots[1], ip=GOOGLE_CLOUD))
    h.rollup()
    assert daily(h)[date(2024, 5, 15)]["mau"] == 4
    assert daily(h)[date(2024, 5, 15)]["emudev"] == 0


def test_google_window_is_not_opened_by_anything_but_an_upload(harness: Harness) -> None:
    h = harness
    setup_app(h)
    ok(h.checkin(APP, str(uuid.uuid4()), ip=GOOGLE_V4))
    h.rollup()
    assert daily(h)[date(2024, 5, 15)]["mau"] == 1


def test_forwarded_client_ip_decides_through_a_trusted_proxy(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    h.upload(key, APP, "1.0.1")
    h.clock.advance(timedelta(minutes=10))
    # The peer (127.0.0.1) is a trusted proxy; the hop before it is the client.
    robot, person, chained = (str(uuid.uuid4()) for _ in range(3))
    ok(h.checkin(APP, robot, ip=GOOGLE_V4))
    ok(h.checkin(APP, person, ip=OUTSIDE))
    # A client may send its own header: only the hop our proxy appended is believed.
    ok(h.checkin(APP, chained, ip=f"{GOOGLE_V4}, {OUTSIDE}"))
    h.rollup()
    assert daily(h)[date(2024, 5, 15)]["mau"] == 2


@pytest.mark.parametrize(
    ("trusted", "peer"),
    [(None, "127.0.0.1"), ("127.0.0.0/8", "198.51.100.20")],
    ids=["no-trusted-proxy", "peer-outside-trusted-range"],
)
def test_untrusted_forwarded_for_is_ignored(
    db_url: str, tmp_path: Path, trusted: str | None, peer: str
) -> None:
    with running(db_url, tmp_path / "data", trusted=trusted, client_host=peer) as h:
        key = setup_app(h)
        h.upload(key, APP, "1.0.1")
        h.clock.advance(timedelta(minutes=10))
        ok(h.checkin(APP, str(uuid.uuid4()), ip=GOOGLE_V4))
        h.rollup()
        assert daily(h)[date(2024, 5, 15)]["mau"] == 1


def test_a_google_peer_without_proxy_is_not_counted(db_url: str, tmp_path: Path) -> None:
    with running(db_url, tmp_path / "data", trusted=None, client_host=GOOGLE_V4) as h:
        key = setup_app(h)
        h.upload(key, APP, "1.0.1")
        h.clock.advance(timedelta(minutes=10))
        ok(h.checkin(APP, str(uuid.uuid4()), ip=OUTSIDE))  # a forged header changes nothing
        h.rollup()
        assert daily(h)[date(2024, 5, 15)]["mau"] == 0


def test_the_window_of_an_upload_is_four_hours_from_it() -> None:
    from otameter.metering.counting import GOOGLE_WINDOW_MS, Verdict, classify, in_upload_window

    upload = 1_000_000_000
    times = [upload - 10 * GOOGLE_WINDOW_MS, upload]
    assert not in_upload_window(times, upload - 1)
    assert in_upload_window(times, upload)
    assert in_upload_window(times, upload + GOOGLE_WINDOW_MS - 1)
    assert not in_upload_window(times, upload + GOOGLE_WINDOW_MS)
    assert not in_upload_window([], upload)

    def google(ip: str) -> bool:
        return ip == GOOGLE_V4

    inside = upload + 1000
    assert classify(False, True, GOOGLE_V4, inside, times, google) is Verdict.GOOGLE_WINDOW
    # A robot in the window is not counted anywhere, not even among emulators.
    assert classify(True, False, GOOGLE_V4, inside, times, google) is Verdict.GOOGLE_WINDOW
    assert classify(False, True, OUTSIDE, inside, times, google) is Verdict.COUNTED
    assert classify(False, True, None, inside, times, google) is Verdict.COUNTED
    assert classify(True, True, OUTSIDE, inside, times, google) is Verdict.EMUDEV
    assert classify(False, False, OUTSIDE, inside, times, google) is Verdict.EMUDEV
