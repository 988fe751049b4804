"""The OpenAPI 3.1 document of the whole HTTP API (``/openapi.json``) and its page (``/docs``).

Each route module describes its own operations beside its routes with :func:`describe`
(summary, parameters, every answer, errors included). Request and answer schemas are the
msgspec models of ``otameter.models``: an operation names a model (``answer("The app.",
App)``, ``list[Plan]``) and the document turns every model it meets into JSON Schema with
``msgspec.json.schema_components``, the Structs as named components. Query parameters are
the fields of the query models the handlers read (:func:`query_parameters`). This module holds
the words operations share and assembles the document.

``tests/test_openapi.py`` runs schemathesis against a live server over the document, and
checks that every route the app registers is described; the document served by an app holds
only the operations whose route that app registers.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from . import __version__ as VERSION
from .models.common import Error
from .models.plugin import EXTRA_SCHEMA
from .models.shapes import schema_pattern

JSON = "application/json"
Schema = dict[str, Any]
# A JSON Schema written out, or a model (a msgspec Struct, ``list[Model]``, an Annotated type)
# that the document turns into one.
SchemaLike = Any

#: Every operation, by path and method: filled by the route modules as they are imported.
OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {}


def describe(path: str, operations: dict[str, dict[str, Any]]) -> None:
    """Describe the operations (by lower-case method) of the route at ``path``."""
    OPERATIONS.setdefault(path, {}).update(operations)


# -- the words operations share ------------------------------------------------------------------


def json_content(schema: SchemaLike) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def answer(description: str, schema: SchemaLike | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = json_content(schema)
    return out


def error(description: str) -> dict[str, Any]:
    return answer(description, Error)


def json_body(schema: SchemaLike, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


STR = {"type": "string"}
INT = {"type": "integer"}

AUTH: list[dict[str, list[str]]] = [{"authorization": []}, {"capgkey": []}]
UNAUTHORIZED = error("No API key, or an unknown, revoked or expired one.")
# Every authenticated operation: too many failed authentications from the client's address.
TOO_MANY_FAILURES = {
    **error("Too many failed authentications from this address; a valid key is never refused."),
    "headers": {
        "Retry-After": {"description": "Seconds until the address may try again.", "schema": INT}
    },
}
BAD_REQUEST = error("The query or body is invalid; `error` says which field.")


def query_parameters(*models: type[msgspec.Struct]) -> list[dict[str, Any]]:
    """The query ``parameters`` of an operation: the fields of ``models`` (query models,
    ``query_strings.decode_query`` reads them) in order, each with its schema, default and
    description (the ``msgspec.Meta`` description of its type)."""
    fields = [f for model in models for f in msgspec.structs.fields(model)]
    inline, components = msgspec.json.schema_components([_without_none(f.type) for f in fields])
    assert not components, "a query parameter is a plain value"
    out: list[dict[str, Any]] = []
    for f, schema in zip(fields, inline, strict=True):
        description = schema.pop("description", None)
        if f.default not in (msgspec.NODEFAULT, None, msgspec.UNSET):
            schema["default"] = msgspec.to_builtins(f.default)
        param: dict[str, Any] = {
            "name": f.encode_name,
            "in": "query",
            "required": f.required,
            "schema": schema,
        }
        if description:
            param["description"] = description
        out.append(param)
    return out


def _without_none(annotation: Any) -> Any:
    """``X | None`` as ``X``: an absent parameter is the ``None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kept) == 1:
            return kept[0]
    return annotation


def app_id_param() -> dict[str, Any]:
    """``{app_id}`` in a path (in a query it is a query model's field)."""
    return {
        "name": "app_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "A reverse-domain app id like `com.example.app`.",
    }


def org_id_param() -> dict[str, Any]:
    return {
        "name": "org_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 36},
    }


# -- assembly ------------------------------------------------------------------------------------


def operation_id(method: str, path: str) -> str:
    """``get_statistics_app_app_id``: stable names for generated clients."""
    words = re.findall(r"[A-Za-z0-9]+", path.replace(".json", "").replace(".zip", ""))
    return "_".join([method, *(word.lower() for word in words)])


def with_bounds(op: dict[str, Any]) -> dict[str, Any]:
    """The operation with the answers every route may give (api/bounds.py)."""
    responses = dict(op["responses"])
    responses.setdefault("400", error("A control character in the URL."))
    if "requestBody" in op:
        responses.setdefault(
            "413",
            error("The body is over this route's bound (see README, Limits); connection closed."),
        )
    return {**op, "responses": responses}


def _with_auth_limit(op: dict[str, Any]) -> dict[str, Any]:
    if not op.get("security") or "429" in op["responses"]:
        return op
    return {**op, "responses": {**op["responses"], "429": TOO_MANY_FAILURES}}


def _is_model(value: Any) -> bool:
    return isinstance(value, type) or typing.get_origin(value) is not None


def _models(value: Any, found: list[Any]) -> None:
    """Every model named in ``value`` (a JSON-like tree), in order of appearance."""
    if isinstance(value, dict):
        for item in value.values():
            _models(item, found)
    elif isinstance(value, list):
        for item in value:
            _models(item, found)
    elif _is_model(value) and value not in found:
        found.append(value)


