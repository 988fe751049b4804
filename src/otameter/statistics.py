"""Statistics queries: per-day figures read from the rollups, never from raw check-ins."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from . import schema as s
from .errors import ApiError

MAX_RANGE_DAYS = 90
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INVALID_DATE = "Invalid date format. Use YYYY-MM-DD"
RANGE_TOO_LARGE = "Date range cannot exceed 90 days"
INVALID_RANGE = "Invalid date range: 'from' must not be after 'to'"


def parse_day(value: str | None) -> date:
    if value is None or not DATE_RE.match(value):
        raise ApiError(400, INVALID_DATE)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, INVALID_DATE) from None


def parse_range(start_raw: str | None, end_raw: str | None) -> tuple[date, date]:
    """Validate ``from``/``to``: inclusive, at most 90 days counted inclusively."""
    start, end = parse_day(start_raw), parse_day(end_raw)
    if start > end:
        raise ApiError(400, INVALID_RANGE)
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ApiError(400, RANGE_TOO_LARGE)
    return start, end


FIGURES = ("mau", "dau", "new_devices", "emudev_devices", "storage", "bandwidth")


def daily_figures(
    conn: Connection, app_ids: Sequence[str], start: date, end: date, today: date
) -> list[dict[str, Any]]:
    """One row per day from ``start`` to ``min(end, today)``, summed over ``app_ids``.

    A day with no stored figures is a row of zeros (no app had anything that day).
    """
    last = min(end, today)
    if last < start:
        return []
    totals: dict[date, dict[str, int]] = {}
    if app_ids:
        u = s.daily_usage.c
        rows = conn.execute(
            select(u.day, *[func.sum(getattr(u, name)).label(name) for name in FIGURES])
            .where(u.app_id.in_(list(app_ids)), u.day >= start, u.day <= last)
            .group_by(u.day)
        )
        for row in rows:
            totals[row.day] = {name: int(getattr(row, name) or 0) for name in FIGURES}
    out: list[dict[str, Any]] = []
    day = start
    zero = dict.fromkeys(FIGURES, 0)
    while day <= last:
        out.append({"date": day.isoformat(), **totals.get(day, zero)})
        day += timedelta(days=1)
    return out


def month_unique_devices_from_device_table(conn: Connection, app_id: str, month_first: date) -> int:
    """The seed's first view: devices whose last counted check-in falls in the month.

    Exact for the current month (a later month's check-in moves ``last_counted_at`` on).
    """
    from .clock import day_start_ms
    from .rollups import month_end

    lo = day_start_ms(month_first)
    hi = day_start_ms(month_end(month_first) + timedelta(days=1))
    d = s.devices.c
    return int(
        conn.scalar(
            select(func.count())
            .select_from(s.devices)
            .where(d.app_id == app_id, d.last_counted_at >= lo, d.last_counted_at < hi)
        )
        or 0
    )
