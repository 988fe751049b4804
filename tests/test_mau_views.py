"""The two MAU views agree on randomized histories imported in random order.

For each generated history (check-ins around a month boundary, some from emulators, dev builds
or Google addresses, some bundle uploads opening Google windows, some lines repeated):

- the per-day ``new_devices`` counter summed over a month equals the month's unique counted
  devices (the union of the day bitmaps), and, for the current month, the device-table view;
- the 30-day rolling ``mau`` of every day equals a brute-force recount from the raw events.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap
from sqlalchemy import select

from otameter.clock import day_of_ms, to_ms
from otameter.importing.importer import Importer
from otameter.metering.counting import GOOGLE_WINDOW_MS
from otameter.metering.rollups import load_day_bitmaps, month_end
from otameter.statistics import month_unique_devices_from_device_table
from otameter.storage import schema as s
from tests.harness import Harness, running

# The harness clock stands at 2024-05-15 12:00; the history covers the month before it.
FIRST_DAY = date(2024, 4, 10)
LAST_DAY = date(2024, 5, 15)
SPAN_MS = to_ms(datetime(2024, 5, 15, 12, tzinfo=UTC)) - to_ms(datetime(2024, 4, 10, tzinfo=UTC))
START_MS = to_ms(datetime(2024, 4, 10, tzinfo=UTC))
GOOGLE = "8.8.8.8"
OTHER_IP = "203.0.113.5"
_apps = itertools.count()


@dataclass(frozen=True)
class Check:
    device: int
    at_ms: int
    is_emulator: bool
    is_prod: bool
    from_google: bool


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, str, str]]:
    base = tmp_path_factory.mktemp("mau-views")
    with running(f"sqlite:///{base}/otameter.db", base / "data") as h:
        _, key = h.user("dev@example.com")
        yield h, key, h.org(key)


# Offsets are drawn so that instants often fall close together (same day, same window).
instants = st.integers(min_value=0, max_value=SPAN_MS - 1)
checks = st.builds(
    Check,
    device=st.integers(min_value=0, max_value=11),
    at_ms=instants.map(lambda n: START_MS + n),
    is_emulator=st.sampled_from([False, False, False, True]),
    is_prod=st.sampled_from([True, True, True, False]),
    from_google=st.sampled_from([False, False, True]),
)


def brute_force(history: list[Check], uploads: list[int]) -> tuple[dict[date, set[int]], set[int]]:
    """Counted devices per day, straight from the rules; and the current month's devices."""
    per_day: dict[date, set[int]] = {}
    for c in history:
        in_window = c.from_google and any(u <= c.at_ms < u + GOOGLE_WINDOW_MS for u in uploads)
        if c.is_emulator or not c.is_prod or in_window:
            continue
        per_day.setdefault(day_of_ms(c.at_ms), set()).add(c.device)
    may = set().union(*(d for day, d in per_day.items() if day.month == 5))
    return per_day, may


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=st.lists(checks, min_size=1, max_size=60),
    uploads=st.lists(instants.map(lambda n: START_MS + n), max_size=3, unique=True),
    repeated=st.lists(st.integers(min_value=0, max_value=59), max_size=5),
    order_seed=st.integers(min_value=0, max_value=2**32 - 1),
    slice_bytes=st.integers(min_value=1, max_value=8000),
)
def test_mau_views_agree(
    shared: tuple[Harness, str, str],
    tmp_path: Path,
    history: list[Check],
    uploads: list[int],
    repeated: list[int],
    order_seed: int,
    slice_bytes: int,
) -> None:
    h, key, org_id = shared
    app_id = f"com.example.views{next(_apps)}"
    h.app(key, org_id, app_id)
    devices = [str(uuid.uuid4()) for _ in range(12)]

    lines = [
        {
            "type": "checkin",
            "id": f"{app_id}-{n}",
            "time": iso(c.at_ms),
            "app_id": app_id,
            "device_id": devices[c.device],
            "platform": "ios",
            "version_name": f"1.0.{n % 3}",
            "is_emulator": c.is_emulator,
            "is_prod": c.is_prod,
            "ip": GOOGLE if c.from_google else OTHER_IP,
        }
        for n, c in enumerate(history)
    ]
    lines += [lines[n] for n in repeated if n < len(lines)]
    lines += [
        {"type": "upload", "time": iso(at), "app_id": app_id, "version": f"v{n}", "size": 10}
        for n, at in enumerate(uploads)
    ]
    random.Random(order_seed).shuffle(lines)
    path = tmp_path / f"{app_id}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    summary = Importer(h.rt.writer, h.clock, slice_bytes=slice_bytes).run(path)
    h.rollup()
    assert summary.rejected == []
    assert summary.accepted == len(history) + len(uploads)

    per_day, may_devices = brute_force(history, uploads)
    u = s.daily_usage.c
    with h.rt.read_engine.connect() as conn:
        rows = {r.day: r for r in conn.execute(select(s.daily_usage).where(u.app_id == app_id))}
        bitmaps = load_day_bitmaps(conn, app_id, date(2024, 4, 1), LAST_DAY)
        table_view = month_unique_devices_from_device_table(conn, app_id, date(2024, 5, 1))

    for month in (date(2024, 4, 1), date(2024, 5, 1)):
        days = [d for d in bitmaps if month <= d <= month_end(month)]
        union = BitMap.union(*(bitmaps[d] for d in days)) if days else BitMap()
        new_sum = sum(r.new_devices for d, r in rows.items() if month <= d <= month_end(month))
        expected = set().union(*(v for d, v in per_day.items() if d.month == month.month))
        assert new_sum == len(union) == len(expected)
    assert table_view == len(may_devices)

    day = FIRST_DAY
    while day <= LAST_DAY:
        window = [per_day.get(day - timedelta(days=n), set()) for n in range(30)]
        mau = rows[day].mau if day in rows else 0
        assert mau == len(set().union(*window)), day
        dau = rows[day].dau if day in rows else 0
        assert dau == len(per_day.get(day, set())), day
        day += timedelta(days=1)
