"""The OpenAPI document: it describes every route, and a live server conforms to it.

schemathesis runs against a real uvicorn server on a free 127.0.0.1 port, SQLite in tmp_path,
with a user, an org, an app, a bundle and a channel so that authenticated calls reach real
code. It fails on any 5xx, an undocumented status code, a wrong content type or a body that
does not match its schema.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine

from otameter.api import create_app
from otameter.clock import to_ms
from otameter.config import Settings
from otameter.openapi import NOT_API_PREFIXES, OPERATIONS, served_operations
from otameter.runtime import Runtime
from otameter.storage.db import migrate
from otameter.users import create_user
from tests.harness import Harness, device_body, zip_bytes

APP_ID = "com.example.fuzz"
# Cases per operation: enough to find real mismatches, small enough for a couple of minutes.
MAX_EXAMPLES = int(os.environ.get("OTAMETER_SCHEMATHESIS_EXAMPLES", "25"))


def test_every_route_is_described(sqlite_harness: Harness) -> None:
    doc = sqlite_harness.client.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    served = served_operations(list(sqlite_harness.client.app.routes))  # type: ignore[attr-defined]
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == described
    for path, method in served:
        assert method in OPERATIONS.get(path, {}), f"{method.upper()} {path} is not described"
    required = {
        ("/updates", "post"),
        ("/stats", "post"),
        ("/channel_self", "get"),
        ("/channel_self", "post"),
        ("/channel_self", "put"),
        ("/download/{bundle_id}.zip", "get"),
        ("/organization", "get"),
        ("/organization", "post"),
        ("/organization/members", "post"),
        ("/apikey", "post"),
        ("/apikey", "get"),
        ("/apikey/{key_id}", "delete"),
        ("/app", "get"),
        ("/app", "post"),
        ("/app/{app_id}", "get"),
        ("/app/{app_id}", "delete"),
        ("/bundle", "get"),
        ("/bundle", "post"),
        ("/bundle", "delete"),
        ("/channel", "get"),
        ("/channel", "post"),
        ("/health", "get"),
        ("/statistics/app/{app_id}/", "get"),
        ("/statistics/app/{app_id}/bundle_usage/", "get"),
        ("/statistics/org/{org_id}/", "get"),
        ("/statistics/user/", "get"),
    }
    assert required <= described
    assert not any(path.startswith(NOT_API_PREFIXES) for path, _ in described)
    # Every operation documents its errors in the API's error shape.
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"] or "201" in op["responses"], (path, method)
            if op.get("security"):
                assert "401" in op["responses"], (path, method)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    bundle_post = doc["paths"]["/bundle"]["post"]["requestBody"]["content"]
    assert set(bundle_post) == {"multipart/form-data", "application/json"}


def test_statistics_parameters_are_described(sqlite_harness: Harness) -> None:
    doc = sqlite_harness.client.get("/openapi.json").json()
    op = doc["paths"]["/statistics/app/{app_id}/"]["get"]
    names = {p["name"] for p in op["parameters"]}
    assert names == {"app_id", "from", "to", "format", "breakdown", "compare"}
    assert set(op["responses"]) == {"200", "400", "401", "403", "404", "429"}
    assert "retry-after" in {h.lower() for h in op["responses"]["429"]["headers"]}
    assert set(op["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert "previous_period" in doc["components"]["schemas"]["StatsAnswer"]["properties"]


# -- the live server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Live:
    base: str
    key: str
    org_id: str
    bundle_id: str
    download_query: dict[str, str]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    url = f"sqlite:///{tmp_path}/otameter.db"
    migrate(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        _, key = create_user(conn, "fuzz@example.com", "", to_ms(datetime.now(UTC)))
    engine.dispose()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(database_url=url, data_dir=tmp_path / "data", public_url=base)
    app = create_app(Runtime(settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        auth = {"authorization": key}
        with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
            org_id = client.post("/organization", json={"name": "Fuzz"}).json()["id"]
            r = client.post("/app", json={"app_id": APP_ID, "name": "Fuzz", "owner_org": org_id})
            assert r.status_code == 201, r.text
            r = client.post(
                "/bundle",
                data={"app_id": APP_ID, "version": "1.0.0"},
                files={"file": ("b.zip", zip_bytes(), "application/zip")},
            )
            assert r.status_code == 201, r.text
            bundle_id = r.json()["id"]
            r = client.post(
                "/channel",
                json={
                    "app_id": APP_ID,
                    "channel": "beta",
                    "allow_device_self_set": True,
                    "public": False,
                },
            )
            assert r.status_code == 200, r.text
            # A native build older than the bundle, so that a download is offered.
            body = device_body(APP_ID, version_build="0.9.0")
            answer = client.post("/updates", json=body).json()
            query = dict(httpx.URL(answer["url"]).params)
        yield Live(base, key, org_id, bundle_id, query)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _with_examples(doc: dict[str, Any], live: Live) -> dict[str, Any]:
    """Real ids as parameter examples so that the first cases reach the handlers' real paths."""
    examples = {
        "app_id": APP_ID,
        "org_id": live.org_id,
        "bundle_id": live.bundle_id,
        "from": "2024-01-01",
        "to": "2024-01-31",
        "version": "1.0.0",
        **live.download_query,
    }
    for ops in doc["paths"].values():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["name"] in examples:
                    param["example"] = examples[param["name"]]
    return doc


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(found).exists():
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    return found


def test_live_server_conforms_to_the_document(live: Live, tmp_path: Path) -> None:
    doc = httpx.get(f"{live.base}/openapi.json").json()
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(_with_examples(doc, live)))
    command = [
        _schemathesis(),
        "run",
        str(schema_file),
        "--url",
        live.base,
        "--header",
        f"authorization: {live.key}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        os.environ.get("OTAMETER_SCHEMATHESIS_SEED", "20240515"),
        # One worker: CPython 3.11 can fail compiling regexes in concurrent threads.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False
    )
    output = result.stdout + result.stderr
    if os.environ.get("OTAMETER_SCHEMATHESIS_LOG"):
        Path(os.environ["OTAMETER_SCHEMATHESIS_LOG"]).write_text(output)
    assert result.returncode == 0, output[-20000:]
    # Every operation of the document was exercised.
    operations = sum(len(ops) for ops in doc["paths"].values())
    assert f"Tested: {operations}" in output, output[-5000:]
