"""Server-rendered HTML from the Jinja2 templates in ``templates/``: the sign-in form, the
list of orgs, and the shells of the org and app pages (their figures are filled in by
static/dashboard.js from the dashboard's JSON).

Autoescaping is on for every template: names, ids and messages are escaped wherever they
land, in text or in an attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined

STATIC = "/dashboard/static"


def _segment(value: object) -> str:
    """One path segment of a link: every reserved character quoted, ``/`` included."""
    return quote(str(value), safe="")


_env = Environment(
    loader=PackageLoader("otameter.dashboard", "templates"),
    autoescape=True,
    # A name missing from a page's context is a bug: fail, do not print nothing.
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
_env.filters["segment"] = _segment
_env.globals["static"] = STATIC

Crumbs = Sequence[tuple[str, str | None]]
ORGS_CRUMB: Crumbs = [("Organizations", "/dashboard")]


def _render(
    name: str,
    title: str,
    *,
    crumbs: Crumbs = (),
    signed_in: bool = True,
    shell: dict[str, Any] | None = None,
    **context: Any,
) -> str:
    """A page: ``shell`` holds the ``data-*`` attributes the pages' script reads."""
    return _env.get_template(name).render(
        title=title,
        crumbs=list(crumbs),
        signed_in=signed_in,
        scripts=shell is not None,
        shell=shell,
        **context,
    )


def _shell(
    page: str, ident: str, today: date, start: date, end: date, org: str | None = None
) -> dict[str, Any]:
    return {
        "page": page,
        "id": ident,
        "today": today.isoformat(),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "org": org,
    }


def _range(start: date, end: date, today: date, compare: bool) -> dict[str, Any]:
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "today": today.isoformat(),
        "compare": compare,
    }


def login(*, error: str | None = None, notice: str | None = None, next_url: str = "") -> str:
    return _render(
        "login.html", "Sign in", signed_in=False, error=error, notice=notice, next_url=next_url
    )


def orgs(org_rows: Sequence[Mapping[str, Any]], app_rows: Sequence[Mapping[str, Any]]) -> str:
    by_org: dict[str, list[Mapping[str, Any]]] = {}
    for app in app_rows:
        by_org.setdefault(app["owner_org"], []).append(app)
    return _render(
        "orgs.html",
        "Organizations",
        crumbs=[("Organizations", None)],
        orgs=org_rows,
        apps_by_org=by_org,
    )


def org_page(
    org: Mapping[str, Any],
    apps: Sequence[Mapping[str, Any]],
    today: date,
    start: date,
    end: date,
    compare: bool,
) -> str:
    name = str(org["name"])
    return _render(
        "org.html",
        name,
        crumbs=[*ORGS_CRUMB, (name, None)],
        shell=_shell("org", org["id"], today, start, end),
        org=org,
        apps=apps,
        **_range(start, end, today, compare),
    )


def app_page(
    app: Mapping[str, Any],
    org: Mapping[str, Any] | None,
    today: date,
    start: date,
    end: date,
    compare: bool,
) -> str:
    org_id = app["owner_org"]
    org_name = str(org["name"]) if org else "Organization"
    name = str(app["name"])
    return _render(
        "app.html",
        name,
        crumbs=[*ORGS_CRUMB, (org_name, f"/dashboard/org/{_segment(org_id)}"), (name, None)],
        shell=_shell("app", app["app_id"], today, start, end, org=org_id),
        app=app,
        org_name=org_name,
        **_range(start, end, today, compare),
    )


def not_found() -> str:
    return _render("not_found.html", "Not found", crumbs=ORGS_CRUMB)


def error(message: str) -> str:
    return _render("error.html", "Error", crumbs=ORGS_CRUMB, message=message)
