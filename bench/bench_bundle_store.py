"""A big bundle through two servers on one PostgreSQL, and the same bundle from a file.

Run with: python bench/bench_bundle_store.py [--size-mb 200] [--rounds 3]

What it does, all on 127.0.0.1:

1. starts a throwaway PostgreSQL cluster (durable settings) and two ``otameter serve``
   processes A and B on it, each with its own empty data directory, plus one ``otameter
   serve`` on SQLite (bundles as files) for the comparison;
2. writes a zip of ``--size-mb`` MB of random bytes (stored, so nothing compresses) to disk,
   uploads it through A (streamed from the file), and through the SQLite server;
3. downloads it through B (bytes from the database) and from the SQLite server (bytes from a
   file), ``--rounds`` times each, alternating, and once more through B as a resumed download
   (``Range`` from the middle); every download is checked against the zip's SHA-256;
4. prints upload and download throughput and the peak RSS of each server process (sampled
   every 0.1 s) against its RSS when idle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PY, PgCluster, Server, free_port, otameter_cli

APP_ID = "com.bench.bundles"
MB = 1024 * 1024


class SampledServer(Server):
    """A server whose RSS is sampled more often, with its idle RSS noted at start."""

    def __enter__(self) -> SampledServer:
        super().__enter__()
        time.sleep(1.0)
        self.idle_rss_kb = self.peak_rss_kb
        return self

    def _sample(self) -> None:
        from run import tree_rss_kb

        assert self.proc is not None
        while not self._stop.wait(0.1):
            self.peak_rss_kb = max(self.peak_rss_kb, tree_rss_kb(self.proc.pid))


def serve(db_url: str, data_dir: Path, log: Path) -> SampledServer:
    port = free_port()
    argv = [PY, "-m", "otameter", "serve", "--db", db_url, "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--max-bundle-size", "1GiB"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")}
    return SampledServer(argv, port, env, log)


def write_zip(path: Path, size: int) -> str:
    """A stored zip of ``size`` random bytes (plus index.html); returns its SHA-256."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr("index.html", "<!doctype html><title>bench</title>")
        with archive.open("payload.bin", "w", force_zip64=True) as out:
            left = size
            while left:
                piece = os.urandom(min(MB, left))
                out.write(piece)
                left -= len(piece)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while piece := file.read(MB):
            digest.update(piece)
    return digest.hexdigest()


def setup(base: str, key: str) -> None:
    with httpx.Client(base_url=base, headers={"authorization": key}, timeout=60) as c:
        org = c.post("/organization", json={"name": "Bench"})
        org.raise_for_status()
        c.post(
            "/app", json={"app_id": APP_ID, "name": "Bench", "owner_org": org.json()["id"]}
        ).raise_for_status()


def upload(base: str, key: str, path: Path) -> tuple[float, dict[str, Any]]:
    with (
        httpx.Client(base_url=base, headers={"authorization": key}, timeout=600) as c,
        open(path, "rb") as file,
    ):
        started = time.perf_counter()
        r = c.post(
            "/bundle",
            data={"app_id": APP_ID, "version": "1.0.0", "channel": "production"},
            files={"file": ("bundle.zip", file, "application/zip")},
        )
        elapsed = time.perf_counter() - started
    r.raise_for_status()
    answer: dict[str, Any] = r.json()
    return elapsed, answer


def download_url(base: str) -> str:
    body = {
        "platform": "android",
        "device_id": str(uuid.uuid4()),
        "app_id": APP_ID,
        "custom_id": "",
        "version_build": "0.9.0",
        "version_code": "1",
        "version_os": "14",
        "version_name": "builtin",
        "plugin_version": "8.51.14",
        "is_emulator": False,
        "is_prod": True,
        "defaultChannel": "",
    }
    answer = httpx.post(f"{base}/updates", json=body, timeout=30).json()
    assert "url" in answer, answer
    return str(answer["url"])


