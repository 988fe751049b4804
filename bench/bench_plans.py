"""Cost of one plan evaluation (the work added to a rollup for an org with traffic).

Builds an org with APPS apps whose devices are active over a whole 30-day cycle (merged
per-day bitmaps, as the rollups leave them), puts it on a plan, then times evaluate_orgs:
the exact cycle MAU union, the 3% rule, bandwidth, storage, alerts and spikes.

Run with: python bench/bench_plans.py [--devices N] [--daily-share F] [--apps N]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from pyroaring import BitMap

from otameter.billing.enforcement import evaluate_orgs
from otameter.billing.plans import set_org_plan, upsert_plan
from otameter.billing.usage import compute_usage, load_org
from otameter.storage import schema as s
from otameter.storage.db import create_db_engine, migrate
from otameter.users import create_user

TODAY = date(2024, 5, 30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--daily-share", type=float, default=0.3)
    parser.add_argument("--apps", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate(url)
        engine = create_db_engine(url, writer=True)
        rng = random.Random(7)
        with engine.begin() as conn:
            user_id, _ = create_user(conn, "bench@example.com", "", 0)
            org_id = str(uuid.uuid4())
            conn.execute(
                s.orgs.insert().values(
                    id=org_id, name="bench", created_by=user_id, created_at=0, cycle_anchor=1
                )
            )
            per_app = args.devices // args.apps
            for n in range(args.apps):
                app_id = f"com.bench.app{n}"
                conn.execute(
                    s.apps.insert().values(
                        app_id=app_id, name=app_id, owner_org=org_id, created_at=0
                    )
                )
                base = n * per_app
                rows = []
                for d in range(TODAY.day):
                    day = date(2024, 5, 1) + timedelta(days=d)
                    k = int(per_app * args.daily_share)
                    ids = rng.sample(range(base, base + per_app), k)
                    for kind, bitmap in (
                        ("counted", BitMap(ids[: int(k * 0.99)])),
                        ("emudev", BitMap(ids[int(k * 0.99) :])),
                    ):
                        rows.append(
                            {
                                "app_id": app_id,
                                "day": day,
                                "kind": kind,
                                "version_name": "",
                                "bitmap": bitmap.serialize(),
                                "devices": len(bitmap),
                            }
                        )
                conn.execute(s.activity_bitmaps.insert(), rows)
            upsert_plan(conn, "big", 10**9, 10**12, 10**12, 0)
            set_org_plan(conn, org_id, "big", None)

        now_ms = int((TODAY - date(1970, 1, 1)).total_seconds() * 1000) + 3_600_000
        with engine.begin() as conn:
            usage = compute_usage(conn, load_org(conn, org_id), TODAY)
        print(
            f"cycle MAU {usage.mau:,}, emulator/dev share {usage.emudev_ratio:.4f} "
            f"({args.apps} app(s), {TODAY.day} days)"
        )
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            with engine.begin() as conn:
                evaluate_orgs(conn, [org_id], now_ms)
            timings.append(time.perf_counter() - started)
        timings.sort()
        print(
            f"evaluate_orgs: median {timings[len(timings) // 2] * 1000:.1f} ms, "
            f"max {timings[-1] * 1000:.1f} ms over {args.runs} runs"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
