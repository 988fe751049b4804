from __future__ import annotations

import ipaddress
import json
from importlib.resources import files
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otameter.google_ranges import (
    RANGE_FILES,
    InstallResult,
    IpRangeSet,
    RangeFileError,
    install_range_file,
    load_google_ranges,
    parse_google_json,
)

PACKAGED = files("otameter") / "data" / "google-ip-ranges"

# Only in goog.json, in none of the other four lists (Google Public DNS).
GOOG_ONLY_V4 = "8.8.8.8"
GOOG_ONLY_V6 = "2001:4860:4860::8888"
# Googlebot crawlers, from googlebot.json.
GOOGLEBOT_V4 = "66.249.66.1"
GOOGLEBOT_V6 = "2001:4860:4801:10::1"
NOT_GOOGLE = ["127.0.0.1", "1.1.1.1", "10.0.0.1", "2606:4700::1111", "::1", "::ffff:1.1.1.1"]


def google_file(*cidrs: str, creation_time: str = "2026-01-02T03:04:05.000000") -> str:
    prefixes = [{"ipv6Prefix" if ":" in c else "ipv4Prefix": c} for c in cidrs]
    return json.dumps({"creationTime": creation_time, "prefixes": prefixes}, indent=2)


@pytest.fixture(scope="module")
def google() -> IpRangeSet:
    return load_google_ranges()


def packaged_prefixes(name: str) -> list[str]:
    return parse_google_json((PACKAGED / name).read_bytes(), name)


# --- packaged lists ---------------------------------------------------------------------------


def test_range_files_are_packaged() -> None:
    for name in RANGE_FILES:
        assert packaged_prefixes(name), name


def test_goog_only_addresses_really_are_only_in_goog_json() -> None:
    # The override test relies on this; if a refreshed list breaks it, pick other addresses.
    for name in RANGE_FILES:
        nets = [ipaddress.ip_network(p) for p in packaged_prefixes(name)]
        for text in (GOOG_ONLY_V4, GOOG_ONLY_V6):
            addr = ipaddress.ip_address(text)
            assert any(addr in n for n in nets) == (name == "goog.json"), (name, text)


def test_googlebot_addresses_are_in_googlebot_json() -> None:
    nets = [ipaddress.ip_network(p) for p in packaged_prefixes("googlebot.json")]
    for text in (GOOGLEBOT_V4, GOOGLEBOT_V6):
        assert any(ipaddress.ip_address(text) in n for n in nets), text


def test_load_uses_all_five_lists(google: IpRangeSet) -> None:
    v4 = v6 = 0
    for name in RANGE_FILES:
        for p in packaged_prefixes(name):
            if ipaddress.ip_network(p).version == 4:
                v4 += 1
            else:
                v6 += 1
    assert (google.v4_prefix_count, google.v6_prefix_count) == (v4, v6)
    assert len(google) == google.v4_interval_count + google.v6_interval_count
    assert 0 < len(google) < v4 + v6
    assert f"{v4} IPv4 + {v6} IPv6 prefixes" in google.summary()


@pytest.mark.parametrize("name", RANGE_FILES)
def test_every_packaged_prefix_is_inside(google: IpRangeSet, name: str) -> None:
    for p in packaged_prefixes(name):
        net = ipaddress.ip_network(p)
        assert str(net.network_address) in google
        assert str(net.broadcast_address) in google


@pytest.mark.parametrize(
    "ip", [GOOG_ONLY_V4, "8.8.4.4", GOOGLEBOT_V4, GOOG_ONLY_V6, GOOGLEBOT_V6, "2a00:1450::1"]
)
def test_google_addresses_are_inside(google: IpRangeSet, ip: str) -> None:
    assert google.contains(ip)
    assert ip in google


@pytest.mark.parametrize("ip", NOT_GOOGLE)
def test_other_addresses_are_outside(google: IpRangeSet, ip: str) -> None:
    assert not google.contains(ip)
    assert ip not in google


def test_ipv4_mapped_ipv6_is_checked_as_ipv4(google: IpRangeSet) -> None:
    assert google.contains("::ffff:8.8.8.8")
    assert google.contains("::FFFF:66.249.66.1")
    assert google.contains("::ffff:808:808")  # 8.8.8.8 written in hex
    assert not google.contains("::ffff:127.0.0.1")
    # Not a mapped address: IPv4-compatible form is plain IPv6 and not Google's.
    assert not google.contains("::8.8.8.8")


