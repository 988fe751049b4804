"""Tests for otameter.protocol against the vectors in plugin-protocol.md."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.provisional import urls

from otameter import protocol
from otameter.protocol import (
    ChannelRequest,
    ProtocolError,
    StatsEvent,
    UpdateRequest,
    channel_error,
    channel_get,
    channel_list_entry,
    channel_set_ok,
    decode_json,
    kind_for_code,
    no_update,
    parse_channel_query,
    parse_channel_request,
    parse_stats_body,
    parse_update_request,
    stats_ok,
    stats_result,
    update_available,
)

DEVICE_ANDROID = "44f128a5-ac7a-4c9a-be4c-224b6bf81b20"
DEVICE_IOS = "0F673663-459A-44C0-A7F5-613F2A4AF3AB"
SHA = "ab" * 32

# Canonical Android body (createInfoObject): always sends install_source, no key_id without
# a publicKey.
ANDROID_BODY: dict[str, Any] = {
    "platform": "android",
    "device_id": DEVICE_ANDROID,
    "app_id": "com.example.app",
    "custom_id": "",
    "version_build": "1.2.0",
    "version_code": "120",
    "version_os": "14",
    "version_name": "builtin",
    "plugin_version": "8.51.14",
    "is_emulator": False,
    "is_prod": True,
    "install_source": "google_play",
    "defaultChannel": "",
}

# iOS on a simulator: upper-case UUID, no install_source; key_id because publicKey is set.
IOS_BODY: dict[str, Any] = {
    "platform": "ios",
    "device_id": DEVICE_IOS,
    "app_id": "com.example.app",
    "custom_id": "",
    "version_build": "1.2.0",
    "version_code": "3",
    "version_os": "17.4",
    "version_name": "1.0.1",
    "plugin_version": "8.51.14",
    "is_emulator": True,
    "is_prod": False,
    "defaultChannel": "beta",
    "key_id": "MIIBCgKCAQEAxyz12345",
}


def body(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with changes; a value of ``...`` deletes the key."""
    result = copy.deepcopy(ANDROID_BODY if base is None else base)
    for key, value in changes.items():
        if value is ...:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def stats_event(**changes: Any) -> dict[str, Any]:
    event = body(action="set", version_name="1.0.1", old_version_name="builtin")
    event["timestamp"] = 1_717_171_717_171
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


# --------------------------------------------------------------------------------------------
# decode_json
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"a":1}}', b"\xff\xfe"])
def test_decode_json_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_json(raw)
    assert info.value.code == "invalid_json_body"
    assert info.value.http_status == 400
    assert info.value.body()["kind"] == "failed"


def test_decode_json_decodes() -> None:
    assert decode_json(orjson.dumps(ANDROID_BODY)) == ANDROID_BODY
    assert decode_json(b"[1, 2]") == [1, 2]


# --------------------------------------------------------------------------------------------
# Update requests
# --------------------------------------------------------------------------------------------


def test_canonical_android_body_parses() -> None:
    req = parse_update_request(decode_json(orjson.dumps(ANDROID_BODY)))
    assert req == UpdateRequest(
        platform="android",
        device_id=DEVICE_ANDROID,
        app_id="com.example.app",
        custom_id="",
        version_build="1.2.0",
        version_code="120",
        version_os="14",
        version_name="builtin",
        plugin_version="8.51.14",
        is_emulator=False,
        is_prod=True,
        install_source="google_play",
        default_channel="",
        key_id=None,
    )


def test_canonical_ios_body_parses() -> None:
    req = parse_update_request(IOS_BODY)
    assert req.platform == "ios"
    assert req.device_id == DEVICE_IOS.lower()
    assert req.install_source is None
    assert req.key_id == "MIIBCgKCAQEAxyz12345"
    assert req.default_channel == "beta"
    assert req.is_emulator is True
    assert req.is_prod is False


def test_request_is_frozen() -> None:
    req = parse_update_request(ANDROID_BODY)
    with pytest.raises(AttributeError):
        req.app_id = "com.other.app"  # type: ignore[misc]


