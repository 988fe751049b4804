"""The dashboard: sign-in and session, the JSON the pages read, and the pages in a real
headless Chromium against a real server (uvicorn on a free port, SQLite, demo data)."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select, update

from otameter.api import create_app
from otameter.clock import ManualClock
from otameter.config import Settings
from otameter.dashboard import data, session
from otameter.demo import DEMO_APPS, seed_demo
from otameter.runtime import Runtime
from otameter.storage import schema as s
from otameter.storage.db import migrate
from otameter.units import format_bytes
from tests.browser import CHROMIUM_ARGS, chromium, require_browser
from tests.harness import Harness, device_body, running

COOKIE = session.COOKIE


def sign_in(h: Harness, key: str, **headers: str) -> httpx.Response:
    return h.client.post(
        "/dashboard/login", data={"key": key}, headers=headers, follow_redirects=False
    )


def set_cookie_header(response: httpx.Response) -> str:
    values = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    (value,) = [v for v in values if v.startswith(COOKIE + "=")]
    return value


# -- sign-in and the session cookie ----------------------------------------------------------


def test_pages_need_a_session(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    r = h.client.get("/dashboard", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    r = h.client.get("/dashboard/org/abc?from=2024-05-01&to=2024-05-02", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/dashboard/login?next=%2Fdashboard%2Forg%2Fabc")
    r = h.client.get("/dashboard/api/organization")
    assert r.status_code == 401 and r.json()["status"] == "KO"
    login = h.client.get("/dashboard/login")
    assert login.status_code == 200
    assert '<label for="key">API key</label>' in login.text
    assert "script-src 'self'" in login.headers["content-security-policy"]


def test_sign_in_sets_an_http_only_signed_cookie(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, key = h.user("a@example.com")
    bad = sign_in(h, "otm_not_a_key")
    assert bad.status_code == 401 and "not valid" in bad.text
    assert COOKIE not in bad.cookies
    r = sign_in(h, key)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = set_cookie_header(r).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/dashboard" in cookie
    assert "secure" not in cookie.replace("samesite", "")
    # The session cookie is scoped to the dashboard: the API never receives it.
    assert h.client.get("/dashboard").status_code == 200
    assert h.client.get("/organization").status_code == 401


def test_cookie_is_secure_over_https(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, key = h.user("a@example.com")
    r = h.client.post(
        "https://otameter.test/dashboard/login", data={"key": key}, follow_redirects=False
    )
    assert r.status_code == 303
    assert "; secure" in set_cookie_header(r).lower()


def test_tampered_or_expired_session_is_refused(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, key = h.user("a@example.com")
    sign_in(h, key)
    value = h.client.cookies[COOKIE]
    h.client.cookies.set(
        COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"), path="/dashboard"
    )
    assert h.client.get("/dashboard", follow_redirects=False).status_code == 303
    h.client.cookies.set(COOKIE, value, path="/dashboard")
    assert h.client.get("/dashboard", follow_redirects=False).status_code == 200
    h.clock.advance(timedelta(seconds=session.MAX_AGE_SECONDS + 1))
    r = h.client.get("/dashboard", follow_redirects=False)
    assert r.status_code == 303 and "max-age=0" in set_cookie_header(r).lower()


def key_id(h: Harness, key: str, name: str | None = None) -> str:
    """The id of ``key`` (the one it lists about itself by name, or the user's only key)."""
    keys = h.client.get("/apikey", headers=h.auth(key)).json()
    matching = [k for k in keys if name is None or k["name"] == name]
    assert len(matching) == 1, keys
    return str(matching[0]["id"])


def test_the_cookie_carries_a_random_session_id_stored_hashed(harness: Harness) -> None:
    h = harness
    _, key = h.user("a@example.com")
    sign_in(h, key)
    value = h.client.cookies[COOKIE]
    # The cookie is the session id alone (no key, no signed payload): the table holds its hash.
    assert key not in value and "." not in value and len(value) >= 40
    rows = h.rt.writer.run_blocking(lambda conn: conn.execute(select(s.dashboard_sessions)).all())
    assert len(rows) == 1
    (row,) = rows
    assert row.id_hash == hashlib.sha256(value.encode()).hexdigest() and value not in row
    assert row.key_id == key_id(h, key)
    # Two sign-ins are two sessions with different ids.
    h.client.cookies.clear()
    sign_in(h, key)
    assert h.client.cookies[COOKIE] != value


def test_a_revoked_key_ends_the_session(harness: Harness) -> None:
    h = harness
    _, key = h.user("a@example.com")
    sign_in(h, key)
    assert h.client.get("/dashboard/api/organization").status_code == 200
    assert h.client.delete(f"/apikey/{key_id(h, key)}", headers=h.auth(key)).status_code == 200
    r = h.client.get("/dashboard/api/organization")
    assert r.status_code == 401 and "max-age=0" in set_cookie_header(r).lower()
    assert h.client.get("/dashboard", follow_redirects=False).status_code == 303
    # The revocation removed the key's sessions from the server, not only their use.
    count = h.rt.writer.run_blocking(lambda conn: conn.execute(select(s.dashboard_sessions)).all())
    assert count == []
    # The revoked key cannot sign in again.
    assert sign_in(h, key).status_code == 401


def test_an_expired_key_ends_the_session(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, key = h.user("a@example.com")
    expires = (h.clock.now() + timedelta(hours=1)).isoformat()
    short = h.client.post(
        "/apikey",
        json={"name": "short", "mode": "read", "expires_at": expires},
        headers=h.auth(key),
    ).json()["key"]
    assert sign_in(h, short).status_code == 303
    assert h.client.get("/dashboard", follow_redirects=False).status_code == 200
    h.clock.advance(timedelta(hours=1))
    assert h.client.get("/dashboard", follow_redirects=False).status_code == 303


def test_cross_site_posts_are_refused(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, key = h.user("a@example.com")
    r = sign_in(h, key, origin="https://evil.example")
    assert r.status_code == 403 and COOKIE not in r.cookies
    assert sign_in(h, key, origin="http://otameter.test").status_code == 303
    r = h.client.post(
        "/dashboard/logout", headers={"origin": "https://evil.example"}, follow_redirects=False
    )
    assert r.status_code == 403
    assert h.client.get("/dashboard", follow_redirects=False).status_code == 200


def test_sign_out_ends_the_session(harness: Harness) -> None:
    h = harness
    _, key = h.user("a@example.com")
    sign_in(h, key)
    copy = h.client.cookies[COOKIE]
    r = h.client.post("/dashboard/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login?signed_out=1"
    assert "max-age=0" in set_cookie_header(r).lower()
    assert h.client.get("/dashboard", follow_redirects=False).status_code == 303
    assert "You are signed out" in h.client.get("/dashboard/login?signed_out=1").text
    # A copy of the cookie taken before signing out opens nothing: the session is gone.
    h.client.cookies.set(COOKIE, copy, path="/dashboard")
    assert h.client.get("/dashboard", follow_redirects=False).status_code == 303
    assert h.client.get("/dashboard/api/organization").status_code == 401


def test_sessions_survive_a_restart(db_url: str, tmp_path: Path) -> None:
    with running(db_url, tmp_path / "data") as h:
        _, key = h.user("a@example.com")
        sign_in(h, key)
        value = h.client.cookies[COOKIE]
        assert h.client.get("/dashboard", follow_redirects=False).status_code == 200
    with running(db_url, tmp_path / "data") as h:
        h.client.cookies.set(COOKIE, value, path="/dashboard")
        assert h.client.get("/dashboard", follow_redirects=False).status_code == 200
        assert h.client.get("/dashboard/api/organization").status_code == 200


def test_failed_sign_ins_are_limited_per_address(harness: Harness) -> None:
    h = harness
    _, key = h.user("a@example.com")
    limit = h.rt.settings.signin_failure_limit
    for n in range(limit):
        r = sign_in(h, f"otm_wrong{n}", **{"x-forwarded-for": "203.0.113.5"})
        assert r.status_code == 401, n
    refused = sign_in(h, "otm_wrong", **{"x-forwarded-for": "203.0.113.5"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in refused.text and COOKIE not in refused.cookies
    # Another address is not affected, and a valid key from the blocked one still signs in.
    assert sign_in(h, "otm_wrong", **{"x-forwarded-for": "203.0.113.6"}).status_code == 401
    assert sign_in(h, key, **{"x-forwarded-for": "203.0.113.5"}).status_code == 303
    # The window ends: the address may try again.
    h.clock.advance(timedelta(seconds=h.rt.settings.signin_failure_window_seconds))
    h.client.cookies.clear()
    assert sign_in(h, "otm_wrong", **{"x-forwarded-for": "203.0.113.5"}).status_code == 401


def test_next_only_leads_inside_the_dashboard(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, key = h.user("a@example.com")
    for target, expected in [
        ("/dashboard/org/x?from=2024-05-01", "/dashboard/org/x?from=2024-05-01"),
        ("https://evil.example/", "/dashboard"),
        ("//evil.example/dashboard", "/dashboard"),
    ]:
        h.client.cookies.clear()
        r = h.client.post(
            "/dashboard/login", data={"key": key, "next": target}, follow_redirects=False
        )
        assert r.headers["location"] == expected


# -- what the pages read ---------------------------------------------------------------------


def _read_url(path: str, org: str, app_id: str, device: str) -> str:
    """An API read path of the dashboard with its parameters filled in."""
    url = path.format(org_id=org, app_id=app_id, device_id=device)
    if path in ("/bundle", "/channel"):
        return f"{url}?app_id={app_id}"
    if path.startswith("/statistics/"):
        return f"{url}?from=2024-05-01&to=2024-05-15" + (
            "&breakdown=true&compare=previous" if path.count("/") == 4 else ""
        )
    return url


def test_the_dashboard_reads_answer_like_the_api(harness: Harness) -> None:
    """Every JSON read of the pages answers what the API answers the session's key: rows,
    refusals and errors, for a key of the whole org and for a key limited to one app."""
    h = harness
    _, key = h.user("a@example.com")
    org = h.org(key, "Acme")
    h.app(key, org, "com.acme.one")
    h.app(key, org, "com.acme.two")
    h.upload(key, "com.acme.one", "1.0.0")
    device = "00000000-0000-0000-0000-000000000001"
    for n in range(5):
        h.checkin("com.acme.one", f"00000000-0000-0000-0000-00000000000{n}")
    h.rollup()
    limited = h.client.post(
        "/apikey",
        json={"name": "one", "mode": "read", "limited_to_apps": ["com.acme.one"]},
        headers=h.auth(key),
    ).json()["key"]
    statuses: dict[str, set[int]] = {path: set() for path in data.READS}
    for caller in (key, limited):
        h.client.cookies.clear()
        assert sign_in(h, caller).status_code == 303
        for path in data.READS:
            for app_id in ("com.acme.one", "com.acme.two", "com.nobody.app"):
                url = _read_url(path, org, app_id, device)
                direct = h.client.get(url, headers=h.auth(caller))
                through = h.client.get("/dashboard/api" + url)
                assert through.status_code == direct.status_code, url
                assert through.json() == direct.json(), url
                statuses[path].add(direct.status_code)
        # Bad parameters are refused with the API's own message.
        for url in (
            "/bundle?app_id=com.acme.one&page=x",
            "/statistics/app/com.acme.one/?from=2024-05-02&to=2024-05-01",
            "/statistics/app/com.acme.one/releases/?from=2024-05-01&to=2024-05-02&by=week",
            "/app/com.acme.one/devices?search=" + "x" * 65,
        ):
            direct = h.client.get(url, headers=h.auth(caller))
            through = h.client.get("/dashboard/api" + url)
            assert direct.status_code == through.status_code == 400, url
            assert through.json() == direct.json(), url
    # The rows came through, and so did the refusals: a limited key gets no org totals.
    assert all(200 in found for found in statuses.values()), statuses
    assert 403 in statuses["/statistics/org/{org_id}/"] and 404 in statuses["/app/{app_id}"]
    stats = h.client.get(
        "/dashboard/api/statistics/app/com.acme.one/?from=2024-05-01&to=2024-05-15"
    )
    assert stats.json()["data"][-1]["mau"] == 5
    # Only those reads: nothing else of the API, nothing that writes.
    assert h.client.get("/dashboard/api/updates").status_code == 404
    assert h.client.get("/dashboard/api/health").status_code == 404
    assert h.client.get("/dashboard/api/apikey").status_code == 404
    assert h.client.get("/dashboard/api/statistics/%2E%2E/health").status_code == 404
    assert h.client.post("/dashboard/api/bundle?app_id=com.acme.one").status_code == 405
    assert h.client.delete("/dashboard/api/app/com.acme.one").status_code == 405


def test_another_users_org_looks_like_nothing(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, owner = h.user("owner@example.com")
    _, other = h.user("other@example.com")
    org = h.org(owner, "Private")
    h.app(owner, org, "com.private.app")
    sign_in(h, other)
    for path in (f"/dashboard/org/{org}", "/dashboard/org/does-not-exist"):
        r = h.client.get(path)
        assert r.status_code == 404 and "Not found" in r.text
    assert h.client.get("/dashboard/app/com.private.app").status_code == 404
    hidden = h.client.get(f"/dashboard/data/org/{org}/apps")
    missing = h.client.get("/dashboard/data/org/does-not-exist/apps")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()


def test_apps_table_counts_the_devices_of_the_cycle(harness: Harness) -> None:
    h = harness
    _, key = h.user("a@example.com")
    org = h.org(key, "Acme")  # created 2024-05-15: the cycle starts on the 15th
    h.app(key, org, "com.acme.one")
    h.app(key, org, "com.acme.two")
    bundle = h.upload(key, "com.acme.one", "1.0.0")
    for n in range(3):
        h.checkin("com.acme.one", f"00000000-0000-0000-0000-00000000000{n}")
    h.checkin("com.acme.two", "00000000-0000-0000-0000-000000000009")
    h.rollup()
    sign_in(h, key)
    body = h.client.get(f"/dashboard/data/org/{org}/apps").json()
    assert (body["cycle_start"], body["cycle_end"]) == ("2024-05-15", "2024-06-14")
    rows = {row["app_id"]: row for row in body["apps"]}
    assert rows["com.acme.one"]["mau"] == 3 and rows["com.acme.two"]["mau"] == 1
    assert rows["com.acme.one"]["storage"] == bundle["size"]
    assert rows["com.acme.two"]["storage"] == 0
    # The next cycle starts from zero: only what checked in since the 15th counts, once.
    h.clock.advance(timedelta(days=31))
    for _ in range(2):
        h.checkin("com.acme.one", "00000000-0000-0000-0000-000000000001")
    h.checkin("com.acme.one", "00000000-0000-0000-0000-00000000000a", is_emulator=True)
    h.rollup()
    sign_in(h, key)  # the session of a month ago has expired
    later = h.client.get(f"/dashboard/data/org/{org}/apps").json()
    assert later["cycle_start"] == "2024-06-15"
    rows = {row["app_id"]: row for row in later["apps"]}
    assert rows["com.acme.one"]["mau"] == 1 and rows["com.acme.two"]["mau"] == 0
    # A read-only key is enough to look.
    read_key = h.client.post(
        "/apikey", json={"name": "viewer", "mode": "read"}, headers=h.auth(key)
    ).json()["key"]
    h.client.cookies.clear()
    assert sign_in(h, read_key).status_code == 303
    page = h.client.get(f"/dashboard/org/{org}")
    assert page.status_code == 200 and "Acme" in page.text
    assert h.client.get(f"/dashboard/data/org/{org}/apps").json() == later


def test_a_key_limited_to_one_app_sees_only_that_app(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, key = h.user("a@example.com")
    org = h.org(key, "Acme")
    h.app(key, org, "com.acme.one")
    h.app(key, org, "com.acme.two")
    limited = h.client.post(
        "/apikey",
        json={"name": "one", "mode": "read", "limited_to_apps": ["com.acme.one"]},
        headers=h.auth(key),
    ).json()["key"]
    assert sign_in(h, limited).status_code == 303
    assert "com.acme.two" not in h.client.get("/dashboard").text
    assert h.client.get(f"/dashboard/org/{org}").status_code == 200
    apps = h.client.get(f"/dashboard/data/org/{org}/apps").json()["apps"]
    assert [a["app_id"] for a in apps] == ["com.acme.one"]
    # The org's totals would reveal the other app: the page shows the API's refusal.
    totals = h.client.get(f"/dashboard/api/statistics/org/{org}/?from=2024-05-01&to=2024-05-15")
    assert totals.status_code == 403
    assert h.client.get("/dashboard/app/com.acme.one").status_code == 200
    assert h.client.get("/dashboard/app/com.acme.two").status_code == 404


def test_static_files_ship_with_the_package(sqlite_harness: Harness) -> None:
    import otameter.dashboard

    static = Path(otameter.dashboard.__file__).parent / "static"
    for name in ("dashboard.js", "dashboard.css", "vendor/chart.umd.js"):
        assert (static / name).is_file()
    assert (static / "vendor" / "chart.js-LICENSE.md").is_file()
    r = sqlite_harness.client.get("/dashboard/static/vendor/chart.umd.js")
    assert r.status_code == 200 and "Chart.js v4" in r.text[:200]
    assert sqlite_harness.client.get("/dashboard/static/../routes.py").status_code == 404


def test_templates_and_static_files_ship_in_the_wheel_and_the_sdist(tmp_path: Path) -> None:
    import otameter.dashboard

    package = Path(otameter.dashboard.__file__).parent
    root = package.parents[2]
    shipped = sorted(
        path.relative_to(package).as_posix()
        for folder in ("templates", "static")
        for path in (package / folder).rglob("*")
        if path.is_file()
    )
    assert "templates/base.html" in shipped and "static/dashboard.js" in shipped
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(tmp_path)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    (sdist,) = tmp_path.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for name in shipped:
        assert f"otameter/dashboard/{name}" in in_wheel, name
        assert f"src/otameter/dashboard/{name}" in in_sdist, name


def test_names_are_escaped_on_every_page(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    _, key = h.user("a@example.com")
    name = "<script>alert(\"x\")</script> & 'co'"
    org = h.org(key, name)
    created = h.client.post(
        "/app",
        json={"app_id": "com.acme.one", "name": name, "owner_org": org},
        headers=h.auth(key),
    )
    assert created.status_code == 201, created.text
    sign_in(h, key)
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;co&#39;"
    for path in ("/dashboard", f"/dashboard/org/{org}", "/dashboard/app/com.acme.one"):
        page = h.client.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text and escaped in page.text, path
    # A value lands escaped in an attribute too (the sign-in form's hidden ``next``).
    h.client.cookies.clear()
    form = h.client.get("/dashboard/login", params={"next": '/dashboard"><b>x'})
    assert 'value="/dashboard&#34;&gt;&lt;b&gt;x"' in form.text and "<b>x" not in form.text


# -- in a real browser -----------------------------------------------------------------------

DEMO_NOW = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)
TODAY = DEMO_NOW.date()


@dataclass
class LiveServer:
    url: str
    db_url: str
    rt: Runtime
    key: str
    read_key: str
    org_id: str

    def api(self, path: str) -> Any:
        r = httpx.get(self.url + path, headers={"authorization": self.key}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()


def _cli(db_url: str, *args: str) -> int:
    from typer.testing import CliRunner

    from otameter.cli import app

    return CliRunner().invoke(app, [*args, "--db", db_url]).exit_code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    require_browser()
    root = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{root}/otameter.db"
    migrate(url)
    settings = Settings(database_url=url, data_dir=root / "data", rollup_interval_seconds=0)
    rt = Runtime(settings, ManualClock(DEMO_NOW))
    rt.start(background=False)
    key = seed_demo(rt)
    app = create_app(rt, manage_runtime=False)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        read_key = httpx.post(
            base + "/apikey",
            json={"name": "viewer", "mode": "read"},
            headers={"authorization": key},
        ).json()["key"]
        (org,) = httpx.get(base + "/organization", headers={"authorization": key}).json()
        server_ = LiveServer(base, url, rt, key, read_key, org["id"])
        # A plan, so that the usage bars have limits (MAU ok, bandwidth near its limit).
        assert (
            _cli(
                url,
                "plan",
                "create",
                "Team",
                "--mau",
                "3000",
                "--storage",
                str(50 * 2**20),
                "--bandwidth",
                str(2**32),
            )
            == 0
            and _cli(url, "org", "set-plan", org["id"], "Team") == 0
        )
        yield server_
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        rt.stop()


@pytest.fixture(scope="module")
def browser(live: LiveServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, live: LiveServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    tab.set_default_timeout(20_000)
    yield tab
    context.close()
    assert errors == [], errors


def _sign_in(page: Any, live: LiveServer) -> None:
    page.goto(live.url + "/dashboard")
    assert page.url.endswith("/dashboard/login")
    page.get_by_label("API key").fill(live.read_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live.url + "/dashboard")


def _wait_ready(page: Any, start: str, end: str) -> None:
    page.wait_for_selector(
        f'main[data-state="ready"][data-loaded-from="{start}"][data-loaded-to="{end}"]'
    )


def _table(page: Any, table_id: str) -> list[dict[str, str]]:
    """The raw values of a data table, keyed by column."""
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        f"#{table_id} tbody tr",
        """rows => rows.map(row => Object.fromEntries(
            [...row.children].map(cell => [cell.dataset.key, cell.dataset.value])))""",
    )
    return rows


def _screenshot(page: Any, name: str, tmp_path: Path) -> None:
    # OTAMETER_SCREENSHOT_DIR=docs/screenshots refreshes the pictures in the docs.
    target = Path(os.environ.get("OTAMETER_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / name), full_page=True)


def _range(start: date, end: date) -> str:
    return f"?from={start.isoformat()}&to={end.isoformat()}"


def test_org_page_shows_what_the_api_gives(page: Any, live: LiveServer, tmp_path: Path) -> None:
    _sign_in(page, live)
    page.get_by_role("link", name="Demo Org").click()
    start = TODAY - timedelta(days=29)
    _wait_ready(page, start.isoformat(), TODAY.isoformat())
    page.wait_for_selector('main[data-complete="true"]')
    _screenshot(page, "org.png", tmp_path)

    api = live.api(f"/statistics/org/{live.org_id}/{_range(start, TODAY)}&breakdown=true")["data"]
    assert len(api) == 30
    page.get_by_text("Data table: Active devices").click()
    shown = _table(page, "table-activity")
    assert [(r["date"], int(r["mau"]), int(r["new_devices"])) for r in shown] == [
        (r["date"], r["mau"], r["new_devices"]) for r in api
    ]
    storage = _table(page, "table-storage")
    bandwidth = _table(page, "table-bandwidth")
    assert [int(r["storage"]) for r in storage] == [r["storage"] for r in api]
    assert [int(r["bandwidth"]) for r in bandwidth] == [r["bandwidth"] for r in api]
    assert sum(r["bandwidth"] for r in api) > 0
    mau_card = page.locator('.stat[data-metric="mau"] .value')
    assert mau_card.get_attribute("data-value") == str(api[-1]["mau"])
    assert mau_card.inner_text() == f"{api[-1]['mau']:,}"

    # Plan usage: the bars when the server has GET /organization/{id}/usage.
    usage = httpx.get(
        f"{live.url}/organization/{live.org_id}/usage", headers={"authorization": live.key}
    )
    if usage.status_code == 200:
        for metric in ("mau", "storage", "bandwidth"):
            figure = usage.json()[metric]
            used = page.locator(f'.usage-row[data-metric="{metric}"] .usage-value')
            assert used.get_attribute("data-used") == str(figure["used"])
            assert used.get_attribute("data-limit") == str(figure["limit"] or "")
        body = page.locator("#usage-body")
        assert body.get_attribute("data-cycle-start") == usage.json()["cycle_start"]
        assert body.get_attribute("data-cycle-end") == usage.json()["cycle_end"]
    else:
        assert page.locator("#usage-missing").is_visible()

    # The seed's table of apps: one row per demo app, sortable from the keyboard.
    apps = _table(page, "apps")
    assert sorted(r["app_id"] for r in apps) == sorted(a[0] for a in DEMO_APPS)
    mau = [int(r["mau"]) for r in apps]
    assert mau == sorted(mau, reverse=True)
    name_header = page.locator("#apps thead button", has_text="App ID")
    name_header.focus()
    page.keyboard.press("Enter")
    assert [r["app_id"] for r in _table(page, "apps")] == sorted(a[0] for a in DEMO_APPS)
    sorted_th = page.locator("#apps thead th", has=page.locator("button", has_text="App ID"))
    assert sorted_th.get_attribute("aria-sort") == "ascending"


def test_range_comparison_and_csv(page: Any, live: LiveServer) -> None:
    _sign_in(page, live)
    page.goto(f"{live.url}/dashboard/org/{live.org_id}")
    _wait_ready(page, (TODAY - timedelta(days=29)).isoformat(), TODAY.isoformat())

    # More than 90 days is refused with a message, and nothing is reloaded.
    page.get_by_label("From", exact=True).fill((TODAY - timedelta(days=95)).isoformat())
    page.get_by_role("button", name="Apply").click()
    error = page.locator("#range-error")
    assert error.is_visible() and "at most 90 days" in error.inner_text()

    start, end = TODAY - timedelta(days=40), TODAY - timedelta(days=20)
    page.get_by_label("From", exact=True).fill(start.isoformat())
    page.get_by_label("To", exact=True).fill(end.isoformat())
    page.get_by_label("Compare with the previous period").check()
    _wait_ready(page, start.isoformat(), end.isoformat())
    assert not error.is_visible()
    assert f"from={start.isoformat()}" in page.url and "compare=1" in page.url

    query = f"{_range(start, end)}&breakdown=true&compare=previous"
    api = live.api(f"/statistics/org/{live.org_id}/{query}")["data"]
    shown = _table(page, "table-activity")
    assert [int(r["mau"]) for r in shown] == [r["mau"] for r in api]
    assert [int(r["previous_mau"]) for r in shown] == [r["previous"]["mau"] for r in api]
    assert shown[0]["previous_date"] == (start - timedelta(days=21)).isoformat()
    delta = page.locator('.stat[data-metric="bandwidth"] .delta').inner_text()
    assert "from" in delta

    with page.expect_download() as info:
        page.locator('button.csv[data-chart="bandwidth"]').click()
    download = info.value
    assert download.suggested_filename.endswith(f"{start.isoformat()}-to-{end.isoformat()}.csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [(r["date"], int(r["bandwidth_bytes"])) for r in rows] == [
        (r["date"], r["bandwidth"]) for r in api
    ]
    assert [int(r["previous_bandwidth_bytes"]) for r in rows] == [
        r["previous"]["bandwidth"] for r in api
    ]

    # A quick range.
    page.get_by_role("button", name="Last 7 days").click()
    _wait_ready(page, (TODAY - timedelta(days=6)).isoformat(), TODAY.isoformat())
    assert len(_table(page, "table-storage")) == 7


def test_app_page_bundles_and_versions(page: Any, live: LiveServer, tmp_path: Path) -> None:
    _sign_in(page, live)
    app_id = DEMO_APPS[2][0]  # its odd releases are external bundles
    # A second channel: iOS only, public for iOS, open to devices, no major auto-update.
    oldest = live.api(f"/bundle?app_id={app_id}")[-1]["version"]
    made = httpx.post(
        live.url + "/channel",
        json={
            "app_id": app_id,
            "channel": "ios-beta",
            "version": oldest,
            "android": False,
            "electron": False,
            "allow_device_self_set": True,
            "disable_auto_update": "major",
        },
        headers={"authorization": live.key},
        timeout=30,
    )
    assert made.status_code == 200, made.text
    page.goto(f"{live.url}/dashboard/app/{app_id}{_range(TODAY - timedelta(days=89), TODAY)}")
    _wait_ready(page, (TODAY - timedelta(days=89)).isoformat(), TODAY.isoformat())
    page.wait_for_selector('main[data-complete="true"]')
    _screenshot(page, "app.png", tmp_path)

    api = live.api(f"/statistics/app/{app_id}/{_range(TODAY - timedelta(days=89), TODAY)}")
    shown = _table(page, "table-activity")
    assert [int(r["mau"]) for r in shown] == [r["mau"] for r in api["data"]]

    bundles = live.api(f"/bundle?app_id={app_id}")
    rows = {r["version"]: r for r in _table(page, "bundles")}
    assert set(rows) == {b["version"] for b in bundles}
    for b in bundles:
        assert rows[b["version"]]["kind"] == ("external" if b["external"] else "stored")
        assert int(rows[b["version"]]["size"]) == b["size"]
    assert page.locator("#bundles .tag-external").count() == sum(b["external"] for b in bundles)
    assert page.get_by_text("External — not counted").first.is_visible()

    # Channels: platforms, public per platform, self-set, the rule and the devices on each.
    channels = {c["channel"]: c for c in live.api(f"/channel?app_id={app_id}")}
    shown_channels = {r["channel"]: r for r in _table(page, "channels")}
    assert set(shown_channels) == set(channels) == {"production", "ios-beta"}
    assert shown_channels["production"]["platforms"] == "iOS, Android, Electron"
    assert shown_channels["production"]["public_for"] == "Android, Electron"
    assert shown_channels["ios-beta"]["public_for"] == "iOS"
    assert shown_channels["ios-beta"]["self_set"] == "yes"
    assert shown_channels["ios-beta"]["rule"] == (
        "No automatic major upgrade; never below the native build"
    )
    assert shown_channels["production"]["rule"] == "Any version; never below the native build"
    for name, c in channels.items():
        assert int(shown_channels[name]["devices"]) == c["devices"]
    assert channels["production"]["devices"] > 0
    assert page.locator("#channels").get_by_text("ios-beta").is_visible()

    # Bundle usage: the CSV has the shares the API gives for each day.
    with page.expect_download() as info:
        page.locator('button.csv[data-chart="versions"]').click()
    table = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    header, body = table[0], table[1:]
    usage = live.api(
        f"/statistics/app/{app_id}/bundle_usage/{_range(TODAY - timedelta(days=89), TODAY)}"
    )["data"]
    assert len(body) == len(usage) == 90
    last = dict(zip(header, body[-1], strict=True))
    for entry in usage[-1]["versions"]:
        assert float(last[f"{entry['version']} (% of devices)"]) == entry["share"]
    per_user = page.locator(".stat[data-metric='bandwidth_per_user'] .value")
    assert per_user.get_attribute("data-value")


def test_sign_out_in_the_browser(page: Any, live: LiveServer) -> None:
    _sign_in(page, live)
    (copy,) = [c for c in page.context.cookies() if c["name"] == COOKIE]
    assert live.key not in copy["value"] and copy["httpOnly"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/login?signed_out=1")
    assert page.get_by_text("You are signed out").is_visible()
    cookies = page.context.cookies()
    assert not [c for c in cookies if c["name"] == COOKIE]
    page.goto(f"{live.url}/dashboard/org/{live.org_id}")
    assert "/dashboard/login" in page.url
    # The cookie copied before signing out opens nothing: the session ended on the server.
    page.context.add_cookies([copy])
    page.goto(f"{live.url}/dashboard/org/{live.org_id}")
    assert "/dashboard/login" in page.url


def test_locked_org_shows_the_reason(page: Any, live: LiveServer, tmp_path: Path) -> None:
    usage = httpx.get(
        f"{live.url}/organization/{live.org_id}/usage", headers={"authorization": live.key}
    )
    assert usage.status_code == 200, usage.text
    share = usage.json()["emulator_dev"]["ratio"] * 100
    reason = f"Emulators and dev builds are {share:.1f}% of this cycle's devices (at most 3%)"

    def lock(code: str | None, why: str | None) -> None:
        live.rt.writer.run_blocking(
            lambda conn: conn.execute(
                update(s.orgs)
                .where(s.orgs.c.id == live.org_id)
                .values(lock_code=code, lock_reason=why)
            )
        )

    lock("too_many_emulators_or_dev_builds", reason)
    try:
        _sign_in(page, live)
        page.goto(f"{live.url}/dashboard/org/{live.org_id}")
        banner = page.locator("#lock-banner")
        banner.wait_for()
        assert banner.get_attribute("role") == "alert"
        assert "locked" in banner.inner_text() and reason in banner.inner_text()
        target = Path(os.environ.get("OTAMETER_SCREENSHOT_DIR") or tmp_path)
        page.locator("#usage").screenshot(path=str(target / "org-locked.png"))

        # The app page says it too: its devices are the ones that get no updates.
        page.goto(f"{live.url}/dashboard/app/{DEMO_APPS[0][0]}")
        page.wait_for_selector('main[data-complete="true"]')
        notice = page.locator("#org-lock #lock-banner")
        assert notice.get_attribute("role") == "alert"
        text = notice.inner_text()
        assert "organization is locked" in text and reason in text
        assert notice.get_by_role("link").get_attribute("href") == f"/dashboard/org/{live.org_id}"
    finally:
        lock(None, None)


def test_app_page_releases_and_device_log(page: Any, live: LiveServer) -> None:
    import dataclasses
    import uuid

    from tests.harness import device_body, zip_bytes

    app_id = DEMO_APPS[1][0]
    # A new bundle on production; three devices take it, one rolls back, one crashes.
    uploaded = httpx.post(
        live.url + "/bundle",
        data={"app_id": app_id, "version": "9.9.0", "channel": "production"},
        files={"file": ("bundle.zip", zip_bytes(), "application/zip")},
        headers={"authorization": live.key},
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text
    live.rt.catalog.invalidate()
    devices = [str(uuid.uuid4()) for _ in range(3)]
    offered = "9.9.0"
    for n, device in enumerate(devices):
        answer = httpx.post(live.url + "/updates", json=device_body(app_id, device), timeout=30)
        assert answer.json()["version"] == offered
        actions = ["download_complete", "set", *[["update_fail"], ["app_crash"], []][n]]
        batch = [
            device_body(app_id, device, action=a, version_name=offered, timestamp=100 + i)
            for i, a in enumerate(actions)
        ]
        batch.append(
            device_body(
                app_id,
                device,
                action="app_launch_ready",
                version_name=offered,
                timestamp=200,
                metadata={"duration_ms": str(800 + 100 * n)},
            )
        )
        assert httpx.post(live.url + "/stats", json=batch, timeout=30).status_code == 200
    guard = live.rt.release_guard
    saved = guard.settings
    guard.settings = dataclasses.replace(
        saved, release_min_devices=3, release_max_rollback_rate=0.3
    )
    try:
        live.rt.rollups.run_blocking()
    finally:
        guard.settings = saved

    _sign_in(page, live)
    span = _range(TODAY - timedelta(days=6), TODAY)
    page.goto(f"{live.url}/dashboard/app/{app_id}{span}")
    _wait_ready(page, (TODAY - timedelta(days=6)).isoformat(), TODAY.isoformat())
    page.wait_for_selector('main[data-complete="true"]')

    api = live.api(f"/statistics/app/{app_id}/releases/{span}")["data"]
    funnel = {r["version"]: r for r in _table(page, "table-releases")}
    assert set(funnel) == {r["version"] for r in api}
    for row in api:
        for key in ("offered", "downloaded", "installed", "failed", "rolled_back"):
            assert int(funnel[row["version"]][key]) == row[key]
    quality = {r["version"]: r for r in _table(page, "table-release-quality")}
    mine = next(r for r in api if r["version"] == offered)
    assert (mine["installed"], mine["rolled_back"], mine["crashed"]) == (3, 1, 1)
    assert int(quality[offered]["launch_ms_p50"]) == mine["launch_ms_p50"]
    # Crash-free: of the devices that ran it (the demo's too) or installed it.
    users = max(mine["active"], mine["installed"], mine["crashed"])
    assert float(quality[offered]["crash_free"]) == round(1000 * (users - 1) / users) / 10

    # The CSV has the rows of the table.
    with page.expect_download() as info:
        page.locator('button.csv[data-chart="releases"]').click()
    lines = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert {line["version"]: int(line["installed"]) for line in lines} == {
        r["version"]: r["installed"] for r in api
    }

    # The alert the guard raised (1 of 3 rolled back, over 30%) is on the page.
    alert = page.locator(f'.release-alert[data-version="{offered}"]')
    assert alert.count() == 1 and "regressed" in alert.inner_text()

    # Device search, then the device's log, newest first.
    page.get_by_label("Device id or custom id").fill(devices[1][:13])
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector('#device-results[data-count="1"]')
    page.locator(f'button[data-device="{devices[1]}"]').click()
    page.wait_for_selector("#device-events")
    actions = [r["action"] for r in _table(page, "device-events")]
    assert actions == ["app_launch_ready", "app_crash", "set", "download_complete"]


def test_csv_downloads_neutralise_formulas(page: Any, live: LiveServer) -> None:
    """A device's version name that looks like a formula is text in the dashboard's CSV."""
    app_id = "com.otameter.demo.csv"
    versions = ['=HYPERLINK("http://evil.example/","x")', "-2+3", "1.0.0"]
    with httpx.Client(base_url=live.url, headers={"authorization": live.key}) as http:
        r = http.post("/app", json={"app_id": app_id, "name": "CSV", "owner_org": live.org_id})
        assert r.status_code == 201, r.text
        for version in versions:
            for _ in range(2):
                r = http.post("/updates", json=device_body(app_id, version_name=version))
                assert r.status_code == 200, r.text
    live.rt.rollups.run_blocking()

    _sign_in(page, live)
    page.goto(f"{live.url}/dashboard/app/{app_id}{_range(TODAY, TODAY)}")
    _wait_ready(page, TODAY.isoformat(), TODAY.isoformat())

    page.goto(f"{live.url}/dashboard/app/{DEMO_APPS[0][0]}")
    page.wait_for_selector('main[data-complete="true"]')
    assert page.locator("#lock-banner").count() == 0


def test_words_and_units(page: Any, live: LiveServer) -> None:
    _sign_in(page, live)
    for path in (f"/dashboard/org/{live.org_id}", f"/dashboard/app/{DEMO_APPS[0][0]}"):
        page.goto(f"{live.url}{path}{_range(TODAY - timedelta(days=89), TODAY)}")
        page.wait_for_selector('main[data-complete="true"]')
        for details in page.locator("details.table-alt summary").all():
            details.click()
        text = page.locator("body").inner_text()
        # The user's words: no internal names, and bytes in decimal units only.
        for word in ("seed", "device table", "daily_usage", "KiB", "MiB", "GiB"):
            assert word not in text, (path, word)

        # Byte axes step by round amounts and are labelled as everywhere else.
        for chart in ("storage", "bandwidth"):
            ticks = page.evaluate(
                """(id) => {
                    const chart = window.Chart.getChart(document.getElementById(id));
                    return chart.scales.y.ticks.map((t) => [t.value, t.label]);
                }""",
                f"chart-{chart}-canvas",
            )
            values = [v for v, _ in ticks]
            assert len(values) >= 2, ticks
            step = values[1] - values[0]
            magnitude = 10 ** math.floor(math.log10(step))
            assert step / magnitude in {1, 2, 2.5, 5}, ticks
            assert all(round(v / step, 9).is_integer() for v in values), ticks
            assert [label for _, label in ticks] == [format_bytes(v) for v in values]

    # Plan usage: the storage limit reads as it was set, in the one format.
    page.goto(f"{live.url}/dashboard/org/{live.org_id}")
    page.wait_for_selector('main[data-complete="true"]')
    usage = live.api(f"/organization/{live.org_id}/usage")
    for metric in ("storage", "bandwidth"):
        shown = page.locator(f'.usage-row[data-metric="{metric}"] .usage-value').inner_text()
        figure = usage[metric]
        assert shown.startswith(
            f"{format_bytes(figure['used'])} of {format_bytes(figure['limit'])} ("
        ), shown
