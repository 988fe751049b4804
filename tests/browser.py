"""Real Chromium for the browser tests: where it is, how it starts, and when a test runs.

A machine without Playwright or Chromium skips these tests with the reason; with
``OTAMETER_REQUIRE_CHROMIUM=1`` (as ``.ci/run`` sets it) they fail instead.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


def missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if chromium() is None:
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


def require_browser() -> None:
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("OTAMETER_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"OTAMETER_REQUIRE_CHROMIUM=1 but {reason}")
    pytest.skip(reason)
