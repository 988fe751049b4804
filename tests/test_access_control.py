"""Who may do what: keys limited to apps, super_admins, key revocation and expiry, failed
authentications per address, and members invited before they have an account.

Each runs on SQLite and on PostgreSQL; revocation and the failed-auth limit are also checked
across two otameter runtimes on one database, and across ``serve --workers 2``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from otameter.auth_limits import Limit
from otameter.config import Settings
from otameter.storage import schema as s
from tests.harness import Harness, running
from tests.liveserver import LiveServer, create_user, otameter


def add_member(h: Harness, key: str, org_id: str, email: str, role: str) -> httpx.Response:
    return h.client.post(
        "/organization/members",
        json={"orgId": org_id, "email": email, "invite_type": role},
        headers=h.auth(key),
    )


def new_key(h: Harness, key: str, **body: Any) -> dict[str, Any]:
    r = h.client.post("/apikey", json={"name": "k", "mode": "all", **body}, headers=h.auth(key))
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def role_of(h: Harness, org_id: str, user_id: str) -> str | None:
    m = s.org_members.c
    return h.rt.writer.run_blocking(
        lambda conn: conn.scalar(select(m.role).where(m.org_id == org_id, m.user_id == user_id))
    )


# -- a key limited to some apps cannot act for the whole org --------------------------------


def test_a_key_limited_to_one_app_cannot_act_for_the_org(harness: Harness) -> None:
    h = harness
    _, owner = h.user("owner@example.com")
    org_id = h.org(owner)
    h.app(owner, org_id, "com.acme.one")
    h.app(owner, org_id, "com.acme.two")
    limited = new_key(h, owner, limited_to_apps=["com.acme.one"])["key"]
    hook = h.client.post(
        f"/organization/{org_id}/webhooks",
        json={"url": "https://1.1.1.1/hook", "secret": "s" * 16},  # public; nothing is sent
        headers=h.auth(owner),
    ).json()["id"]
    h.user("mallory@example.com")

    # The key still works for its app.
    assert h.client.get("/app/com.acme.one", headers=h.auth(limited)).status_code == 200
    refused = [
        add_member(h, limited, org_id, "mallory@example.com", "super_admin"),
        add_member(h, limited, org_id, "mallory@example.com", "read"),
        h.client.get(f"/organization/{org_id}/webhooks", headers=h.auth(limited)),
        h.client.post(
            f"/organization/{org_id}/webhooks",
            json={"url": "https://1.1.1.1/other"},
            headers=h.auth(limited),
        ),
        h.client.delete(f"/organization/{org_id}/webhooks/{hook}", headers=h.auth(limited)),
        h.client.get(f"/organization/{org_id}/webhooks/deliveries", headers=h.auth(limited)),
        h.client.get(f"/organization/{org_id}/usage", headers=h.auth(limited)),
        h.client.post("/apikey", json={"mode": "read"}, headers=h.auth(limited)),
        h.client.get("/apikey", headers=h.auth(limited)),
        h.client.post("/organization", json={"name": "Mine now"}, headers=h.auth(limited)),
    ]
    for r in refused:
        assert r.status_code == 403, (r.request.method, r.request.url, r.text)
        assert r.json()["status"] == "KO"
    # Nothing changed: no new member, the webhook is still there.
    mallory = h.rt.writer.run_blocking(
        lambda conn: conn.scalar(
            select(s.users.c.id).where(s.users.c.email == "mallory@example.com")
        )
    )
    assert role_of(h, org_id, mallory) is None
    hooks = h.client.get(f"/organization/{org_id}/webhooks", headers=h.auth(owner)).json()
    assert [w["id"] for w in hooks] == [hook]
    # An org the key cannot see at all still answers exactly like a missing one.
    _, other = h.user("other@example.com")
    foreign = h.org(other, "Foreign")
    hidden = add_member(h, limited, foreign, "mallory@example.com", "read")
    missing = add_member(h, limited, str(uuid.uuid4()), "mallory@example.com", "read")
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()
    # A key limited to the org (not to apps) may still manage its members.
    org_key = new_key(h, owner, limited_to_orgs=[org_id])["key"]
    assert add_member(h, org_key, org_id, "mallory@example.com", "read").status_code == 200


# -- super_admins ---------------------------------------------------------------------------


def test_only_a_super_admin_changes_a_super_admin(harness: Harness) -> None:
    h = harness
    owner_id, owner = h.user("owner@example.com")
    _, admin = h.user("admin@example.com")
    org_id = h.org(owner)
    assert add_member(h, owner, org_id, "admin@example.com", "admin").status_code == 200
    # An admin can neither grant super_admin nor take it away by re-inviting with a lower role.
    assert add_member(h, admin, org_id, "admin@example.com", "super_admin").status_code == 403
    r = add_member(h, admin, org_id, "owner@example.com", "read")
    assert r.status_code == 403 and r.json()["status"] == "KO"
    assert role_of(h, org_id, owner_id) == "super_admin"
    # An admin still manages the other roles.
    h.user("dev@example.com")
    assert add_member(h, admin, org_id, "dev@example.com", "write").status_code == 200


def test_an_org_keeps_its_last_super_admin(harness: Harness) -> None:
    h = harness
    owner_id, owner = h.user("owner@example.com")
    second_id, second = h.user("second@example.com")
    org_id = h.org(owner)
    # The sole super_admin cannot demote itself.
    r = add_member(h, owner, org_id, "owner@example.com", "admin")
    assert r.status_code == 409 and "super_admin" in r.json()["error"]
    assert role_of(h, org_id, owner_id) == "super_admin"
    # With two, one may step down or demote the other; the last one stays.
    assert add_member(h, owner, org_id, "second@example.com", "super_admin").status_code == 200
    assert add_member(h, second, org_id, "owner@example.com", "read").status_code == 200
    assert role_of(h, org_id, owner_id) == "read"
    assert add_member(h, second, org_id, "second@example.com", "write").status_code == 409
    assert role_of(h, org_id, second_id) == "super_admin"
    # The demoted one has no say any more.
    assert add_member(h, owner, org_id, "second@example.com", "read").status_code == 403


# -- keys: list, revoke, expire ---------------------------------------------------------------


def test_keys_are_listed_without_their_secret(harness: Harness) -> None:
    h = harness
    _, owner = h.user("owner@example.com")
    org_id = h.org(owner)
    made = new_key(h, owner, name="ci", mode="upload", limited_to_orgs=[org_id])
    r = h.client.get("/apikey", headers=h.auth(owner))
    assert r.status_code == 200
    keys = r.json()
    assert owner not in r.text and made["key"] not in r.text
    assert all("key" not in k and "key_hash" not in k for k in keys)
    listed = {k["id"]: k for k in keys}
    assert len(listed) == 2 and made["id"] in listed
    assert listed[made["id"]]["mode"] == "upload"
    assert listed[made["id"]]["limited_to_orgs"] == [org_id]
    # A key limited to an org manages only keys that see no more than it does.
    narrow = listed[made["id"]]
    org_all = new_key(h, owner, name="org", limited_to_orgs=[org_id])
    seen = h.client.get("/apikey", headers=h.auth(org_all["key"])).json()
    assert {k["id"] for k in seen} == {narrow["id"], org_all["id"]}
    owners_key = next(k["id"] for k in keys if k["id"] != made["id"])
    hidden = h.client.delete(f"/apikey/{owners_key}", headers=h.auth(org_all["key"]))
    missing = h.client.delete(f"/apikey/{uuid.uuid4()}", headers=h.auth(org_all["key"]))
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()
    # Another user's key is not yours to list or revoke.
    _, other = h.user("other@example.com")
    assert made["id"] not in {
        k["id"] for k in h.client.get("/apikey", headers=h.auth(other)).json()
    }
    assert h.client.delete(f"/apikey/{made['id']}", headers=h.auth(other)).status_code == 404
    # A key of a lower mode cannot manage keys.
    read_key = new_key(h, owner, mode="read")["key"]
    assert h.client.get("/apikey", headers=h.auth(read_key)).status_code == 403


def test_a_revoked_key_gets_401_at_once_on_every_process(
    harness: Harness, db_url: str, tmp_path: Path
) -> None:
    h = harness
    _, owner = h.user("owner@example.com")
    org_id = h.org(owner)
    made = new_key(h, owner, mode="read")
    with running(db_url, tmp_path / "data2") as other:
        # Both processes accept the key, then one revokes it.
        for side in (h, other):
            assert (
                side.client.get("/organization", headers=side.auth(made["key"])).status_code == 200
            )
        r = other.client.delete(f"/apikey/{made['id']}", headers=other.auth(owner))
        assert r.status_code == 200 and r.json()["id"] == made["id"]
        for side in (other, h):
            for path in (
                "/organization",
                f"/statistics/org/{org_id}/?from=2024-05-01&to=2024-05-02",
            ):
                r = side.client.get(path, headers=side.auth(made["key"]))
                assert r.status_code == 401, (path, r.text)
        assert h.client.delete(f"/apikey/{made['id']}", headers=h.auth(owner)).status_code == 404
    listed = {k["id"] for k in h.client.get("/apikey", headers=h.auth(owner)).json()}
    assert made["id"] not in listed
    # The revoking key itself is untouched, and a key may revoke itself.
    me = next(iter(listed))
    assert h.client.delete(f"/apikey/{me}", headers=h.auth(owner)).status_code == 200
    assert h.client.get("/organization", headers=h.auth(owner)).status_code == 401


def test_a_key_can_expire(harness: Harness) -> None:
    h = harness
    _, owner = h.user("owner@example.com")
    expires = h.clock.now() + timedelta(days=7)
    made = new_key(h, owner, mode="read", expires_at=expires.isoformat())
    assert made["expires_at"].startswith(expires.date().isoformat())
    listed = {k["id"]: k for k in h.client.get("/apikey", headers=h.auth(owner)).json()}
    assert listed[made["id"]]["expires_at"] == made["expires_at"]
    assert listed[made["id"]]["expired"] is False
    assert h.client.get("/organization", headers=h.auth(made["key"])).status_code == 200
    h.clock.advance(timedelta(days=7) - timedelta(seconds=1))
    assert h.client.get("/organization", headers=h.auth(made["key"])).status_code == 200
    h.clock.advance(timedelta(seconds=1))
    assert h.client.get("/organization", headers=h.auth(made["key"])).status_code == 401
    listed = {k["id"]: k for k in h.client.get("/apikey", headers=h.auth(owner)).json()}
    assert listed[made["id"]]["expired"] is True
    now = h.clock.now()
    for bad in (
        (now - timedelta(seconds=1)).isoformat(),
        now.replace(tzinfo=None).isoformat(),
        "tomorrow",
        "9" * 5000,
        12345,
    ):
        r = h.client.post(
            "/apikey", json={"mode": "read", "expires_at": bad}, headers=h.auth(owner)
        )
        assert r.status_code == 400 and "expires_at" in r.json()["error"], bad


# -- failed authentications per address -------------------------------------------------------


def test_failed_authentications_are_limited_per_address(harness: Harness) -> None:
    h = harness
    _, owner = h.user("owner@example.com")
    limit = h.rt.settings.auth_failure_limit
    attacker = {"x-forwarded-for": "198.51.100.7"}

    def get(
        key: str | None, headers: dict[str, str], path: str = "/organization"
    ) -> httpx.Response:
        auth = {"authorization": key} if key else {}
        return h.client.get(path, headers={**headers, **auth})

    # A missing key guesses nothing and is not counted.
    for _ in range(limit + 5):
        assert get(None, attacker).status_code == 401
    for n in range(limit):
        assert get(f"otm_wrong_{n}", attacker).status_code == 401, n
    for path in ("/organization", "/statistics/user/?from=2024-05-01&to=2024-05-02", "/apikey"):
        r = get("otm_wrong", attacker, path)
        assert r.status_code == 429, path
        assert r.json() == {"error": r.json()["error"], "status": "KO"}
        assert 0 < int(r.headers["retry-after"]) <= h.rt.settings.auth_failure_window_seconds
    # A valid key from the same address is never refused; other addresses are not affected.
    assert get(owner, attacker).status_code == 200
    assert get("otm_wrong", {"x-forwarded-for": "198.51.100.8"}).status_code == 401
    # The window ends and the address may try again.
    h.clock.advance(timedelta(seconds=h.rt.settings.auth_failure_window_seconds))
    assert get("otm_wrong", attacker).status_code == 401


def test_the_failed_auth_limit_is_shared_by_processes(
    harness: Harness, db_url: str, tmp_path: Path
) -> None:
    h = harness
    limit = h.rt.settings.auth_failure_limit
    attacker = {"x-forwarded-for": "198.51.100.9", "authorization": "otm_wrong"}
    with running(db_url, tmp_path / "data2") as other:
        # Failures alternate between two processes on one database: they add up.
        for n in range(limit):
            side = (h, other)[n % 2]
            assert side.client.get("/organization", headers=attacker).status_code == 401, n
        for side in (h, other):
            assert side.client.get("/organization", headers=attacker).status_code == 429


# -- members invited before they have an account ----------------------------------------------


def test_an_unknown_address_is_invited_and_answered_like_a_known_one(harness: Harness) -> None:
    h = harness
    _, owner = h.user("owner@example.com")
    org_id = h.org(owner)
    h.user("known@example.com")
    known = add_member(h, owner, org_id, "known@example.com", "write")
    unknown = add_member(h, owner, org_id, "Unknown@Example.com", "write")
    assert known.status_code == unknown.status_code == 200
    assert known.json() == {**unknown.json(), "email": "known@example.com"}
    assert set(known.json()) == set(unknown.json())
    assert "user_id" not in unknown.json()
    # An invitation is not a membership until that user exists ...
    invited = h.rt.writer.run_blocking(
        lambda conn: conn.execute(select(s.org_invitations.c.email, s.org_invitations.c.role)).all()
    )
    assert [tuple(r) for r in invited] == [("unknown@example.com", "write")]
    # ... re-inviting changes its role, and the user created with that address is a member.
    assert add_member(h, owner, org_id, "unknown@example.com", "upload").status_code == 200
    user_id, key = h.user("unknown@example.com")
    assert role_of(h, org_id, user_id) == "upload"
    orgs = h.client.get("/organization", headers=h.auth(key)).json()
    assert [(o["id"], o["role"]) for o in orgs] == [(org_id, "upload")]
    leftover = h.rt.writer.run_blocking(lambda conn: conn.execute(select(s.org_invitations)).all())
    assert leftover == []


def test_an_admin_cannot_lower_a_super_admin_invitation(harness: Harness) -> None:
    h = harness
    _, owner = h.user("owner@example.com")
    _, admin = h.user("admin@example.com")
    org_id = h.org(owner)
    assert add_member(h, owner, org_id, "admin@example.com", "admin").status_code == 200
    assert add_member(h, owner, org_id, "heir@example.com", "super_admin").status_code == 200
    assert add_member(h, admin, org_id, "heir@example.com", "read").status_code == 403
    user_id, _ = h.user("heir@example.com")
    assert role_of(h, org_id, user_id) == "super_admin"


# -- several worker processes -----------------------------------------------------------------


def test_revocation_and_limits_hold_across_workers(db_url: str, tmp_path: Path) -> None:
    owner = create_user(db_url)
    limit = 10
    env = {"OTAMETER_AUTH_FAILURE_LIMIT": str(limit)}
    with LiveServer(db_url, tmp_path / "data", workers=2, env=env) as server:

        def get(key: str, path: str = "/organization") -> httpx.Response:
            # A new connection each time, so that requests spread over the workers.
            return httpx.get(server.url + path, headers={"authorization": key}, timeout=30)

        made = httpx.post(
            server.url + "/apikey",
            json={"name": "leaked", "mode": "read"},
            headers={"authorization": owner},
            timeout=30,
        ).json()
        assert all(get(made["key"]).status_code == 200 for _ in range(6))
        r = httpx.delete(
            f"{server.url}/apikey/{made['id']}", headers={"authorization": owner}, timeout=30
        )
        assert r.status_code == 200
        assert [get(made["key"]).status_code for _ in range(8)] == [401] * 8
        # Those 8 failures and 2 more reach the limit of 10 for this address, whichever
        # worker took them; the next failure is refused.
        assert [get("otm_wrong").status_code for _ in range(2)] == [401, 401]
        r = get("otm_wrong")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert get(owner).status_code == 200


def test_user_create_on_the_command_line_takes_up_invitations(db_url: str, tmp_path: Path) -> None:
    with running(db_url, tmp_path / "data") as h:
        _, owner = h.user("owner@example.com")
        org_id = h.org(owner)
        assert add_member(h, owner, org_id, "late@example.com", "admin").status_code == 200
    line = otameter("user", "create", "--email", "Late@Example.com", "--db", db_url)
    created = json.loads(line.strip().splitlines()[-1])
    with running(db_url, tmp_path / "data") as h:
        orgs = h.client.get("/organization", headers=h.auth(created["api_key"])).json()
        assert [(o["id"], o["role"]) for o in orgs] == [(org_id, "admin")]


def test_the_limits_are_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings.from_env()
    assert defaults.auth_failure_limit > 0 and defaults.signin_failure_limit > 0
    monkeypatch.setenv("OTAMETER_AUTH_FAILURE_LIMIT", "5")
    monkeypatch.setenv("OTAMETER_AUTH_FAILURE_WINDOW_SECONDS", "60")
    monkeypatch.setenv("OTAMETER_SIGNIN_FAILURE_LIMIT", "0")
    settings = Settings.from_env()
    assert (settings.auth_failure_limit, settings.auth_failure_window_seconds) == (5, 60)
    assert settings.signin_failure_limit == 0
    for bad in ("-1", "many"):
        monkeypatch.setenv("OTAMETER_AUTH_FAILURE_LIMIT", bad)
        with pytest.raises(ValueError, match="OTAMETER_AUTH_FAILURE_LIMIT"):
            Settings.from_env()


def test_a_limit_of_zero_turns_the_limit_off(db_url: str, tmp_path: Path) -> None:
    with running(db_url, tmp_path / "data") as h:
        h.rt.auth_failures.limit = Limit(0, 300)
        wrong = {"authorization": "otm_wrong", "x-forwarded-for": "198.51.100.20"}
        statuses = {h.client.get("/organization", headers=wrong).status_code for _ in range(40)}
        assert statuses == {401}


def test_two_super_admins_demoting_each_other_leave_one(postgres_url: str, tmp_path: Path) -> None:
    # On PostgreSQL writers of several processes run at once: a demotion locks the org's row,
    # so a concurrent demotion waits for it and then sees that only one super_admin is left.
    # (SQLite has one writer at a time for the whole database.)
    from sqlalchemy import text, update

    from otameter.storage.db import create_db_engine

    with running(postgres_url, tmp_path / "data") as h:
        a_id, a_key = h.user("a@example.com")
        b_id, _ = h.user("b@example.com")
        org_id = h.org(a_key)
        assert add_member(h, a_key, org_id, "b@example.com", "super_admin").status_code == 200
        other = create_db_engine(postgres_url)
        try:
            with other.connect() as conn:
                # Another process demotes A while holding the org's row, as the route does.
                tx = conn.begin()
                conn.execute(select(s.orgs.c.id).where(s.orgs.c.id == org_id).with_for_update())
                m = s.org_members.c
                conn.execute(
                    update(s.org_members)
                    .where(m.org_id == org_id, m.user_id == a_id)
                    .values(role="read")
                )
                result: list[httpx.Response] = []
                worker = threading.Thread(
                    target=lambda: result.append(
                        add_member(h, a_key, org_id, "b@example.com", "read")
                    )
                )
                worker.start()
                # Readiness wait (not a timing assertion): A's request waits for the row lock.
                with other.connect() as probe:
                    for _ in range(600):
                        waiting = probe.scalar(
                            text(
                                "SELECT count(*) FROM pg_stat_activity"
                                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                            )
                        )
                        if waiting:
                            break
                        time.sleep(0.05)
                    assert waiting, "the demotion never waited for the org's row"
                tx.commit()
                worker.join(60)
        finally:
            other.dispose()
        # A is no longer a super_admin when its request goes on: it may not demote B.
        (answer,) = result
        assert answer.status_code == 403, answer.text
        assert role_of(h, org_id, b_id) == "super_admin"
        assert role_of(h, org_id, a_id) == "read"
