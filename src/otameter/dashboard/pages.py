"""Server-rendered HTML: the sign-in form, the list of orgs, and the shells of the org and app
pages (their figures are filled in by static/dashboard.js from the JSON API)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html import escape
from typing import Any
from urllib.parse import quote

STATIC = "/dashboard/static"


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def _layout(
    title: str,
    body: str,
    *,
    crumbs: Sequence[tuple[str, str | None]] = (),
    signed_in: bool = True,
    main_attrs: str = "",
    scripts: bool = False,
) -> str:
    trail = ""
    if crumbs:
        items = []
        for n, (label, href) in enumerate(crumbs):
            current = n == len(crumbs) - 1
            if href and not current:
                items.append(f'<li><a href="{esc(href)}">{esc(label)}</a></li>')
            else:
                items.append(f'<li aria-current="page">{esc(label)}</li>')
        trail = f'<nav aria-label="Breadcrumb" class="crumbs"><ol>{"".join(items)}</ol></nav>'
    signout = (
        '<form method="post" action="/dashboard/logout" class="signout">'
        '<button type="submit">Sign out</button></form>'
        if signed_in
        else ""
    )
    script_tags = (
        f'<script src="{STATIC}/vendor/chart.umd.js" defer></script>'
        f'<script type="module" src="{STATIC}/dashboard.js"></script>'
        if scripts
        else ""
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · otameter</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{STATIC}/dashboard.css">
{script_tags}
</head>
<body>
<a class="skip" href="#main">Skip to main content</a>
<header class="top">
<a class="brand" href="/dashboard">otameter</a>
{trail}
{signout}
</header>
<main id="main" tabindex="-1" {main_attrs}>
{body}
</main>
</body>
</html>
"""


def login(*, error: str | None = None, notice: str | None = None, next_url: str = "") -> str:
    message = ""
    if error:
        message = f'<p class="banner banner-error" role="alert" id="login-error">{esc(error)}</p>'
    elif notice:
        message = f'<p class="banner banner-info" role="status">{esc(notice)}</p>'
    described = ' aria-describedby="login-error"' if error else ""
    body = f"""
<section class="login card">
<h1>Sign in</h1>
<p>Sign in with an otameter API key. A read-only key is enough to look at the dashboard.</p>
{message}
<form method="post" action="/dashboard/login">
<input type="hidden" name="next" value="{esc(next_url)}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required
 spellcheck="false"{described}>
<button type="submit">Sign in</button>
</form>
<p class="hint">No key yet? <code>otameter user create --email you@example.com</code> prints one;
<code>otameter serve --demo</code> prints the demo key.</p>
</section>"""
    return _layout("Sign in", body, signed_in=False)


