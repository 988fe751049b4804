"""Control characters in client strings: refused the same way on every engine.

PostgreSQL cannot store NUL in text at all (SQLite can), and no name, id or version has a use
for control characters (Unicode category Cc: C0, DEL, C1). So every string a client sends is
checked before it can reach the database:

- single-line values (names, ids, versions, every plugin field): no control character;
- free text (the values of a stats event's ``metadata``, e.g. an error message): tab, CR and
  LF are kept, no other control character.

JSON bodies are checked as a whole when decoded (:func:`json_control_path`); a body without a
backslash, DEL or C1 byte cannot hold one (JSON forbids raw C0 characters in strings, the
decoder refuses them), so the common case costs one byte search.
"""

from __future__ import annotations

import re
from typing import Any, Final

# Cc: U+0000-U+001F, U+007F-U+009F.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_EXCEPT_LINES: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# What a JSON text must contain for a decoded string to hold a control character: an escape,
# a raw DEL, or a raw C1 character (UTF-8 \xc2\x80-\xc2\x9f).
_MAY_HOLD_CONTROL: Final = re.compile(rb"\\|\x7f|\xc2[\x80-\x9f]")


def has_control(value: str, *, free_text: bool = False) -> bool:
    """Whether ``value`` holds a control character (``free_text``: tab, CR, LF allowed)."""
    pattern = _CONTROL_EXCEPT_LINES if free_text else _CONTROL
    return pattern.search(value) is not None


def may_hold_control(body: bytes) -> bool:
    """Whether a JSON text may decode to a string holding a control character."""
    return _MAY_HOLD_CONTROL.search(body) is not None


def json_control_path(body: bytes, value: Any) -> str | None:
    """Where the decoded JSON ``value`` of ``body`` holds a control character, if anywhere.

    Keys and strings are checked at any depth; tab, CR and LF are allowed in string values
    (callers check single-line fields themselves), never in keys. The answer names the place
    (``metadata.note``, ``[3].version_name``) for the error message.
    """
    if _MAY_HOLD_CONTROL.search(body) is None:
        return None
    return _walk(value, "")


def _walk(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return (path or "body") if has_control(value, free_text=True) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if has_control(key):
                return f"{path}.<key>" if path else "<key>"
            found = _walk(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _walk(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def url_has_control(path: str, query_string: bytes) -> bool:
    """Whether a request's decoded path or raw query string holds a control character."""
    if _CONTROL.search(path):
        return True
    if not query_string:
        return False
    return _QUERY_CONTROL.search(query_string) is not None


# Raw control bytes, percent-encoded C0 or DEL, or percent-encoded C1 in UTF-8.
_QUERY_CONTROL: Final = re.compile(
    rb"[\x00-\x1f\x7f]|%[01][0-9a-f]|%7f|%c2%[89][0-9a-f]", re.IGNORECASE
)
