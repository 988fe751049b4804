"""Request bodies of the management API: what each refuses, in which words, and what it takes.

Each table is the API's answer to bad bodies (missing, wrong type, empty, blank, too long,
control character, not one of the choices, null, several faults at once: the first in reading
order is named), and to odd bodies it accepts. The answers are the API's contract: handlers read
their bodies through the request models (``otameter.models``) and must answer exactly these.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.harness import Harness, zip_bytes

APP = "com.example.app"


def required(name: str) -> str:
    return f"'{name}' is required and must be a non-empty string"


def too_long(name: str, most: int) -> str:
    return f"'{name}' must be at most {most} characters"


def control(name: str) -> str:
    return f"'{name}' must not contain control characters"


def refused(status: int, message: str) -> tuple[int, dict[str, str]]:
    return status, {"error": message, "status": "KO"}


@pytest.fixture
def owner(harness: Harness) -> tuple[str, str]:
    """An unrestricted key of mode all, and its org holding ``APP``."""
    _, key = harness.user("owner@example.com")
    org_id = harness.org(key)
    harness.app(key, org_id, APP)
    return key, org_id


# -- POST /apikey ------------------------------------------------------------------------------

MODES = "'mode' must be one of read, upload, write, all"
ORGS = "'limited_to_orgs' must be a list of ids"
APPS = "'limited_to_apps' must be a list of ids"
EXPIRY = "'expires_at' must be a future ISO 8601 date-time with a time zone, or null"


def test_new_api_key_refusals(harness: Harness, owner: tuple[str, str]) -> None:
    key, _ = owner
    auth = harness.auth(key)
    for sent, message in (
        ({"name": "\t"}, control("name")),
        ({"name": "a\nb"}, control("name")),
        ({"name": "a\u0001b"}, control("name")),
        ({"name": ["\u0002"]}, "'name[0]' must not contain control characters"),
        ({"mode": None}, MODES),
        ({"mode": ""}, MODES),
        ({"mode": " "}, MODES),
        ({"mode": "owner"}, MODES),
        ({"mode": "READ"}, MODES),
        ({"mode": "read "}, MODES),
        ({"mode": "\tread"}, MODES),
        ({"mode": 5}, MODES),
        ({"mode": ["read"]}, MODES),
        ({"limited_to_orgs": "abc"}, ORGS),
        ({"limited_to_orgs": 5}, ORGS),
        ({"limited_to_orgs": True}, ORGS),
        ({"limited_to_orgs": {"a": 1}}, ORGS),
        ({"limited_to_orgs": [""]}, ORGS),
        ({"limited_to_orgs": [5]}, ORGS),
        ({"limited_to_orgs": [None]}, ORGS),
        ({"limited_to_orgs": ["x", ["y"]]}, ORGS),
        ({"limited_to_apps": "abc"}, APPS),
        ({"limited_to_apps": [""]}, APPS),
        ({"limited_to_apps": 1.5}, APPS),
        ({"expires_at": 5}, EXPIRY),
        ({"expires_at": True}, EXPIRY),
        ({"expires_at": []}, EXPIRY),
        ({"expires_at": ""}, EXPIRY),
        ({"expires_at": "soon"}, EXPIRY),
        ({"expires_at": "2030-01-01T00:00:00"}, EXPIRY),  # no time zone
        ({"expires_at": "2024-01-01T00:00:00+00:00"}, EXPIRY),  # past
        ({"expires_at": "2024-05-15T12:00:00+00:00"}, EXPIRY),  # now: not future
        ({"expires_at": "2030-01-01T00:00:00.000000000000000000+00:00"}, EXPIRY),  # > 40
        ({"expires_at": "0001-01-01T00:00:00+00:00"}, EXPIRY),
        ({"expires_at": " 2030-01-01T00:00:00+00:00"}, EXPIRY),
        # The first faulty field in reading order: name, mode, orgs, apps, expiry.
        ({"expires_at": 5, "name": "\t", "mode": "x"}, control("name")),
        ({"expires_at": 5, "limited_to_orgs": 5, "mode": "x"}, MODES),
        ({"limited_to_apps": 5, "limited_to_orgs": 5}, ORGS),
        ({"expires_at": 5, "limited_to_apps": 5}, APPS),
    ):  # fmt: skip
        r = harness.client.post("/apikey", json=sent, headers=auth)
        assert (r.status_code, r.json()) == refused(400, message), sent
    r = harness.client.post("/apikey", content=b"[]", headers=auth)
    assert (r.status_code, r.json()) == refused(400, "Request body must be a JSON object")
    r = harness.client.post("/apikey", content=b"{", headers=auth)
    assert (r.status_code, r.json()) == refused(400, "Request body must be valid JSON")


def test_new_api_key_accepted_bodies(harness: Harness, owner: tuple[str, str]) -> None:
    key, org_id = owner
    auth = harness.auth(key)
    everything = {"limited_to_orgs": [], "limited_to_apps": [], "expires_at": None}
    for sent, expected in (
        ({}, {"name": "", "mode": "read"}),
        ({"name": None, "mode": "write"}, {"name": "", "mode": "write"}),
        ({"name": ""}, {"name": ""}),
        ({"name": "  ci  "}, {"name": "  ci  "}),
        ({"name": 5}, {"name": "5"}),
        ({"name": True}, {"name": "True"}),
        ({"name": [1, "a"]}, {"name": "[1, 'a']"}),
        ({"name": "n" * 300}, {"name": "n" * 200}),
        ({"unknown": 1, "mode": "all"}, {"mode": "all"}),
        # Any false value means no limit.
        ({"limited_to_orgs": None, "limited_to_apps": False}, {}),
        ({"limited_to_orgs": 0, "limited_to_apps": ""}, {}),
        ({"limited_to_orgs": {}, "limited_to_apps": 0.0}, {}),
        ({"limited_to_orgs": [org_id, org_id]}, {"limited_to_orgs": [org_id]}),
        ({"limited_to_apps": [APP]}, {"limited_to_apps": [APP]}),
        (
            {"expires_at": "2030-01-01T00:00:00+02:00"},
            {"expires_at": "2029-12-31T22:00:00+00:00"},
        ),
        # Python's ISO 8601 reading: the basic format and a space between date and time.
        ({"expires_at": "20300101T000000Z"}, {"expires_at": "2030-01-01T00:00:00+00:00"}),
        ({"expires_at": "2030-01-01 00:00Z"}, {"expires_at": "2030-01-01T00:00:00+00:00"}),
    ):
        r = harness.client.post("/apikey", json=sent, headers=auth)
        assert r.status_code == 201, (sent, r.text)
        got = r.json()
        want = {**everything, "name": "", "mode": "read", **expected}
        assert {k: got[k] for k in want} == want, sent


def test_new_api_key_body_is_checked_before_the_callers_rights(
    harness: Harness, owner: tuple[str, str]
) -> None:
    key, _ = owner
    r = harness.client.post("/apikey", json={"mode": "read"}, headers=harness.auth(key))
    reader = harness.auth(r.json()["key"])
    r = harness.client.post("/apikey", json={"mode": "root"}, headers=reader)
    assert (r.status_code, r.json()) == refused(400, MODES)
    r = harness.client.post("/apikey", json={"mode": "read"}, headers=reader)
    assert r.status_code == 403, r.text
    # An org the key cannot see: 404 after the body is read.
    r = harness.client.post(
        "/apikey", json={"limited_to_orgs": [str(uuid.uuid4())]}, headers=harness.auth(key)
    )
    assert (r.status_code, r.json()) == refused(404, "Organization not found")


# -- POST /bundle, JSON: an external bundle ----------------------------------------------------

URL = "'external_url' must be an absolute http(s) URL"
CHECKSUM = "'checksum' must be the zip's SHA-256 as 64 hex characters"
SIZE = "'size' must be a non-negative integer"
GOOD_URL = "https://cdn.example.com/b.zip"


def test_external_bundle_refusals(harness: Harness, owner: tuple[str, str]) -> None:
    key, _ = owner
    auth = harness.auth(key)
    good = {"app_id": APP, "version": "1.0.0", "external_url": GOOD_URL}
    for changes, message in (
        ({"app_id": None}, required("app_id")),
        ({"app_id": ""}, required("app_id")),
        ({"app_id": "   "}, required("app_id")),
        ({"app_id": 5}, required("app_id")),
        ({"app_id": ["x"]}, required("app_id")),
        ({"app_id": "a" * 256}, too_long("app_id", 255)),
        ({"app_id": APP + "\t"}, control("app_id")),
        ({"app_id": "\u007f" + APP}, control("app_id")),
        ({"version": None}, required("version")),
        ({"version": " "}, required("version")),
        ({"version": 1}, required("version")),
        ({"version": "v" * 256}, too_long("version", 255)),
        ({"version": "1.0\n"}, control("version")),
        ({"external_url": None}, required("external_url")),
        ({"external_url": ""}, required("external_url")),
        ({"external_url": 5}, required("external_url")),
        ({"external_url": "https://e.com/" + "x" * 2035}, too_long("external_url", 2048)),
        ({"external_url": "https://e.com/\t"}, control("external_url")),
        ({"external_url": "ftp://e.com/b.zip"}, URL),
        ({"external_url": "HTTPS://e.com/b.zip"}, URL),
        ({"external_url": "https://"}, URL),
        ({"external_url": "https:///b.zip"}, URL),
        ({"external_url": "https:// e.com"}, URL),
        ({"external_url": "e.com/b.zip"}, URL),
        ({"checksum": 5}, CHECKSUM),
        ({"checksum": ""}, CHECKSUM),
        ({"checksum": "abc"}, CHECKSUM),
        ({"checksum": "g" * 64}, CHECKSUM),
        ({"checksum": "a" * 65}, CHECKSUM),
        ({"checksum": ["a" * 64]}, CHECKSUM),
        # A final line break (was stored on SQLite, a 500 on PostgreSQL: the column holds 64).
        ({"checksum": "a" * 64 + "\n"}, control("checksum")),
        ({"size": None}, SIZE),
        ({"size": -1}, SIZE),
        ({"size": 1.5}, SIZE),
        ({"size": True}, SIZE),
        ({"size": "5"}, SIZE),
        ({"size": 2**63}, SIZE),
        ({"size": 1.0}, SIZE),
        ({"channel": "\t"}, control("channel")),
        ({"channel": "beta\r"}, control("channel")),
        # The first faulty field in reading order.
        ({"version": 5, "app_id": 5}, required("app_id")),
        ({"external_url": "ftp://x", "version": ""}, required("version")),
        ({"checksum": 5, "external_url": "ftp://x"}, URL),
        ({"size": -1, "checksum": 5}, CHECKSUM),
        ({"channel": "\t", "size": -1}, SIZE),
        ({"channel": "\t", "checksum": "x"}, CHECKSUM),
        # The body before the app: an unknown app with a faulty body is a faulty body.
        ({"app_id": "com.example.none", "size": -1}, SIZE),
    ):  # fmt: skip
        body = {**good, **changes}
        for name, value in changes.items():
            if value is None and name in ("app_id", "version", "external_url"):
                del body[name]  # missing
        r = harness.client.post("/bundle", json=body, headers=auth)
        assert (r.status_code, r.json()) == refused(400, message), changes
    for name, value in (("app_id", None), ("version", None), ("external_url", None)):
        r = harness.client.post("/bundle", json={**good, name: value}, headers=auth)
        assert (r.status_code, r.json()) == refused(400, required(name)), name
    r = harness.client.post("/bundle", json=[good], headers=auth)
    assert (r.status_code, r.json()) == refused(400, "Request body must be a JSON object")
    r = harness.client.post(
        "/bundle", json={**good, "app_id": "com.example.none"}, headers=harness.auth(key)
    )
    assert (r.status_code, r.json()) == refused(404, "App not found")
    # Nothing was stored.
    r = harness.client.get(f"/bundle?app_id={APP}", headers=auth)
    assert r.json() == []


def test_external_bundle_accepted_bodies(harness: Harness, owner: tuple[str, str]) -> None:
    key, _ = owner
    auth = harness.auth(key)
    for number, (changes, expected) in enumerate(
        (
            ({}, {"size": 0, "checksum": None, "channel": "production"}),
            ({"unknown": [1]}, {}),
            ({"app_id": f"  {APP} "}, {"app_id": APP}),
            ({"external_url": f" {GOOD_URL} "}, {"external_url": GOOD_URL}),
            ({"external_url": "http://e.com"}, {"external_url": "http://e.com"}),
            ({"checksum": "A" * 64}, {"checksum": "a" * 64}),
            ({"checksum": None}, {"checksum": None}),
            ({"size": 0}, {"size": 0}),
            ({"size": 12345}, {"size": 12345}),
            ({"channel": None}, {"channel": "production"}),
            ({"channel": ""}, {"channel": "production"}),
            ({"channel": " beta "}, {"channel": " beta "}),
            ({"channel": 5}, {"channel": "5"}),
            ({"channel": "c" * 300}, {"channel": "c" * 255}),
        )
    ):
        version = f" 1.0.{number} "
        body = {"app_id": APP, "version": version, "external_url": GOOD_URL, **changes}
        r = harness.client.post("/bundle", json=body, headers=auth)
        assert r.status_code == 201, (changes, r.text)
        want = {"app_id": APP, "version": version.strip(), "external_url": GOOD_URL, **expected}
        assert {k: r.json()[k] for k in want} == want, changes


# -- POST /bundle, multipart: a stored zip -----------------------------------------------------


def _multipart(parts: list[tuple[str, str | bytes]]) -> tuple[bytes, str]:
    """A multipart body with its parts in this order; a bytes value is the zip file."""
    boundary = "otameter-test-boundary"
    out = bytearray()
    for name, value in parts:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, bytes):
            out += f'Content-Disposition: form-data; name="{name}"; filename="b.zip"\r\n'.encode()
            out += b"Content-Type: application/zip\r\n\r\n" + value + b"\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += value.encode() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def test_bundle_form_refusals(harness: Harness, owner: tuple[str, str]) -> None:
    key, _ = owner
    zipped = zip_bytes()
    for parts, message in (
        ([("app_id", ""), ("version", "1.0.0")], required("app_id")),
        ([("app_id", "  "), ("version", "1.0.0")], required("app_id")),
        ([("app_id", "a" * 256), ("version", "1.0.0")], too_long("app_id", 255)),
        ([("app_id", APP + "\t"), ("version", "1.0.0")], control("app_id")),
        ([("app_id", APP), ("version", "")], required("version")),
        ([("app_id", APP), ("version", "\u3000")], required("version")),
        ([("app_id", APP), ("version", "v" * 256)], too_long("version", 255)),
        ([("app_id", APP), ("version", "1.0\u0085")], control("version")),
        # Every text field of the form is one line, named or not.
        ([("app_id", APP), ("version", "1.0.0"), ("channel", "a\rb")], control("channel")),
        ([("note", "\u0001"), ("app_id", APP), ("version", "1.0.0")], control("note")),
        # Control characters first, in the form's order, then app_id, then version.
        ([("version", "1\t"), ("app_id", "")], control("version")),
        ([("version", ""), ("app_id", "")], required("app_id")),
        ([("version", "v" * 256), ("app_id", " ")], required("app_id")),
        # The form before the app.
        ([("app_id", "com.example.none"), ("version", "")], required("version")),
        ([("app_id", APP)], "'app_id' and 'version' must come before 'file' in the form"),
    ):  # fmt: skip
        body, content_type = _multipart([*parts, ("file", zipped)])
        r = harness.client.post(
            "/bundle", content=body, headers={**harness.auth(key), "content-type": content_type}
        )
        assert (r.status_code, r.json()) == refused(400, message), parts
    # Fields after the file: read once the zip is in, and the stored upload is removed.
    for parts, message in (
        ([("channel", "\u0001")], control("channel")),
        ([("note", "x\ty")], control("note")),
    ):
        body, content_type = _multipart(
            [("app_id", APP), ("version", "2.0.0"), ("file", zipped), *parts]
        )
        r = harness.client.post(
            "/bundle", content=body, headers={**harness.auth(key), "content-type": content_type}
        )
        assert (r.status_code, r.json()) == refused(400, message), parts
    assert harness.client.get(f"/bundle?app_id={APP}", headers=harness.auth(key)).json() == []
    assert list((harness.data_dir / "bundles").rglob("*.zip")) == []


def test_bundle_form_accepted_bodies(harness: Harness, owner: tuple[str, str]) -> None:
    key, _ = owner
    zipped = zip_bytes()
    for number, (parts, after, expected) in enumerate(
        (
            ([], [], {"channel": "production"}),
            ([("channel", "")], [], {"channel": "production"}),
            ([("channel", " beta ")], [], {"channel": "beta"}),
            ([], [("channel", "late")], {"channel": "late"}),
            ([("unknown", "x")], [("other", "y")], {"channel": "production"}),
        )
    ):
        version = f" 3.0.{number}\u00a0"
        body, content_type = _multipart(
            [("app_id", f" {APP} "), ("version", version), *parts, ("file", zipped), *after]
        )
        r = harness.client.post(
            "/bundle", content=body, headers={**harness.auth(key), "content-type": content_type}
        )
        assert r.status_code == 201, (parts, after, r.text)
        want = {"app_id": APP, "version": version.strip(), "size": len(zipped), **expected}
        assert {k: r.json()[k] for k in want} == want, (parts, after)


# -- POST /channel -----------------------------------------------------------------------------

FLAGS = (
    "public",
    "allow_device_self_set",
    "allow_emulator",
    "allow_dev",
    "ios",
    "android",
    "electron",
    "disable_auto_update_under_native",
    "auto_rollback",
)
RULE = "'disable_auto_update' must be one of: none, major, minor, patch"
VERSION = "'version' must be a string"


def boolean(name: str) -> str:
    return f"'{name}' must be a boolean"


def test_channel_update_refusals(harness: Harness, owner: tuple[str, str]) -> None:
    key, _ = owner
    auth = harness.auth(key)
    good: dict[str, Any] = {"app_id": APP, "channel": "beta"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"app_id": None}, required("app_id")),
        ({"app_id": ""}, required("app_id")),
        ({"app_id": " \t "}, required("app_id")),
        ({"app_id": 5}, required("app_id")),
        ({"app_id": "a" * 256}, too_long("app_id", 255)),
        ({"app_id": APP + "\n"}, control("app_id")),
        ({"channel": None}, required("channel")),
        ({"channel": ""}, required("channel")),
        ({"channel": False}, required("channel")),
        ({"channel": "c" * 256}, too_long("channel", 255)),
        ({"channel": "be\tta"}, control("channel")),
        ({"version": 5}, VERSION),
        ({"version": True}, VERSION),
        ({"version": ["1.0.0"]}, VERSION),
        ({"version": {}}, VERSION),
        ({"version": "1.0\t"}, control("version")),
        ({"version": "\r"}, control("version")),
        ({"disable_auto_update": "sometimes"}, RULE),
        ({"disable_auto_update": ""}, RULE),
        ({"disable_auto_update": "Major"}, RULE),
        ({"disable_auto_update": "\tmajor"}, RULE),
        ({"disable_auto_update": 5}, RULE),
        ({"disable_auto_update": False}, RULE),
        ({"disable_auto_update": ["none"]}, RULE),
        # The first faulty field in reading order: app_id, channel, version, the flags, the rule.
        ({"channel": 5, "app_id": 5}, required("app_id")),
        ({"version": 5, "channel": ""}, required("channel")),
        ({"public": 1, "version": 5}, VERSION),
        ({"allow_dev": "x", "public": "x"}, boolean("public")),
        ({"auto_rollback": 0, "electron": 0}, boolean("electron")),
        ({"disable_auto_update": "x", "auto_rollback": "x"}, boolean("auto_rollback")),
        ({"disable_auto_update": 1, "disable_auto_update_under_native": 1},
         boolean("disable_auto_update_under_native")),
        # The body before the app.
        ({"app_id": "com.example.none", "ios": "yes"}, boolean("ios")),
    ]  # fmt: skip
    for flag in FLAGS:
        cases += [({flag: bad}, boolean(flag)) for bad in ("true", 1, 0, [], {"a": True}, "")]
    for changes, message in cases:
        body = {**good, **changes}
        for name, value in changes.items():
            if value is None:
                del body[name]  # missing
        r = harness.client.post("/channel", json=body, headers=auth)
        assert (r.status_code, r.json()) == refused(400, message), changes
    for name in ("app_id", "channel"):
        r = harness.client.post("/channel", json={**good, name: None}, headers=auth)
        assert (r.status_code, r.json()) == refused(400, required(name)), name
    r = harness.client.post("/channel", json=[good], headers=auth)
    assert (r.status_code, r.json()) == refused(400, "Request body must be a JSON object")
    r = harness.client.post("/channel", json={**good, "app_id": "com.example.none"}, headers=auth)
    assert (r.status_code, r.json()) == refused(404, "App not found")
    r = harness.client.post("/channel", json={**good, "version": "v" * 300}, headers=auth)
    assert (r.status_code, r.json()) == refused(404, f"Bundle {'v' * 300} not found for {APP}")
    assert harness.client.get(f"/channel?app_id={APP}", headers=auth).json() == []


def test_channel_update_accepted_bodies(harness: Harness, owner: tuple[str, str]) -> None:
    key, _ = owner
    auth = harness.auth(key)
    harness.upload(key, APP, "1.0.0", channel="production")

    def post(**body: Any) -> dict[str, Any]:
        r = harness.client.post("/channel", json={"app_id": APP, **body}, headers=auth)
        assert r.status_code == 200, (body, r.text)
        answer: dict[str, Any] = r.json()
        return answer

    created = post(channel=" beta ", version="1.0.0", unknown=[1], public=None, ios=None)
    # New: the defaults (null is absent); names stored stripped.
    assert created["channel"] == "beta"
    assert created["version"] == "1.0.0"
    defaults = {
        "public": True,
        "allow_device_self_set": False,
        "allow_emulator": True,
        "allow_dev": True,
        "ios": True,
        "android": True,
        "electron": True,
        "disable_auto_update_under_native": True,
        "auto_rollback": False,
        "disable_auto_update": "none",
    }
    assert {k: created[k] for k in defaults} == defaults
    changed = post(
        channel="beta",
        public=False,
        allow_dev=False,
        auto_rollback=True,
        disable_auto_update="major",
    )
    assert changed["version"] == "1.0.0"  # absent: kept
    assert (changed["public"], changed["allow_dev"], changed["auto_rollback"]) == (
        False,
        False,
        True,
    )
    assert changed["disable_auto_update"] == "major"
    # null flags, null rule and null version: kept as they are.
    kept = post(channel="beta", public=None, allow_dev=None, disable_auto_update=None, version=None)
    assert {k: kept[k] for k in defaults} == {k: changed[k] for k in defaults}
    assert kept["version"] == "1.0.0"
    # An empty version takes the bundle off the channel.
    assert post(channel="beta", version="")["version"] is None


def test_bundle_form_channel_is_at_most_255_characters(
    harness: Harness, owner: tuple[str, str]
) -> None:
    """A channel name longer than the column is refused on both engines, before the file or
    after it (nothing of the upload is kept)."""
    key, _ = owner
    zipped = zip_bytes()
    headers = harness.auth(key)
    for before, after in (([("channel", "c" * 256)], []), ([], [("channel", "c" * 256)])):
        body, content_type = _multipart(
            [("app_id", APP), ("version", "4.0.0"), *before, ("file", zipped), *after]
        )
        r = harness.client.post(
            "/bundle", content=body, headers={**headers, "content-type": content_type}
        )
        assert (r.status_code, r.json()) == refused(400, too_long("channel", 255))
    assert harness.client.get(f"/bundle?app_id={APP}", headers=headers).json() == []
    assert list((harness.data_dir / "bundles").rglob("*.zip")) == []
    body, content_type = _multipart(
        [("app_id", APP), ("version", "4.0.0"), ("channel", "c" * 255), ("file", zipped)]
    )
    r = harness.client.post(
        "/bundle", content=body, headers={**headers, "content-type": content_type}
    )
    assert r.status_code == 201, r.text
    assert r.json()["channel"] == "c" * 255


def test_the_document_describes_the_bodies_from_the_models(sqlite_harness: Harness) -> None:
    doc = sqlite_harness.client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def body(path: str, media: str = "application/json") -> dict[str, Any]:
        schema: dict[str, Any] = doc["paths"][path]["post"]["requestBody"]["content"][media][
            "schema"
        ]
        name = schema["$ref"].rsplit("/", 1)[1]
        described: dict[str, Any] = schemas[name]
        return described

    key = body("/apikey")
    assert list(key["properties"]) == [
        "name",
        "mode",
        "limited_to_orgs",
        "limited_to_apps",
        "expires_at",
    ]
    assert key["properties"]["name"] == {"type": "string", "default": None}
    assert key["properties"]["mode"]["enum"] == ["all", "read", "upload", "write"]
    external = body("/bundle")
    assert external["required"] == ["app_id", "version", "external_url"]
    assert external["properties"]["size"]["maximum"] == 2**63 - 1
    form = body("/bundle", "multipart/form-data")
    assert form["required"] == ["app_id", "version", "file"]
    assert form["properties"]["channel"]["maxLength"] == 255
    channel = body("/channel")
    assert channel["required"] == ["app_id", "channel"]
    assert set(channel["properties"]) == {
        "app_id",
        "channel",
        "version",
        *FLAGS,
        "disable_auto_update",
    }
    assert {"type": "null"} in channel["properties"]["public"]["anyOf"]


MINE = [("app_id", "com.mine.app"), ("version", "1.0.0")]


def test_bundle_form_cannot_name_another_app_after_the_file(harness: Harness) -> None:
    """The upload is authorized from the fields before the file: given again after it,
    ``app_id`` or ``version`` may not change, or a key could upload into an app of an org it
    cannot see."""
    _, mine = harness.user("mine@example.com")
    harness.app(mine, harness.org(mine), "com.mine.app")
    _, theirs = harness.user("theirs@example.com")
    harness.app(theirs, harness.org(theirs), "com.theirs.app")
    changed = "'app_id' and 'version' must not change after 'file' in the form"
    for after in (
        [("app_id", "com.theirs.app")],
        [("version", "9.9.9")],
        [("app_id", " com.mine.app")],
    ):
        body, content_type = _multipart(
            [("app_id", "com.mine.app"), ("version", "1.0.0"), ("file", zip_bytes()), *after]
        )
        r = harness.client.post(
            "/bundle", content=body, headers={**harness.auth(mine), "content-type": content_type}
        )
        assert (r.status_code, r.json()) == refused(400, changed), after
    for key, app_id in ((mine, "com.mine.app"), (theirs, "com.theirs.app")):
        r = harness.client.get(f"/bundle?app_id={app_id}", headers=harness.auth(key))
        assert r.json() == []
    assert list((harness.data_dir / "bundles").rglob("*.zip")) == []
    # The same values again change nothing.
    body, content_type = _multipart([*MINE, ("file", zip_bytes()), *MINE])
    r = harness.client.post(
        "/bundle", content=body, headers={**harness.auth(mine), "content-type": content_type}
    )
    assert r.status_code == 201, r.text
    assert r.json()["app_id"] == "com.mine.app"
