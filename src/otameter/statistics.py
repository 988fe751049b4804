"""Statistics queries: per-day figures read from the rollups, never from raw check-ins.

Every figure comes from ``daily_usage`` (kept current by the rollup worker) or, for the
bundle-usage view, from the per-version day counts in ``activity_bitmaps``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Connection, func, select

from .csv_cells import CsvWriter
from .errors import ApiError
from .models.statistics import (
    BundleUsageDay,
    StatsDay,
    StatsFormat,
    StatsOptions,
    StatsRange,
    VersionShare,
)
from .query_strings import decode_query
from .storage import schema as s

MAX_RANGE_DAYS = 90
RANGE_TOO_LARGE = "Date range cannot exceed 90 days"
INVALID_RANGE = "Invalid date range: 'from' must not be after 'to'"
PREVIOUS_TOO_EARLY = "Invalid compare: the previous period would start before 0001-01-01"

#: What every row carries (the seed's shape).
PUBLIC_FIELDS = ("mau", "storage", "bandwidth")
#: Added by ``breakdown=true``: devices first active in the calendar month, and active that day.
BREAKDOWN_FIELDS = ("new_devices", "dau")


def parse_range(params: Mapping[str, str]) -> tuple[date, date]:
    """``from``/``to`` (``StatsRange``): inclusive, at most 90 days counted inclusively."""
    span = decode_query(params, StatsRange)
    start, end = span.start, span.end
    if start > end:
        raise ApiError(400, INVALID_RANGE)
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ApiError(400, RANGE_TOO_LARGE)
    return start, end


@dataclass(frozen=True, slots=True)
class StatsQuery:
    start: date
    end: date
    csv: bool = False
    breakdown: bool = False
    compare: bool = False

    @property
    def length(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def previous(self) -> tuple[date, date]:
        """The period of equal length that ends the day before ``start``."""
        return self.start - timedelta(days=self.length), self.start - timedelta(days=1)


def parse_query(params: Mapping[str, str], *, options: bool = True) -> StatsQuery:
    """``from``/``to``, ``format`` and, where ``options``, ``compare`` and ``breakdown``."""
    start, end = parse_range(params)
    if not options:
        fmt = decode_query(params, StatsFormat)
        return StatsQuery(start, end, csv=fmt.format == "csv")
    given = decode_query(params, StatsOptions)
    query = StatsQuery(
        start,
        end,
        csv=given.format == "csv",
        breakdown=given.breakdown,
        compare=given.compare == "previous",
    )
    if query.compare and (start - date.min).days < query.length:
        raise ApiError(400, PREVIOUS_TOO_EARLY)
    return query


def daily_figures(
    conn: Connection,
    app_ids: Sequence[str],
    start: date,
    end: date,
    today: date,
    breakdown: bool = False,
) -> list[StatsDay]:
    """One row per day from ``start`` to ``min(end, today)``, summed over ``app_ids``.

    A day with no stored figures is a row of zeros (no app had anything that day, or the
    app did not exist yet). Only the row's figures are read (``breakdown`` adds two): fewer
    sums make org totals cheaper.
    """
    last = min(end, today)
    if last < start:
        return []
    figures = PUBLIC_FIELDS + (BREAKDOWN_FIELDS if breakdown else ())
    totals: dict[date, dict[str, int]] = {}
    if app_ids:
        u = s.daily_usage.c
        app_filter = u.app_id == app_ids[0] if len(app_ids) == 1 else u.app_id.in_(list(app_ids))
        rows = conn.execute(
            select(u.day, *[func.sum(getattr(u, name)).label(name) for name in figures])
            .where(app_filter, u.day >= start, u.day <= last)
            .group_by(u.day)
        )
        for stored in rows:
            totals[stored.day] = {name: int(getattr(stored, name) or 0) for name in figures}
    out: list[StatsDay] = []
    day = start
    zero = dict.fromkeys(figures, 0)
    while day <= last:
        found = totals.get(day, zero)
        row: StatsDay = {
            "date": day.isoformat(),
            "mau": found["mau"],
            "storage": found["storage"],
            "bandwidth": found["bandwidth"],
        }
        if breakdown:
            row["new_devices"] = found["new_devices"]
            row["dau"] = found["dau"]
        out.append(row)
        day += timedelta(days=1)
    return out


def statistics_rows(
    conn: Connection, app_ids: Sequence[str], query: StatsQuery, today: date
) -> list[StatsDay]:
    """The answer rows: the seed's figures, plus the breakdown and the compared period."""
    out = daily_figures(conn, app_ids, query.start, query.end, today, query.breakdown)
    if query.compare and out:
        lo, hi = query.previous
        before = daily_figures(conn, app_ids, lo, hi, today, query.breakdown)
        # Day n of the period is compared with day n of the previous one.
        for row, old in zip(out, before, strict=False):
            row["previous"] = old
    return out


def bundle_usage_rows(
    conn: Connection, app_id: str, start: date, end: date, today: date
) -> list[BundleUsageDay]:
    """Per day, how many counted devices ran each bundle version, and their share.

    Reads the per-version day counts the rollups keep in ``activity_bitmaps``. A device that
    changed version during a day is on both, so shares may add up to more than 100.
    """
    last = min(end, today)
    if last < start:
        return []
    b = s.activity_bitmaps.c
    per_day: dict[date, dict[str, int]] = {}
    for day, version, devices in conn.execute(
        select(b.day, b.version_name, b.devices).where(
            b.app_id == app_id, b.kind == "counted", b.day >= start, b.day <= last
        )
    ):
        per_day.setdefault(day, {})[version] = int(devices)
    out: list[BundleUsageDay] = []
    day = start
    while day <= last:
        counts = per_day.get(day, {})
        total = counts.pop("", 0)
        versions: list[VersionShare] = [
            {
                "version": version,
                "devices": devices,
                "share": round(100.0 * devices / total, 2) if total else 0.0,
            }
            for version, devices in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        out.append({"date": day.isoformat(), "devices": total, "versions": versions})
        day += timedelta(days=1)
    return out


def rows_to_csv(rows: Sequence[StatsDay], breakdown: bool, compare: bool) -> str:
    """CSV of the answer rows: one line per day, the compared day's figures as ``previous_*``."""
    fields = ["date", *PUBLIC_FIELDS, *(BREAKDOWN_FIELDS if breakdown else ())]
    header = fields + ([f"previous_{name}" for name in fields] if compare else [])
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.writerow(header)
    for row in rows:
        # Read by name: the columns are the row's fields.
        cells: Mapping[str, object] = row
        line = [cells[name] for name in fields]
        if compare:
            old: Mapping[str, object] = row.get("previous") or {}
            line += [old.get(name, "") for name in fields]
        writer.writerow(line)
    return buffer.getvalue()


def bundle_usage_to_csv(rows: Sequence[BundleUsageDay]) -> str:
    """Long form: one line per day and version (a day without devices has one empty line)."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.writerow(["date", "version", "devices", "share", "day_devices"])
    for row in rows:
        for entry in row["versions"]:
            writer.writerow(
                [row["date"], entry["version"], entry["devices"], entry["share"], row["devices"]]
            )
        if not row["versions"]:
            writer.writerow([row["date"], "", 0, 0.0, row["devices"]])
    return buffer.getvalue()


def month_unique_devices_from_device_table(conn: Connection, app_id: str, month_first: date) -> int:
    """The seed's first view: devices whose last counted check-in falls in the month.

    Exact for the current month (a later month's check-in moves ``last_counted_at`` on).
    """
    from .clock import day_start_ms
    from .metering.rollups import month_end

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
