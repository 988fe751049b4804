"""Demo data: an org, apps, bundles and 90 days of traffic, fed through the real pipeline."""

from __future__ import annotations

import io
import random
import uuid
import zipfile
from collections.abc import Callable
from datetime import timedelta
from functools import partial

from sqlalchemy import Connection, func, select

from . import schema as s
from .bundles import store_upload
from .clock import to_ms
from .events import BundleUpload, CheckIn, Download, Event, PluginStat
from .plans import upsert_plan
from .releases import parse_duration, stat_metadata
from .runtime import Runtime
from .users import create_user

DEMO_EMAIL = "demo@otameter.local"
DEMO_PLAN = "demo"
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


def _stats_of(app_id: str, device: str, platform: str, at_ms: int) -> Callable[..., PluginStat]:
    """A maker of the device's stats events at ``at_ms`` (``n`` orders them on the device)."""

    def make(
        action: str,
        version: str,
        n: int,
        *,
        is_emulator: bool = False,
        is_prod: bool = True,
        old_version_name: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> PluginStat:
        return PluginStat(
            app_id=app_id,
            device_id=device,
            action=action,
            version_name=version,
            at_ms=at_ms,
            old_version_name=old_version_name,
            metadata=stat_metadata(metadata, at_ms + n),
            platform=platform,
            is_emulator=is_emulator,
            is_prod=is_prod,
            device_ts=at_ms + n,
            duration_ms=parse_duration(metadata),
        )

    return make


def is_empty(conn: Connection) -> bool:
    return not conn.scalar(select(func.count()).select_from(s.users))


def seed_demo(rt: Runtime, days: int = 90, seed: int = 7) -> str:
    """Fill an empty database; returns the demo user's API key."""
    rng = random.Random(seed)
    now = rt.clock.now()
    start = now - timedelta(days=days - 1)
    start_ms = to_ms(start.replace(hour=0, minute=0, second=0, microsecond=0))
    org_id = str(uuid.uuid4())

    def accounts(conn: Connection) -> str:
        user_id, key = create_user(conn, DEMO_EMAIL, "Demo user", start_ms)
        # A plan, so that usage is shown against limits.
        upsert_plan(conn, DEMO_PLAN, 3000, 100 * 10**6, 10 * 10**9, start_ms)
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
                path, size, checksum = store_upload(
                    io.BytesIO(data), rt.settings.bundle_dir, app_id, len(data)
                )
                events.append(
                    BundleUpload(
                        app_id,
                        version,
                        size,
                        at_ms,
                        checksum=checksum,
                        storage_path=path,
                        channel="production",
                    )
                )
            versions.append((day, version, size))
        # Each device keeps its platform, build type and installed bundle across days.
        platform = {d: rng.choice(["ios", "android"]) for d in devices}
        emulator = {d: rng.random() < 0.01 for d in devices}
        dev_build = {d: rng.random() < 0.008 for d in devices}
        installed = dict.fromkeys(devices, "builtin")
        # Versions a device gave up on (a failure or a rollback): it keeps its bundle.
        refused: set[tuple[str, str]] = set()
        for day in range(days):
            live = [v for v in versions if v[0] <= day]
            current = live[-1] if live else None
            growth = 0.35 + 0.65 * day / days
            for device in devices:
                if rng.random() > growth * 0.55:
                    continue
                at_ms = start_ms + day * 86_400_000 + rng.randrange(86_400_000)
                if at_ms > to_ms(now):
                    continue
                offer = (
                    current[1]
                    if current
                    and current[1] != installed[device]
                    and (device, current[1]) not in refused
                    else ""
                )
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
                        offered_version=offer,
                    )
                )
                if offer and current:
                    # The device fetches the new bundle (external ones are not metered).
                    if current[2]:
                        events.append(Download(app_id, device, offer, current[2], at_ms))
                    stat = _stats_of(app_id, device, platform[device], at_ms)
                    stat = partial(
                        stat, is_emulator=emulator[device], is_prod=not dev_build[device]
                    )
                    events.append(stat("download_complete", offer, 1))
                    roll = rng.random()
                    if roll < 0.02:
                        events.append(stat("unzip_fail", offer, 2))
                        refused.add((device, offer))
                        continue
                    events.append(stat("set", offer, 3, old_version_name=installed[device]))
                    if roll < 0.03:
                        events.append(stat("update_fail", offer, 4))
                        refused.add((device, offer))
                        continue
                    installed[device] = offer
                if installed[device] != "builtin" and rng.random() < 0.3:
                    stat = _stats_of(app_id, device, platform[device], at_ms + 5)
                    stat = partial(
                        stat, is_emulator=emulator[device], is_prod=not dev_build[device]
                    )
                    # Launch times differ a little per version; a few devices crash.
                    base = 450 + 60 * int(installed[device].split(".")[1])
                    ms = str(int(rng.lognormvariate(0, 0.35) * base))
                    events.append(
                        stat("app_launch_ready", installed[device], 6, metadata={"duration_ms": ms})
                    )
                    if rng.random() < 0.004:
                        events.append(stat("app_crash", installed[device], 7))
    uploads = sorted((e for e in events if isinstance(e, BundleUpload)), key=lambda e: e.at_ms)
    rest = [e for e in events if not isinstance(e, BundleUpload)]
    rt.writer.submit_blocking(uploads)
    for n in range(0, len(rest), 20_000):
        rt.writer.submit_blocking(rest[n : n + 20_000])
    rt.rollups.run_blocking()
    rt.catalog.invalidate()
    return key
