"""The statistics API: rows against an independent model, errors, access, CSV, options."""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from otameter.clock import to_ms
from tests.harness import Harness, zip_bytes

INVALID_DATE = "Invalid date format. Use YYYY-MM-DD"
TOO_LARGE = "Date range cannot exceed 90 days"
NOT_FOUND = "App/Organization not found"
FORBIDDEN = "Insufficient permissions to access statistics"


def at(day: str, hour: int, minute: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=UTC)


def get(h: Harness, key: str | None, url: str) -> Any:
    return h.client.get(url, headers={"authorization": key} if key else {})


# -- an independent model of the figures -------------------------------------------------------


@dataclass
class Model:
    """What the statistics must say, computed from the events the test sent, not the server."""

    counted: dict[date, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    bundles: dict[str, list[int | None]] = field(default_factory=dict)
    downloads: dict[date, int] = field(default_factory=lambda: defaultdict(int))

    def device(self, when: datetime, device: str, version: str) -> None:
        # A device counts once a day; the model keeps each version it was seen on.
        self.counted[when.date()].setdefault(device + "|" + version, device)

    def devices_on(self, day: date) -> set[str]:
        return set(self.counted.get(day, {}).values())

    def row(self, day: date) -> dict[str, Any]:
        window: set[str] = set()
        for n in range(30):
            window |= self.devices_on(day - timedelta(days=n))
        earlier: set[str] = set()
        d = day.replace(day=1)
        while d < day:
            earlier |= self.devices_on(d)
            d += timedelta(days=1)
        end_ms = to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1))
        storage = 0
        for size, created, deleted in self.bundles.values():
            assert size is not None and created is not None
            if created < end_ms and (deleted is None or deleted >= end_ms):
                storage += size
        return {
            "date": day.isoformat(),
            "mau": len(window),
            "storage": storage,
            "bandwidth": self.downloads.get(day, 0),
            "new_devices": len(self.devices_on(day) - earlier),
            "dau": len(self.devices_on(day)),
        }

    def versions(self, day: date) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for key in self.counted.get(day, {}):
            out[key.split("|", 1)[1]] += 1
        return dict(out)


APP = "com.history.app"