def _resolved(value: Any, schemas: dict[Any, Schema]) -> Any:
    """``value`` with each model replaced by its schema, patterns in JSON Schema's dialect."""
    if isinstance(value, dict):
        return {
            key: schema_pattern(item)
            if key == "pattern" and isinstance(item, str)
            else _resolved(item, schemas)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_resolved(item, schemas) for item in value]
    if _is_model(value):
        return _resolved(schemas[value], schemas)
    return value


def build_document(
    served: set[tuple[str, str]] | None = None, server_url: str | None = None
) -> dict[str, Any]:
    """The document; with ``served`` ((path, method) pairs) only the operations served."""
    paths: dict[str, dict[str, Any]] = {}
    for path, operations in OPERATIONS.items():
        kept = {
            method: {"operationId": operation_id(method, path), **with_bounds(_with_auth_limit(op))}
            for method, op in operations.items()
            if served is None or (path, method) in served
        }
        if kept:
            paths[path] = kept
    models: list[Any] = []
    _models(paths, models)
    inline, components = msgspec.json.schema_components(
        models, ref_template="#/components/schemas/{name}"
    )
    for name, extra in EXTRA_SCHEMA.items():
        if name in components:
            components[name] = {**components[name], **extra}
    schemas = dict(zip(models, inline, strict=True))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "otameter",
            "version": VERSION,
            "description": (
                "Usage metering and statistics for Capacitor live updates. Every error is "
                '`{"error": message, "status": "KO"}`, except on the plugin endpoints, which '
                "answer the plugin protocol's `{error, message, kind}`. Before any route, the "
                "server answers (and closes the connection) 431 to a request head over "
                "`OTAMETER_MAX_HEADER_BYTES`, 408 to one not complete within "
                "`OTAMETER_HEADER_TIMEOUT` seconds, and 503 to a connection over "
                "`OTAMETER_MAX_CONNECTIONS`."
            ),
        },
        "paths": _resolved(paths, schemas),
        "components": {
            "schemas": _resolved(dict(sorted(components.items())), schemas),
            "securitySchemes": {
                "authorization": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "authorization",
                    "description": "An API key (a `Bearer ` prefix is accepted).",
                },
                "capgkey": {"type": "apiKey", "in": "header", "name": "capgkey"},
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


# -- the routes ----------------------------------------------------------------------------------

#: Paths that belong to the browser dashboard (HTML and session cookies), not to the API.
NOT_API_PREFIXES = ("/dashboard",)


def served_operations(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    """(path, method) of every API route in ``routes`` (HEAD, added for GET, left out)."""
    served: set[tuple[str, str]] = set()
    for route in routes:
        if not isinstance(route, Route) or route.path.startswith(NOT_API_PREFIXES):
            continue
        for method in route.methods or ():
            if method != "HEAD":
                served.add((route.path, method.lower()))
    return served


async def openapi_json(request: Request) -> Response:
    from .api.common import JSONResponse

    cached = getattr(request.app.state, "openapi_document", None)
    if cached is None:
        rt = request.app.state.runtime
        cached = build_document(served_operations(list(request.app.routes)), rt.settings.public_url)
        request.app.state.openapi_document = cached
    return JSONResponse(cached)


# Redoc, shipped in the package (api/static/vendor/README.md): the page loads nothing from
# elsewhere. Paths are relative so that the page works under a proxy's path prefix too.
REDOC_JS = Path(__file__).parent / "api" / "static" / "vendor" / "redoc.standalone.js"
DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>otameter API</title>
</head>
<body>
<redoc spec-url="openapi.json"></redoc>
<script src="docs/redoc.standalone.js"></script>
</body>
</html>
"""


# The browser itself holds the page to this server: Redoc's sidebar names a logo on a CDN,
# which is then never fetched. Redoc styles itself inline and searches in a worker it makes
# from a blob.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def docs_page(_request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE, headers={"content-security-policy": DOCS_POLICY})


async def redoc_js(_request: Request) -> Response:
    # Versioned by the package: a day's caching spares the 1 MB on every visit.
    return FileResponse(
        REDOC_JS,
        media_type="text/javascript; charset=utf-8",
        headers={"cache-control": "public, max-age=86400"},
    )


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Route("/docs/redoc.standalone.js", redoc_js, methods=["GET"]),
]

describe(
    "/openapi.json",
    {
        "get": {
            "tags": ["server"],
            "summary": "This document",
            "security": [],
            "responses": {"200": answer("The OpenAPI 3.1 document.", {"type": "object"})},
        }
    },
)
describe(
    "/docs",
    {
        "get": {
            "tags": ["server"],
            "summary": "This document as a page to browse (Redoc, shipped with the server)",
            "security": [],
            "responses": {
                "200": {"description": "The page.", "content": {"text/html": {"schema": STR}}}
            },
        }
    },
)
describe(
    "/docs/redoc.standalone.js",
    {
        "get": {
            "tags": ["server"],
            "summary": "The script of the API page (Redoc)",
            "security": [],
            "responses": {
                "200": {
                    "description": "The script.",
                    "content": {"text/javascript": {"schema": STR}},
                }
            },
        }
    },
)
