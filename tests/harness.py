"""A running otameter for tests: real database, real HTTP through the ASGI app, a moved clock."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from otameter.api import create_app
from otameter.clock import ManualClock, to_ms
from otameter.config import Settings, parse_networks
from otameter.runtime import Runtime
from otameter.storage.db import migrate
from otameter.users import create_user

START = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)


def device_body(app_id: str, device_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A canonical Android update-check body (plugin-protocol.md §2).

    Its native build (``version_build``) is older than the bundles tests upload, so that they
    are offered: a fresh install whose native version equals the bundle's is up to date, and
    a bundle below the native version is held back by default (``disable_auto_update_under_
    native``).
    """
    body: dict[str, Any] = {
        "platform": "android",
        "device_id": device_id or str(uuid.uuid4()),
        "app_id": app_id,
        "custom_id": "",
        "version_build": "0.1.0",
        "version_code": "1",
        "version_os": "14",
        "version_name": "builtin",
        "plugin_version": "8.51.14",
        "is_emulator": False,
        "is_prod": True,
        "install_source": "google_play",
        "defaultChannel": "",
    }
    body.update(overrides)
    return body


def zip_bytes(files: dict[str, bytes] | None = None, size_hint: int = 0) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in (files or {"index.html": b"<!doctype html><title>t</title>"}).items():
            archive.writestr(name, data)
        if size_hint:
            archive.writestr("padding.bin", bytes(range(256)) * (size_hint // 256 + 1))
    return buffer.getvalue()


@dataclass
class Harness:
    rt: Runtime
    client: TestClient
    clock: ManualClock
    data_dir: Path
    keys: dict[str, str] = field(default_factory=dict)

    def user(self, email: str) -> tuple[str, str]:
        """Create a user; returns (user_id, api key of mode all)."""
        now = to_ms(self.clock.now())
        return self.rt.writer.run_blocking(lambda conn: create_user(conn, email, "", now))

    def auth(self, key: str) -> dict[str, str]:
        return {"authorization": key}

    def org(self, key: str, name: str = "Org") -> str:
        r = self.client.post("/organization", json={"name": name}, headers=self.auth(key))
        assert r.status_code == 201, r.text
        org_id: str = r.json()["id"]
        return org_id

    def app(self, key: str, org_id: str, app_id: str) -> None:
        r = self.client.post(
            "/app",
            json={"app_id": app_id, "name": app_id, "owner_org": org_id},
            headers=self.auth(key),
        )
        assert r.status_code == 201, r.text

    def upload(
        self,
        key: str,
        app_id: str,
        version: str,
        data: bytes | None = None,
        channel: str = "production",
    ) -> dict[str, Any]:
        r = self.client.post(
            "/bundle",
            data={"app_id": app_id, "version": version, "channel": channel},
            files={"file": ("bundle.zip", data or zip_bytes(), "application/zip")},
            headers=self.auth(key),
        )
        assert r.status_code == 201, r.text
        result: dict[str, Any] = r.json()
        return result

    def checkin(self, app_id: str, device_id: str, ip: str | None = None, **overrides: Any) -> Any:
        headers = {"x-forwarded-for": ip} if ip else {}
        return self.client.post(
            "/updates", json=device_body(app_id, device_id, **overrides), headers=headers
        )

    def rollup(self) -> None:
        self.rt.rollups.run_blocking()

    def stats(self, key: str, path: str, start: str, end: str) -> list[dict[str, Any]]:
        r = self.client.get(f"/statistics/{path}/?from={start}&to={end}", headers=self.auth(key))
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["data"]
        return rows


def setup_app(h: Harness, *apps: str) -> str:
    """A user owning an org with ``apps`` (default: com.example.app); returns its key."""
    _, key = h.user("dev@example.com")
    org_id = h.org(key)
    for app_id in apps or ("com.example.app",):
        h.app(key, org_id, app_id)
    return key


@contextmanager
def running(
    db_url: str,
    data_dir: Path,
    *,
    start: datetime = START,
    trusted: str | None = "127.0.0.0/8",
    client_host: str = "127.0.0.1",
    webhook_allow_private: str | None = None,
    **overrides: Any,
) -> Iterator[Harness]:
    """An otameter on ``db_url`` whose clock starts at ``start`` and moves only when told.

    Rollups do not run in the background: tests call ``harness.rollup()``.
    """
    settings = Settings(
        database_url=db_url,
        data_dir=data_dir,
        trusted_proxies=parse_networks(trusted) if trusted else (),
        rollup_interval_seconds=0,
        public_url="http://otameter.test",
        webhook_allow_private=parse_networks(webhook_allow_private),
        **overrides,
    )
    migrate(db_url)
    clock = ManualClock(start)
    rt = Runtime(settings, clock)
    app = create_app(rt)
    with TestClient(app, base_url="http://otameter.test", client=(client_host, 50000)) as client:
        yield Harness(rt, client, clock, data_dir)
