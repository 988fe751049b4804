"""Import lines: the fast decoder agrees with the field-by-field parser, and slices cut a file
into exactly its lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otameter.clock import to_ms
from otameter.events import CheckIn, Download
from otameter.import_lines import (
    LineError,
    _parse_in_full,
    cut_into_slices,
    parse_event,
    read_slice,
)

LATEST_MS = to_ms(datetime(2024, 5, 15, 12, 5, tzinfo=UTC))
DEVICE = "9F3A4C2E-1B6D-4E8F-A0B1-C2D3E4F5A6B7"
MISSING = object()

times = st.sampled_from(
    [
        "2024-05-10T10:00:00Z",
        "2024-05-10T10:00:00.357Z",
        "2024-05-10T10:00:00.123456Z",
        "2024-05-10T10:00:00.1234567Z",
        "2024-05-10T10:00:00.9999995Z",
        "2024-05-10T11:00:00+02:00",
        "2024-05-10t10:00:00z",
        "2024-05-10 10:00:00Z",
        "2024-05-10T10:00:00",
        "2024-05-10T10:00Z",
        "2024-05-10",
        "2024-05-16T10:00:00Z",
        "2024-05-15T12:04:59.999Z",
        "10/05/2024 10:00",
        "",
        1715335200,
        None,
    ]
)
texts = st.sampled_from(["1.0.0", "", "x" * 255, "x" * 256, "é" * 10, 7, None, True])
fields: dict[str, Any] = {
    "type": st.sampled_from(["checkin", "download", "upload", "delete", "checkout", 1]),
    "time": times,
    "id": st.sampled_from(["c1", "", "i" * 200, "i" * 201, 5, None]),
    "app_id": st.sampled_from(["com.example.app", "", "a" * 256, 3, None]),
    "device_id": st.sampled_from(
        [DEVICE, DEVICE.lower(), "x", "0" * 37, "abc\n", "", "12-34", 1, None]
    ),
    "platform": st.sampled_from(["ios", "android", "electron", "web", "", None, 2]),
    "version_name": texts,
    "version": texts,
    "version_build": texts,
    "plugin_version": st.sampled_from(["8.0.0", "p" * 64, "p" * 65, None, 1]),
    "custom_id": st.sampled_from(["", "user-1", "u" * 36, "u" * 37, None, 4]),
    "is_emulator": st.sampled_from([True, False, "yes", 0, 1, None]),
    "is_prod": st.sampled_from([True, False, "no", 1, None]),
    "ip": st.sampled_from(["10.0.0.1", "8.8.8.8", "", None, 17]),
    "bytes": st.sampled_from([0, 5_000_000, -1, 5.0, True, "10", 2**70, None]),
    "size": st.sampled_from([10, -1]),
    "extra": st.sampled_from([1, "x", None]),
}


VALID = {
    "checkin": {
        "type": "checkin",
        "time": "2024-05-10T10:00:00Z",
        "app_id": "com.example.app",
        "device_id": DEVICE,
        "platform": "android",
        "version_name": "1.0.0",
        "is_emulator": False,
        "is_prod": True,
    },
    "download": {
        "type": "download",
        "time": "2024-05-10T10:00:00Z",
        "app_id": "com.example.app",
        "device_id": DEVICE,
        "version": "1.0.0",
        "bytes": 10,
    },
}


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    # A valid line with a few fields changed, removed or added: both sides of every check.
    data = dict(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(fields)))
        if draw(st.booleans()) and name in data:
            del data[name]
        else:
            data[name] = draw(fields[name])
    return json.dumps(data).encode()


def outcome(parse: Any, line: bytes) -> Any:
    try:
        return parse(line, LATEST_MS)
    except LineError as exc:
        return f"refused: {exc}"


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=lines())
def test_the_fast_decoder_agrees_with_the_full_parser(line: bytes) -> None:
    assert outcome(parse_event, line) == outcome(_parse_in_full, line)


def test_common_lines_take_the_fast_path() -> None:
    checkin = {
        "type": "checkin",
        "time": "2024-05-10T10:00:00.357Z",
        "app_id": "com.example.app",
        "device_id": DEVICE,
        "platform": "ios",
        "version_name": "1.0.0",
        "is_emulator": False,
        "is_prod": True,
        "ip": "10.0.0.1",
        "id": "c1",
    }
    event = parse_event(json.dumps(checkin).encode(), LATEST_MS)
    assert event == CheckIn(
        "com.example.app",
        DEVICE.lower(),
        to_ms(datetime(2024, 5, 10, 10, 0, 0, 357_000, tzinfo=UTC)),
        "ios",
        "1.0.0",
        False,
        True,
        ip="10.0.0.1",
        event_id="c1",
    )
    download = {
        "type": "download",
        "time": "2024-05-10T10:00:00Z",
        "app_id": "com.example.app",
        "device_id": DEVICE,
        "version": "1.0.0",
        "bytes": 42,
    }
    assert parse_event(json.dumps(download).encode(), LATEST_MS) == Download(
        "com.example.app", DEVICE.lower(), "1.0.0", 42, to_ms(datetime(2024, 5, 10, 10, tzinfo=UTC))
    )


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"", "JSON"),
        (b"not json", "JSON"),
        (b"[1, 2]", "object"),
        (b'{"type": "checkin", "time": "2024-05-16T10:00:00Z"}', "future"),
    ],
)
def test_refused_lines_name_the_reason(line: bytes, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        parse_event(line, LATEST_MS)


def test_epoch_milliseconds_are_exact() -> None:
    # timestamp() * 1000 in floating point lands one millisecond short for some instants.
    start = datetime(2024, 5, 10, tzinfo=UTC)
    for ms in range(0, 200_000, 7):
        assert to_ms(start + timedelta(milliseconds=ms)) == to_ms(start) + ms
    assert to_ms(datetime(1970, 1, 1, 0, 0, 0, 1000)) == 1  # no zone: UTC


@st.composite
def files(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(["", " ", "a", "bb", "x" * 40, "\r"]), max_size=30))
    ending = draw(st.sampled_from(["", "\n", "\n\n"]))
    return ("\n".join(parts) + ending).encode()


@settings(
    max_examples=400,
    deadline=None,
    # The file is written anew for every example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(content=files(), slice_bytes=st.integers(min_value=1, max_value=120))
def test_slices_hold_every_line_once(tmp_path: Path, content: bytes, slice_bytes: int) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    lines: list[bytes] = []
    counted = 0
    for piece in cut_into_slices(len(content), slice_bytes):
        got, count = read_slice(path, piece)
        assert count == len(got)
        lines += got
        counted += count
    expected = content.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert lines == expected
    assert counted == len(expected)  # line numbers follow from these counts


@pytest.mark.parametrize(
    "line",
    [
        # A key given twice: the last one holds, in both readings.
        b'{"type": "checkin", "time": "2024-05-10T10:00:00Z", "app_id": "com.example.app",'
        b' "device_id": "9f3a4c2e-1b6d-4e8f-a0b1-c2d3e4f5a6b7", "platform": "ios",'
        b' "version_name": "1", "is_emulator": false, "is_prod": true, "is_prod": false}',
        b'{"type": "checkin", "type": "download", "time": "2024-05-10T10:00:00Z",'
        b' "app_id": "com.example.app", "device_id": "9f3a4c2e-1b6d-4e8f-a0b1-c2d3e4f5a6b7",'
        b' "version": "1", "bytes": 5}',
        # Windows line ends and a byte order mark.
        b'{"type": "download", "time": "2024-05-10T10:00:00Z", "app_id": "com.example.app",'
        b' "device_id": "x", "version": "1", "bytes": 5}\r',
        b'\xef\xbb\xbf{"type": "download", "time": "2024-05-10T10:00:00Z", "app_id": "a",'
        b' "device_id": "x", "version": "1", "bytes": 5}',
    ],
)
def test_odd_lines_read_alike(line: bytes) -> None:
    assert outcome(parse_event, line) == outcome(_parse_in_full, line)
