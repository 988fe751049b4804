"""Which bundles ``bundle cleanup`` removes: Capgo's rule, decided without the server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .semver import SemVer

if TYPE_CHECKING:
    from ..client import Bundle


@dataclass(frozen=True)
class CleanupPlan:
    considered: list[Bundle]
    keep: list[bool]
    skipped_not_semver: list[str]

    @property
    def removed(self) -> list[Bundle]:
        return [b for b, kept in zip(self.considered, self.keep, strict=True) if not kept]

    @property
    def kept(self) -> list[Bundle]:
        return [b for b, kept in zip(self.considered, self.keep, strict=True) if kept]


def plan_cleanup(
    bundles: Sequence[Bundle], keep: int, bundle: SemVer | None, ignore_channel: bool
) -> CleanupPlan:
    """Capgo's rule: newest first, keep ``keep`` bundles plus any a channel serves.

    With ``bundle`` only versions strictly above it and below its next major are considered.
    """
    considered = list(bundles)
    skipped: list[str] = []
    if bundle is not None:
        upper = bundle.next_major()
        in_range = []
        for b in considered:
            parsed = SemVer.parse(b["version"])
            if parsed is None:
                skipped.append(b["version"])
            elif bundle < parsed < upper:
                in_range.append(b)
        considered = in_range
    decisions: list[bool] = []
    kept = 0
    for b in considered:
        linked = bool(b.get("channels"))
        if kept < keep or (linked and not ignore_channel):
            decisions.append(True)
            kept += 1
        else:
            decisions.append(False)
    return CleanupPlan(considered, decisions, skipped)