def test_device_id_case_folded() -> None:
    assert parse_update_request(body(device_id=DEVICE_ANDROID.upper())).device_id == (
        DEVICE_ANDROID
    )


def test_unknown_keys_ignored() -> None:
    assert parse_update_request(body(something_new={"x": 1})).app_id == "com.example.app"


def test_missing_booleans_default_like_capgo() -> None:
    req = parse_update_request(body(is_emulator=..., is_prod=...))
    assert (req.is_emulator, req.is_prod) == (False, True)


def test_optional_strings_absent() -> None:
    req = parse_update_request(
        body(custom_id=..., version_code=..., version_os=..., install_source=...)
    )
    assert (req.custom_id, req.version_code, req.version_os) == ("", "", "")
    assert req.install_source is None
    assert req.default_channel == ""


@pytest.mark.parametrize(
    "app_id",
    ["com.example.app", "COM.Example.App", "io.ionic.starter", "a1.b_c.d-e", "x.y"],
)
def test_valid_app_ids(app_id: str) -> None:
    assert parse_update_request(body(app_id=app_id)).app_id == app_id


@pytest.mark.parametrize(
    "version",
    [
        "1.0.0",
        "0.0.0",
        "8.51.14",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0+20130313",
        "1.0.0-rc.1+build.1.2",
    ],
)
def test_valid_plugin_versions(version: str) -> None:
    assert parse_update_request(body(plugin_version=version)).plugin_version == version


INVALID_UPDATE_CASES: list[tuple[dict[str, Any], str, str]] = [
    # (changes, code, field)
    ({"app_id": ...}, "missing_app_id", "app_id"),
    ({"app_id": ""}, "missing_app_id", "app_id"),
    ({"app_id": 42}, "invalid_app_id", "app_id"),
    ({"app_id": "example"}, "invalid_app_id", "app_id"),
    ({"app_id": "com..example"}, "invalid_app_id", "app_id"),
    ({"app_id": "com.exa mple"}, "invalid_app_id", "app_id"),
    ({"app_id": "com.example.app\n"}, "invalid_app_id", "app_id"),
    ({"app_id": "com.exämple.app"}, "invalid_app_id", "app_id"),
    ({"app_id": "-com.example"}, "invalid_app_id", "app_id"),
    ({"device_id": ...}, "missing_device_id", "device_id"),
    ({"device_id": ""}, "missing_device_id", "device_id"),
    ({"device_id": 123}, "invalid_device_id", "device_id"),
    ({"device_id": "not-a-uuid"}, "invalid_device_id", "device_id"),
    ({"device_id": DEVICE_ANDROID + "0"}, "invalid_device_id", "device_id"),
    ({"device_id": "g4f128a5-ac7a-4c9a-be4c-224b6bf81b20"}, "invalid_device_id", "device_id"),
    ({"device_id": "44f128a5ac7a4c9abe4c224b6bf81b20"}, "invalid_device_id", "device_id"),
    ({"version_name": ...}, "missing_version_name", "version_name"),
    ({"version_name": ""}, "missing_version_name", "version_name"),
    ({"version_name": 1}, "invalid_version_name", "version_name"),
    ({"version_name": "v" * 256}, "invalid_version_name", "version_name"),
    ({"version_build": ...}, "missing_version_build", "version_build"),
    ({"version_build": ""}, "missing_version_build", "version_build"),
    ({"version_build": 120}, "invalid_version_build", "version_build"),
    ({"is_emulator": "false"}, "invalid_is_emulator", "is_emulator"),
    ({"is_emulator": 0}, "invalid_is_emulator", "is_emulator"),
    ({"is_prod": "true"}, "invalid_is_prod", "is_prod"),
    ({"is_prod": 1}, "invalid_is_prod", "is_prod"),
    ({"platform": ...}, "missing_platform", "platform"),
    ({"platform": "windows"}, "invalid_platform", "platform"),
    ({"platform": "Android"}, "invalid_platform", "platform"),
    ({"platform": ["android"]}, "invalid_platform", "platform"),
    ({"plugin_version": ...}, "missing_plugin_version", "plugin_version"),
    ({"plugin_version": "8.51"}, "invalid_plugin_version", "plugin_version"),
    ({"plugin_version": "v8.51.14"}, "invalid_plugin_version", "plugin_version"),
    ({"plugin_version": "08.51.14"}, "invalid_plugin_version", "plugin_version"),
    ({"plugin_version": "1.0.0-"}, "invalid_plugin_version", "plugin_version"),
    ({"plugin_version": "1.0.0-01"}, "invalid_plugin_version", "plugin_version"),
    ({"plugin_version": "1.0.0+"}, "invalid_plugin_version", "plugin_version"),
    ({"plugin_version": 8}, "invalid_plugin_version", "plugin_version"),
    ({"key_id": "k" * 21}, "invalid_key_id", "key_id"),
    ({"key_id": 5}, "invalid_key_id", "key_id"),
    ({"custom_id": "c" * 37}, "invalid_custom_id", "custom_id"),
    ({"custom_id": {"a": 1}}, "invalid_custom_id", "custom_id"),
    ({"install_source": "s" * 65}, "invalid_install_source", "install_source"),
    ({"install_source": False}, "invalid_install_source", "install_source"),
    ({"defaultChannel": 3}, "invalid_default_channel", "defaultChannel"),
    ({"version_os": 14}, "invalid_version_os", "version_os"),
    ({"version_code": 120}, "invalid_version_code", "version_code"),
    ({"version_os": "x" * 1000}, "invalid_version_os", "version_os"),
]


