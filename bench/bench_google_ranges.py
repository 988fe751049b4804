"""Lookups per second of the Google range check.

Run with: python bench/bench_google_ranges.py [--seed N]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import time
from collections.abc import Sequence

from otameter.google_ranges import IpRangeSet, load_google_ranges

V4_COUNT = 1_000_000
V6_COUNT = 200_000


def random_v4(rng: random.Random, count: int) -> list[str]:
    return [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(count)]


def random_v6(rng: random.Random, count: int) -> list[str]:
    # Uniform 128-bit addresses would almost never hit; half are drawn from 2000::/3 (the
    # global unicast space) and half from inside Google's own /32s, so both outcomes are timed.
    google_32s = [0x2001_4860, 0x2404_6800, 0x2607_F8B0, 0x2A00_1450, 0x2800_03F0]
    out = []
    for i in range(count):
        if i % 2:
            value = (rng.choice(google_32s) << 96) | rng.getrandbits(96)
        else:
            value = (0b001 << 125) | rng.getrandbits(125)
        out.append(str(ipaddress.IPv6Address(value)))
    return out


def measure(ranges: IpRangeSet, addresses: Sequence[str]) -> tuple[float, int]:
    contains = ranges.contains
    start = time.perf_counter()
    hits = 0
    for ip in addresses:
        if contains(ip):
            hits += 1
    return time.perf_counter() - start, hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    start = time.perf_counter()
    ranges = load_google_ranges()
    print(f"load_google_ranges: {(time.perf_counter() - start) * 1000:.1f} ms ({ranges.summary()})")

    for label, addresses in (
        ("IPv4", random_v4(rng, V4_COUNT)),
        ("IPv6", random_v6(rng, V6_COUNT)),
    ):
        elapsed, hits = measure(ranges, addresses)
        print(
            f"{label}: {len(addresses):>9,} lookups in {elapsed:.3f} s = "
            f"{len(addresses) / elapsed:>12,.0f} lookups/s "
            f"({elapsed / len(addresses) * 1e9:.0f} ns each, {hits:,} inside)"
        )


if __name__ == "__main__":
    main()
