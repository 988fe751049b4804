"""Query strings read into models: one reader for the query parameters of every route.

A query model is a msgspec Struct (``otameter.models``) whose fields are the parameters, in
the order the route checks them; ``openapi.query_parameters`` documents the same model. Every
value arrives as text and is read into the field's type the way the API reads it:

- text (``str``): checked as given against the field's constraints, then stripped;
- an integer: ASCII digits only (``int()`` would take other scripts' digits, a sign, white
  space and ``_``), at most as many as its bound ``le`` has (or ``Meta(extra={"digits": n})``),
  so that a huge number is refused before it is converted, then its bounds;
- a boolean: ``true``, ``1``, ``yes`` or ``false``, ``0``, ``no``, empty;
- a date (``datetime.date``): ``YYYY-MM-DD``, a day that exists;
- a ``Literal``: one of its values.

A parameter given twice counts once, with its last value (Starlette's ``QueryParams.get``);
parameters the model does not name are ignored. The first faulty field, in the model's order,
is answered 400 in the route's own words, from the model's ClassVars:

- ``messages``: field (its query name) -> the message for a value it refuses, and for its
  absence where ``missing`` does not say;
- ``missing``: field -> the message when a required field is absent;
- ``read``: field -> how its raw text is read first (folded to lower case, say).

A field without a message is answered in the API's words for text ("'x' is required and must
be a non-empty string", too long, control characters).
Checks that need more than one field (a range's order and length) are the caller's.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from .errors import ApiError, control_characters, required_text, text_too_long
from .text import has_control

S = TypeVar("S", bound=msgspec.Struct)

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no", ""})


def decode_query(params: Mapping[str, str], model: type[S]) -> S:
    """``params`` (a query string's parameters) read into ``model``; 400 on the first fault."""
    messages: dict[str, str] = getattr(model, "messages", {})
    missing: dict[str, str] = getattr(model, "missing", {})
    read: dict[str, Callable[[str], str]] = getattr(model, "read", {})
    values: dict[str, Any] = {}
    for f in msgspec.structs.fields(model):
        name = f.encode_name
        raw = params.get(name)
        if raw is None:
            if f.required:
                raise ApiError(400, missing.get(name) or messages.get(name) or required_text(name))
            continue
        if name in read:
            raw = read[name](raw)
        try:
            value = msgspec.convert(_typed(raw, f.type), f.type, strict=True)
        except (ValueError, msgspec.ValidationError):
            raise ApiError(400, messages.get(name) or _text_fault(name, raw, f.type)) from None
        values[f.name] = value.strip() if isinstance(value, str) and _is_text(f.type) else value
    return model(**values)


def _typed(raw: str, annotation: Any) -> Any:
    """``raw`` as the value of a field of type ``annotation`` (before its constraints)."""
    base, meta = _base(annotation)
    if base is bool:
        if raw in TRUE_WORDS:
            return True
        if raw in FALSE_WORDS:
            return False
        raise ValueError(raw)
    if base is int:
        if not (raw.isascii() and raw.isdigit()) or len(raw) > _digits(meta):
            raise ValueError(raw)
        return int(raw)
    return raw


def _digits(meta: msgspec.Meta | None) -> int:
    if meta is not None and meta.extra and "digits" in meta.extra:
        return int(meta.extra["digits"])
    if meta is not None and meta.le is not None:
        return len(str(meta.le))
    return 18  # within a BIGINT


def _base(annotation: Any) -> tuple[Any, msgspec.Meta | None]:
    """The type under ``Annotated`` and ``| None``, and its ``msgspec.Meta``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    meta = None
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        meta = next((m for m in extras if isinstance(m, msgspec.Meta)), None)
    return annotation, meta


def _is_text(annotation: Any) -> bool:
    return _base(annotation)[0] is str


def _text_fault(name: str, raw: str, annotation: Any) -> str:
    """A refused value in the API's words for text."""
    _, meta = _base(annotation)
    if raw.strip():
        if meta is not None and meta.max_length is not None and len(raw) > meta.max_length:
            return text_too_long(name, meta.max_length)
        if has_control(raw):
            return control_characters(name)
    return required_text(name)
