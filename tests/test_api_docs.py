"""The API page (/docs): Redoc shipped in the package renders the served document, and the
page loads nothing from anywhere but the server itself."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from otameter import openapi
from tests.browser import CHROMIUM_ARGS, chromium, require_browser
from tests.harness import Harness
from tests.liveserver import LiveServer


class _References(HTMLParser):
    """Every address an HTML page names (src, href, and Redoc's spec-url)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "spec-url"} and value is not None:
                self.found.append(value)


def test_docs_page_references_only_local_assets(sqlite_harness: Harness) -> None:
    client = sqlite_harness.client
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    parser = _References()
    parser.feed(r.text)
    assert sorted(parser.found) == ["docs/redoc.standalone.js", "openapi.json"]
    base = "http://testserver/docs"
    for ref in parser.found:
        # Relative to the page, on the server itself: no scheme, no other host.
        assert not urlsplit(ref).scheme and not urlsplit(ref).netloc, ref
        asset = client.get(urljoin(base, ref))
        assert asset.status_code == 200, ref
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    script = client.get("/docs/redoc.standalone.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.content == openapi.REDOC_JS.read_bytes()
    vendor = openapi.REDOC_JS.parent
    assert (vendor / "redoc-LICENSE").is_file()
    assert "Redoc 2.5.4" in (vendor / "README.md").read_text()


def test_docs_page_renders_in_a_browser_from_the_server_alone(tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    with LiveServer(f"sqlite:///{tmp_path}/otameter.db", tmp_path / "data") as server:
        origin = urlsplit(server.url).netloc
        requested: list[str] = []
        answered: list[str] = []
        refused: list[tuple[str, str | None]] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[Any] = []
                page.on("pageerror", lambda error: errors.append(error))
                page.on("request", lambda request: requested.append(request.url))
                page.on("response", lambda response: answered.append(response.url))
                page.on(
                    "requestfailed", lambda request: refused.append((request.url, request.failure))
                )
                page.goto(server.url + "/docs")
                # Redoc has fetched the document and drawn its operations.
                page.locator("h2", has_text="Update check").wait_for(timeout=30_000)
                assert page.locator("h2", has_text="Create an organization").count() == 1
                assert errors == []
            finally:
                browser.close()
    assert f"{server.url}/openapi.json" in requested
    assert f"{server.url}/docs/redoc.standalone.js" in requested
    # Redoc's sidebar names a logo on its CDN: the page's policy keeps the browser from
    # fetching it, or anything else from elsewhere (whether this machine could reach it or not).
    elsewhere = {
        url
        for url in requested
        if urlsplit(url).scheme in {"http", "https"} and urlsplit(url).netloc != origin
    }
    assert not elsewhere & set(answered)
    assert {url: "csp" for url in elsewhere} == {
        url: why for url, why in refused if url in elsewhere
    }