@pytest.mark.parametrize(("changes", "code", "field"), INVALID_UPDATE_CASES)
def test_invalid_update_fields(changes: dict[str, Any], code: str, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_update_request(body(**changes))
    err = info.value
    assert (err.code, err.http_status, err.field) == (code, 400, field)
    assert field in err.message
    assert err.body() == {"error": code, "message": err.message, "kind": "failed"}


# -- the one-pass decoder of /updates gives what the two-step reading gives ---------------------


def _both_readings(raw: bytes) -> tuple[Any, Any]:
    """(decode_update_request, parse_update_request(decode_json)) of a body: result or error."""

    def outcome(read: Any) -> Any:
        try:
            return read(raw)
        except ProtocolError as exc:
            return (exc.code, exc.message, exc.http_status, exc.field)

    return (
        outcome(protocol.decode_update_request),
        outcome(lambda b: parse_update_request(decode_json(b))),
    )


EDGE_BODIES = [
    b"",
    b" ",
    b"null",
    b"[]",
    b'"body"',
    b"{",
    b"\xef\xbb\xbf" + orjson.dumps(ANDROID_BODY),
    orjson.dumps(ANDROID_BODY) + b"\n",
    orjson.dumps(ANDROID_BODY)[:-1] + b',"extra":1e400}',
    orjson.dumps(ANDROID_BODY)[:-1] + b',"extra":[1,{"a":null}]}',
    orjson.dumps(ANDROID_BODY)[:-1] + b',"version_name":"1.0.2"}',
    orjson.dumps(ANDROID_BODY)[:-1] + b',"version_name":5}',
    orjson.dumps(ANDROID_BODY).replace(b'"builtin"', b'"\\ud800"'),
    orjson.dumps(ANDROID_BODY).replace(b'"builtin"', b'"\\u00e9\\ud83d\\ude00"'),
    orjson.dumps(ANDROID_BODY).replace(b'"builtin"', b'"\xff"'),
    orjson.dumps(IOS_BODY),
    orjson.dumps(body(plugin_version="1.0.0-rc.1+build.5")),
    orjson.dumps(body(plugin_version="1.0.0\n")),
    orjson.dumps(body(device_id=DEVICE_ANDROID + "\n")),
    orjson.dumps(body(app_id="com.example.app\n")),
    orjson.dumps(body(app_id="COM.Example.APP_2-x")),
    orjson.dumps(body(app_id="com.ex\u0661mple")),
    orjson.dumps(body(app_id="a" * 250 + ".b")),
    orjson.dumps(body(app_id="a" * 254 + ".b")),
    orjson.dumps(body(device_id=DEVICE_ANDROID.replace("4", "\u0664"))),
    orjson.dumps(body(version_name="v" * 255, version_build="b" * 255)),
    orjson.dumps(body(is_emulator=None, is_prod=None, custom_id=None, key_id=None)),
]


@pytest.mark.parametrize("raw", EDGE_BODIES)
def test_one_pass_decoder_agrees_on_edge_bodies(raw: bytes) -> None:
    fast, full = _both_readings(raw)
    assert fast == full


@pytest.mark.parametrize(("changes", "code", "field"), INVALID_UPDATE_CASES)
def test_one_pass_decoder_gives_the_same_errors(
    changes: dict[str, Any], code: str, field: str
) -> None:
    fast, full = _both_readings(orjson.dumps(body(**changes)))
    assert fast == full
    assert fast[0] == code and fast[3] == field


_field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["android", "ios", "electron", "", DEVICE_ANDROID, DEVICE_IOS, "8.51.14"]),
    st.text(alphabet="abcdefABCDEF0123456789-.", min_size=30, max_size=40),
    st.lists(st.integers(0, 9), max_size=2),
)


