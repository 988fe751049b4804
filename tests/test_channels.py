"""Channels as the real plugin uses them, from the plugin's side: the body it sends to
/updates and /channel_self, and the fields it reads back (plugin-protocol.md §2 and §4).

Each "Why" point of the channel issue has its test here, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from alembic import command
from sqlalchemy import func, inspect, select, text

from otameter.catalog import Catalog, ChannelInfo
from otameter.channels import Version, auto_update_block, uses_local_channel
from otameter.config import Settings
from otameter.storage import schema as s
from otameter.storage.db import alembic_config, create_db_engine, migrate
from tests.harness import Harness, device_body, setup_app

APP = "com.example.app"
NEW_PLUGIN = "8.51.14"  # keeps its channel on the device
OLD_PLUGIN = "7.20.0"  # keeps a server-side override


def channel(h: Harness, key: str, name: str, version: str | None = None, **flags: Any) -> Any:
    body: dict[str, Any] = {"app_id": APP, "channel": name, **flags}
    if version is not None:
        body["version"] = version
    r = h.client.post("/channel", json=body, headers=h.auth(key))
    assert r.status_code == 200, r.text
    return r.json()


def channels(h: Harness, key: str) -> dict[str, dict[str, Any]]:
    r = h.client.get("/channel", params={"app_id": APP}, headers=h.auth(key))
    assert r.status_code == 200, r.text
    return {row["channel"]: row for row in r.json()}


def setup(h: Harness) -> str:
    """production (public, 1.0.1), beta (self-set, 2.0.0-beta), internal (private, 3.0.0)."""
    key = setup_app(h)
    h.upload(key, APP, "1.0.1")
    h.upload(key, APP, "2.0.0-beta", channel="beta")
    channel(h, key, "beta", public=False, allow_device_self_set=True)
    h.upload(key, APP, "3.0.0", channel="internal")
    channel(h, key, "internal", public=False, allow_device_self_set=False)
    return key


def overrides(h: Harness) -> int:
    with h.rt.read_engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(s.channel_devices)) or 0)


# -- 1. a device can leave a channel ----------------------------------------------------------


def test_a_device_leaves_a_channel_by_sending_no_default_channel(harness: Harness) -> None:
    """Since 7.34 / 8.2 setChannel() persists the channel on the device, which sends it as
    ``defaultChannel``, and unsetChannel() sends no request (plugin-protocol.md §4). The server
    keeps no override, so the device that unsets is back on the public channel at once."""
    setup(harness)
    device = str(uuid.uuid4())
    info = device_body(APP, device, plugin_version=NEW_PLUGIN)

    joined = harness.client.post("/channel_self", json={**info, "channel": "beta"})
    assert joined.status_code == 200
    assert joined.json() == {
        "status": "ok",
        "message": "Device may use channel beta",
        "allowSet": True,
    }
    assert overrides(harness) == 0

    # The plugin now sends the channel it stored as defaultChannel.
    on_beta = harness.checkin(APP, device, plugin_version=NEW_PLUGIN, defaultChannel="beta")
    assert on_beta.json()["version"] == "2.0.0-beta"

    # unsetChannel(): no request, the next check sends an empty defaultChannel.
    left = harness.checkin(APP, device, plugin_version=NEW_PLUGIN, defaultChannel="")
    assert left.json()["version"] == "1.0.1" and "error" not in left.json()


def test_the_plugin_version_decides_who_keeps_the_channel(harness: Harness) -> None:
    """7.34.0 and 8.2.0 are the first versions that keep the channel on the device
    (plugin-protocol.md §4); 8.1.x still gets a server-side override, which /updates honours
    for it only, and DELETE /channel_self (its unsetChannel) removes."""
    setup(harness)
    device = str(uuid.uuid4())
    for version in ("7.34.0", "8.2.0", "9.0.0"):
        info = device_body(APP, device, plugin_version=version)
        assert (
            harness.client.post("/channel_self", json={**info, "channel": "beta"}).json()["status"]
            == "ok"
        )
        assert overrides(harness) == 0

    old = device_body(APP, device, plugin_version="8.1.9")
    assert harness.client.post("/channel_self", json={**old, "channel": "beta"}).json() == {
        "status": "ok",
        "message": "Device joined channel beta",
        "allowSet": True,
    }
    assert overrides(harness) == 1
    assert harness.checkin(APP, device, plugin_version="8.1.9").json()["version"] == "2.0.0-beta"
    # The same device after a plugin upgrade: its own (empty) defaultChannel counts.
    assert harness.checkin(APP, device, plugin_version="8.2.0").json()["version"] == "1.0.1"

    # The old plugin's unsetChannel(): DELETE with the info fields in the query.
    query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in old.items()}
    gone = harness.client.delete("/channel_self", params=query)
    assert gone.status_code == 200 and gone.json()["status"] == "ok"
    assert "error" not in gone.json()
    assert overrides(harness) == 0
    assert harness.checkin(APP, device, plugin_version="8.1.9").json()["version"] == "1.0.1"
    # Again, and with a JSON body: nothing left to remove is still ok.
    again = harness.client.request("DELETE", "/channel_self", json=old)
    assert again.status_code == 200 and again.json()["status"] == "ok"


def test_plugin_versions_that_keep_the_channel_on_the_device() -> None:
    """plugin-protocol.md §4: local channel storage since 7.34.0 and 8.2.0."""
    for version in ("7.34.0", "7.40.1", "8.2.0", "8.51.14", "9.0.0", "10.1.0-rc.1"):
        assert uses_local_channel(version), version
    for version in ("", "6.40.0", "7.33.9", "7.34.0-beta.1", "8.0.0", "8.1.12", "nonsense"):
        assert not uses_local_channel(version), version


# -- 2. getChannel() does not move devices to production --------------------------------------


def test_get_channel_answers_the_device_default_channel(harness: Harness) -> None:
    """getChannel() is a PUT with the info body, ``defaultChannel`` included; the plugin
    persists the ``channel`` it reads back (plugin-protocol.md §4)."""
    setup(harness)
    info = device_body(APP, str(uuid.uuid4()), plugin_version=NEW_PLUGIN)

    got = harness.client.put("/channel_self", json={**info, "defaultChannel": "beta"})
    assert got.status_code == 200
    assert got.json() == {"channel": "beta", "status": "default", "allowSet": True}

    got = harness.client.put("/channel_self", json={**info, "defaultChannel": ""})
    assert got.json() == {"channel": "production", "status": "default", "allowSet": False}

    # A channel the device may not use: its platform's public channel, never the private one.
    got = harness.client.put("/channel_self", json={**info, "defaultChannel": "internal"})
    assert got.json()["channel"] == "production" and "error" not in got.json()


# -- 3. one public channel per platform -------------------------------------------------------


def test_one_public_channel_per_platform(harness: Harness) -> None:
    """Making an iOS-only channel public takes iOS alone from the public channel: Android
    devices keep getting updates instead of ``disabled_platform_android``
    (plugin-protocol.md §2, "blocked"; §4)."""
    key = setup(harness)
    harness.upload(key, APP, "1.5.0", channel="ios-store")
    made = channel(harness, key, "ios-store", public=True, ios=True, android=False, electron=False)
    assert (made["public_ios"], made["public_android"], made["public_electron"]) == (
        True,
        False,
        False,
    )

    android = harness.checkin(APP, str(uuid.uuid4()), platform="android").json()
    assert android["version"] == "1.0.1" and "error" not in android
    ios = harness.checkin(APP, str(uuid.uuid4()), platform="ios").json()
    assert ios["version"] == "1.5.0" and "error" not in ios
    electron = harness.checkin(APP, str(uuid.uuid4()), platform="electron").json()
    assert electron["version"] == "1.0.1"

    listed = channels(harness, key)
    production = listed["production"]
    assert production["public"] is True
    assert (production["public_ios"], production["public_android"]) == (False, True)
    assert listed["ios-store"]["public"] is True

    # An Android channel made public replaces production for Android only.
    harness.upload(key, APP, "1.6.0", channel="android-store")
    channel(harness, key, "android-store", public=True, ios=False, electron=False)
    listed = channels(harness, key)
    assert listed["production"]["public_electron"] is True
    assert listed["production"]["public_android"] is False
    assert listed["ios-store"]["public_ios"] is True
    assert harness.checkin(APP, str(uuid.uuid4())).json()["version"] == "1.6.0"
    assert harness.checkin(APP, str(uuid.uuid4()), platform="ios").json()["version"] == "1.5.0"
    # listChannels marks the platform's own public channel.
    query = {
        k: str(v).lower() if isinstance(v, bool) else v
        for k, v in device_body(APP, platform="ios").items()
    }
    listed_ios = {c["name"]: c for c in harness.client.get("/channel_self", params=query).json()}
    assert listed_ios["ios-store"]["public"] is True
    assert listed_ios["production"]["public"] is False

    # Public for no platform: production turns private, and electron has no public channel.
    channel(harness, key, "production", public=False)
    answer = harness.checkin(APP, str(uuid.uuid4()), platform="electron").json()
    assert answer["error"] == "no_channel" and answer["kind"] == "failed"

    # An upload that creates a channel makes it public for the platforms without one only.
    harness.upload(key, APP, "1.7.0", channel="desktop")
    desktop = channels(harness, key)["desktop"]
    assert [desktop[f"public_{p}"] for p in ("ios", "android", "electron")] == [
        False,
        False,
        True,
    ]
    assert harness.checkin(APP, str(uuid.uuid4()), platform="electron").json()["version"] == (
        "1.7.0"
    )


# -- 4. an unusable defaultChannel is no_channel, unnamed -------------------------------------


UNUSABLE = {
    "private": ({"public": False, "allow_device_self_set": False}, {}),
    "ios-only": ({"public": False, "allow_device_self_set": True, "android": False}, {}),
    "no-emulators": (
        {"public": False, "allow_device_self_set": True, "allow_emulator": False},
        {"is_emulator": True},
    ),
    "no-dev-builds": (
        {"public": False, "allow_device_self_set": True, "allow_dev": False},
        {"is_prod": False},
    ),
}


def test_an_unusable_default_channel_answers_no_channel_without_its_name(
    harness: Harness,
) -> None:
    """A ``defaultChannel`` the device may not use (private and not self-settable, built for
    another platform, refusing emulators or dev builds) is answered as if no channel matched:
    ``{"error": "no_channel", "message", "kind": "failed"}`` with HTTP 200, and the answer
    does not name it (plugin-protocol.md §2, "Response: no update, blocked, or error")."""
    key = setup(harness)
    for n, (name, (flags, _)) in enumerate(UNUSABLE.items()):
        harness.upload(key, APP, f"4.0.{n}", channel=f"secret-{name}")
        channel(harness, key, f"secret-{name}", **flags)

    for name, (_, device) in UNUSABLE.items():
        answer = harness.checkin(APP, str(uuid.uuid4()), defaultChannel=f"secret-{name}", **device)
        assert answer.status_code == 200
        body = answer.json()
        assert body == {
            "error": "no_channel",
            "message": "No channel serves this app to this device",
            "kind": "failed",
        }, name
        assert "secret" not in answer.text
        # The same device with a usable channel, and a name that does not exist.
        beta = harness.checkin(APP, str(uuid.uuid4()), defaultChannel="beta", **device)
        assert beta.json()["version"] == "2.0.0-beta", name
        unknown = harness.checkin(APP, str(uuid.uuid4()), defaultChannel="nope", **device)
        assert unknown.json() == body


# -- 5. builtin at the bundle's version is up to date -----------------------------------------


def test_a_fresh_install_of_the_channel_bundle_is_up_to_date(harness: Harness) -> None:
    """``version_name: "builtin"`` with the native ``version_build`` equal to the channel's
    bundle: the device already runs it, so no ``url`` is sent (nothing to download, nothing
    metered) and the answer is ``no_new_version_available`` / ``up_to_date``
    (plugin-protocol.md §2)."""
    key = setup_app(harness)
    harness.upload(key, APP, "1.2.0")
    device = str(uuid.uuid4())

    answer = harness.checkin(APP, device, version_name="builtin", version_build="1.2.0")

    assert answer.status_code == 200
    assert answer.json() == {
        "error": "no_new_version_available",
        "message": "No new version available",
        "kind": "up_to_date",
    }
    harness.rollup()
    day = harness.clock.now().date().isoformat()
    (row,) = harness.stats(key, f"app/{APP}", day, day)
    assert row["bandwidth"] == 0 and row["mau"] == 1
    # An older native build still gets the bundle.
    older = harness.checkin(APP, str(uuid.uuid4()), version_build="1.1.0").json()
    assert older["version"] == "1.2.0" and "url" in older


# -- disable_auto_update and disable_auto_update_under_native ---------------------------------


BLOCKED = [
    ("major", "1.4.0", "2.0.0", "disable_auto_update_to_major"),
    ("minor", "1.4.0", "1.5.0", "disable_auto_update_to_minor"),
    ("minor", "1.4.0", "2.1.0", "disable_auto_update_to_minor"),
    ("patch", "1.4.0", "1.4.1", "disable_auto_update_to_patch"),
    ("none", "1.4.0", "1.3.9", "disable_auto_update_under_native"),
    ("none", "1.4.0", "1.4.0-rc.1", "disable_auto_update_under_native"),
]
ALLOWED = [
    ("major", "1.4.0", "1.9.9"),
    ("minor", "1.4.0", "1.4.7"),
    ("patch", "1.4.0", "1.4.0+hotfix"),
    ("major", "deferred-v1", "2.0.0"),  # not semver: not judged, never a crash
    ("major", "1.4.0", "deferred-v2"),
    ("none", "2", "2.0.1"),  # "2" reads as 2.0.0, as Capgo's fixSemver does
]


def rule_channels(h: Harness, key: str, cases: list[tuple[str, ...]]) -> list[str]:
    """One self-settable channel per case, serving the case's bundle under its rule."""
    names = []
    for n, (rule, _, bundle, *_) in enumerate(cases):
        name = f"case-{n}"
        h.upload(key, APP, bundle, channel=name)
        made = channel(
            h, key, name, public=False, allow_device_self_set=True, disable_auto_update=rule
        )
        assert made["disable_auto_update"] == rule and made["disable_auto_update_under_native"]
        names.append(name)
    return names