# --- IpRangeSet -------------------------------------------------------------------------------


def test_adjacent_networks_merge_and_boundaries_hold() -> None:
    ranges = IpRangeSet(["192.0.2.0/25", "192.0.2.128/25", "198.51.100.0/24"])
    assert len(ranges) == 2
    assert ranges.contains("192.0.2.0")
    assert ranges.contains("192.0.2.255")
    assert not ranges.contains("192.0.1.255")
    assert not ranges.contains("192.0.3.0")
    assert ranges.contains("198.51.100.0")
    assert ranges.contains("198.51.100.255")
    assert not ranges.contains("198.51.99.255")
    assert not ranges.contains("198.51.101.0")


def test_ipv6_boundaries() -> None:
    ranges = IpRangeSet(["2001:db8::/64", "2001:db8:0:1::/64"])
    assert len(ranges) == 1
    assert ranges.contains("2001:db8::")
    assert ranges.contains("2001:db8:0:1:ffff:ffff:ffff:ffff")
    assert not ranges.contains("2001:db8:0:2::")
    assert not ranges.contains("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff")


def test_overlapping_networks_merge() -> None:
    ranges = IpRangeSet(["10.0.0.0/8", "10.1.0.0/16", "10.255.255.0/24", "10.128.0.0/9"])
    assert len(ranges) == 1
    assert ranges.v4_prefix_count == 4
    assert ranges.contains("10.0.0.0")
    assert ranges.contains("10.255.255.255")
    assert not ranges.contains("11.0.0.0")
    assert not ranges.contains("9.255.255.255")


def test_separate_families_and_gaps_stay_separate() -> None:
    ranges = IpRangeSet(["10.0.0.0/24", "10.0.2.0/24", "2001:db8::/32", "0.0.0.0/32"])
    assert (ranges.v4_interval_count, ranges.v6_interval_count) == (3, 1)
    assert (ranges.v4_prefix_count, ranges.v6_prefix_count) == (3, 1)
    assert not ranges.contains("10.0.1.0")
    assert ranges.contains("0.0.0.0")
    assert not ranges.contains("::")


def test_host_bits_are_ignored() -> None:
    ranges = IpRangeSet(["203.0.113.77/24"])
    assert ranges.contains("203.0.113.0")
    assert ranges.contains("203.0.113.255")


def test_whole_address_space() -> None:
    ranges = IpRangeSet(["0.0.0.0/0", "::/0"])
    assert ranges.contains("255.255.255.255")
    assert ranges.contains("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


def test_empty_set() -> None:
    ranges = IpRangeSet([])
    assert len(ranges) == 0
    assert not ranges.contains("8.8.8.8")
    assert not ranges.contains("::ffff:8.8.8.8")


def test_mapped_ipv6_network_covers_ipv4_spelling() -> None:
    ranges = IpRangeSet(["::ffff:192.0.2.0/120"])
    assert ranges.contains("192.0.2.1")
    assert ranges.contains("::ffff:192.0.2.1")
    assert not ranges.contains("192.0.3.1")


def test_surrounding_whitespace_and_scope_ids() -> None:
    ranges = IpRangeSet(["192.0.2.0/24", "fe80::/10"])
    assert ranges.contains(" 192.0.2.1\n")
    assert ranges.contains("fe80::1%eth0")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        "not an ip",
        "8.8.8",
        "8.8.8.8.8",
        "8.8.8.8/32",
        "256.8.8.8",
        "08.8.8.8",
        "0x8.8.8.8",
        "8.8.8.8\x00",
        "8.8.8.8:443",
        "[2001:4860:4860::8888]",
        "2001:4860:4860::8888::1",
        "::ffff:8.8.8.8.8",
        "\ud800",
        "٨.٨.٨.٨",  # Arabic-Indic digits
        "8.8.8.8, 1.1.1.1",
    ],
)
def test_garbage_is_not_inside(google: IpRangeSet, garbage: str) -> None:
    assert google.contains(garbage) is False
    assert (garbage in google) is False


