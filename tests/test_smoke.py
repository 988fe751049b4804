"""End-to-end smoke: a device checks in, downloads the bundle, and shows up in statistics."""

from __future__ import annotations

import uuid

from tests.harness import Harness, zip_bytes


def test_checkin_download_and_statistics(harness: Harness) -> None:
    _, key = harness.user("dev@example.com")
    org_id = harness.org(key)
    harness.app(key, org_id, "com.example.app")
    data = zip_bytes(size_hint=10_000)
    bundle = harness.upload(key, "com.example.app", "1.0.1", data)
    assert bundle["size"] == len(data)

    device = str(uuid.uuid4())
    answer = harness.checkin("com.example.app", device)
    assert answer.status_code == 200
    body = answer.json()
    assert body["version"] == "1.0.1" and "error" not in body and "kind" not in body
    download = harness.client.get(body["url"].replace("http://otameter.test", ""))
    assert download.status_code == 200 and download.content == data

    harness.rollup()
    rows = harness.stats(key, "app/com.example.app", "2024-05-14", "2024-05-15")
    assert rows == [
        {"date": "2024-05-14", "mau": 0, "storage": 0, "bandwidth": 0},
        {"date": "2024-05-15", "mau": 1, "storage": len(data), "bandwidth": len(data)},
    ]