class History:
    """Drives the server through a known history while keeping the model in step."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.model = Model()
        h.clock.set(at("2024-04-29", 9))
        _, self.key = h.user("history@example.com")
        self.org = h.org(self.key, "History")
        h.app(self.key, self.org, APP)

    def upload(self, when: datetime, version: str, size_hint: int) -> bytes:
        self.h.clock.set(when)
        data = zip_bytes(size_hint=size_hint)
        self.h.upload(self.key, APP, version, data)
        self.model.bundles[version] = [len(data), to_ms(when), None]
        return data

    def delete(self, when: datetime, version: str) -> None:
        self.h.clock.set(when)
        r = self.h.client.delete(
            f"/bundle?app_id={APP}&version={version}", headers={"authorization": self.key}
        )
        assert r.status_code == 200, r.text
        self.model.bundles[version][2] = to_ms(when)

    def checkin(
        self,
        when: datetime,
        device: str,
        version: str = "builtin",
        *,
        counted: bool = True,
        download: bool = False,
        **extra: Any,
    ) -> None:
        self.h.clock.set(when)
        r = self.h.checkin(APP, device, version_name=version, **extra)
        assert r.status_code == 200, r.text
        if counted:
            self.model.device(when, device, version)
        if download:
            url = r.json()["url"].replace("http://otameter.test", "")
            got = self.h.client.get(url)
            assert got.status_code == 200
            self.model.downloads[when.date()] += len(got.content)

    def rollup(self) -> None:
        self.h.rollup()


def build_history(h: Harness) -> History:
    hist = History(h)
    d = {name: str(uuid.uuid4()) for name in "abcdefgh"}
    hist.checkin(at("2024-04-30", 11), d["h"])
    hist.rollup()
    hist.upload(at("2024-05-01", 10), "1.0.0", 5_000)
    hist.checkin(at("2024-05-01", 11), d["a"], download=True)
    hist.checkin(at("2024-05-01", 11, 5), d["b"])
    # A Google address within 4 h of an upload: a Play pre-launch robot, never counted.
    hist.checkin(at("2024-05-01", 12), d["c"], counted=False, ip="8.8.8.8")
    hist.checkin(at("2024-05-01", 12, 30), d["d"], counted=False, is_emulator=True)
    hist.checkin(at("2024-05-01", 13), d["e"], counted=False, is_prod=False)
    hist.rollup()
    # The same Google address a day later is outside the window: it counts.
    hist.checkin(at("2024-05-02", 15), d["c"], ip="8.8.8.8")
    hist.checkin(at("2024-05-02", 16), d["a"], "1.0.0")
    hist.checkin(at("2024-05-02", 17), d["h"])
    hist.rollup()
    hist.upload(at("2024-05-03", 8), "1.0.1", 20_000)
    hist.checkin(at("2024-05-03", 9), d["b"], "1.0.0", download=True)
    hist.checkin(at("2024-05-03", 10), d["f"], counted=False, ip="8.8.8.8")
    hist.checkin(at("2024-05-03", 11), d["b"], "1.0.1")
    # Deleted the same day: storage at the end of that day no longer holds it.
    hist.delete(at("2024-05-03", 20), "1.0.0")
    hist.rollup()
    # 2024-05-04 has no traffic at all.
    hist.checkin(at("2024-05-05", 9), d["a"], "1.0.1")
    hist.checkin(at("2024-05-05", 10), d["g"], download=True)
    hist.h.clock.set(at("2024-05-05", 12))
    hist.rollup()
    return hist


def test_rows_match_an_independent_model(harness: Harness) -> None:
    hist = build_history(harness)
    r = get(harness, hist.key, f"/statistics/app/{APP}/?from=2024-04-25&to=2024-05-10")
    assert r.status_code == 200
    rows = r.json()["data"]
    # Days before the app are zeros; days after today (2024-05-05) are not returned.
    days = [date(2024, 4, 25) + timedelta(days=n) for n in range(11)]
    expected = [
        {
            k: v
            for k, v in hist.model.row(day).items()
            if k in ("date", "mau", "storage", "bandwidth")
        }
        for day in days
    ]
    assert rows == expected
    assert rows[0] == {"date": "2024-04-25", "mau": 0, "storage": 0, "bandwidth": 0}
    # A day without traffic keeps the rolling MAU and the storage.
    quiet = rows[9]
    assert quiet["date"] == "2024-05-04" and quiet["mau"] == 4 and quiet["bandwidth"] == 0
    assert quiet["storage"] == hist.model.bundles["1.0.1"][0]

    r = get(
        harness, hist.key, f"/statistics/app/{APP}/?from=2024-04-25&to=2024-05-10&breakdown=true"
    )
    assert r.json()["data"] == [hist.model.row(day) for day in days]


def test_bundle_usage_matches_the_model(harness: Harness) -> None:
    hist = build_history(harness)
    r = get(harness, hist.key, f"/statistics/app/{APP}/bundle_usage/?from=2024-04-30&to=2024-05-09")
    assert r.status_code == 200
    rows = r.json()["data"]
    assert rows[0]["date"] == "2024-04-30" and rows[-1]["date"] == "2024-05-05"
    for row in rows:
        day = date.fromisoformat(row["date"])
        total = len(hist.model.devices_on(day))
        assert row["devices"] == total
        counts = hist.model.versions(day)
        assert {v["version"]: v["devices"] for v in row["versions"]} == counts
        for v in row["versions"]:
            assert v["share"] == round(100.0 * v["devices"] / total, 2)
    may3 = next(row for row in rows if row["date"] == "2024-05-03")
    # Device b updated during the day: it is on both versions.
    assert {v["version"] for v in may3["versions"]} == {"1.0.0", "1.0.1"}
    assert all(v["share"] == 100.0 for v in may3["versions"])

    csv_r = get(
        harness,
        hist.key,
        f"/statistics/app/{APP}/bundle_usage/?from=2024-04-30&to=2024-05-09&format=csv",
    )
    assert csv_r.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(csv_r.text)))
    flat = [(row["date"], v["version"], v["devices"]) for row in rows for v in row["versions"]]
    assert [(x["date"], x["version"], int(x["devices"])) for x in lines if x["version"]] == flat


def test_compare_previous_period(harness: Harness) -> None:
    hist = build_history(harness)
    url = f"/statistics/app/{APP}/?from=2024-05-01&to=2024-05-05&compare=previous&breakdown=1"
    body = get(harness, hist.key, url).json()
    assert body["previous_period"] == {"from": "2024-04-26", "to": "2024-04-30"}
    for n, row in enumerate(body["data"]):
        day = date(2024, 5, 1) + timedelta(days=n)
        previous = row.pop("previous")
        assert row == hist.model.row(day)
        assert previous == hist.model.row(day - timedelta(days=5))


def test_today_is_live_and_the_future_is_not_returned(harness: Harness) -> None:
    _, key = harness.user("live@example.com")
    org = harness.org(key)
    harness.app(key, org, "com.live.app")
    harness.checkin("com.live.app", str(uuid.uuid4()))
    harness.rollup()
    rows = harness.stats(key, "app/com.live.app", "2024-05-15", "2024-06-30")
    assert rows == [{"date": "2024-05-15", "mau": 1, "storage": 0, "bandwidth": 0}]
    assert harness.stats(key, "app/com.live.app", "2024-05-16", "2024-05-20") == []


# -- errors ------------------------------------------------------------------------------------


@pytest.fixture
def owner(harness: Harness) -> tuple[Harness, str, str]:
    _, key = harness.user("owner@example.com")
    org = harness.org(key, "Owner")
    harness.app(key, org, "com.owner.app")
    return harness, key, org


BAD_QUERIES = [
    ("from=2024-02-30&to=2024-03-01", INVALID_DATE),
    ("from=2024-1-5&to=2024-01-09", INVALID_DATE),
    ("from=2024-01-05&to=2024-1-9", INVALID_DATE),
    ("to=2024-01-09", f"{INVALID_DATE} (the 'from' parameter is missing)"),
    ("from=2024-01-05", f"{INVALID_DATE} (the 'to' parameter is missing)"),
    ("", f"{INVALID_DATE} (the 'from' parameter is missing)"),
    ("from=&to=2024-01-09", INVALID_DATE),
    ("from=05/01/2024&to=2024-01-09", INVALID_DATE),
    ("from=2024-01-05T00:00&to=2024-01-09", INVALID_DATE),
    ("from=2023-02-29&to=2023-03-01", INVALID_DATE),
    ("from=2024-01-01&to=2024-03-31", TOO_LARGE),
    ("from=2023-01-01&to=2024-01-01", TOO_LARGE),
    ("from=2024-01-10&to=2024-01-09", "Invalid date range: 'from' must not be after 'to'"),
    ("from=2024-01-01&to=2024-01-09&format=xml", "Invalid format. Use json or csv"),
    ("from=2024-01-01&to=2024-01-09&breakdown=maybe", "Invalid breakdown. Use true or false"),
    ("from=2024-01-01&to=2024-01-09&compare=next", "Invalid compare. Use previous"),
]


@pytest.mark.parametrize("scope", ["app/com.owner.app", "org/{org}", "user"])
def test_bad_queries_are_400(owner: tuple[Harness, str, str], scope: str) -> None:
    h, key, org = owner
    for query, message in BAD_QUERIES:
        r = get(h, key, f"/statistics/{scope.format(org=org)}/?{query}")
        assert r.status_code == 400, query
        assert r.json() == {"error": message, "status": "KO"}, query
        if "format=" not in query:
            # CSV asked or not, errors are JSON.
            r = get(h, key, f"/statistics/{scope.format(org=org)}/?{query}&format=csv")
            assert r.status_code == 400 and r.json() == {"error": message, "status": "KO"}


def test_bundle_usage_errors(owner: tuple[Harness, str, str]) -> None:
    h, key, _ = owner
    base = "/statistics/app/com.owner.app/bundle_usage/"
    assert get(h, key, f"{base}?from=2024-02-30&to=2024-03-01").json()["error"] == INVALID_DATE
    assert get(h, key, f"{base}?from=2024-01-01&to=2024-03-31").json()["error"] == TOO_LARGE
    missing = get(
        h, key, "/statistics/app/com.nope.app/bundle_usage/?from=2024-01-01&to=2024-01-02"
    )
    assert missing.status_code == 404 and missing.json()["error"] == NOT_FOUND
    assert get(h, None, f"{base}?from=2024-01-01&to=2024-01-02").status_code == 401


def test_90_day_boundary(owner: tuple[Harness, str, str]) -> None:
    h, key, _ = owner
    rows = h.stats(key, "app/com.owner.app", "2024-01-01", "2024-03-30")
    assert len(rows) == 90 and rows[0]["date"] == "2024-01-01" and rows[-1]["date"] == "2024-03-30"
    r = get(h, key, "/statistics/app/com.owner.app/?from=2024-01-01&to=2024-03-31")
    assert r.status_code == 400 and r.json() == {"error": TOO_LARGE, "status": "KO"}
    assert len(h.stats(key, "app/com.owner.app", "2024-03-31", "2024-03-31")) == 1


@pytest.mark.parametrize("scope", ["app/com.owner.app", "org/{org}", "user"])
def test_missing_or_unknown_key_is_401(owner: tuple[Harness, str, str], scope: str) -> None:
    h, _, org = owner
    url = f"/statistics/{scope.format(org=org)}/?from=2024-01-01&to=2024-01-02"
    for key in (None, "otm_not-a-key"):
        r = get(h, key, url)
        assert r.status_code == 401 and r.json()["status"] == "KO"


def test_no_existence_oracle(owner: tuple[Harness, str, str]) -> None:
    """Another org's app or org answers exactly like one that does not exist (404)."""
    h, key, org = owner
    _, stranger = h.user("stranger@example.com")
    other_org = h.org(stranger, "Other")
    h.app(stranger, other_org, "com.other.app")
    q = "?from=2024-05-01&to=2024-05-02"
    missing_app = get(h, key, f"/statistics/app/com.missing.app/{q}")
    foreign_app = get(h, key, f"/statistics/app/com.other.app/{q}")
    missing_org = get(h, key, f"/statistics/org/{uuid.uuid4()}/{q}")
    foreign_org = get(h, key, f"/statistics/org/{other_org}/{q}")
    for r in (missing_app, foreign_app, missing_org, foreign_org):
        assert r.status_code == 404
        assert r.content == missing_app.content
        assert r.headers["content-type"] == missing_app.headers["content-type"]
    assert missing_app.json() == {"error": NOT_FOUND, "status": "KO"}
    # The owner sees it.
    assert get(h, stranger, f"/statistics/app/com.other.app/{q}").status_code == 200

    # A key limited to another org of the same user does not see this one either.
    second = h.org(key, "Second")
    limited = h.client.post(
        "/apikey",
        json={"name": "l", "mode": "read", "limited_to_orgs": [second]},
        headers={"authorization": key},
    ).json()["key"]
    for url in (f"/statistics/app/com.owner.app/{q}", f"/statistics/org/{org}/{q}"):
        r = get(h, limited, url)
        assert r.status_code == 404 and r.content == missing_app.content
    assert get(h, limited, f"/statistics/org/{second}/{q}").status_code == 200

    # A deleted app is gone for the app endpoint.
    r = h.client.delete("/app/com.owner.app", headers={"authorization": key})
    assert r.status_code == 200
    r = get(h, key, f"/statistics/app/com.owner.app/{q}")
    assert r.status_code == 404 and r.content == missing_app.content


