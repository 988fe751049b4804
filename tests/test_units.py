"""Bytes for people: one formatter, decimal units (as plan limits are written)."""

from __future__ import annotations

import pytest

from otameter.billing.plans import parse_quantity
from otameter.cli.output import human_bytes
from otameter.units import format_bytes


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (1500, "1.5 kB"),
        (999_949, "999.9 kB"),
        (999_960, "1 MB"),  # not "1000 kB"
        (95_367_431, "95.4 MB"),
        (100 * 10**6, "100 MB"),
        (5 * 10**9, "5 GB"),
        (1_250_000_000_000, "1.3 TB"),
        (3 * 10**18, "3000 PB"),
    ],
)
def test_format_bytes(size: int | None, text: str) -> None:
    assert format_bytes(size) == text
    assert human_bytes(size) == text  # the command line's name for the same thing


@pytest.mark.parametrize("limit", ["1GB", "100MB", "5GB", "250kB", "10TB"])
def test_a_limit_reads_back_as_it_was_written(limit: str) -> None:
    written = format_bytes(parse_quantity(limit))
    assert written.replace(" ", "") == limit