def test_non_strings_are_not_inside(google: IpRangeSet) -> None:
    assert None not in google
    assert 134744072 not in google  # 8.8.8.8 as an integer
    assert b"8.8.8.8" not in google


def test_invalid_cidr_in_constructor_raises() -> None:
    with pytest.raises(ValueError):
        IpRangeSet(["10.0.0.0/33"])


# --- hypothesis ------------------------------------------------------------------------------

V4_MAX = 2**32 - 1
V6_MAX = 2**128 - 1
MAPPED = 0xFFFF_0000_0000

# Bases drawn from small regions so that networks overlap and touch often.
v4_networks = st.builds(
    lambda base, plen: ipaddress.IPv4Network((base, plen), strict=False),
    st.one_of(st.integers(0, V4_MAX), st.integers(0xC000_0200, 0xC000_02FF)),
    st.one_of(st.integers(0, 32), st.integers(24, 32)),
)
v6_networks = st.builds(
    lambda base, plen: ipaddress.IPv6Network((base, plen), strict=False),
    st.one_of(
        st.integers(0, V6_MAX),
        st.integers(MAPPED + 0xC000_0200, MAPPED + 0xC000_02FF),
        st.integers(0x2001_0DB8 << 96, (0x2001_0DB8 << 96) + 0xFFFF),
    ),
    st.one_of(st.integers(0, 128), st.integers(112, 128)),
)


def spellings(value: int, version: int) -> list[str]:
    if version == 4:
        return [str(ipaddress.IPv4Address(value)), f"::ffff:{ipaddress.IPv4Address(value)}"]
    return [str(ipaddress.IPv6Address(value))]


def brute_force(nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], text: str) -> bool:
    # a.b.c.d and ::ffff:a.b.c.d are the same address, whichever family the network is written in.
    addr = ipaddress.ip_address(text)
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [addr]
    if isinstance(addr, ipaddress.IPv4Address):
        candidates.append(ipaddress.IPv6Address(MAPPED + int(addr)))
    elif addr.ipv4_mapped is not None:
        candidates.append(addr.ipv4_mapped)
    return any(a in net for a in candidates for net in nets)


@settings(max_examples=300, deadline=None)
@given(nets=st.lists(st.one_of(v4_networks, v6_networks), max_size=25), data=st.data())
def test_contains_agrees_with_brute_force(
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], data: st.DataObject
) -> None:
    ranges = IpRangeSet(str(n) for n in nets)
    probes: list[tuple[int, int]] = []
    for net in nets:
        top = V4_MAX if net.version == 4 else V6_MAX
        first, last = int(net.network_address), int(net.broadcast_address)
        probes += [(v, net.version) for v in (first - 1, first, last, last + 1) if 0 <= v <= top]
    probes += data.draw(
        st.lists(
            st.one_of(
                st.tuples(st.integers(0, V4_MAX), st.just(4)),
                st.tuples(st.integers(0, V6_MAX), st.just(6)),
                st.tuples(st.integers(0xC000_0200, 0xC000_02FF), st.just(4)),
            ),
            max_size=20,
        )
    )
    for value, version in probes:
        for text in spellings(value, version):
            assert ranges.contains(text) == brute_force(nets, text), (text, nets)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(), st.text(alphabet="0123456789abcdefF.:%/ x\x00", max_size=45)))
def test_any_text_parses_like_ipaddress(text: str) -> None:
    ranges = IpRangeSet(["0.0.0.0/0", "::/0"])
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        expected = False
    else:
        expected = True
    assert ranges.contains(text) is expected


# --- parse_google_json -----------------------------------------------------------------------


def test_parse_accepts_str_and_bytes_and_normalises() -> None:
    text = google_file("192.0.2.7/24", "2001:DB8::/32")
    assert parse_google_json(text, "t.json") == ["192.0.2.0/24", "2001:db8::/32"]
    assert parse_google_json(text.encode(), "t.json") == ["192.0.2.0/24", "2001:db8::/32"]


