"""The deployment files: the systemd unit verifies, and the commands of the Dockerfile and
compose.yaml are the ones a real ``otameter serve`` accepts and becomes ready with.

No container runs here (the machines that run the tests cannot run containers): the test
runs each file's command as the container would, against a real database."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.liveserver import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (ROOT / "deploy" / "otameter.service").read_text()
    assert "ExecStart=/opt/otameter/bin/otameter serve " in unit
    # verify checks that ExecStart's program exists: here it is this environment's otameter.
    otameter = Path(sys.executable).parent / "otameter"
    local = tmp_path / "otameter.service"
    local.write_text(unit.replace("/opt/otameter/bin/otameter", str(otameter)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def dockerfile_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, flags=re.M)
    argv: list[str] = json.loads(cmd)
    assert "pip install --no-cache-dir ." in text
    return argv


def compose_command() -> list[str]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["otameter"]
    assert service["environment"]["OTAMETER_DATABASE_URL"].startswith("postgresql://")
    assert "pgdata:/var/lib/postgresql/data" in compose["services"]["db"]["volumes"]
    argv: list[str] = service["command"]
    return argv


def run_until_ready(argv: list[str], db_url: str, data_dir: Path) -> None:
    assert argv[:2] == ["otameter", "serve"]
    port = str(free_port())
    argv = [a.replace("0.0.0.0", "127.0.0.1") for a in argv]
    argv[argv.index("--port") + 1] = port
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")}
    env |= {"OTAMETER_DATABASE_URL": db_url, "OTAMETER_DATA_DIR": str(data_dir)}
    log = data_dir.parent / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otameter", *argv[1:]],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        for _ in range(600):  # waiting for the server, not timing it
            assert proc.poll() is None, log.read_text()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json() == {"status": "ok"}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    # The format the files ask for: one JSON object a line.
    assert all(json.loads(line) for line in log.read_text().splitlines() if line.strip())


def test_dockerfile_command_serves(tmp_path: Path) -> None:
    run_until_ready(dockerfile_command(), f"sqlite:///{tmp_path}/o.db", tmp_path / "data")


def test_compose_command_serves_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    run_until_ready(compose_command(), postgres_url, tmp_path / "data")


def test_make_demo_installs_the_runtime_only() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def dry_run(target: str) -> str:
        # -n: print the commands without running them; -B: as if nothing were installed yet.
        done = subprocess.run(
            ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    demo = dry_run("demo")
    assert "pip install -e ." in demo and "[dev]" not in demo
    assert "otameter serve --demo" in demo
    test = dry_run("test")
    assert "pip install -e '.[dev]'" in test and "pytest" in test
