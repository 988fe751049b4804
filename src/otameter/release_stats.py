"""Release-health rows (contract.md "Release health"): per bundle version, over a range of days
or per day, read from the merged device sets and launch histograms, never from raw events."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date

from pyroaring import BitMap
from sqlalchemy import Connection, select

from .csv_cells import CsvWriter
from .models.statistics import ReleaseRow
from .releases import (
    CRASHED,
    DOWNLOADED,
    FAILED,
    INSTALLED,
    OFFERED,
    OUTCOMES,
    RELEASE_ROW_FIELDS,
    ROLLED_BACK,
    histogram_quantile,
)
from .storage import schema as s

ACTIVE = "active"
FIELDS = RELEASE_ROW_FIELDS
_KINDS = ("counted", *OUTCOMES)


def release_rows(
    conn: Connection, app_id: str, start: date, end: date, today: date, *, by_day: bool = False
) -> list[ReleaseRow]:
    """One row per version with anything in [start, min(end, today)] (per day: with ``date``).

    Device counts are the size of the union of the day sets, so a device counts once over the
    range; ``active`` is the version's counted devices of MAU.
    """
    last = min(end, today)
    if last < start:
        return []
    b = s.activity_bitmaps.c
    query = select(b.day, b.kind, b.version_name, b.devices, *([] if by_day else [b.bitmap]))
    rows = conn.execute(
        query.where(
            b.app_id == app_id,
            b.day >= start,
            b.day <= last,
            b.kind.in_(_KINDS),
            b.version_name != "",
        )
    )
    # (day or None, version) -> kind -> device count or bitmaps to unite
    counts: dict[tuple[date | None, str], dict[str, int]] = defaultdict(dict)
    sets: dict[tuple[str, str], list[BitMap]] = defaultdict(list)
    for stored in rows:
        kind = ACTIVE if stored.kind == "counted" else stored.kind
        if by_day:
            counts[(stored.day, stored.version_name)][kind] = int(stored.devices)
        else:
            sets[(stored.version_name, kind)].append(BitMap.deserialize(stored.bitmap))
            counts.setdefault((None, stored.version_name), {})
    for (version, kind), maps in sets.items():
        counts[(None, version)][kind] = len(BitMap.union(*maps))
    lt = s.release_launches.c
    histograms: dict[tuple[date | None, str], dict[int, int]] = defaultdict(dict)
    for day, version, bucket, launches in conn.execute(
        select(lt.day, lt.version_name, lt.bucket, lt.launches).where(
            lt.app_id == app_id, lt.day >= start, lt.day <= last
        )
    ):
        histogram = histograms[(day if by_day else None, version)]
        histogram[bucket] = histogram.get(bucket, 0) + int(launches)
        counts.setdefault((day if by_day else None, version), {})
    order = _version_order(conn, app_id, {version for _, version in counts})
    out: list[ReleaseRow] = []
    for day, version in sorted(counts, key=lambda k: (k[0] or start, order[k[1]])):
        figures = counts[(day, version)]
        histogram = histograms.get((day, version), {})
        row: ReleaseRow = {
            "version": version,
            "active": figures.get(ACTIVE, 0),
            "offered": figures.get(OFFERED, 0),
            "downloaded": figures.get(DOWNLOADED, 0),
            "installed": figures.get(INSTALLED, 0),
            "failed": figures.get(FAILED, 0),
            "rolled_back": figures.get(ROLLED_BACK, 0),
            "crashed": figures.get(CRASHED, 0),
            "launches": sum(histogram.values()),
            "launch_ms_p50": histogram_quantile(histogram, 0.50),
            "launch_ms_p95": histogram_quantile(histogram, 0.95),
        }
        # A day's row names its day first.
        out.append({"date": day.isoformat(), **row} if by_day and day is not None else row)
    return out


def _version_order(conn: Connection, app_id: str, versions: Iterable[str]) -> dict[str, int]:
    """Newest bundle first; versions with no bundle (``builtin``, another server's) after,
    by name."""
    wanted = sorted(set(versions))
    if not wanted:
        return {}
    bn = s.bundles.c
    created = dict(
        conn.execute(
            select(bn.version, bn.created_at).where(bn.app_id == app_id, bn.version.in_(wanted))
        ).all()
    )
    ranked = sorted(wanted, key=lambda v: (v not in created, -created.get(v, 0), v))
    return {version: n for n, version in enumerate(ranked)}


def release_rows_to_csv(rows: Sequence[ReleaseRow], by_day: bool) -> str:
    """CSV with the JSON fields as columns (a launch time without launches is empty)."""
    fields = (("date",) if by_day else ()) + FIELDS
    buffer = io.StringIO()
    # Versions come from devices: no cell may start a formula (csv_cells.py).
    writer = CsvWriter(buffer)
    writer.writerow(fields)
    for row in rows:
        cells: Mapping[str, object] = row
        writer.writerow(["" if cells[name] is None else cells[name] for name in fields])
    return buffer.getvalue()