@given(
    changes=st.dictionaries(
        st.sampled_from([*ANDROID_BODY, "key_id", "other"]), _field_values, max_size=4
    ),
    dropped=st.sets(st.sampled_from(list(ANDROID_BODY)), max_size=2),
)
def test_one_pass_decoder_agrees_with_the_full_reading(
    changes: dict[str, Any], dropped: set[str]
) -> None:
    data = body(**changes)
    for key in dropped:
        data.pop(key, None)
    fast, full = _both_readings(orjson.dumps(data))
    assert fast == full


def test_key_id_boundary() -> None:
    assert parse_update_request(body(key_id="k" * 20)).key_id == "k" * 20
    assert parse_update_request(body(custom_id="c" * 36)).custom_id == "c" * 36
    assert parse_update_request(body(install_source="s" * 64)).install_source == "s" * 64


@pytest.mark.parametrize("data", [None, [], [ANDROID_BODY], "body", 3, True])
def test_update_body_must_be_object(data: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_update_request(data)
    assert (info.value.code, info.value.http_status) == ("invalid_json_body", 400)


def test_null_optional_field_is_absent() -> None:
    assert parse_update_request(body(key_id=None)).key_id is None


# --------------------------------------------------------------------------------------------
# Update answers
# --------------------------------------------------------------------------------------------


def test_update_available_shape() -> None:
    manifest = [{"file_name": "a.js.br", "file_hash": SHA, "download_url": "https://x/a"}]
    answer = update_available(
        "1.0.1", "https://cdn.example.com/b.zip", SHA.upper(), manifest=manifest, link="l"
    )
    assert answer == {
        "version": "1.0.1",
        "url": "https://cdn.example.com/b.zip",
        "checksum": SHA,
        "session_key": "",
        "manifest": manifest,
        "link": "l",
    }


def test_update_available_omits_none_and_keeps_empty_checksum() -> None:
    answer = update_available("builtin", "https://x.example/b.zip", "")
    assert answer == {
        "version": "builtin",
        "url": "https://x.example/b.zip",
        "checksum": "",
        "session_key": "",
    }


def test_update_available_encrypted_checksum_untouched() -> None:
    enc = "QUJDZGVm+/=="
    answer = update_available("1.0.1", "https://x.example/b.zip", enc, session_key="iv:key")
    assert answer["checksum"] == enc
    assert answer["session_key"] == "iv:key"


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        (("1.0.1", "https://x.example/b.zip", "not-hex"), ValueError),
        (("1.0.1", "https://x.example/b.zip", "ab cd"), ValueError),
        (("", "https://x.example/b.zip", SHA), ValueError),
        (("1.0.1", "", SHA), ValueError),
        (("1.0.1", "/relative/b.zip", SHA), ValueError),
        (("1.0.1", "ftp://x.example/b.zip", SHA), ValueError),
        (("1.0.1", "https://x.example/b.zip", None), TypeError),
    ],
)
def test_update_available_rejects(args: tuple[Any, ...], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        update_available(*args)


def test_update_available_omits_empty_manifest() -> None:
    assert "manifest" not in update_available("1", "https://x.example/b.zip", SHA, manifest=[])


def test_protocol_error_pickles_and_prints() -> None:
    err = ProtocolError("invalid_app_id", "app_id is bad", field="app_id")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.code, clone.message, clone.http_status, clone.field) == (
        "invalid_app_id",
        "app_id is bad",
        400,
        "app_id",
    )
    assert str(err) == "invalid_app_id: app_id is bad"