def orgs(org_rows: Sequence[dict[str, Any]], app_rows: Sequence[dict[str, Any]]) -> str:
    by_org: dict[str, list[dict[str, Any]]] = {}
    for app in app_rows:
        by_org.setdefault(app["owner_org"], []).append(app)
    if not org_rows:
        listing = '<p class="empty">This key does not give access to any organization.</p>'
    else:
        rows = []
        for org in org_rows:
            apps = by_org.get(org["id"], [])
            links = (
                ", ".join(
                    f'<a href="/dashboard/app/{quote(a["app_id"], safe="")}">{esc(a["name"])}</a>'
                    for a in apps
                )
                or "none"
            )
            rows.append(
                "<tr>"
                f'<th scope="row"><a href="/dashboard/org/{quote(org["id"], safe="")}">'
                f"{esc(org['name'])}</a></th>"
                f"<td>{esc(org.get('role') or '')}</td>"
                f"<td>{esc(org.get('plan') or 'none')}</td>"
                f'<td class="num">{len(apps)}</td>'
                f"<td>{links}</td>"
                "</tr>"
            )
        listing = (
            '<table class="data"><caption>Organizations this key can see</caption>'
            '<thead><tr><th scope="col">Organization</th><th scope="col">Your role</th>'
            '<th scope="col">Plan</th><th scope="col" class="num">Apps</th>'
            f'<th scope="col">App pages</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        )
    body = f"<h1>Your organizations</h1>\n{listing}"
    return _layout("Organizations", body, crumbs=[("Organizations", None)])


def _range_form(start: date, end: date, today: date, compare: bool) -> str:
    checked = " checked" if compare else ""
    return f"""
<form id="range" class="range card" method="get" aria-describedby="range-help">
<fieldset>
<legend>Date range</legend>
<div class="field"><label for="from">From</label>
<input id="from" name="from" type="date" value="{start.isoformat()}" max="{today.isoformat()}"
 required></div>
<div class="field"><label for="to">To</label>
<input id="to" name="to" type="date" value="{end.isoformat()}" max="{today.isoformat()}"
 required></div>
<div class="field check"><input id="compare" name="compare" type="checkbox" value="1"{checked}>
<label for="compare">Compare with the previous period</label></div>
<button type="submit">Apply</button>
<div class="presets" role="group" aria-label="Quick ranges">
<button type="button" data-days="7">Last 7 days</button>
<button type="button" data-days="30">Last 30 days</button>
<button type="button" data-days="90">Last 90 days</button>
</div>
</fieldset>
<p id="range-help" class="hint">Up to 90 days, UTC days, today included.</p>
<p id="range-error" class="banner banner-error" role="alert" hidden></p>
</form>"""


def _range_and_charts(start: date, end: date, today: date, compare: bool) -> str:
    """The range picker, the summary cards and the place the charts are drawn in."""
    return f"""{_range_form(start, end, today, compare)}
<section aria-labelledby="summary-h" id="summary-section">
<h2 id="summary-h" class="visually-hidden">Summary of the range</h2>
<div id="summary" class="summary" aria-live="polite"></div>
</section>
<div id="charts" class="charts"></div>"""


def _shell_attrs(
    page: str, ident: str, today: date, start: date, end: date, extra: str = ""
) -> str:
    return (
        f'data-page="{page}" data-id="{esc(ident)}" data-today="{today.isoformat()}" '
        f'data-from="{start.isoformat()}" data-to="{end.isoformat()}" data-state="loading" {extra}'
    )


def org_page(
    org: dict[str, Any],
    apps: Sequence[dict[str, Any]],
    today: date,
    start: date,
    end: date,
    compare: bool,
) -> str:
    body = f"""
<div class="title"><h1>{esc(org["name"])}</h1>
<p class="sub">Organization · your role: {esc(org.get("role") or "?")} ·
{len(apps)} app{"s" if len(apps) != 1 else ""}</p></div>
<section aria-labelledby="usage-h" class="card" id="usage">
<h2 id="usage-h">Plan usage</h2>
<div id="usage-body" aria-live="polite"><p class="loading">Loading plan usage…</p></div>
</section>
{_range_and_charts(start, end, today, compare)}
<section aria-labelledby="apps-h" class="card">
<h2 id="apps-h">Apps</h2>
<div id="apps-table"><p class="loading">Loading apps…</p></div>
</section>"""
    crumbs = [("Organizations", "/dashboard"), (str(org["name"]), None)]
    attrs = _shell_attrs("org", org["id"], today, start, end)
    return _layout(str(org["name"]), body, crumbs=crumbs, main_attrs=attrs, scripts=True)


def app_page(
    app: dict[str, Any],
    org: dict[str, Any] | None,
    today: date,
    start: date,
    end: date,
    compare: bool,
) -> str:
    org_id = app["owner_org"]
    org_name = str(org["name"]) if org else "Organization"
    body = f"""
<div class="title"><h1>{esc(app["name"])}</h1>
<p class="sub">App <code>{esc(app["app_id"])}</code> in
<a href="/dashboard/org/{quote(org_id, safe="")}">{esc(org_name)}</a></p></div>
<div id="org-lock" aria-live="polite"></div>
{_range_and_charts(start, end, today, compare)}
<section aria-labelledby="releases-h" class="card" id="releases-section">
<h2 id="releases-h">Releases</h2>
<p class="hint">What the plugin reported for each bundle version over the range: unique
devices, emulators and dev builds left out.</p>
<div id="release-alerts" aria-live="polite"></div>
<div id="release-charts" class="charts"><p class="loading">Loading releases…</p></div>
</section>
<section aria-labelledby="devices-h" class="card" id="devices-section">
<h2 id="devices-h">Devices</h2>
<form id="device-search" role="search">
<label for="device-query">Device id or custom id</label>
<input id="device-query" name="search" type="search" maxlength="64" autocomplete="off">
<button type="submit">Search</button>
</form>
<div id="device-results" aria-live="polite"></div>
<div id="device-log" aria-live="polite"></div>
</section>
<section aria-labelledby="channels-h" class="card">
<h2 id="channels-h">Channels</h2>
<div id="channels-table"><p class="loading">Loading channels…</p></div>
</section>
<section aria-labelledby="bundles-h" class="card">
<h2 id="bundles-h">Bundles</h2>
<div id="bundles-table"><p class="loading">Loading bundles…</p></div>
</section>"""
    crumbs = [
        ("Organizations", "/dashboard"),
        (org_name, f"/dashboard/org/{quote(org_id, safe='')}"),
        (str(app["name"]), None),
    ]
    attrs = _shell_attrs("app", app["app_id"], today, start, end, f'data-org="{esc(org_id)}"')
    return _layout(str(app["name"]), body, crumbs=crumbs, main_attrs=attrs, scripts=True)


def not_found() -> str:
    body = (
        "<h1>Not found</h1><p>There is nothing here that this key can see.</p>"
        '<p><a href="/dashboard">Back to your organizations</a></p>'
    )
    return _layout("Not found", body, crumbs=[("Organizations", "/dashboard")])


def error(message: str) -> str:
    body = f'<h1>Something went wrong</h1><p role="alert">{esc(message)}</p>'
    return _layout("Error", body, crumbs=[("Organizations", "/dashboard")])
