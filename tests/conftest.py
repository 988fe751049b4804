pytest_plugins = ["tests.pgserver"]


import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests.harness import Harness, running  # noqa: E402

# Property tests check results, never speed: hypothesis's default 200 ms deadline per example
# and its "too slow" health check are timed assertions that a busy machine fails.
settings.register_profile("otameter", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("otameter")


@pytest.fixture
def harness(db_url: str, tmp_path):  # type: ignore[no-untyped-def]
    """otameter running on both engines (SQLite file and a real PostgreSQL)."""
    with running(db_url, tmp_path / "data") as h:
        yield h


@pytest.fixture
def sqlite_harness(tmp_path):  # type: ignore[no-untyped-def]
    with running(f"sqlite:///{tmp_path}/otameter.db", tmp_path / "data") as h:
        yield h


__all__ = ["Harness"]