def test_update_available_rejects_bad_manifest() -> None:
    with pytest.raises(ValueError):
        update_available(
            "1", "https://x.example/b.zip", SHA, manifest=[{"file_name": "a", "file_hash": "b"}]
        )


@given(
    version=st.text(min_size=1, max_size=50),
    url=urls(),
    checksum=st.text(alphabet="0123456789abcdefABCDEF", max_size=64),
    link=st.one_of(st.none(), st.text(max_size=20)),
    comment=st.one_of(st.none(), st.text(max_size=20)),
)
def test_success_body_never_has_error_or_kind(
    version: str, url: str, checksum: str, link: str | None, comment: str | None
) -> None:
    answer = update_available(version, url, checksum, link=link, comment=comment)
    assert "error" not in answer
    assert "kind" not in answer
    assert answer["url"] == url
    assert answer["checksum"] == checksum.lower()
    assert None not in answer.values()
    assert orjson.loads(orjson.dumps(answer)) == answer


def test_no_update_default() -> None:
    assert no_update() == {
        "error": "no_new_version_available",
        "message": "No new version available",
        "kind": "up_to_date",
    }


def test_no_update_extra_fields() -> None:
    answer = no_update("already_on_builtin", "Already on builtin", version="builtin")
    assert answer["version"] == "builtin"
    assert answer["kind"] == "up_to_date"
    answer = no_update("disable_auto_update_to_major", "Major blocked", major=True, old="1.0.0")
    assert answer["kind"] == "blocked"
    assert answer["major"] is True


