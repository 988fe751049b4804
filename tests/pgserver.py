"""Pytest plugin: a real, throwaway PostgreSQL cluster for the test run.

Fixtures:

* ``postgres_server`` (session): one cluster per test session, torn down at the end.
* ``postgres_url`` (function): a fresh, empty database on that cluster per test,
  as ``postgresql://postgres@127.0.0.1:PORT/test_<hex>``; dropped afterwards.
* ``db_url`` (function, parametrised ``sqlite``/``postgresql``): a database URL for
  either engine, so one test body covers both.

When PostgreSQL cannot be started here (binaries missing; or running as root
without ``runuser`` or a ``postgres`` user), tests needing it are skipped, unless
``OTAMETER_REQUIRE_POSTGRES=1`` is set, in which case they fail: CI must not
silently lose the PostgreSQL half of the suite.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql

REQUIRE_ENV = "OTAMETER_REQUIRE_POSTGRES"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
_START_ATTEMPTS = 3
_TIMEOUT = 120  # seconds, for any single initdb / pg_ctl call


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    datadir: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"


def _require_postgres() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(reason: str) -> NoReturn:
    if _require_postgres():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set)", pytrace=False)
    pytest.skip(reason)


def _version_key(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin; compare numerically so 9.6 < 15 < 16.
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


def find_bindir() -> Path | None:
    """Directory holding both ``initdb`` and ``pg_ctl``: PATH first, then the newest
    Debian-style ``/usr/lib/postgresql/*/bin``."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    candidates = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if (d / "initdb").exists() and (d / "pg_ctl").exists()
    ]
    return max(candidates, key=_version_key) if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class _Cluster:
    """Runs the PostgreSQL tools, as the ``postgres`` user when we are root
    (initdb and postgres refuse to run as root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.prefix: list[str] = []
        if self.as_root:
            runuser = shutil.which("runuser")
            if runuser is None:
                _unavailable("running as root but `runuser` is not available to drop to postgres")
            try:
                pwd.getpwnam(SUPERUSER)
            except KeyError:
                _unavailable(f"running as root but there is no `{SUPERUSER}` system user")
            self.prefix = [runuser, "-u", SUPERUSER, "--"]
        self.root = self._make_root()
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "postgres.log"

    def _make_root(self) -> Path:
        base = Path(tempfile.gettempdir())
        # A root-only TMPDIR (e.g. under /root) cannot be entered by postgres.
        if self.as_root and self._run(["test", "-x", str(base)], cwd="/", check=False):
            base = Path("/tmp")
        root = Path(tempfile.mkdtemp(prefix="otameter-pg-", dir=base))
        sockdir = root / "sock"
        sockdir.mkdir()
        if self.as_root:
            for path in (root, sockdir):
                shutil.chown(path, user=SUPERUSER, group=pwd.getpwnam(SUPERUSER).pw_gid)
        return root

    def _run(self, argv: Sequence[str], *, cwd: str | Path, check: bool = True) -> int:
        # Ambient PG* settings (PGDATA, PGPORT, ...) must not leak into the cluster.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        proc = subprocess.run(
            [*self.prefix, *argv],
            cwd=cwd,  # postgres may not be allowed into the caller's cwd
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
                f"{self._log_tail()}"
            )
        return proc.returncode

    def _log_tail(self) -> str:
        try:
            tail = self.logfile.read_text(errors="replace").splitlines()[-30:]
        except OSError:
            return ""
        return "\n--- postgres.log (tail) ---\n" + "\n".join(tail)

    def initdb(self) -> None:
        # Fixed encoding/locale: results must not depend on the machine's LANG.
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=self.root,
        )

    def start(self) -> int:
        # Durability settings are off: this cluster is thrown away after the run,
        # and fsync on every commit would dominate test time.
        last_error: RuntimeError | None = None
        for _ in range(_START_ATTEMPTS):
            # Another process may grab the port between probe and bind; retry.
            port = _free_port()
            options = (
                f"-p {port} -k {self.sockdir} -c listen_addresses={HOST} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            try:
                self._pg_ctl(
                    "-w", "-t", str(_TIMEOUT), "-l", str(self.logfile), "-o", options, "start"
                )
            except RuntimeError as exc:
                last_error = exc
                self.stop()  # in case a postmaster came up after pg_ctl gave up waiting
                continue
            return port
        assert last_error is not None
        raise last_error

    def _pg_ctl(self, *args: str, check: bool = True) -> int:
        return self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
            cwd=self.root,
            check=check,
        )

    def stop(self) -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        if self._pg_ctl("-m", "immediate", "-w", "stop", check=False) == 0:
            return
        # pg_ctl failed: SIGQUIT is what immediate shutdown sends to the postmaster.
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        _unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH "
            "or in /usr/lib/postgresql/*/bin"
        )
    cluster = _Cluster(bindir)
    try:
        cluster.initdb()
        port = cluster.start()
        yield PostgresServer(host=HOST, port=port, user=SUPERUSER, datadir=cluster.datadir)
    finally:
        try:
            cluster.stop()
        finally:
            cluster.remove()


@contextlib.contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """Create an empty database on ``server``, yield its URL, then drop it."""
    name = f"test_{uuid.uuid4().hex}"
    ident = sql.Identifier(name)
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield server.url(name)
    finally:
        # FORCE: a test that leaked connections (e.g. an undisposed pool) must not
        # block the drop.
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'otameter.db'}"
    # Looked up lazily so the sqlite variant runs even where PostgreSQL is unavailable.
    url: str = request.getfixturevalue("postgres_url")
    return url