def test_auto_update_rules_block_with_the_plugin_codes(harness: Harness) -> None:
    """A bundle across a forbidden semver step, or below the native build, is answered
    ``kind: "blocked"`` with the plugin's codes; a major step also sets ``breaking: true``,
    which fires the plugin's breakingAvailable event (plugin-protocol.md §2)."""
    key = setup_app(harness)
    names = rule_channels(harness, key, BLOCKED)

    for name, (_, native, bundle, code) in zip(names, BLOCKED, strict=True):
        answer = harness.checkin(APP, str(uuid.uuid4()), version_build=native, defaultChannel=name)
        assert answer.status_code == 200
        body = answer.json()
        assert body["error"] == code and body["kind"] == "blocked", (name, body)
        assert body["version"] == bundle and body["old"] == native
        assert "url" not in body
        if code == "disable_auto_update_to_major":
            assert body["breaking"] is True and body["major"] is True
        else:
            assert "breaking" not in body


def test_auto_update_rules_let_allowed_steps_through(harness: Harness) -> None:
    """plugin-protocol.md §2: versions need not be semver; the rules judge only semver."""
    key = setup_app(harness)
    names = rule_channels(harness, key, ALLOWED)

    for name, (_, native, bundle) in zip(names, ALLOWED, strict=True):
        body = harness.checkin(
            APP, str(uuid.uuid4()), version_build=native, defaultChannel=name
        ).json()
        assert body["version"] == bundle and "error" not in body and "kind" not in body, name


