"""A real ``otameter serve`` subprocess on a free port, for tests that kill or share it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.harness import zip_bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # The server must see only what the test gives it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")}
    env.update(extra or {})
    return env


def otameter(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "otameter", *args],
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"otameter {args}: {done.stdout}\n{done.stderr}"
    return done.stdout


class LiveServer:
    """``otameter serve`` in its own process group (so that SIGKILL takes every worker)."""

    def __init__(
        self, db_url: str, data_dir: Path, *, workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.env = env
        self.db_url = db_url
        self.data_dir = data_dir
        self.workers = workers
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{data_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "otameter",
            "serve",
            "--db",
            self.db_url,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env=_env(self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            assert time.monotonic() < deadline, f"server not up: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def rss_kb(self) -> int:
        """Resident memory of the server's processes (the serving ones), in KiB."""
        assert self.proc is not None
        total = 0
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def kill(self) -> None:
        """SIGKILL every process of the server: no shutdown code runs."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            for child in map(int, text):
                found += [child, *_children(child)]
    return found


def create_user(db_url: str, email: str = "ops@example.com") -> str:
    otameter("migrate", "--db", db_url)
    line = otameter("user", "create", "--email", email, "--db", db_url).strip().splitlines()[-1]
    key: str = json.loads(line)["api_key"]
    return key


def create_app(base_url: str, key: str, app_id: str, *, bundle: bytes | None = None) -> Any:
    """An org and an app; with ``bundle``, version 2.0.0 on the production channel."""
    with httpx.Client(base_url=base_url, headers={"authorization": key}, timeout=30) as c:
        org = c.post("/organization", json={"name": "Live"})
        assert org.status_code == 201, org.text
        r = c.post("/app", json={"app_id": app_id, "name": app_id, "owner_org": org.json()["id"]})
        assert r.status_code == 201, r.text
        if bundle is None:
            return None
        r = c.post(
            "/bundle",
            data={"app_id": app_id, "version": "2.0.0", "channel": "production"},
            files={"file": ("bundle.zip", bundle, "application/zip")},
        )
        assert r.status_code == 201, r.text
        return r.json()


__all__ = ["LiveServer", "create_app", "create_user", "free_port", "otameter", "zip_bytes"]
