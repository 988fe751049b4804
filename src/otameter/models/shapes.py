"""The shapes every API shares, defined once: app id, device UUID, semver, platform, day.

Each pattern is written once, unanchored; the ``Annotated`` types anchor it for Python
(``^...\\Z``: ``$`` would also match before a final newline), msgspec validates with it, and
the OpenAPI document writes it in JSON Schema's dialect (``^...$``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, overload

import msgspec

#: The platforms the plugin runs on, in the order the API lists them.
PLATFORMS: Final = ("ios", "android", "electron")
Platform = Literal["ios", "android", "electron"]

# Reverse-domain app ids as Capgo checks them (JavaScript's \w is ASCII-only).
APP_ID_CORE: Final = r"[A-Za-z0-9]+(\.[A-Za-z0-9_-]+)+"
UUID_CORE: Final = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# Strict SemVer 2.0.0 (no leading "v", no leading zeros in numeric identifiers).
_NUM: Final = r"(?:0|[1-9][0-9]*)"
_PRE_ID: Final = rf"(?:{_NUM}|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID: Final = r"[0-9A-Za-z-]+"
SEMVER_CORE: Final = (
    rf"{_NUM}\.{_NUM}\.{_NUM}"
    rf"(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?"
    rf"(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?"
)
DAY_CORE: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"

MAX_APP_ID: Final = 255


def python_pattern(core: str) -> str:
    """``core`` matched whole by ``re.search`` (msgspec's way of applying a pattern).

    The OpenAPI document writes the final ``\\Z`` as ``$`` (:func:`schema_pattern`).
    """
    return rf"^(?:{core})\Z"


def schema_pattern(pattern: str) -> str:
    """A pattern of :func:`python_pattern` in JSON Schema's (ECMA-262) dialect."""
    return pattern[:-2] + "$" if pattern.endswith("\\Z") else pattern


#: A name or id given as text: one line (no control character, text.py's rule) holding more
#: than white space (it is stored stripped).
CONTROL: Final = r"[\x00-\x1f\x7f-\x9f]"
NOT_BLANK: Final = python_pattern(r"(?=.*\S)[^\x00-\x1f\x7f-\x9f]*")


# Compiled for the checks written in Python (re.ASCII: no other script's letters or digits).
APP_ID_RE: Final = re.compile(APP_ID_CORE, re.ASCII)
UUID_RE: Final = re.compile(UUID_CORE, re.ASCII)
SEMVER_RE: Final = re.compile(SEMVER_CORE, re.ASCII)


AppId = Annotated[
    str,
    msgspec.Meta(
        pattern=python_pattern(APP_ID_CORE),
        max_length=MAX_APP_ID,
        description="A reverse-domain app id like `com.example.app`.",
    ),
]
DeviceId = Annotated[
    str, msgspec.Meta(pattern=python_pattern(UUID_CORE), description="The device's UUID.")
]
SemVer = Annotated[str, msgspec.Meta(pattern=python_pattern(SEMVER_CORE), max_length=255)]
Day = Annotated[
    str, msgspec.Meta(pattern=python_pattern(DAY_CORE), extra_json_schema={"format": "date"})
]
DateTime = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


@overload
def iso(ms: int) -> str: ...
@overload
def iso(ms: None) -> None: ...
@overload
def iso(ms: int | None) -> str | None: ...


def iso(ms: int | None) -> str | None:
    """A stored epoch-ms time as the API writes it (ISO 8601, UTC); ``None`` stays ``None``."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()