def test_parse_ignores_extra_fields() -> None:
    doc = {
        "syncToken": "1",
        "creationTime": "x",
        "prefixes": [{"ipv4Prefix": "192.0.2.0/24", "service": "Google Cloud", "scope": "eu"}],
    }
    assert parse_google_json(json.dumps(doc), "cloud.json") == ["192.0.2.0/24"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not valid JSON"),
        ('{"prefixes": [', "not valid JSON (line 1"),
        (b'{"prefixes": "\xff"}', "not UTF-8"),
        ("[]", "expected a JSON object with a 'prefixes' list, got a JSON array"),
        ("null", "got a JSON null"),
        ('{"creationTime": "x"}', "no 'prefixes' key"),
        # What Google's old crawler URLs started returning after the move.
        ('{"Action needed": "update the location"}', "no 'prefixes' key"),
        ('{"prefixes": {"ipv4Prefix": "192.0.2.0/24"}}', "'prefixes' must be a list"),
        ('{"prefixes": []}', "'prefixes' is empty"),
        ('{"prefixes": ["192.0.2.0/24"]}', "prefixes[0] must be an object, got a JSON string"),
        ('{"prefixes": [{"ipv4Prefix": "192.0.2.0/24"}, {}]}', "prefixes[1] has neither"),
        ('{"prefixes": [{"ipv4Prefix": 42}]}', "prefixes[0].ipv4Prefix must be a string"),
        (
            '{"prefixes": [{"ipv4Prefix": "192.0.2.0/33"}]}',
            "prefixes[0].ipv4Prefix is not a valid IPv4 network: '192.0.2.0/33'",
        ),
        ('{"prefixes": [{"ipv6Prefix": "nonsense"}]}', "not a valid IPv6 network"),
        (
            '{"prefixes": [{"ipv4Prefix": "2001:db8::/32"}]}',
            "prefixes[0].ipv4Prefix is an IPv6 network",
        ),
        ('{"prefixes": [{"ipv6Prefix": "192.0.2.0/24"}]}', "is an IPv4 network"),
    ],
)
def test_parse_rejects_invalid_files(content: str | bytes, message: str) -> None:
    with pytest.raises(RangeFileError) as excinfo:
        parse_google_json(content, "some/goog.json")
    assert str(excinfo.value).startswith("some/goog.json: ")
    assert message in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


# --- overrides --------------------------------------------------------------------------------


def test_override_replaces_only_that_list(tmp_path: Path) -> None:
    (tmp_path / "goog.json").write_text(google_file("203.0.113.0/24"))
    ranges = load_google_ranges(tmp_path)
    assert ranges.contains("203.0.113.5")
    assert not ranges.contains(GOOG_ONLY_V4)
    assert not ranges.contains(GOOG_ONLY_V6)
    # Still Google through the other, packaged lists.
    assert ranges.contains(GOOGLEBOT_V4)
    assert ranges.contains(GOOGLEBOT_V6)
    assert not load_google_ranges().contains("203.0.113.5")


def test_missing_or_unrelated_override_files_change_nothing(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(google_file("203.0.113.0/24"))
    packaged = load_google_ranges()
    for override_dir in (tmp_path, tmp_path / "does-not-exist"):
        ranges = load_google_ranges(override_dir)
        assert len(ranges) == len(packaged)
        assert ranges.contains(GOOG_ONLY_V4)
        assert not ranges.contains("203.0.113.5")


def test_broken_override_raises_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "cloud.json").write_text('{"prefixes": [{"ipv4Prefix": "bad"}]}')
    with pytest.raises(RangeFileError, match=r"cloud\.json: prefixes\[0\]\.ipv4Prefix"):
        load_google_ranges(tmp_path)


# --- install_range_file -----------------------------------------------------------------------


def test_install_uses_file_name_and_keeps_bytes(tmp_path: Path) -> None:
    content = google_file("203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32")
    src = tmp_path / "download" / "goog.json"
    src.parent.mkdir()
    src.write_text(content)
    override_dir = tmp_path / "state" / "google-ranges"

    result = install_range_file(src, override_dir)

    assert result == InstallResult(
        name="goog.json",
        path=override_dir / "goog.json",
        v4_prefixes=2,
        v6_prefixes=1,
        creation_time="2026-01-02T03:04:05.000000",
    )
    assert (override_dir / "goog.json").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in override_dir.iterdir()) == ["goog.json"]
    assert load_google_ranges(override_dir).contains("203.0.113.5")


