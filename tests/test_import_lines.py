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
from otameter.importing.lines import (
    LineError,
    _parse_in_full,
    count_lines,
    cut_into_slices,
    parse_block,
    parse_event,
    read_slice_blocks,
)
from otameter.metering.events import CheckIn, Download

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
@given(
    content=files(),
    slice_bytes=st.integers(min_value=1, max_value=120),
    block_bytes=st.integers(min_value=1, max_value=50),
)
def test_slices_hold_every_line_once(
    tmp_path: Path, content: bytes, slice_bytes: int, block_bytes: int
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    lines: list[bytes] = []
    counted = 0
    for piece in cut_into_slices(len(content), slice_bytes):
        blocks = list(read_slice_blocks(path, piece, block_bytes))
        # Blocks of whole lines: each ends with its last line's newline (bar the file's end).
        assert all(block.endswith(b"\n") for block in blocks[:-1])
        got = [line for block in blocks for line in block.removesuffix(b"\n").split(b"\n")]
        count = count_lines(path, piece)
        assert count == len(got)
        lines += got
        counted += count
    expected = content.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert lines == expected
    assert counted == len(expected)  # line numbers follow from these counts


@given(
    size=st.integers(min_value=0, max_value=10_000),
    slice_bytes=st.integers(min_value=1, max_value=3_000),
    rounds_of=st.integers(min_value=1, max_value=5),
)
def test_slices_come_in_rounds_of_equal_size(size: int, slice_bytes: int, rounds_of: int) -> None:
    slices = cut_into_slices(size, slice_bytes, rounds_of)
    if not slices:
        assert size == 0
        return
    assert [s.start for s in slices] == [0] + [s.end for s in slices[:-1]]
    assert slices[-1].end == size
    lengths = [s.end - s.start for s in slices]
    assert all(0 < n <= slice_bytes for n in lengths)
    assert not lengths or max(lengths) - min(lengths) <= 1
    rounds = -(-size // (slice_bytes * rounds_of))
    if size >= rounds * rounds_of:  # enough bytes for every slice of the rounds
        assert len(slices) == rounds * rounds_of


def reference(block: bytes) -> list[Any]:
    """What each line of ``block`` is, read on its own: the meaning parse_block must keep."""
    parts = block.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    read: list[Any] = []
    for line in parts:
        if not line.strip():
            read.append(None)
        else:
            read.append(outcome(parse_event, line))
    return read


def block_outcomes(block: bytes) -> list[Any]:
    return [
        f"refused: {item}" if isinstance(item, LineError) else item
        for item in parse_block(block, LATEST_MS)
    ]


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    kinds = st.sampled_from(["line", "line", "line", "blank", "spaces", "crlf", "two", "split"])
    out: list[bytes] = []
    for kind in draw(st.lists(kinds, min_size=1, max_size=12)):
        line = draw(lines())
        if kind == "blank":
            out.append(b"")
        elif kind == "spaces":
            out.append(b"  ")
        elif kind == "crlf":
            out.append(line + b"\r")
        elif kind == "two":
            out.append(line + b" " + draw(lines()))
        elif kind == "split":
            # One object over two lines: each line alone is not JSON.
            out.extend(line.split(b", ", 1) if b", " in line else [line])
        else:
            out.append(line)
    return b"\n".join(out) + draw(st.sampled_from([b"", b"\n"]))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=blocks())
def test_a_block_reads_as_its_lines_read_one_by_one(block: bytes) -> None:
    assert block_outcomes(block) == reference(block)


CHECKIN = json.dumps(VALID["checkin"]).encode()


@pytest.mark.parametrize(
    "block",
    [
        # As many values as lines, but not one a line: two on the first, one over the next two.
        CHECKIN + b" " + CHECKIN + b"\n" + CHECKIN.replace(b", ", b",\n", 1),
        # The same with the continuation starting like an object of its own.
        CHECKIN + CHECKIN + b'\n{"type": "checkin", "x":\n{}}',
        CHECKIN[:-1] + b', "x": {}\n}' + b"\n" + CHECKIN + b" " + CHECKIN,
        b"\n".join([CHECKIN] * 3),
        b"\n".join([CHECKIN] * 3) + b"\n",
    ],
)
def test_blocks_that_could_mislead_a_stream_decoder(block: bytes) -> None:
    assert block_outcomes(block) == reference(block)


def test_a_slice_is_parsed_block_by_block(tmp_path: Path) -> None:
    # Far more than one block, and lines of every kind across the block boundaries.
    rows = [CHECKIN, b"", b"not json", CHECKIN + b"\r"] * 2000
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(rows))
    piece = cut_into_slices(path.stat().st_size, 10**9)[0]
    parsed = [
        item
        for block in read_slice_blocks(path, piece, 5000)
        for item in parse_block(block, LATEST_MS)
    ]
    kinds = [CheckIn, type(None), LineError, CheckIn] * 2000
    assert [type(item) for item in parsed] == kinds
