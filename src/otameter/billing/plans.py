"""Plans and billing cycles: what an org subscribes to.

A plan caps each metric (MAU, storage, bandwidth) for a billing cycle; an org's cycle starts
on its anchor day of the month. An org without a plan uses the plan marked default; if there
is none, the org is unmetered: it has no limits, the 3% rule does not apply to it and it is
never locked. Usage against the plan is in ``usage.py``, locks and alerts in
``enforcement.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from ..models import plans as models
from ..storage import schema as s
from ..storage.dialect import dialect_insert

METRICS = ("mau", "storage", "bandwidth")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_quantity(text: str | int) -> int:
    """A positive integer, optionally with a unit: ``1GB`` = 10**9, ``1GiB`` = 2**30, ``10k``."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE_RE.match(text)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"not a quantity: {text!r} (use e.g. 1000, 500MB, 1GB, 2GiB)")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ValueError(f"a limit must be positive, got {text!r}")
    return value


# -- billing cycles --------------------------------------------------------------------------


def _days_in_month(year: int, month: int) -> int:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


def _anchor_in(year: int, month: int, anchor: int) -> date:
    # A month without the anchor day starts its cycle on its last day.
    return date(year, month, min(anchor, _days_in_month(year, month)))


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def cycle_bounds(anchor: int, today: date) -> tuple[date, date]:
    """The billing cycle containing ``today``: (first day, last day), both inclusive."""
    if not 1 <= anchor <= 31:
        raise ValueError("the cycle anchor is a day of the month (1..31)")
    start = _anchor_in(today.year, today.month, anchor)
    if today < start:
        start = _anchor_in(*_shift_month(today.year, today.month, -1), anchor)
    following = _anchor_in(*_shift_month(start.year, start.month, 1), anchor)
    return start, following - timedelta(days=1)


# -- plans -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    mau: int
    storage: int
    bandwidth: int
    is_default: bool = False

    def limit(self, metric: str) -> int:
        value: int = getattr(self, metric)
        return value

    def as_json(self) -> models.Plan:
        return {
            "name": self.name,
            "mau": self.mau,
            "storage": self.storage,
            "bandwidth": self.bandwidth,
            "default": self.is_default,
        }


def _plan(row: Any) -> Plan:
    return Plan(row.name, int(row.mau), int(row.storage), int(row.bandwidth), bool(row.is_default))


def list_plans(conn: Connection) -> list[Plan]:
    return [_plan(r) for r in conn.execute(select(s.plans).order_by(s.plans.c.name))]


def effective_plan(conn: Connection, plan_name: str | None) -> Plan | None:
    p = s.plans.c
    if plan_name:
        row = conn.execute(select(s.plans).where(p.name == plan_name)).first()
    else:
        row = conn.execute(select(s.plans).where(p.is_default.is_(True))).first()
    return _plan(row) if row is not None else None


def upsert_plan(
    conn: Connection,
    name: str,
    mau: int,
    storage: int,
    bandwidth: int,
    now_ms: int,
    *,
    default: bool | None = None,
) -> Plan:
    """Create or update a plan; ``default`` True makes it the plan of orgs without one."""
    if not name or len(name) > 64:
        raise ValueError("a plan name is 1 to 64 characters")
    for value in (mau, storage, bandwidth):
        if value <= 0:
            raise ValueError("limits must be positive")
    p = s.plans.c
    values: dict[str, Any] = {"mau": mau, "storage": storage, "bandwidth": bandwidth}
    if default is not None:
        values["is_default"] = default
    stmt = dialect_insert(conn, s.plans).values(
        name=name, created_at=now_ms, updated_at=now_ms, **{"is_default": False, **values}
    )
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["name"], set_={**values, "updated_at": now_ms})
    )
    if default:
        conn.execute(
            update(s.plans).where(p.name != name, p.is_default.is_(True)).values(is_default=False)
        )
    row = conn.execute(select(s.plans).where(p.name == name)).one()
    return _plan(row)


def orgs_using_plan(conn: Connection, plan: Plan) -> list[str]:
    o = s.orgs.c
    where = o.plan == plan.name
    if plan.is_default:
        where = where | o.plan.is_(None)
    return list(conn.scalars(select(o.id).where(where)))


def set_org_plan(
    conn: Connection, org_id: str, plan_name: str | None, cycle_anchor: int | None
) -> None:
    o = s.orgs.c
    if conn.scalar(select(o.id).where(o.id == org_id)) is None:
        raise LookupError(f"no organization {org_id}")
    if plan_name is not None and effective_plan(conn, plan_name) is None:
        raise LookupError(f"no plan {plan_name!r} (create it with: otameter plan create)")
    values: dict[str, Any] = {"plan": plan_name}
    if cycle_anchor is not None:
        cycle_bounds(cycle_anchor, date(2000, 1, 1))  # validates the day
        values["cycle_anchor"] = cycle_anchor
    conn.execute(update(s.orgs).where(o.id == org_id).values(**values))