def test_install_with_explicit_name_replaces_previous_copy(tmp_path: Path) -> None:
    override_dir = tmp_path / "overrides"
    override_dir.mkdir()
    (override_dir / "googlebot.json").write_text(google_file("198.51.100.0/24"))
    src = tmp_path / "common-crawlers.json"
    src.write_text(google_file("203.0.113.0/24", creation_time="2027-01-01T00:00:00"))

    result = install_range_file(src, override_dir, name="googlebot.json")

    assert result.name == "googlebot.json"
    assert result.creation_time == "2027-01-01T00:00:00"
    assert (override_dir / "googlebot.json").read_text() == src.read_text()
    assert sorted(p.name for p in override_dir.iterdir()) == ["googlebot.json"]
    ranges = load_google_ranges(override_dir)
    assert ranges.contains("203.0.113.5")
    assert not ranges.contains("198.51.100.5")


def test_install_without_creation_time(tmp_path: Path) -> None:
    src = tmp_path / "cloud.json"
    src.write_text('{"prefixes": [{"ipv6Prefix": "2001:db8::/32"}]}')
    result = install_range_file(src, tmp_path / "o")
    assert (result.v4_prefixes, result.v6_prefixes, result.creation_time) == (0, 1, None)


def test_install_rejects_unknown_file_name(tmp_path: Path) -> None:
    src = tmp_path / "ranges.json"
    src.write_text(google_file("203.0.113.0/24"))
    override_dir = tmp_path / "o"
    with pytest.raises(RangeFileError) as excinfo:
        install_range_file(src, override_dir)
    message = str(excinfo.value)
    assert "ranges.json" in message
    assert all(name in message for name in RANGE_FILES)
    assert not override_dir.exists()


def test_install_rejects_unknown_explicit_name(tmp_path: Path) -> None:
    src = tmp_path / "goog.json"
    src.write_text(google_file("203.0.113.0/24"))
    override_dir = tmp_path / "o"
    for bad in ("google.json", "../goog.json", "GOOG.JSON", ""):
        with pytest.raises(RangeFileError, match="unknown range list name") as excinfo:
            install_range_file(src, override_dir, name=bad)
        assert "user-triggered-fetchers.json" in str(excinfo.value)
    assert not override_dir.exists()


def test_install_rejects_invalid_content_and_keeps_previous(tmp_path: Path) -> None:
    override_dir = tmp_path / "o"
    override_dir.mkdir()
    previous = google_file("198.51.100.0/24")
    (override_dir / "goog.json").write_text(previous)
    src = tmp_path / "goog.json"
    src.write_text('{"Action needed": "update the location you\'re fetching from"}')

    with pytest.raises(RangeFileError, match=r"goog\.json: no 'prefixes' key"):
        install_range_file(src, override_dir)

    assert (override_dir / "goog.json").read_text() == previous
    assert sorted(p.name for p in override_dir.iterdir()) == ["goog.json"]


def test_install_missing_source(tmp_path: Path) -> None:
    with pytest.raises(RangeFileError, match="cannot read"):
        install_range_file(tmp_path / "goog.json", tmp_path / "o")


def test_install_packaged_copy_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "special-crawlers.json"
    src.write_bytes((PACKAGED / "special-crawlers.json").read_bytes())
    result = install_range_file(src, tmp_path / "o")
    prefixes = packaged_prefixes("special-crawlers.json")
    assert result.v4_prefixes + result.v6_prefixes == len(prefixes)
    assert result.creation_time is not None
    assert len(load_google_ranges(tmp_path / "o")) == len(load_google_ranges())


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet="0189.:f %x ", max_size=20))
def test_the_first_octet_shortcut_never_turns_away_an_address(text: str) -> None:
    # contains() answers False at once when a dotted address's first octet starts no range;
    # spellings such as "08.1.2.3" are not addresses at all, so the shortcut changes nothing.
    nets = [ipaddress.ip_network("8.0.0.0/8"), ipaddress.ip_network("::ffff:9.0.0.0/104")]
    ranges = IpRangeSet(str(n) for n in nets)
    try:
        expected = brute_force(nets, text.strip())
    except ValueError:
        expected = False
    assert ranges.contains(text) == expected
