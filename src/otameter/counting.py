"""The counting rules: which check-ins count for MAU.

A check-in counts unless it comes from an emulator or a dev build, or from a Google
data-centre address during the first 4 hours after a bundle of that app was uploaded
(Play Store pre-launch robots install every new build on many devices).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

GOOGLE_WINDOW_MS = 4 * 3600 * 1000


class Verdict(StrEnum):
    COUNTED = "counted"
    # Emulators and dev builds: never in MAU, but kept apart for the 3% rule.
    EMUDEV = "emudev"
    # Google robots after a new bundle: not counted anywhere.
    GOOGLE_WINDOW = "google_window"


def google_window(at_ms: int) -> tuple[int, int]:
    """Bundle upload times (exclusive start, inclusive end) that put ``at_ms`` in the window."""
    return at_ms - GOOGLE_WINDOW_MS, at_ms


def classify(
    *,
    is_emulator: bool,
    is_prod: bool,
    from_google: bool,
    bundle_uploaded_between: Callable[[int, int], bool],
    at_ms: int,
) -> Verdict:
    # Robots are checked first so that a pre-launch robot never weighs on the 3% rule either.
    if from_google and bundle_uploaded_between(*google_window(at_ms)):
        return Verdict.GOOGLE_WINDOW
    if is_emulator or not is_prod:
        return Verdict.EMUDEV
    return Verdict.COUNTED