@pytest.mark.parametrize(
    "extra", [{"kind": "up_to_date"}, {"major": "yes"}, {"version": 1}, {"data": {"a": 1}}]
)
def test_no_update_rejects_bad_extra(extra: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        no_update("no_new_version_available", "x", **extra)


UP_TO_DATE = ["no_new_version_available", "already_on_builtin"]
BLOCKED = [
    "cannot_update_via_private_channel",
    "disabled_platform_ios",
    "disabled_platform_android",
    "disabled_platform_electron",
    "disable_auto_update_to_major",
    "disable_auto_update_to_minor",
    "disable_auto_update_to_patch",
    "disable_auto_update_to_metadata",
    "disable_auto_update_under_native",
    "disable_prod_build",
    "disable_dev_build",
    "disable_device",
    "disable_emulator",
    "key_id_mismatch",
    "provider_infrastructure_request_blocked",
    "need_plan_upgrade",
    "too_many_emulators_or_dev_builds",
]
FAILED = [
    "no_channel",
    "semver_error",
    "unknown_version_build",
    "unsupported_plugin_version",
    "invalid_json_body",
    "too_many_requests",
    "on_premise_app",
    "",
    "disable_auto_update",
]


@pytest.mark.parametrize("code", UP_TO_DATE)
def test_kind_up_to_date(code: str) -> None:
    assert kind_for_code(code) == "up_to_date"
    assert no_update(code, "m")["kind"] == "up_to_date"


@pytest.mark.parametrize("code", BLOCKED)
def test_kind_blocked(code: str) -> None:
    assert kind_for_code(code) == "blocked"
    assert no_update(code, "m")["kind"] == "blocked"


@pytest.mark.parametrize("code", FAILED)
def test_kind_failed(code: str) -> None:
    assert kind_for_code(code) == "failed"


# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------


def test_stats_single_object() -> None:
    [event] = parse_stats_body(stats_event())
    assert isinstance(event, StatsEvent)
    assert event.action == "set"
    assert event.version_name == "1.0.1"
    assert event.old_version_name == "builtin"
    assert event.timestamp == 1_717_171_717_171
    assert event.metadata is None
    assert event.device_id == DEVICE_ANDROID


def test_stats_array_with_one_bad_element() -> None:
    good = stats_event(action="app_moved_to_foreground")
    bad = stats_event(device_id="nope")
    results = parse_stats_body([good, bad, "string", stats_event(action="download_complete")])
    assert [type(r) for r in results] == [StatsEvent, ProtocolError, ProtocolError, StatsEvent]
    assert isinstance(results[1], ProtocolError)
    assert results[1].code == "invalid_device_id"
    assert isinstance(results[2], ProtocolError)
    assert results[2].code == "invalid_json_body"
    entries = [
        stats_result(i, r if isinstance(r, ProtocolError) else None) for i, r in enumerate(results)
    ]
    assert stats_ok(entries) == {
        "status": "ok",
        "results": [
            {"status": "ok", "index": 0},
            {
                "status": "error",
                "error": "invalid_device_id",
                "message": results[1].message,
                "index": 1,
            },
            {
                "status": "error",
                "error": "invalid_json_body",
                "message": results[2].message,
                "index": 2,
            },
            {"status": "ok", "index": 3},
        ],
    }


def test_stats_ok_single() -> None:
    assert stats_ok() == {"status": "ok"}
    assert stats_ok(None) == {"status": "ok"}
    assert stats_ok([]) == {"status": "ok", "results": []}


def test_stats_empty_array() -> None:
    assert parse_stats_body([]) == []


def test_stats_batch_limits() -> None:
    assert len(parse_stats_body([stats_event()] * protocol.MAX_STATS_BATCH)) == 1000
    with pytest.raises(ProtocolError) as info:
        parse_stats_body([stats_event()] * (protocol.MAX_STATS_BATCH + 1))
    assert (info.value.code, info.value.http_status) == ("too_many_events", 413)


@pytest.mark.parametrize("data", [None, "x", 3, 1.5, True])
def test_stats_body_must_be_object_or_array(data: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_stats_body(data)
    assert (info.value.code, info.value.http_status) == ("invalid_json_body", 400)


def test_android_download_service_object_parses() -> None:
    # DownloadService.sendStatsAsync posts a single object without timestamp or key_id.
    obj = body(action="download_zip_start", version_name="1.0.1")
    [event] = parse_stats_body(obj)
    assert isinstance(event, StatsEvent)
    assert event.timestamp is None
    assert event.key_id is None
    assert event.action == "download_zip_start"


def test_ios_stats_event_omits_nil_keys() -> None:
    obj = stats_event()
    for key in ("install_source", "key_id", "metadata", "channel", "custom_id", "version_code"):
        obj.pop(key, None)
    [event] = parse_stats_body(obj)
    assert isinstance(event, StatsEvent)
    assert event.install_source is None
    assert event.custom_id is None
    assert event.channel is None


def test_stats_minimal_event() -> None:
    obj = {
        "app_id": "com.example.app",
        "device_id": DEVICE_IOS,
        "platform": "ios",
        "action": "rate_limit_reached",
        "version_name": "",
    }
    [event] = parse_stats_body(obj)
    assert isinstance(event, StatsEvent)
    assert event.version_name == ""
    assert event.device_id == DEVICE_IOS.lower()
    assert (event.is_emulator, event.is_prod) == (False, True)
    assert event.plugin_version is None


def test_stats_composite_version_name() -> None:
    [event] = parse_stats_body(
        stats_event(action="download_manifest_file_fail", version_name="1.0.1:assets/a.js")
    )
    assert isinstance(event, StatsEvent)
    assert event.version_name == "1.0.1:assets/a.js"


def test_stats_metadata() -> None:
    metadata = {"duration_ms": "812", "launch_started_at": "1717171717000", "source": "cold"}
    [event] = parse_stats_body(stats_event(action="app_launch_ready", metadata=metadata))
    assert isinstance(event, StatsEvent)
    assert event.metadata == metadata


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(protocol.MAX_METADATA_FIELDS)},
        {"k" * protocol.MAX_METADATA_KEY_LENGTH: "v" * protocol.MAX_METADATA_VALUE_LENGTH},
        {},
    ],
)
def test_stats_metadata_at_limits(metadata: dict[str, str]) -> None:
    [event] = parse_stats_body(stats_event(metadata=metadata))
    assert isinstance(event, StatsEvent)
    assert event.metadata == metadata


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(protocol.MAX_METADATA_FIELDS + 1)},
        {"k" * (protocol.MAX_METADATA_KEY_LENGTH + 1): "v"},
        {"k": "v" * (protocol.MAX_METADATA_VALUE_LENGTH + 1)},
        {"k": 1},
        {"k": None},
        {"k": {"nested": "x"}},
        ["k", "v"],
        "k=v",
    ],
)
def test_stats_metadata_over_limits(metadata: Any) -> None:
    [err] = parse_stats_body(stats_event(metadata=metadata))
    assert isinstance(err, ProtocolError)
    assert (err.code, err.http_status, err.field) == ("invalid_metadata", 400, "metadata")