def test_under_native_can_be_turned_off(harness: Harness) -> None:
    """``disable_auto_update_under_native: false`` lets a channel roll devices back below
    their native build (plugin-protocol.md §2)."""
    key = setup_app(harness)
    harness.upload(key, APP, "0.9.0")
    assert channel(harness, key, "production")["disable_auto_update_under_native"] is True
    blocked = harness.checkin(APP, str(uuid.uuid4()), version_build="1.0.0").json()
    assert blocked["error"] == "disable_auto_update_under_native"

    channel(harness, key, "production", disable_auto_update_under_native=False)
    served = harness.checkin(APP, str(uuid.uuid4()), version_build="1.0.0").json()
    assert served["version"] == "0.9.0"


def test_post_channel_refuses_an_unknown_rule(harness: Harness) -> None:
    key = setup_app(harness)
    harness.upload(key, APP, "1.0.1")
    for value in ("version_number", "MAJOR", 3):
        r = harness.client.post(
            "/channel",
            json={"app_id": APP, "channel": "production", "disable_auto_update": value},
            headers=harness.auth(key),
        )
        assert r.status_code == 400
        assert r.json()["status"] == "KO" and "disable_auto_update" in r.json()["error"]
    assert channels(harness, key)["production"]["disable_auto_update"] == "none"


