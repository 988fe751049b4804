"""README.md's "Your first app" runs as written: its shell blocks, in order, in one shell.

The only change made to them is the port (a free one instead of 8000), so that the test
never meets another server on the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.liveserver import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Your first app"


def section_commands() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"```sh\n(.*?)```", body, flags=re.S)


def test_section_has_the_whole_path() -> None:
    script = "\n".join(section_commands())
    for step in (
        "otameter serve",
        "otameter user create",
        "otameter org create",
        "otameter app create",
        "/updates",
        "otameter stats app",
    ):
        assert step in script, step


def test_your_first_app_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        if os.environ.get("OTAMETER_REQUIRE_JQ"):
            pytest.fail("jq is required (apt-get install jq)")
        pytest.skip("jq is not installed")
    port = str(free_port())
    blocks = [b.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for b in section_commands()]
    blocks = [b.replace("--port 8000", f"--port {port}") for b in blocks]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")}
    # `otameter` is the command of the environment running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    script = "set -euo pipefail\n" + "\n".join(blocks) + "\nexport -p > env.sh\n"
    log = tmp_path / "output.txt"
    with log.open("w") as out:
        # A file, not a pipe: the server left running in the background keeps it open.
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the backgrounded server is in this group: killed below
        )
    try:
        proc.wait(240)
        output = log.read_text()
        assert proc.returncode == 0, output
        assert "Created app com.example.app" in output
        assert '"version":"1.0.0"' in output, output  # the device was offered the bundle
        stats = output
        # The README waits 3 s for the rollup; on a loaded machine ask again (same command).
        for _ in range(30):
            if "latest 1," in stats:
                break
            again = subprocess.run(
                ["bash", "-c", f"source env.sh\n{blocks[-1].splitlines()[-1]}"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            stats = again.stdout + again.stderr
        assert "MAU" in stats and "latest 1," in stats, output + stats
        assert (tmp_path / "otameter.db").is_file()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
