"""Storage (bytes of bundles existing at the end of a day) and bandwidth (bytes actually sent)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.harness import Harness, setup_app, zip_bytes

APP = "com.example.app"


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def figures(h: Harness, key: str, start: str, end: str, name: str) -> dict[str, int]:
    h.rollup()
    return {r["date"]: r[name] for r in h.stats(key, f"app/{APP}", start, end)}


def external(h: Harness, key: str, version: str, size: int) -> dict[str, object]:
    r = h.client.post(
        "/bundle",
        json={
            "app_id": APP,
            "version": version,
            "external_url": f"https://cdn.example.com/{version}.zip",
            "size": size,
            "channel": "external",
        },
        headers=h.auth(key),
    )
    assert r.status_code == 201, r.text
    result: dict[str, object] = r.json()
    return result


def test_storage_after_upload_external_and_delete(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    first = zip_bytes(size_hint=20_000)
    second = zip_bytes(size_hint=50_000)
    h.clock.set(at("2024-05-15", 9))
    h.upload(key, APP, "1.0.0", first)
    external(h, key, "1.0.0-cdn", 10_000_000)
    h.clock.set(at("2024-05-16", 9))
    h.upload(key, APP, "1.0.1", second)
    h.clock.set(at("2024-05-18", 9))
    before = figures(h, key, "2024-05-14", "2024-05-18", "storage")
    both = len(first) + len(second)
    assert before == {
        "2024-05-14": 0,
        "2024-05-15": len(first),
        "2024-05-16": both,
        "2024-05-17": both,
        "2024-05-18": both,
    }

    h.clock.set(at("2024-05-18", 15))
    r = h.client.delete(f"/bundle?app_id={APP}&version=1.0.0", headers=h.auth(key))
    assert r.status_code == 200, r.text
    # Freed from that moment: the day of the delete ends without it; past days keep it.
    after = figures(h, key, "2024-05-14", "2024-05-18", "storage")
    assert after == {**before, "2024-05-18": len(second)}
    h.clock.set(at("2024-05-25"))
    later = figures(h, key, "2024-05-14", "2024-05-25", "storage")
    assert {d: later[d] for d in before} == after
    assert later["2024-05-19"] == later["2024-05-25"] == len(second)

    # Deleting the external bundle changes nothing either.
    r = h.client.delete(f"/bundle?app_id={APP}&version=1.0.0-cdn", headers=h.auth(key))
    assert r.status_code == 200, r.text
    assert figures(h, key, "2024-05-14", "2024-05-25", "storage") == later


def download_path(h: Harness, device: str) -> str:
    answer = h.checkin(APP, device).json()
    assert "error" not in answer, answer
    url: str = answer["url"]
    return url.removeprefix("http://otameter.test")


def test_bandwidth_of_full_and_resumed_downloads(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    data = zip_bytes(size_hint=300_000)
    size = len(data)
    h.upload(key, APP, "1.0.1", data)
    device = str(uuid.uuid4())
    path = download_path(h, device)

    full = h.client.get(path)
    assert full.status_code == 200 and full.content == data
    assert figures(h, key, "2024-05-15", "2024-05-15", "bandwidth") == {"2024-05-15": size}

    # A resumed download counts only the bytes it sends.
    h.clock.set(at("2024-05-16", 8))
    resumed = h.client.get(path, headers={"range": "bytes=200000-"})
    assert resumed.status_code == 206 and resumed.content == data[200_000:]
    part = h.client.get(path, headers={"range": "bytes=0-999"})
    assert part.status_code == 206 and part.content == data[:1000]
    assert figures(h, key, "2024-05-15", "2024-05-16", "bandwidth") == {
        "2024-05-15": size,
        "2024-05-16": size - 200_000 + 1000,
    }

    # Nothing sent, nothing counted: a HEAD request and an unsatisfiable range.
    assert h.client.head(path).status_code == 200
    assert h.client.get(path, headers={"range": f"bytes={size}-"}).status_code == 416
    assert figures(h, key, "2024-05-16", "2024-05-16", "bandwidth") == {
        "2024-05-16": size - 200_000 + 1000
    }


def test_external_bundles_are_never_counted(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    external(h, key, "2.0.0", 10_000_000)
    r = h.client.post(
        "/channel",
        json={"app_id": APP, "channel": "external", "version": "2.0.0", "public": True},
        headers=h.auth(key),
    )
    assert r.status_code == 200, r.text
    answer = h.checkin(APP, str(uuid.uuid4())).json()
    assert answer["url"] == "https://cdn.example.com/2.0.0.zip"
    h.clock.advance(timedelta(days=1))
    assert figures(h, key, "2024-05-15", "2024-05-16", "storage") == {
        "2024-05-15": 0,
        "2024-05-16": 0,
    }
    assert figures(h, key, "2024-05-15", "2024-05-16", "bandwidth") == {
        "2024-05-15": 0,
        "2024-05-16": 0,
    }
