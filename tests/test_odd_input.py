"""Odd input never gets a 500: every route's path and query parameters, one at a time, take
values at the edges (huge and negative integers, 5,000 digits, bytes that are not UTF-8, empty
strings, the first and last dates a calendar has), on both engines.

Each answer must be a clean one: below 500, and an API error body in the error shape.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from otameter.openapi import OPERATIONS, served_operations
from otameter.statistics import PREVIOUS_TOO_EARLY
from tests.harness import Harness, device_body

APP = "com.example.odd"

# Raw (already percent-encoded where needed) values; "%FF%FE" decodes to bytes that are not
# UTF-8. NUL bytes are left to the control-character checks and their own tests.
ODD_VALUES = [
    "",
    "0",
    "-1",
    "-99999999999999999999",
    "18446744073709551616",
    "9" * 5000,
    "0x10",
    "%FF%FE",
    "%C3%A9%E2%80%AE",
    "0001-01-01",
    "9999-12-31",
    "2024-02-30",
    "a" * 3000,
    "..%2F..%2Fetc",
]

# Ranges at the calendar's edges, for routes that take both ends.
EDGE_RANGES = [
    ("0001-01-01", "0001-01-01"),
    ("0001-01-01", "0001-03-31"),
    ("0001-01-02", "0001-01-02"),
    ("0001-01-31", "0001-02-01"),
    ("9999-12-31", "9999-12-31"),
    ("9999-10-03", "9999-12-31"),
    ("9999-12-01", "9999-12-31"),
    ("2024-05-15", "2024-05-15"),
    ("2024-05-16", "2024-05-20"),
]

# What each query parameter is when it is sane (the others of a request keep these).
DEVICE = str(uuid.uuid4())
SANE: dict[str, str] = {
    "from": "2024-05-01",
    "to": "2024-05-15",
    "format": "json",
    "breakdown": "true",
    "compare": "previous",
    "page": "0",
    "status": "pending",
    "app_id": APP,
    "version": "1.0.0",
    "channel": "production",
    "platform": "android",
    "device_id": DEVICE,
    "is_emulator": "false",
    "is_prod": "true",
    "version_name": "builtin",
    "version_build": "1.0.0",
    "plugin_version": "8.51.14",
    "custom_id": "",
    "defaultChannel": "",
    "next": "/dashboard",
    "signed_out": "1",
}

# The dashboard's routes are not in the OpenAPI document; their parameters are these.
DASHBOARD: dict[tuple[str, str], list[str]] = {
    ("/dashboard", "get"): [],
    ("/dashboard/login", "get"): ["next", "signed_out"],
    ("/dashboard/org/{org_id}", "get"): ["from", "to", "compare"],
    ("/dashboard/app/{app_id}", "get"): ["from", "to", "compare"],
    ("/dashboard/api/{path}", "get"): ["from", "to", "format", "breakdown", "compare", "page"],
    ("/dashboard/data/org/{org_id}/apps", "get"): ["from", "to"],
}
# Routes whose effects would spoil the rest of the run, or that read no parameters.
SKIPPED = {("/dashboard/logout", "post"), ("/dashboard/login", "post")}
PATH_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


@pytest.fixture
def world(harness: Harness) -> Iterator[dict[str, str]]:
    h = harness
    _, key = h.user("odd@example.com")
    org_id = h.org(key)
    h.app(key, org_id, APP)
    bundle_id = h.upload(key, APP, "1.0.0")["id"]
    answer = h.client.post("/updates", json=device_body(APP, DEVICE)).json()
    link = httpx.URL(answer["url"])
    assert h.client.post("/dashboard/login", data={"key": key}).status_code in (200, 303)
    spare = h.client.post("/apikey", json={"name": "spare", "mode": "read"}, headers=h.auth(key))
    assert spare.status_code == 201, spare.text
    h.rollup()
    yield {
        "key": key,
        "org_id": org_id,
        "app_id": APP,
        "bundle_id": bundle_id,
        "webhook_id": str(uuid.uuid4()),
        # A key of its own: revoking it leaves the caller's key alone.
        "key_id": spare.json()["id"],
        # A device the app knows (its event log route).
        "device_id": DEVICE,
        "path": f"statistics/app/{APP}/",
        "expires": link.params["expires"],
        "sig": link.params["sig"],
    }


def _query_names(path: str, method: str) -> list[str]:
    if (path, method) in DASHBOARD:
        return DASHBOARD[(path, method)]
    op = OPERATIONS[path][method]
    return [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]


def _url(path: str, params: dict[str, str], query: dict[str, str]) -> str:
    for name, value in params.items():
        path = re.sub(r"\{" + name + r"(?::\w+)?\}", value, path)
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def _check(h: Harness, key: str, method: str, url: str, where: str) -> None:
    body = None if method in ("get", "head", "delete") else {}
    r = h.client.request(method.upper(), url, json=body, headers={"authorization": key})
    assert r.status_code < 500, (where, url[:200], r.status_code, r.text[:300])
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        error = r.json()
        # The API's shape, or the plugin protocol's (plugin-protocol.md).
        assert "error" in error, (where, url[:200], error)


def test_no_parameter_value_gets_a_500(harness: Harness, world: dict[str, str]) -> None:
    h = harness
    routes = served_operations(list(h.client.app.routes))  # type: ignore[attr-defined]
    routes |= set(DASHBOARD)
    sane_query = {**SANE, "expires": world["expires"], "sig": world["sig"]}
    tried = 0
    # Deletions last: they remove the app and the bundle the other routes read.
    for path, method in sorted(routes - SKIPPED, key=lambda pm: (pm[1] == "delete", pm)):
        path_names = PATH_PARAM.findall(path)
        query_names = _query_names(path, method)
        params = {name: quote(world[name], safe="/") for name in path_names}
        query = {name: quote(sane_query[name]) for name in query_names if name in sane_query}
        _check(h, world["key"], method, _url(path, params, query), f"{method} {path}")
        for name in path_names:
            for value in ODD_VALUES:
                if value == "":
                    continue  # an empty path segment is another route, or none
                _check(h, world["key"], method, _url(path, {**params, name: value}, query), name)
                tried += 1
        for name in query_names:
            for value in ODD_VALUES:
                _check(h, world["key"], method, _url(path, params, {**query, name: value}), name)
                tried += 1
        if {"from", "to"} <= set(query_names):
            for start, end in EDGE_RANGES:
                edge = {**query, "from": start, "to": end}
                _check(h, world["key"], method, _url(path, params, edge), "from/to")
                if "compare" in query_names:
                    edge.pop("compare")
                    _check(h, world["key"], method, _url(path, params, edge), "from/to")
                tried += 2
    assert tried > 500


def test_download_link_with_a_huge_expiry(harness: Harness, world: dict[str, str]) -> None:
    h = harness
    base = f"/download/{world['bundle_id']}.zip?device_id={DEVICE}&sig={world['sig']}"
    for expires in ("9" * 5000, "1" + "0" * 4400, "9" * 21):
        for method in ("GET", "HEAD"):
            r = h.client.request(method, f"{base}&expires={expires}")
            assert r.status_code == 403, (expires[:10], r.status_code)
            if method == "GET":
                assert r.json() == {"error": "Download link is invalid or expired", "status": "KO"}
    assert h.client.get(f"{base}&expires={world['expires']}").status_code == 200


@pytest.mark.parametrize("scope", ["app", "org", "user"])
def test_compare_previous_before_year_one(
    harness: Harness, world: dict[str, str], scope: str
) -> None:
    h = harness
    path = {
        "app": f"/statistics/app/{APP}/",
        "org": f"/statistics/org/{world['org_id']}/",
        "user": "/statistics/user/",
    }[scope]
    auth = {"authorization": world["key"]}
    for start, end in (("0001-01-01", "0001-01-01"), ("0001-01-01", "0001-03-31")):
        r = h.client.get(f"{path}?from={start}&to={end}&compare=previous", headers=auth)
        assert r.status_code == 400
        assert r.json() == {"error": PREVIOUS_TOO_EARLY, "status": "KO"}
        # Without the comparison the same range is fine (and empty of figures).
        r = h.client.get(f"{path}?from={start}&to={end}", headers=auth)
        assert r.status_code == 200 and all(row["mau"] == 0 for row in r.json()["data"])
    # The first range whose previous period still fits.
    r = h.client.get(f"{path}?from=0001-01-02&to=0001-01-02&compare=previous", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["previous_period"] == {"from": "0001-01-01", "to": "0001-01-01"}
