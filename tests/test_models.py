"""The models (otameter.models): the shapes every API shares are defined once, handlers decode
into the models with the API's own error messages, and the models agree with the code that
fills them."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otameter import auth, protocol
from otameter.cli import channels as cli_channels
from otameter.models import management, plugin, shapes, statistics
from otameter.releases import RELEASE_ROW_FIELDS
from tests.harness import Harness
from tests.test_protocol import ANDROID_BODY, DEVICE_ANDROID, body, stats_event

SRC = Path(__file__).parent.parent / "src" / "otameter"


def _sources() -> dict[Path, str]:
    return {
        path: path.read_text()
        for path in SRC.rglob("*.py")
        # A migration keeps the values of its day: it must not follow today's code.
        if "migrations" not in path.parts
    }


def test_shared_shapes_are_written_once() -> None:
    sources = _sources()
    shapes_file = SRC / "models" / "shapes.py"
    for literal in (
        shapes.APP_ID_CORE,
        shapes.UUID_CORE,
        r"(?:0|[1-9][0-9]*)",  # semver's numeric identifier
        '"ios", "android", "electron"',
        "datetime.fromtimestamp(ms / 1000, UTC).isoformat()",
    ):
        holders = [path for path, text in sources.items() if literal in text]
        assert holders == [shapes_file], (literal, holders)
    # Nor in another spelling: no module compiles its own app-id or UUID pattern.
    for path, text in sources.items():
        if path != shapes_file:
            assert not re.search(r"\[a-z0-9\]\+\(\\\.\[", text), path
            assert "{8}-[0-9a-f" not in text.lower(), path


@pytest.mark.parametrize(
    "value",
    ["com.example.app", "A1.b_c-d", "com.example", "com", ".com", "com.", "com..x", "cöm.x",
     "com.exa mple", "com.example\n", "", "x" * 256 + ".y"],
)  # fmt: skip
def test_the_app_id_type_is_the_protocols_rule(value: str) -> None:
    by_protocol = bool(shapes.APP_ID_RE.fullmatch(value)) and len(value) <= shapes.MAX_APP_ID
    try:
        msgspec.convert(value, shapes.AppId)
    except msgspec.ValidationError:
        by_model = False
    else:
        by_model = True
    assert by_model == by_protocol


def test_the_update_decoder_is_the_documented_model() -> None:
    # The one-pass decoder of POST /updates is DeviceInfo, only stricter on unknown fields.
    assert issubclass(plugin.UpdateBody, plugin.DeviceInfo)
    assert plugin.UpdateBody.__struct_fields__ == plugin.DeviceInfo.__struct_fields__
    assert protocol.PLATFORMS is shapes.PLATFORMS


def test_roles_and_key_modes_are_the_servers() -> None:
    assert typing.get_args(management.Role) == tuple(auth.ROLES)
    assert typing.get_args(management.KeyMode) == tuple(auth.KEY_MODES)
    # The CLI's choices for `channel set --disable-auto-update` are the API's.
    assert [rule.value for rule in cli_channels.AutoUpdateRule] == list(
        typing.get_args(management.AutoUpdateRule)
    )


def test_release_rows_are_the_model() -> None:
    info = msgspec.inspect.type_info(statistics.ReleaseRow)
    assert isinstance(info, msgspec.inspect.TypedDictType)
    assert {f.name for f in info.fields if f.required} == set(RELEASE_ROW_FIELDS)
    assert {f.name for f in info.fields if not f.required} == {"date"}
    # Written in the order of the CSV's columns.
    assert list(statistics.ReleaseRow.__annotations__)[:-1] == list(RELEASE_ROW_FIELDS)


def test_document_patterns_are_in_json_schemas_dialect(sqlite_harness: Harness) -> None:
    doc = sqlite_harness.client.get("/openapi.json").json()
    patterns: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "pattern" and isinstance(item, str):
                    patterns.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(doc)
    assert patterns and not [p for p in patterns if p.endswith("\\Z")]
    app_id = doc["components"]["schemas"]["DeviceInfo"]["properties"]["app_id"]
    assert app_id["pattern"] == f"^(?:{shapes.APP_ID_CORE})$"
    assert doc["components"]["schemas"]["StatsEvent"]["properties"]["app_id"] == app_id


# -- handlers decode into the models, answering as before --------------------------------------


def test_release_guard_update_is_read_through_its_model(harness: Harness) -> None:
    _, key = harness.user("owner@example.com")
    org_id = harness.org(key)
    path = f"/organization/{org_id}/release_guard"
    auth = harness.auth(key)

    def refused(body: Any) -> str:
        r = harness.client.put(path, json=body, headers=auth)
        assert r.status_code == 400, r.text
        assert r.json()["status"] == "KO"
        message: str = r.json()["error"]
        return message

    assert refused({"max_rate": 0.1}) == (
        "unknown threshold 'max_rate'; use min_devices, max_rollback_rate, max_failure_rate, "
        "max_crash_rate"
    )
    # An unknown field is named before a faulty value.
    assert refused({"min_devices": 0, "zzz": 1}).startswith("unknown threshold 'zzz'")
    for bad in (0, 10**9 + 1, 1.5, True, "5", [5]):
        assert refused({"min_devices": bad}) == (
            "'min_devices' must be an integer from 1 to 1000000000"
        )
    for bad in (-0.1, 1.01, True, "0.1", {}):
        assert refused({"max_crash_rate": bad}) == "'max_crash_rate' must be a rate from 0 to 1"
    assert refused({"max_failure_rate": 2}) == "'max_failure_rate' must be a rate from 0 to 1"
    # A string is no number, whatever it holds.
    assert refused({"min_devices": "\t5"}) == (
        "'min_devices' must be an integer from 1 to 1000000000"
    )
    assert refused([]) == "Request body must be a JSON object"

    r = harness.client.put(path, json={"min_devices": 5, "max_crash_rate": 1}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["overrides"] == {"min_devices": 5, "max_crash_rate": 1}
    # Absent: kept; null: back to the server's value.
    r = harness.client.put(path, json={"max_crash_rate": None}, headers=auth)
    assert r.json()["overrides"] == {"min_devices": 5}
    assert r.json()["min_devices"] == 5
    r = harness.client.put(path, json={}, headers=auth)
    assert r.json()["overrides"] == {"min_devices": 5}


def test_new_organization_is_read_through_its_model(harness: Harness) -> None:
    _, key = harness.user("owner@example.com")
    auth = harness.auth(key)
    required = "'name' is required and must be a non-empty string"
    for sent, message in (
        ({}, required),
        ({"name": ""}, required),
        ({"name": "   "}, required),
        ({"name": 5}, required),
        ({"name": None}, required),
        ({"name": "x" * 201}, "'name' must be at most 200 characters"),
        ({"name": "Org\u0000"}, "'name' must not contain control characters"),
    ):
        r = harness.client.post("/organization", json=sent, headers=auth)
        assert (r.status_code, r.json()) == (400, {"error": message, "status": "KO"}), sent
    r = harness.client.post("/organization", json={"name": "  Acme  ", "extra": 1}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Acme"
    r = harness.client.post("/organization", json={"name": "y" * 200}, headers=auth)
    assert r.status_code == 201, r.text


def test_new_member_is_read_through_its_model(harness: Harness) -> None:
    _, key = harness.user("owner@example.com")
    auth = harness.auth(key)
    org_id = harness.org(key)
    good = {"orgId": org_id, "email": "x@example.com", "invite_type": "read"}

    roles = "'invite_type' must be one of read, upload, write, admin, super_admin"

    def required(name: str) -> str:
        return f"'{name}' is required and must be a non-empty string"

    for changes, message in (
        ({"orgId": None}, required("orgId")),
        ({"orgId": " "}, required("orgId")),
        ({"orgId": "x" * 37}, "'orgId' must be at most 36 characters"),
        ({"email": 7}, required("email")),
        ({"email": "x" * 321}, "'email' must be at most 320 characters"),
        ({"invite_type": ""}, required("invite_type")),
        ({"invite_type": "owner" * 4}, "'invite_type' must be at most 16 characters"),
        ({"invite_type": "owner"}, roles),
        ({"email": "nobody"}, "'email' must be an e-mail address"),
        # The first faulty field in the order they are read.
        ({"orgId": 1, "email": 2}, required("orgId")),
        ({"email": "", "invite_type": "owner"}, required("email")),
        ({"email": "nobody", "invite_type": "owner"}, roles),
    ):  # fmt: skip
        body = {k: v for k, v in {**good, **changes}.items() if v is not None}
        r = harness.client.post("/organization/members", json=body, headers=auth)
        assert (r.status_code, r.json()) == (400, {"error": message, "status": "KO"}), changes
    body = {**good, "email": "  X@Example.com ", "invite_type": " read"}
    r = harness.client.post("/organization/members", json=body, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"org_id": org_id, "email": "x@example.com", "role": "read", "status": "ok"}


# -- the plugin's /stats and /channel_self decode into their models in one pass, with the
# -- results of the field-by-field reading (as /updates does, tests/test_protocol.py) -------


def _outcome(read: Any, raw: bytes) -> Any:
    try:
        return read(raw)
    except protocol.ProtocolError as exc:
        return (exc.code, exc.message, exc.http_status, exc.field)


def _channel_readings(raw: bytes, require_channel: bool) -> tuple[Any, Any]:
    return (
        _outcome(
            lambda b: protocol.decode_channel_request(b, require_channel=require_channel), raw
        ),
        _outcome(
            lambda b: protocol.parse_channel_request(
                protocol.decode_json(b), require_channel=require_channel
            ),
            raw,
        ),
    )


def _stats_readings(raw: bytes, cap: int = 200) -> tuple[Any, Any]:
    def full(b: bytes) -> Any:
        data = protocol.decode_json(b)
        return isinstance(data, list), protocol.parse_stats_body(data, cap)

    def fast(b: bytes) -> Any:
        return protocol.decode_stats_body(b, cap)

    def comparable(result: Any) -> Any:
        # ProtocolError compares by identity: compare what it says.
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):
            return result[0], [
                (e.code, e.message, e.http_status, e.field)
                if isinstance(e, protocol.ProtocolError)
                else e
                for e in result[1]
            ]
        return result

    return comparable(_outcome(fast, raw)), comparable(_outcome(full, raw))


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["android", "ios", "electron", "", DEVICE_ANDROID, "8.51.14", "set"]),
    st.text(alphabet="abcdefABCDEF0123456789-.", min_size=30, max_size=40),
    st.dictionaries(
        st.text(max_size=70), st.text(max_size=5) | st.integers(-(2**63), 2**63 - 1), max_size=3
    ),
)
_CHANNEL_KEYS = [*ANDROID_BODY, "key_id", "channel", "other"]
_STATS_KEYS = [*stats_event(), "metadata", "channel", "other"]


@given(
    changes=st.dictionaries(st.sampled_from(_CHANNEL_KEYS), _values, max_size=4),
    dropped=st.sets(st.sampled_from(_CHANNEL_KEYS), max_size=2),
    require_channel=st.booleans(),
)
def test_channel_decoder_agrees_with_the_full_reading(
    changes: dict[str, Any], dropped: set[str], require_channel: bool
) -> None:
    data = body(**{"channel": "beta", **changes})
    for key in dropped:
        data.pop(key, None)
    fast, full = _channel_readings(orjson.dumps(data), require_channel)
    assert fast == full


@given(
    events=st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(_STATS_KEYS), _values, max_size=3),
            st.sets(st.sampled_from(_STATS_KEYS), max_size=2),
        ),
        max_size=3,
    ),
    single=st.booleans(),
)
def test_stats_decoder_agrees_with_the_full_reading(
    events: list[tuple[dict[str, Any], set[str]]], single: bool
) -> None:
    items = []
    for changes, dropped in events:
        item = stats_event(**changes)
        for key in dropped:
            item.pop(key, None)
        items.append(item)
    payload: Any = items[0] if single and items else items
    fast, full = _stats_readings(orjson.dumps(payload))
    assert fast == full


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"{",
        b'"x"',
        b"[]",
        orjson.dumps(stats_event()),
        orjson.dumps([stats_event(), stats_event(action="download_complete")]),
        orjson.dumps([stats_event()] * 201),
        orjson.dumps([stats_event(), stats_event(app_id="bad")] * 101),
        orjson.dumps(stats_event(metadata={"duration_ms": "120", "k" * 64: "v" * 2048})),
        orjson.dumps(stats_event(metadata={f"k{i}": "v" for i in range(31)})),
        orjson.dumps(stats_event(metadata={"error": "line\nbreak"})),
        orjson.dumps(stats_event(timestamp=True)),
        orjson.dumps(stats_event(timestamp=2**62)),
        orjson.dumps(stats_event(plugin_version="")),
        orjson.dumps(stats_event(device_id=DEVICE_ANDROID.upper())),
        orjson.dumps(stats_event(version_name="")),
        orjson.dumps(stats_event())[:-1] + b',"extra":1e400}',
    ],
)
def test_stats_decoder_agrees_on_edge_bodies(raw: bytes) -> None:
    fast, full = _stats_readings(raw)
    assert fast == full


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(body(channel="beta")),
        orjson.dumps(body(channel="")),
        orjson.dumps(body()),
        orjson.dumps(body(plugin_version="")),
        orjson.dumps(body(plugin_version=...)),
        orjson.dumps(body(version_name="", version_build="")),
        orjson.dumps(body(device_id=DEVICE_ANDROID.upper(), channel=None)),
        orjson.dumps(body(channel="beta\u0000")),
        orjson.dumps(body())[:-1] + b',"extra":[1,{"a":null}]}',
    ],
)
def test_channel_decoder_agrees_on_edge_bodies(raw: bytes) -> None:
    for require_channel in (False, True):
        fast, full = _channel_readings(raw, require_channel)
        assert fast == full


def test_new_app_is_read_through_its_model(harness: Harness) -> None:
    _, key = harness.user("owner@example.com")
    auth = harness.auth(key)
    org_id = harness.org(key)
    not_an_id = "'app_id' must be a reverse-domain id like com.example.app"
    long_id = "'app_id' must be at most 255 characters"
    control = "'app_id' must not contain control characters"
    long_org = "'owner_org' must be at most 36 characters"
    control_name = "'name' must not contain control characters"

    def required(name: str) -> str:
        return f"'{name}' is required and must be a non-empty string"

    for sent, message in (
        ({"owner_org": org_id}, required("app_id")),
        ({"app_id": "   ", "owner_org": org_id}, required("app_id")),
        ({"app_id": 5, "owner_org": org_id}, required("app_id")),
        ({"app_id": None, "owner_org": org_id}, required("app_id")),
        ({"app_id": "a" * 254 + ".b", "owner_org": org_id}, long_id),
        ({"app_id": "com", "owner_org": org_id}, not_an_id),
        ({"app_id": "com..x", "owner_org": org_id}, not_an_id),
        ({"app_id": "\tcom.example.x", "owner_org": org_id}, control),
        ({"app_id": "com.example.x"}, required("owner_org")),
        ({"app_id": "com.example.x", "owner_org": "o" * 37}, long_org),
        ({"app_id": "com", "owner_org": 5}, not_an_id),
        # The name is read between the two: any value but one holding a control character.
        ({"app_id": "com.example.x", "name": "\t", "owner_org": 5}, control_name),
        ({"app_id": "com.example.x", "name": "a\nb", "owner_org": org_id}, control_name),
        ({"app_id": "com", "name": "\t"}, not_an_id),
    ):  # fmt: skip
        r = harness.client.post("/app", json=sent, headers=auth)
        assert (r.status_code, r.json()) == (400, {"error": message, "status": "KO"}), sent
    r = harness.client.post(
        "/app", json={"app_id": " com.example.one ", "owner_org": org_id, "name": 5}, headers=auth
    )
    assert r.status_code == 201, r.text
    assert (r.json()["app_id"], r.json()["name"]) == ("com.example.one", "5")
    r = harness.client.post(
        "/app", json={"app_id": "com.example.two", "owner_org": org_id, "name": ""}, headers=auth
    )
    assert r.json()["name"] == "com.example.two"
    r = harness.client.post(
        "/app",
        json={"app_id": "com.example.three", "owner_org": org_id, "name": "n" * 300},
        headers=auth,
    )
    assert r.json()["name"] == "n" * 200