INVALID_STATS_CASES: list[tuple[dict[str, Any], str]] = [
    ({"action": ...}, "missing_action"),
    ({"action": ""}, "missing_action"),
    ({"action": 3}, "invalid_action"),
    ({"action": "Set Channel"}, "invalid_action"),
    ({"action": "a" * 65}, "invalid_action"),
    ({"version_name": ...}, "missing_version_name"),
    ({"version_name": 1}, "invalid_version_name"),
    ({"version_name": "v" * 1025}, "invalid_version_name"),
    ({"old_version_name": 1}, "invalid_old_version_name"),
    ({"timestamp": "1717171717171"}, "invalid_timestamp"),
    ({"timestamp": 1717171717.5}, "invalid_timestamp"),
    ({"timestamp": True}, "invalid_timestamp"),
    ({"timestamp": -1}, "invalid_timestamp"),
    ({"timestamp": 10**16}, "invalid_timestamp"),
    ({"is_emulator": "false"}, "invalid_is_emulator"),
    ({"is_prod": 1}, "invalid_is_prod"),
    ({"app_id": ...}, "missing_app_id"),
    ({"app_id": "nodots"}, "invalid_app_id"),
    ({"device_id": ...}, "missing_device_id"),
    ({"platform": ...}, "missing_platform"),
    ({"platform": "web"}, "invalid_platform"),
    ({"plugin_version": "latest"}, "invalid_plugin_version"),
    ({"channel": 5}, "invalid_channel"),
    ({"key_id": "k" * 21}, "invalid_key_id"),
]


@pytest.mark.parametrize(("changes", "code"), INVALID_STATS_CASES)
def test_invalid_stats_fields(changes: dict[str, Any], code: str) -> None:
    [err] = parse_stats_body(stats_event(**changes))
    assert isinstance(err, ProtocolError)
    assert (err.code, err.http_status) == (code, 400)


def test_stats_timestamp_zero_and_absent() -> None:
    [a, b] = parse_stats_body([stats_event(timestamp=0), stats_event(timestamp=None)])
    assert isinstance(a, StatsEvent) and a.timestamp == 0
    assert isinstance(b, StatsEvent) and b.timestamp is None


# --------------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------------


def test_channel_post_body() -> None:
    req = parse_channel_request(body(IOS_BODY, channel="beta"), require_channel=True)
    assert isinstance(req, ChannelRequest)
    assert req.channel == "beta"
    assert req.device_id == DEVICE_IOS.lower()


def test_channel_put_body_without_channel() -> None:
    req = parse_channel_request(ANDROID_BODY)
    assert req.channel is None
    assert req.default_channel == ""


