"""How otameter writes a number of bytes for people, everywhere (CLI, lock messages, docs).

Decimal units: 1 kB is 1,000 bytes, 1 MB 10^6, 1 GB 10^9, as plan limits are written
(``--storage 5GB`` is 5 * 10^9 bytes), so a limit reads back as it was set and chart axes get
round steps. One decimal, none when it is zero: ``999 B``, ``1.5 kB``, ``100 MB``. The
dashboard's ``bytes()`` in ``dashboard/static/dashboard.js`` follows the same rule.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

UNITS = ("kB", "MB", "GB", "TB", "PB")


def format_bytes(size: int | float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    if abs(value) < 1000:
        return f"{int(value)} B"
    unit = UNITS[0]
    for unit in UNITS:
        value /= 1000
        # 999.96 kB would print as "1000 kB": it is 1 MB.
        if abs(value) < 999.95 or unit == UNITS[-1]:
            break
    # Half up on the exact value of the float, as JavaScript's toFixed(1) rounds.
    text = str(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
    return f"{text.removesuffix('.0')} {unit}"
