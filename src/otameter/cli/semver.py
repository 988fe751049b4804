"""Semantic versions, parsed and ordered as semver.org says (``bundle cleanup --bundle``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from typing import Any

_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER_RE = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$"
)


@total_ordering
@dataclass(frozen=True)
class SemVer:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemVer | None:
        match = SEMVER_RE.match(text.strip())
        if match is None:
            return None
        pre = tuple(match.group(4).split(".")) if match.group(4) else ()
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)), pre)

    def _key(self) -> tuple[Any, ...]:
        # A release ranks above its pre-releases; numeric identifiers rank below others.
        pre: tuple[Any, ...] = (
            (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease))
            if self.prerelease
            else (1, ())
        )
        return (self.major, self.minor, self.patch, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() < other._key()

    def next_major(self) -> SemVer:
        # As semver's "increment major": 2.0.0-rc.1 goes to 2.0.0, anything else to N+1.0.0.
        if self.prerelease and self.minor == 0 and self.patch == 0:
            return SemVer(self.major, 0, 0)
        return SemVer(self.major + 1, 0, 0)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{'.'.join(self.prerelease)}" if self.prerelease else text
