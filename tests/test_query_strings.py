"""Query strings the API reads: every bad one answers the route's own words, byte for byte.

Each table lists queries and what the route answers: an error ``(status, message)``, or
``Same(query)``: the answer (status, headers that matter, body) of an equivalent plain query
(a value in another case, with white space around it, a repeated key whose last value wins).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness import Harness

INVALID_DATE = "Invalid date format. Use YYYY-MM-DD"
MISSING_FROM = f"{INVALID_DATE} (the 'from' parameter is missing)"
MISSING_TO = f"{INVALID_DATE} (the 'to' parameter is missing)"
TOO_LARGE = "Date range cannot exceed 90 days"
INVALID_RANGE = "Invalid date range: 'from' must not be after 'to'"
INVALID_FORMAT = "Invalid format. Use json or csv"
INVALID_BREAKDOWN = "Invalid breakdown. Use true or false"
INVALID_COMPARE = "Invalid compare. Use previous"
TOO_EARLY = "Invalid compare: the previous period would start before 0001-01-01"
INVALID_BY = "Invalid by. Use day"
CONTROL_IN_URL = "The request URL must not contain control characters"
PAGE = "'page' must be a non-negative integer"
LIMIT = "'limit' must be an integer from 1 to 200"
BEFORE = "'before' must be an event id"
SEARCH = "'search' is longer than 64 characters"
STATUS = "'status' must be one of pending, delivered, failed"

R = "from=2024-01-01&to=2024-01-09"
ARABIC_ONE = "%D9%A1"  # U+0661, a digit to str.isdigit() and to \d, not to int() in a URL
FULLWIDTH_ONE = "%EF%BC%91"  # U+FF11


@dataclass(frozen=True)
class Same:
    """Answered like ``query``, which must succeed."""

    query: str


Expected = tuple[int, str] | Same

# Read by every statistics route: the range, then the range's rules, then ``format``.
RANGE_CASES: list[tuple[str, Expected]] = [
    ("", (400, MISSING_FROM)),
    ("to=2024-01-09", (400, MISSING_FROM)),
    ("from=2024-01-01", (400, MISSING_TO)),
    ("from=bad", (400, INVALID_DATE)),
    ("from=&to=2024-01-09", (400, INVALID_DATE)),
    ("from=2024-01-01&to=", (400, INVALID_DATE)),
    ("from=%20&to=2024-01-09", (400, INVALID_DATE)),
    ("from=2024-01-01%20&to=2024-01-09", (400, INVALID_DATE)),
    ("from=%202024-01-01&to=2024-01-09", (400, INVALID_DATE)),
    ("from=2024-01-01%0A&to=2024-01-09", (400, CONTROL_IN_URL)),
    ("from=2024-01-01%00&to=2024-01-09", (400, CONTROL_IN_URL)),
    (f"from=2024-01-0{ARABIC_ONE}&to=2024-01-09", (400, INVALID_DATE)),
    (f"from=2024-01-01&to=2024-01-0{FULLWIDTH_ONE}", (400, INVALID_DATE)),
    ("from=2024-02-30&to=2024-03-01", (400, INVALID_DATE)),
    ("from=2024-13-01&to=2024-13-02", (400, INVALID_DATE)),
    ("from=0000-01-01&to=0000-01-02", (400, INVALID_DATE)),
    ("from=20240-01-01&to=2024-01-02", (400, INVALID_DATE)),
    ("from=2024-1-1&to=2024-01-02", (400, INVALID_DATE)),
    ("from=2024-01-01T00:00&to=2024-01-02", (400, INVALID_DATE)),
    ("from=2024%E2%80%9001%E2%80%9001&to=2024-01-02", (400, INVALID_DATE)),
    ("from=+2024-01-01&to=2024-01-02", (400, INVALID_DATE)),
    ("from=bad&to=2024-01-02&format=xml", (400, INVALID_DATE)),
    ("from=2024-01-01&to=bad&format=xml", (400, INVALID_DATE)),
    ("from=bad", (400, INVALID_DATE)),
    ("to=bad", (400, MISSING_FROM)),
    ("from=2024-01-10&to=2024-01-09&format=xml", (400, INVALID_RANGE)),
    ("from=2024-01-01&to=2024-03-31&format=xml", (400, TOO_LARGE)),
    ("from=0001-01-01&to=9999-12-31", (400, TOO_LARGE)),
    (f"{R}&format=xml", (400, INVALID_FORMAT)),
    (f"{R}&format=", (400, INVALID_FORMAT)),
    (f"{R}&format=%20", (400, INVALID_FORMAT)),
    (f"{R}&format=jso", (400, INVALID_FORMAT)),
    (f"{R}&format=csv&format=xml", (400, INVALID_FORMAT)),
    (f"{R}&format=%C3%A7sv", (400, INVALID_FORMAT)),
    (f"{R}&format=JSON", Same(R)),
    (f"{R}&format=%20json%20", Same(R)),
    (f"{R}&format=xml&format=json", Same(R)),
    ("from=bad&from=2024-01-01&to=2024-01-09", Same(R)),
    (f"{R}&unknown=1", Same(R)),
    (f"{R}&format=Csv", Same(f"{R}&format=csv")),
    ("from=9999-12-23&to=9999-12-31", Same("from=9999-12-23&to=9999-12-31")),
]

# The options of the daily statistics: ``compare`` is read before ``breakdown``.
OPTION_CASES: list[tuple[str, Expected]] = [
    (f"{R}&breakdown=maybe", (400, INVALID_BREAKDOWN)),
    (f"{R}&breakdown=2", (400, INVALID_BREAKDOWN)),
    (f"{R}&breakdown=tru", (400, INVALID_BREAKDOWN)),
    (f"{R}&breakdown=y", (400, INVALID_BREAKDOWN)),
    (f"{R}&breakdown={ARABIC_ONE}", (400, INVALID_BREAKDOWN)),
    (f"{R}&compare=next", (400, INVALID_COMPARE)),
    (f"{R}&compare=previou", (400, INVALID_COMPARE)),
    (f"{R}&compare=1", (400, INVALID_COMPARE)),
    (f"{R}&compare=next&breakdown=maybe", (400, INVALID_COMPARE)),
    (f"{R}&format=xml&compare=next&breakdown=maybe", (400, INVALID_FORMAT)),
    ("from=0001-01-01&to=0001-01-05&compare=previous", (400, TOO_EARLY)),
    ("from=0001-01-06&to=0001-01-10&compare=PREVIOUS&breakdown=maybe", (400, INVALID_BREAKDOWN)),
    (f"{R}&breakdown=TRUE", Same(f"{R}&breakdown=true")),
    (f"{R}&breakdown=%20yes%20", Same(f"{R}&breakdown=true")),
    (f"{R}&breakdown=1", Same(f"{R}&breakdown=true")),
    (f"{R}&breakdown=No", Same(R)),
    (f"{R}&breakdown=0", Same(R)),
    (f"{R}&breakdown=", Same(R)),
    (f"{R}&breakdown=%20", Same(R)),
    (f"{R}&compare=%20Previous", Same(f"{R}&compare=previous")),
    (f"{R}&compare=NONE", Same(R)),
    (f"{R}&compare=", Same(R)),
    (
        "from=0001-01-06&to=0001-01-10&compare=previous",
        Same("from=0001-01-06&to=0001-01-10&compare=previous"),
    ),
    (
        f"{R}&format=csv&breakdown=yes&compare=previous",
        Same(f"{R}&format=CSV&breakdown=1&compare=previous"),
    ),
]

# Routes that read only the range and ``format``: the daily options are not theirs.
NOT_OPTIONS: list[tuple[str, Expected]] = [
    (f"{R}&breakdown=maybe", Same(R)),
    (f"{R}&compare=next", Same(R)),
    ("from=0001-01-01&to=0001-01-05&compare=previous", Same("from=0001-01-01&to=0001-01-05")),
]

BY_CASES: list[tuple[str, Expected]] = [
    (f"{R}&by=week", (400, INVALID_BY)),
    (f"{R}&by=days", (400, INVALID_BY)),
    (f"{R}&by=1", (400, INVALID_BY)),
    (f"{R}&format=xml&by=week", (400, INVALID_FORMAT)),
    ("from=bad&by=week", (400, INVALID_DATE)),
    (f"{R}&by=DAY", Same(f"{R}&by=day")),
    (f"{R}&by=%20day%20", Same(f"{R}&by=day")),
    (f"{R}&by=version", Same(R)),
    (f"{R}&by=", Same(R)),
    (f"{R}&by=day&by=week", (400, INVALID_BY)),
    (f"{R}&by=week&by=day", Same(f"{R}&by=day")),
    (f"{R}&format=csv&by=day", Same(f"{R}&format=csv&by=DAY")),
]

# Other routes ignore ``by``.
BY_IGNORED: list[tuple[str, Expected]] = [(f"{R}&by=week", Same(R))]


def _answer(h: Harness, key: str, method: str, url: str) -> tuple[int, str | None, Any]:
    r = h.client.request(method, url, headers=h.auth(key))
    is_json = r.headers.get("content-type") == "application/json"
    return r.status_code, r.headers.get("content-disposition"), r.json() if is_json else r.text


def check(
    h: Harness, key: str, path: str, cases: list[tuple[str, Expected]], method: str = "GET"
) -> None:
    for query, expected in cases:
        got = _answer(h, key, method, f"{path}?{query}")
        if isinstance(expected, Same):
            plain = _answer(h, key, method, f"{path}?{expected.query}")
            assert plain[0] == 200, (expected.query, plain)
            assert got == plain, query
        else:
            code, message = expected
            assert got == (code, None, {"error": message, "status": "KO"}), query


@pytest.fixture
def owner(harness: Harness) -> tuple[Harness, str, str]:
    _, key = harness.user("owner@example.com")
    org = harness.org(key, "Owner")
    harness.app(key, org, "com.q.app")
    harness.checkin("com.q.app", str(uuid.uuid4()))
    harness.rollup()
    return harness, key, org


def test_daily_statistics_queries(owner: tuple[Harness, str, str]) -> None:
    h, key, org = owner
    for path in ("/statistics/app/com.q.app/", f"/statistics/org/{org}/", "/statistics/user/"):
        check(h, key, path, RANGE_CASES + OPTION_CASES + BY_IGNORED)


def test_per_app_statistics_queries(owner: tuple[Harness, str, str]) -> None:
    h, key, _ = owner
    base = "/statistics/app/com.q.app"
    for route in ("bundle_usage", "refused_devices"):
        check(h, key, f"{base}/{route}/", RANGE_CASES + NOT_OPTIONS + BY_IGNORED)
    check(h, key, f"{base}/releases/", RANGE_CASES + NOT_OPTIONS + BY_CASES)


def test_statistics_query_before_visibility(owner: tuple[Harness, str, str]) -> None:
    """The query is read before the app is looked up: a bad query about an unknown app is
    answered about the query."""
    h, key, _ = owner
    check(
        h,
        key,
        "/statistics/app/com.nope.app/",
        [("", (400, MISSING_FROM)), (R, (404, "App/Organization not found"))],
    )
    check(h, key, "/statistics/app/com.nope.app/releases/", [(f"{R}&by=x", (400, INVALID_BY))])


DIGITS_19 = "1" + "0" * 18


def test_device_queries(owner: tuple[Harness, str, str]) -> None:
    h, key, _ = owner
    long = "a" * 65
    check(
        h,
        key,
        "/app/com.q.app/devices",
        [
            ("page=", (400, PAGE)),
            ("page=-1", (400, PAGE)),
            ("page=%2B1", (400, PAGE)),
            ("page=1.5", (400, PAGE)),
            ("page=1e3", (400, PAGE)),
            ("page=abc", (400, PAGE)),
            ("page=%201", (400, PAGE)),
            (f"page={ARABIC_ONE}", (400, PAGE)),
            (f"page={FULLWIDTH_ONE}", (400, PAGE)),
            ("page=1000000000", (400, PAGE)),
            ("page=0000000001", (400, PAGE)),
            (f"page={DIGITS_19}", (400, PAGE)),
            ("page=" + "9" * 5000, (400, PAGE)),
            ("page=1%01", (400, CONTROL_IN_URL)),
            (f"search={long}", (400, SEARCH)),
            (f"page=x&search={long}", (400, PAGE)),
            ("page=999999999", Same("page=999999999")),
            ("page=000000000", Same("page=0")),
            ("page=x&page=0", Same("page=0")),
            (f"search=%20{'a' * 64}%20", Same(f"search={'a' * 64}")),
            ("search=%20%20", Same("")),
            ("search=", Same("")),
        ],
    )
    device = str(uuid.uuid4())
    check(
        h,
        key,
        f"/app/com.q.app/devices/{device}/events",
        [
            ("limit=0", (400, LIMIT)),
            ("limit=201", (400, LIMIT)),
            ("limit=", (400, LIMIT)),
            ("limit=-1", (400, LIMIT)),
            ("limit=abc", (400, LIMIT)),
            ("limit=1.0", (400, LIMIT)),
            (f"limit={ARABIC_ONE}", (400, LIMIT)),
            ("limit=1000000", (400, LIMIT)),
            (f"limit={DIGITS_19}", (400, LIMIT)),
            ("limit=" + "9" * 5000, (400, LIMIT)),
            ("before=", (400, BEFORE)),
            ("before=-1", (400, BEFORE)),
            ("before=abc", (400, BEFORE)),
            (f"before={ARABIC_ONE}", (400, BEFORE)),
            (f"before={DIGITS_19}", (400, BEFORE)),
            ("before=" + "9" * 5000, (400, BEFORE)),
            ("limit=0&before=x", (400, LIMIT)),
            ("limit=200", (404, "Device not found")),
            ("limit=0050", (404, "Device not found")),
            ("", (404, "Device not found")),
            ("before=" + "9" * 18, Same("before=" + "9" * 18)),
            ("before=0", Same("before=0")),
            ("limit=x&limit=1&before=0", Same("limit=1&before=0")),
        ],
    )


def test_webhook_delivery_queries(owner: tuple[Harness, str, str]) -> None:
    h, key, org = owner
    check(
        h,
        key,
        f"/organization/{org}/webhooks/deliveries",
        [
            ("status=bogus", (400, STATUS)),
            ("status=", (400, STATUS)),
            ("status=PENDING", (400, STATUS)),
            ("status=%20pending", (400, STATUS)),
            ("status=bogus&page=x", (400, STATUS)),
            ("page=x", (400, PAGE)),
            ("page=-1", (400, PAGE)),
            ("status=pending&page=1000000000", (400, PAGE)),
            ("status=pending", Same("status=pending")),
            ("status=bogus&status=failed", Same("status=failed")),
            ("page=3", Same("page=3")),
        ],
    )


def test_bundle_and_channel_queries(owner: tuple[Harness, str, str]) -> None:
    h, key, _ = owner
    h.upload(key, "com.q.app", "1.0.0")
    required = "'{}' is required and must be a non-empty string"
    app_required = (400, required.format("app_id"))
    long = "a" * 256
    text_cases: list[tuple[str, Expected]] = [
        ("", app_required),
        ("app_id=", app_required),
        ("app_id=%20%20", app_required),
        (f"app_id={long}", (400, "'app_id' must be at most 255 characters")),
        (f"app_id=%20{'a' * 254}%20", (400, "'app_id' must be at most 255 characters")),
        ("app_id=com.q.app%7F", (400, CONTROL_IN_URL)),
        ("app_id=com.q.app%C2%85", (400, CONTROL_IN_URL)),
        ("app_id=com.q.app%09", (400, CONTROL_IN_URL)),
        ("app_id=com.nope.app", (404, "App not found")),
        ("app_id=%C3%A9", (404, "App not found")),
        ("app_id=%20com.q.app%20", Same("app_id=com.q.app")),
        ("app_id=x&app_id=com.q.app", Same("app_id=com.q.app")),
    ]
    check(
        h,
        key,
        "/bundle",
        [
            *text_cases,
            ("page=x", app_required),
            ("app_id=com.q.app&page=x", (400, PAGE)),
            ("app_id=com.q.app&page=-1", (400, PAGE)),
            ("app_id=com.nope.app&page=x", (400, PAGE)),
            ("app_id=com.q.app&page=1", Same("app_id=com.q.app&page=1")),
        ],
    )
    check(h, key, "/channel", text_cases)
    version_required = (400, required.format("version"))
    check(
        h,
        key,
        "/bundle",
        [
            ("", app_required),
            ("version=1.0.0", app_required),
            ("app_id=com.q.app", version_required),
            ("app_id=com.q.app&version=", version_required),
            ("app_id=com.q.app&version=%20", version_required),
            (f"app_id=com.q.app&version={long}", (400, "'version' must be at most 255 characters")),
            ("app_id=com.q.app&version=1%7F", (400, CONTROL_IN_URL)),
            (f"app_id={long}&version=", (400, "'app_id' must be at most 255 characters")),
            ("app_id=com.nope.app&version=1.0.0", (404, "App not found")),
            ("app_id=com.q.app&version=9.9.9", (404, "Bundle 9.9.9 not found for com.q.app")),
            (
                "app_id=%20com.q.app&version=%209.9.9%20",
                (404, "Bundle 9.9.9 not found for com.q.app"),
            ),
        ],
        method="DELETE",
    )


# -- the document's query parameters come from the same models ----------------------------------


def _query_params(doc: dict[str, Any], path: str, method: str) -> list[dict[str, Any]]:
    return [p for p in doc["paths"][path][method]["parameters"] if p["in"] == "query"]


def test_documented_query_parameters_are_the_models(sqlite_harness: Harness) -> None:
    """What ``/openapi.json`` says of the query parameters: generated from the query models."""
    doc = sqlite_harness.client.get("/openapi.json").json()
    day = {"type": "string", "format": "date"}
    span = "(`YYYY-MM-DD`, UTC, inclusive). At most 90 days in all."
    daily = _query_params(doc, "/statistics/app/{app_id}/", "get")
    assert [(p["name"], p["required"], p["schema"]) for p in daily] == [
        ("from", True, day),
        ("to", True, day),
        ("format", False, {"enum": ["csv", "json"], "default": "json"}),
        ("compare", False, {"enum": ["none", "previous"], "default": "none"}),
        ("breakdown", False, {"type": "boolean", "default": False}),
    ]
    assert daily[0]["description"] == f"First day {span}"
    assert [p["name"] for p in _query_params(doc, "/statistics/app/{app_id}/releases/", "get")] == [
        "from",
        "to",
        "format",
        "by",
    ]
    # ``format`` is read there too, but the answer is JSON either way.
    assert [
        p["name"] for p in _query_params(doc, "/statistics/app/{app_id}/refused_devices/", "get")
    ] == ["from", "to"]
    page = {
        "name": "page",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": 999999999, "default": 0},
        "description": "The page, from 0.",
    }
    text = {
        "type": "string",
        "maxLength": 255,
        "minLength": 1,
        "pattern": "^(?:(?=.*\\S)[^\\x00-\\x1f\\x7f-\\x9f]*)$",
    }
    app_id = {
        "name": "app_id",
        "in": "query",
        "required": True,
        "schema": text,
        "description": "A reverse-domain app id like `com.example.app`.",
    }
    assert _query_params(doc, "/bundle", "get") == [app_id, page]
    assert _query_params(doc, "/bundle", "delete") == [
        app_id,
        {"name": "version", "in": "query", "required": True, "schema": text},
    ]
    assert _query_params(doc, "/channel", "get") == [app_id]
    assert _query_params(doc, "/organization/{org_id}/webhooks/deliveries", "get") == [
        {
            "name": "status",
            "in": "query",
            "required": False,
            "schema": {"enum": ["delivered", "failed", "pending"]},
            "description": "Only the deliveries in it.",
        },
        page,
    ]
    events = _query_params(doc, "/app/{app_id}/devices/{device_id}/events", "get")
    assert [(p["name"], p["required"], p["schema"]) for p in events] == [
        ("limit", False, {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
        ("before", False, {"type": "integer", "minimum": 0, "maximum": 999999999999999999}),
    ]
    devices = _query_params(doc, "/app/{app_id}/devices", "get")
    assert devices[0] == page
    assert devices[1]["schema"] == {"type": "string", "maxLength": 64, "default": ""}


def test_event_limit_reads_at_most_six_digits(owner: tuple[Harness, str, str]) -> None:
    """``limit`` takes leading zeros up to six digits; a longer one is refused, where the
    bound was once checked on its first six digits only (``0001234`` gave 1234 events)."""
    h, key, _ = owner
    check(
        h,
        key,
        f"/app/com.q.app/devices/{uuid.uuid4()}/events",
        [
            ("limit=000200", (404, "Device not found")),
            ("limit=0000050", (400, LIMIT)),
            ("limit=0001234", (400, LIMIT)),
        ],
    )