def test_version_ordering() -> None:
    def v(text: str) -> Version:
        parsed = Version.parse(text)
        assert parsed is not None, text
        return parsed

    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2"]
    ordered += ["1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2"]
    assert [v(x) for x in ordered] == sorted(v(x) for x in ordered)
    assert v("v1.2") == v("1.2.0") and v("1.2.3+build") == v("1.2.3")
    for name in ("builtin", "deferred-v1", "1.2.3.4", "", "01.2.3"):
        assert Version.parse(name) is None, name


def test_auto_update_block_ignores_internal_bundles() -> None:
    rule = ChannelInfo(
        1, "p", True, False, True, True, True, True, True, None, disable_auto_update="major"
    )
    assert auto_update_block(rule, "builtin", "1.0.0") is None
    assert auto_update_block(rule, "unknown", "1.0.0") is None
    blocked = auto_update_block(rule, "3.0.0", "1.0.0")
    assert blocked is not None and blocked["error"] == "disable_auto_update_to_major"


# -- changes reach every process ------------------------------------------------------------


def test_a_channel_change_reaches_another_process_within_the_cache_time(
    harness: Harness,
) -> None:
    """Another process's cached snapshot (contract: management changes reach /updates on
    every process within 2 seconds) expires at most ``cache_ttl_seconds`` after its read
    began, and the next request reads the change."""
    key = setup_app(harness)
    harness.upload(key, APP, "1.0.1")
    ttl = Settings().cache_ttl_seconds
    assert ttl <= 1.0
    engine = create_db_engine(harness.rt.settings.database_url)
    other = Catalog(engine, ttl)
    try:
        before = other.get(APP)
        assert before is not None and before.public_channel("android") is not None
        harness.upload(key, APP, "1.0.2", channel="beta")
        channel(harness, key, "beta", public=True)
        changed_at = time.monotonic()
        hit, cached = other.cached(APP)
        assert hit and cached is before  # still the old snapshot, for at most ttl

        # Readiness wait on the monotonic clock, not a timing assertion: the entry was
        # read before the change, so it has expired once ttl has passed since the change.
        time.sleep(max(0.0, changed_at + ttl - time.monotonic()) + 0.01)
        assert other.cached(APP) == (False, None)
        after = other.get(APP)
        assert after is not None
        public = after.public_channel("android")
        assert public is not None and public.name == "beta"
    finally:
        engine.dispose()