def test_key_limited_to_apps_may_not_read_the_org(owner: tuple[Harness, str, str]) -> None:
    h, key, org = owner
    limited = h.client.post(
        "/apikey",
        json={"name": "l", "mode": "read", "limited_to_apps": ["com.owner.app"]},
        headers={"authorization": key},
    ).json()["key"]
    q = "?from=2024-05-01&to=2024-05-02"
    r = get(h, limited, f"/statistics/org/{org}/{q}")
    assert r.status_code == 403
    assert r.json() == {"error": FORBIDDEN, "status": "KO"}
    assert get(h, limited, f"/statistics/app/com.owner.app/{q}").status_code == 200
    r = get(h, limited, f"/statistics/org/{org}/{q}&format=csv")
    assert r.status_code == 403 and r.json()["error"] == FORBIDDEN


# -- aggregation over orgs and limited keys ----------------------------------------------------


def _sum(*row_lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [dict(row) for row in row_lists[0]]
    for rows in row_lists[1:]:
        for total, row in zip(out, rows, strict=True):
            assert total["date"] == row["date"]
            for name in ("mau", "storage", "bandwidth"):
                total[name] += row[name]
    return out


def test_org_and_user_aggregation(harness: Harness) -> None:
    h = harness
    h.clock.set(at("2024-05-10", 9))
    _, me = h.user("me@example.com")
    _, boss = h.user("boss@example.com")
    mine = h.org(me, "Mine")
    theirs = h.org(boss, "Theirs")
    r = h.client.post(
        "/organization/members",
        json={"orgId": theirs, "email": "me@example.com", "invite_type": "read"},
        headers={"authorization": boss},
    )
    assert r.status_code == 200, r.text
    h.app(me, mine, "com.mine.one")
    h.app(me, mine, "com.mine.two")
    h.app(boss, theirs, "com.theirs.one")
    # An org I am not in: never in my totals.
    _, outsider = h.user("outsider@example.com")
    h.app(outsider, h.org(outsider, "Out"), "com.out.app")

    sizes = {"com.mine.one": 3_000, "com.mine.two": 9_000, "com.theirs.one": 15_000}
    owners = {"com.mine.one": me, "com.mine.two": me, "com.theirs.one": boss}
    for app_id, size in sizes.items():
        h.upload(owners[app_id], app_id, "1.0.0", zip_bytes(size_hint=size))
    h.upload(outsider, "com.out.app", "1.0.0", zip_bytes(size_hint=50_000))
    devices = {"com.mine.one": 3, "com.mine.two": 1, "com.theirs.one": 2, "com.out.app": 4}
    for day in range(10, 13):
        h.clock.set(at(f"2024-05-{day}", 12))
        for app_id, count in devices.items():
            for n in range(count + day - 10):
                h.checkin(app_id, str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{app_id}{n}")))
        h.rollup()

    span = ("2024-05-08", "2024-05-12")
    app_rows = {app_id: h.stats(me, f"app/{app_id}", *span) for app_id in sizes}
    assert app_rows["com.mine.one"][-1]["mau"] == 5
    assert app_rows["com.theirs.one"][-1]["mau"] == 4
    assert h.stats(me, f"org/{mine}", *span) == _sum(
        app_rows["com.mine.one"], app_rows["com.mine.two"]
    )
    assert h.stats(me, f"org/{theirs}", *span) == app_rows["com.theirs.one"]
    assert h.stats(me, "user", *span) == _sum(*app_rows.values())

    def key_for(**limits: Any) -> str:
        r = h.client.post(
            "/apikey", json={"name": "k", "mode": "read", **limits}, headers={"authorization": me}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    only_mine = key_for(limited_to_orgs=[mine])
    assert h.stats(only_mine, "user", *span) == h.stats(me, f"org/{mine}", *span)
    two_apps = key_for(limited_to_apps=["com.mine.two", "com.theirs.one"])
    assert h.stats(two_apps, "user", *span) == _sum(
        app_rows["com.mine.two"], app_rows["com.theirs.one"]
    )
    # A read member reads the org's statistics with a read key.
    assert h.stats(key_for(), f"org/{theirs}", *span) == app_rows["com.theirs.one"]
    # Another user's view: only their own org.
    assert h.stats(boss, "user", *span) == app_rows["com.theirs.one"]


# -- CSV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", ["", "&breakdown=true", "&breakdown=true&compare=previous"])
def test_csv_equals_json(harness: Harness, options: str) -> None:
    hist = build_history(harness)
    for scope, name in ((f"app/{APP}", APP), (f"org/{hist.org}", hist.org), ("user", None)):
        url = f"/statistics/{scope}/?from=2024-04-28&to=2024-05-08{options}"
        rows = get(harness, hist.key, url).json()["data"]
        r = get(harness, hist.key, url + "&format=csv")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        disposition = r.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="statistics-')
        assert disposition.endswith('-2024-04-28-2024-05-08.csv"')
        if name:
            assert name in disposition
        parsed = list(csv.DictReader(io.StringIO(r.text)))
        assert len(parsed) == len(rows) == 8
        for line, row in zip(parsed, rows, strict=True):
            flat = {k: str(v) for k, v in row.items() if k != "previous"}
            flat.update({f"previous_{k}": str(v) for k, v in (row.get("previous") or {}).items()})
            assert line == flat