def download(url: str, checksum: str | None, start: int = 0) -> tuple[float, int]:
    digest = hashlib.sha256()
    headers = {"range": f"bytes={start}-"} if start else {}
    received = 0
    started = time.perf_counter()
    with httpx.stream("GET", url, headers=headers, timeout=600) as r:
        assert r.status_code == (206 if start else 200), r.status_code
        for piece in r.iter_raw(MB):
            digest.update(piece)
            received += len(piece)
    elapsed = time.perf_counter() - started
    if checksum is not None:
        assert digest.hexdigest() == checksum, "downloaded bytes differ from the upload"
    return elapsed, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="otameter-bench-bundles-"))
    zip_path = work / "bundle.zip"
    checksum = write_zip(zip_path, args.size_mb * MB)
    size = zip_path.stat().st_size
    print(f"bundle: {size / MB:.1f} MB, sha256 {checksum[:16]}...")

    pg = PgCluster()
    try:
        db_url = pg.new_database()
        sqlite_url = f"sqlite:///{work}/otameter.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTAMETER_")}
        otameter_cli("migrate", "--db", db_url, env=env)
        key = json.loads(
            otameter_cli("user", "create", "--email", "b@x.test", "--db", db_url, env=env)
        )["api_key"]
        sqlite_key = json.loads(
            otameter_cli("user", "create", "--email", "b@x.test", "--db", sqlite_url, env=env)
        )["api_key"]
        with (
            serve(db_url, work / "data-a", work / "a.log") as a,
            serve(db_url, work / "data-b", work / "b.log") as b,
            serve(sqlite_url, work / "data-files", work / "files.log") as files,
        ):
            base_a = f"http://127.0.0.1:{a.port}"
            base_b = f"http://127.0.0.1:{b.port}"
            base_f = f"http://127.0.0.1:{files.port}"
            setup(base_a, key)
            setup(base_f, sqlite_key)

            up_db, answer = upload(base_a, key, zip_path)
            assert answer["checksum"] == checksum and answer["size"] == size, answer
            up_file, answer = upload(base_f, sqlite_key, zip_path)
            assert answer["checksum"] == checksum, answer
            rss_a_upload = a.peak_rss_kb

            url_a = download_url(base_a)
            # The link A signed, served by B: the same secret is in the database.
            url_b = url_a.replace(base_a, base_b)
            assert url_b != url_a, url_a
            url_f = download_url(base_f)
            db_times: list[float] = []
            file_times: list[float] = []
            for _ in range(args.rounds):
                db_times.append(download(url_b, checksum)[0])
                file_times.append(download(url_f, checksum)[0])
            resumed, resumed_bytes = download(url_b, None, start=size // 2 + 12345)
            assert resumed_bytes == size - (size // 2 + 12345)

            print()
            print(f"{'step':<44} {'seconds':>8} {'MB/s':>8}")
            print(
                f"{'upload through A (PostgreSQL, into chunks)':<44} {up_db:8.2f} "
                f"{size / MB / up_db:8.1f}"
            )
            print(
                f"{'upload to the SQLite server (into a file)':<44} {up_file:8.2f} "
                f"{size / MB / up_file:8.1f}"
            )
            for label, times in (
                ("download through B, from the database", db_times),
                ("download from a file (SQLite server)", file_times),
            ):
                best, median = min(times), statistics.median(times)
                print(
                    f"{label:<44} {median:8.2f} {size / MB / median:8.1f}"
                    f"   (best {size / MB / best:.1f} MB/s over {len(times)})"
                )
            print(
                f"{'resumed download through B (second half)':<44} {resumed:8.2f} "
                f"{resumed_bytes / MB / resumed:8.1f}"
            )
            # Other work on the machine shows in every figure: say how busy it was.
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"load average at the end: {load} ({os.cpu_count()} CPUs)")
            print()
            for label, server, peak in (
                ("A (took the upload)", a, rss_a_upload),
                ("B (served the downloads)", b, b.peak_rss_kb),
                ("the SQLite server (file store)", files, files.peak_rss_kb),
            ):
                print(
                    f"peak RSS of {label}: {peak / 1024:.0f} MB "
                    f"(idle {server.idle_rss_kb / 1024:.0f} MB)"
                )
    finally:
        pg.close()
        for path in sorted(work.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        work.rmdir()


if __name__ == "__main__":
    main()
