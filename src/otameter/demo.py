"""Demo data: an org, apps, bundles and 90 days of traffic, fed through the real pipeline."""

from __future__ import annotations

import io
import random
import uuid
import zipfile
from datetime import timedelta

from sqlalchemy import Connection, func, select

from .auth import hash_key, new_api_key
from .billing.plans import upsert_plan
from .bundle_store import copy_into
from .clock import to_ms
from .metering.events import BundleUpload, CheckIn, Download, Event
from .runtime import Runtime
from .storage import schema as s
from .users import create_user

DEMO_EMAIL = "demo@otameter.local"
DEMO_PLAN = "demo"
# MAU, storage and bandwidth of the demo plan: the demo uses about a fifth of the MAU and a
# few percent of the rest.
DEMO_LIMITS = (10_000, 5 * 10**9, 100 * 10**9)
DEMO_APPS = (
    ("com.otameter.demo.shop", "Demo Shop", 1400),
    ("com.otameter.demo.news", "Demo News", 600),
    ("com.otameter.demo.fitness", "Demo Fitness", 250),
)


def _zip_bytes(version: str, rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("index.html", f"<!doctype html><title>demo {version}</title>")
        # Incompressible filler so bundles weigh like real ones (a few hundred kB).
        archive.writestr("assets/app.bin", rng.randbytes(rng.randrange(200_000, 800_000)))
    return buffer.getvalue()


def is_empty(conn: Connection) -> bool:
    return not conn.scalar(select(func.count()).select_from(s.users))


def demo_user_id(conn: Connection) -> str | None:
    """The demo user of a database the demo filled (None for any other database)."""
    value = conn.scalar(select(s.users.c.id).where(s.users.c.email == DEMO_EMAIL))
    return None if value is None else str(value)


def new_demo_key(conn: Connection, user_id: str, now_ms: int) -> str:
    """Another key for the demo user: keys are kept hashed, so the first one cannot be shown
    again. Earlier demo keys keep working."""
    key = new_api_key()
    conn.execute(
        s.api_keys.insert().values(
            id=str(uuid.uuid4()),
            user_id=user_id,
            name="demo key (otameter serve --demo)",
            key_hash=hash_key(key),
            mode="all",
            created_at=now_ms,
        )
    )
    return key


def seed_demo(rt: Runtime, days: int = 90, seed: int = 7) -> str:
    """Fill an empty database; returns the demo user's API key."""
    rng = random.Random(seed)
    now = rt.clock.now()
    start = now - timedelta(days=days - 1)
    start_ms = to_ms(start.replace(hour=0, minute=0, second=0, microsecond=0))
    org_id = str(uuid.uuid4())

    def accounts(conn: Connection) -> str:
        user_id, key = create_user(conn, DEMO_EMAIL, "Demo user", start_ms)
        # A plan, so that usage is shown against limits, with room to try uploads and traffic
        # of one's own without locking the org.
        upsert_plan(conn, DEMO_PLAN, *DEMO_LIMITS, start_ms)
        conn.execute(
            s.orgs.insert().values(
                id=org_id,
                name="Demo Org",
                created_by=user_id,
                created_at=start_ms,
                cycle_anchor=start.day,
                plan=DEMO_PLAN,
                trial_ends_at=start_ms + rt.settings.trial_days * 86_400_000,
            )
        )
        conn.execute(
            s.org_members.insert().values(
                org_id=org_id, user_id=user_id, role="super_admin", created_at=start_ms
            )
        )
        for app_id, name, _ in DEMO_APPS:
            conn.execute(
                s.apps.insert().values(
                    app_id=app_id, name=name, owner_org=org_id, created_at=start_ms
                )
            )
        return key

    key = rt.writer.run_blocking(accounts)
    events: list[Event] = []
    for app_index, (app_id, _, audience) in enumerate(DEMO_APPS):
        devices = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(audience)]
        releases = sorted(rng.sample(range(days), 6))
        versions: list[tuple[int, str, int]] = []
        for n, day in enumerate(releases):
            version = f"1.{n}.0"
            at_ms = start_ms + day * 86_400_000 + 10 * 3_600_000
            if app_index == 2 and n % 2:
                events.append(
                    BundleUpload(
                        app_id,
                        version,
                        0,
                        at_ms,
                        channel="production",
                        external_url=f"https://cdn.example.com/{app_id}/{version}.zip",
                    )
                )
                size = 0
            else:
                data = _zip_bytes(version, rng)
                stored, checksum = copy_into(rt.bundles.default, app_id, io.BytesIO(data))
                size = stored.size
                events.append(
                    BundleUpload(
                        app_id,
                        version,
                        size,
                        at_ms,
                        checksum=checksum,
                        storage_path=stored.storage_path,
                        channel="production",
                        bundle_id=stored.id,
                        storage=stored.storage,
                    )
                )
            versions.append((day, version, size))
        # Each device keeps its platform, build type and installed bundle across days.
        platform = {d: rng.choice(["ios", "android"]) for d in devices}
        emulator = {d: rng.random() < 0.01 for d in devices}
        dev_build = {d: rng.random() < 0.008 for d in devices}
        installed = dict.fromkeys(devices, "builtin")
        # Devices arrive over the 90 days (a third are there at the start, a campaign brings a
        # wave in the third month) and many leave after a while, so the 30-day MAU climbs,
        # dips and climbs again instead of standing at the audience size.
        campaign = days * 2 // 3
        first_day: dict[str, int] = {}
        last_day: dict[str, int] = {}
        for device in devices:
            roll = rng.random()
            if roll < 0.33:
                first_day[device] = 0
            elif roll < 0.55:
                first_day[device] = campaign + rng.randrange(7)
            else:
                first_day[device] = rng.randrange(days)
            lifetime = rng.randrange(12, 45) if rng.random() < 0.5 else days
            last_day[device] = first_day[device] + lifetime
        for day in range(days):
            live = [v for v in versions if v[0] <= day]
            current = live[-1] if live else None
            weekend = 1.25 if (start + timedelta(days=day)).weekday() >= 5 else 1.0
            for device in devices:
                if not first_day[device] <= day <= last_day[device]:
                    continue
                if rng.random() > 0.4 * weekend:
                    continue
                at_ms = start_ms + day * 86_400_000 + rng.randrange(86_400_000)
                if at_ms > to_ms(now):
                    continue
                events.append(
                    CheckIn(
                        app_id,
                        device,
                        at_ms,
                        platform[device],
                        installed[device],
                        emulator[device],
                        not dev_build[device],
                        version_build="1.0.0",
                        plugin_version="8.51.14",
                    )
                )
                if current and current[1] != installed[device]:
                    # The device fetches the new bundle (external ones are not metered).
                    if current[2]:
                        events.append(Download(app_id, device, current[1], current[2], at_ms))
                    installed[device] = current[1]
    uploads = sorted((e for e in events if isinstance(e, BundleUpload)), key=lambda e: e.at_ms)
    rest = [e for e in events if not isinstance(e, BundleUpload)]
    rt.writer.submit_blocking(uploads)
    for n in range(0, len(rest), 20_000):
        rt.writer.submit_blocking(rest[n : n + 20_000])
    rt.rollups.run_blocking()
    rt.catalog.invalidate()
    return key


def ensure_demo(rt: Runtime) -> tuple[str | None, bool]:
    """Fill an empty database with the demo, or give a demo database a new key.

    Returns (the key, whether the demo was generated now); (None, False) for a database that
    holds other data, which is left alone.
    """
    with rt.read_engine.connect() as conn:
        empty = is_empty(conn)
        user_id = None if empty else demo_user_id(conn)
    if empty:
        return seed_demo(rt), True
    if user_id is None:
        return None, False
    now_ms = to_ms(rt.clock.now())
    return rt.writer.run_blocking(lambda conn: new_demo_key(conn, user_id, now_ms)), False
