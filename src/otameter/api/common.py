"""Helpers shared by the HTTP handlers: JSON answers, the caller's key and IP, body parsing."""

from __future__ import annotations

import ipaddress
import re
import types
import typing
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import msgspec
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..auth import Principal, key_from_headers, lookup_key
from ..clock import to_ms
from ..config import Network
from ..errors import (
    TOO_MANY_FAILURES,
    UNAUTHORIZED,
    ApiError,
    bad_request,
    control_characters,
    required_text,
    text_too_long,
)
from ..query_strings import decode_query
from ..runtime import Runtime
from ..text import has_control, json_control_path

T = TypeVar("T")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def read_db(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking read on the read engine outside the event loop."""
    rt = runtime(request)

    def call() -> T:
        with rt.read_engine.connect() as conn:
            return fn(conn, *args)

    return await run_in_threadpool(call)


def request_key(request: Request) -> str | None:
    return key_from_headers(request.headers.get("authorization"), request.headers.get("capgkey"))


async def caller(request: Request) -> Principal:
    """The caller's principal; 401 without a valid key, 429 after too many failures."""
    principal: Principal | None = None
    key = request_key(request)
    rt = runtime(request)
    if key:
        now_ms = to_ms(rt.clock.now())
        principal = await read_db(request, lookup_key, key, now_ms)
    if principal is None:
        await refuse(request, key)
    assert principal is not None
    return principal


async def refuse(request: Request, key: str | None) -> NoReturn:
    """Answer a missing or wrong key: 401, or 429 once the address failed too often.

    A missing key is not counted (it guesses nothing); a valid key never reaches here.
    """
    if key:
        rt = runtime(request)
        retry_after = await rt.auth_failures.failed(client_ip(request, rt.settings.trusted_proxies))
        if retry_after is not None:
            raise ApiError(429, TOO_MANY_FAILURES, {"retry-after": str(retry_after)})
    raise ApiError(401, UNAUTHORIZED)


async def json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("Request body must be valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object")
    where = json_control_path(body, data)
    if where is not None:
        raise bad_request(control_characters(where))
    return data


S = TypeVar("S", bound=msgspec.Struct)


async def json_model(request: Request, model: type[S]) -> S:
    """The request's JSON object decoded into ``model`` (``otameter.models``).

    The model's constraints are the rules. A body it refuses is answered 400 naming the first
    faulty field in the model's order (an unknown field first, where the model forbids them),
    in the API's words for text fields or the model's own (:func:`_first_fault`).
    Fields the model names in ``absent_when_false`` are absent when any false JSON value
    fills them (null, false, 0, "", [], {}).
    """
    data = await json_object(request)
    absent: frozenset[str] = getattr(model, "absent_when_false", frozenset())
    if absent:
        data = {name: value for name, value in data.items() if value or name not in absent}
    return _decode(data, model)


def form_model(fields: dict[str, str], model: type[S]) -> S:
    """The text fields of a submitted form decoded into ``model``, answered as
    :func:`json_model` answers; no field, known to the model or not, may hold a control
    character (the first such field in the form's order is named)."""
    for name, value in fields.items():
        if has_control(value):
            raise bad_request(control_characters(name))
    return _decode(fields, model)


def _decode(data: dict[str, Any], model: type[S]) -> S:
    try:
        given = msgspec.convert(data, model, strict=True)
    except msgspec.ValidationError:
        raise bad_request(_first_fault(data, model)) from None
    # Fields of any value taken as text accept everything but a line break or other control
    # character, which no type says (_first_fault names them when another field is faulty).
    for f in msgspec.structs.fields(model):
        value = data.get(f.encode_name)
        if _is_loose(f.type) and isinstance(value, str) and has_control(value):
            raise bad_request(control_characters(f.encode_name))
    return given


def _first_fault(data: dict[str, Any], model: type[msgspec.Struct]) -> str:
    """The message for the first faulty field of ``data``, in the model's order.

    A text field (``str``, constrained or not) is answered in the API's words for text:
    missing, not a string or blank ("is required and must be a non-empty string"), then too
    long, then a control character; otherwise the model's ``messages`` for the field, or the
    first words. A text field that may also be absent or null keeps the length and
    control-character messages for a string. Any other field (a choice, a number, a flag...)
    is answered with its entry in ``messages``, else the model's ``fault`` template, else the
    text words.
    """
    messages: dict[str, str] = getattr(model, "messages", {})
    fault: str | None = getattr(model, "fault", None)
    fields = msgspec.structs.fields(model)
    if model.__struct_config__.forbid_unknown_fields:
        unknown = sorted(set(data) - {f.encode_name for f in fields})
        if unknown:
            template: str = getattr(model, "unknown_field", "unknown field {name!r}")
            return template.format(name=unknown[0])
    for f in fields:
        name = f.encode_name
        text = _is_text(f.type)
        if name not in data:
            if f.required:
                return required_text(name) if text else messages.get(name, required_text(name))
            continue
        value = data[name]
        if _is_loose(f.type):
            if isinstance(value, str) and has_control(value):
                return control_characters(name)
            continue
        try:
            msgspec.convert(value, f.type, strict=True)
        except msgspec.ValidationError as exc:
            if isinstance(value, str) and _takes_text(f.type) and (value.strip() or not text):
                longest = _LONGER_THAN.search(str(exc))
                if longest:
                    return text_too_long(name, longest[1])
                if has_control(value):
                    return control_characters(name)
            if text and not (isinstance(value, str) and value.strip()):
                return required_text(name)
            if name in messages:
                return messages[name]
            if fault is not None and not text:
                return fault.format(name=name)
            return required_text(name)
    return "Request body is invalid"  # the model refused the whole but no field: not reached


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def _is_text(annotation: Any) -> bool:
    """Whether a field is text (``str``, constrained or not)."""
    return _unwrap(annotation) is str


def _takes_text(annotation: Any) -> bool:
    """Whether a field is text, or text that may also be absent or null."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else ()
    return _is_text(annotation) or any(_is_text(member) for member in members)


def _is_loose(annotation: Any) -> bool:
    """Whether a field takes any value (read as text by :func:`loose_text`)."""
    return _unwrap(annotation) is Any


_LONGER_THAN = re.compile(r"of length <= (\d+)")


def loose_text(value: Any, default: str, max_len: int) -> str:
    """A field any JSON value fills, as text: ``default`` for null or "", else the value's
    text cut to ``max_len`` (the decoding refused control characters)."""
    if value is None or value == "":
        return default
    return str(value)[:max_len]


def client_ip(request: Request, trusted: tuple[Network, ...]) -> str | None:
    """The socket peer, or the nearest X-Forwarded-For hop not set by a trusted proxy."""
    peer = request.client.host if request.client else None
    if not peer or not trusted or not _is_trusted(peer, trusted):
        return peer
    header = request.headers.get("x-forwarded-for")
    if not header:
        return peer
    hops = [hop.strip() for hop in header.split(",") if hop.strip()]
    # Walk from the nearest hop: each trusted proxy vouches for the address before it.
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def query_model(request: Request, model: type[S]) -> S:
    """The request's query string read into ``model`` (``query_strings.decode_query``): 400 in
    the route's words on the first faulty parameter."""
    return decode_query(request.query_params, model)