@pytest.mark.parametrize("channel", [..., "", None])
def test_channel_post_requires_channel(channel: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_channel_request(body(channel=channel), require_channel=True)
    assert (info.value.code, info.value.http_status) == ("missing_channel", 200)


def test_channel_body_allows_empty_versions() -> None:
    req = parse_channel_request(body(version_name="", version_build="", plugin_version=...))
    assert (req.version_name, req.version_build, req.plugin_version) == ("", "", "")


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"version_name": ...}, "missing_version_name"),
        ({"version_build": ...}, "missing_version_build"),
        ({"channel": 1}, "invalid_channel"),
        ({"is_prod": "true"}, "invalid_is_prod"),
        ({"device_id": ...}, "missing_device_id"),
        ({"plugin_version": "8"}, "invalid_plugin_version"),
    ],
)
def test_invalid_channel_body(changes: dict[str, Any], code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_channel_request(body(**changes))
    assert (info.value.code, info.value.http_status) == (code, 400)


def _query(**changes: Any) -> dict[str, str]:
    q = {k: str(v).lower() if isinstance(v, bool) else v for k, v in ANDROID_BODY.items()}
    q.update(changes)
    return {k: v for k, v in q.items() if v is not ...}


def test_channel_query_booleans() -> None:
    q = _query(is_emulator="true", is_prod="false", device_id=DEVICE_IOS)
    req = parse_channel_query(q)
    assert (req.is_emulator, req.is_prod) == (True, False)
    assert req.device_id == DEVICE_IOS.lower()
    assert req.version_code == "120"
    req = parse_channel_query(_query(is_emulator="false", is_prod="true"))
    assert (req.is_emulator, req.is_prod) == (False, True)


def test_channel_query_minimal() -> None:
    req = parse_channel_query({"app_id": "com.example.app", "platform": "android"})
    assert req.device_id == ""
    assert (req.is_emulator, req.is_prod) == (False, True)
    assert req.channel is None


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"is_emulator": "True"}, "invalid_is_emulator"),
        ({"is_emulator": "1"}, "invalid_is_emulator"),
        ({"is_prod": ""}, "invalid_is_prod"),
        ({"is_prod": "yes"}, "invalid_is_prod"),
        ({"app_id": ...}, "missing_app_id"),
        ({"app_id": "bad id"}, "invalid_app_id"),
        ({"platform": "web"}, "invalid_platform"),
        ({"device_id": "zzz"}, "invalid_device_id"),
        ({"key_id": "k" * 21}, "invalid_key_id"),
    ],
)
def test_invalid_channel_query(changes: dict[str, Any], code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_channel_query(_query(**changes))
    assert (info.value.code, info.value.http_status) == (code, 400)


def test_channel_answers() -> None:
    assert channel_set_ok() == {"status": "ok"}
    assert channel_set_ok("done", allow_set=True) == {
        "status": "ok",
        "message": "done",
        "allowSet": True,
    }
    assert channel_set_ok(unset=True) == {"status": "ok", "unset": True}
    assert "error" not in channel_set_ok("m", allow_set=False, unset=True)
    assert channel_get("beta", "override", True) == {
        "channel": "beta",
        "status": "override",
        "allowSet": True,
    }
    assert channel_get("production", "default") == {"channel": "production", "status": "default"}
    with pytest.raises(ValueError):
        channel_get("beta", "forced", True)
    assert channel_error("channel_not_found", "Cannot find channel") == {
        "error": "channel_not_found",
        "message": "Cannot find channel",
        "kind": "failed",
    }


def test_channel_list_ids_are_ints() -> None:
    entries = [
        channel_list_entry(1, "beta", False, True),
        channel_list_entry(2, "prod", True, False),
    ]
    decoded = orjson.loads(orjson.dumps(entries))
    assert decoded == [
        {"id": 1, "name": "beta", "public": False, "allow_self_set": True},
        {"id": 2, "name": "prod", "public": True, "allow_self_set": False},
    ]
    assert all(type(e["id"]) is int for e in decoded)


@pytest.mark.parametrize("bad_id", ["1", 1.0, True, None])
def test_channel_list_rejects_non_int_id(bad_id: Any) -> None:
    with pytest.raises(TypeError):
        channel_list_entry(bad_id, "beta", False, True)


def test_channel_list_rejects_non_bool_flags() -> None:
    with pytest.raises(TypeError):
        channel_list_entry(1, "beta", 0, True)  # type: ignore[arg-type]