# -- the device count of the dashboard -------------------------------------------------------


def test_channel_list_counts_the_devices_running_each_channel(harness: Harness) -> None:
    """GET /channel: ``devices`` counts the devices seen in the last 30 days whose last
    check-in reported running the channel's bundle, on a platform the channel serves."""
    key = setup(harness)
    harness.upload(key, APP, "1.5.0", channel="ios-store")
    channel(harness, key, "ios-store", ios=True, android=False, electron=False, public=True)
    for _ in range(3):
        harness.checkin(APP, str(uuid.uuid4()), version_name="1.0.1")
    harness.checkin(APP, str(uuid.uuid4()), version_name="builtin", version_build="1.0.1")
    harness.checkin(APP, str(uuid.uuid4()), version_name="2.0.0-beta", defaultChannel="beta")
    harness.checkin(APP, str(uuid.uuid4()), platform="ios", version_name="1.5.0")
    # Android devices on 1.5.0 are not on the iOS-only channel.
    harness.checkin(APP, str(uuid.uuid4()), platform="android", version_name="1.5.0")
    harness.rollup()  # check-ins reach the device table through the rollup

    listed = channels(harness, key)

    assert listed["production"]["devices"] == 4
    assert listed["beta"]["devices"] == 1
    assert listed["ios-store"]["devices"] == 1
    assert listed["internal"]["devices"] == 0


# -- migration 0004 --------------------------------------------------------------------------


def test_migration_0004_down_and_up_keeps_channels(db_url: str) -> None:
    """A channel that was public becomes the public channel of the platforms it serves;
    the downgrade drops the new columns and keeps the rows."""
    config = alembic_config(db_url)
    command.upgrade(config, "0005")
    engine = create_db_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, email, name, created_at) "
                    "VALUES ('u1', 'm@example.com', '', 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO orgs (id, name, created_by, created_at, cycle_anchor) "
                    "VALUES ('o1', 'O', 'u1', 0, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO apps (app_id, name, owner_org, created_at) "
                    "VALUES ('com.m.app', 'M', 'o1', 0)"
                )
            )
            for name, public, ios, android in (
                ("prod", True, True, False),
                ("qa", False, True, True),
            ):
                conn.execute(
                    text(
                        "INSERT INTO channels (app_id, name, public, allow_device_self_set, "
                        "allow_emulator, allow_dev, ios, android, electron, created_at, "
                        "updated_at) VALUES ('com.m.app', :n, :p, false, true, true, :i, :a, "
                        "true, 0, 0)"
                    ),
                    {"n": name, "p": public, "i": ios, "a": android},
                )

        def rows() -> dict[str, dict[str, Any]]:
            with engine.connect() as conn:
                result = conn.execute(text("SELECT * FROM channels ORDER BY name"))
                return {r.name: dict(r._mapping) for r in result}

        migrate(db_url)
        after = rows()
        assert {
            k: bool(after["prod"][k]) for k in ("public_ios", "public_android", "public_electron")
        } == {
            "public_ios": True,
            "public_android": False,
            "public_electron": True,
        }
        assert not any(bool(after["qa"][f"public_{p}"]) for p in ("ios", "android", "electron"))
        assert after["prod"]["disable_auto_update"] == "none"
        assert bool(after["prod"]["disable_auto_update_under_native"]) is True

        command.downgrade(config, "0005")
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("channels")}
        assert "public_ios" not in columns and "disable_auto_update" not in columns
        before = rows()
        assert set(before) == {"prod", "qa"} and bool(before["prod"]["public"]) is True

        migrate(db_url)
        assert bool(rows()["prod"]["public_electron"]) is True
    finally:
        engine.dispose()
