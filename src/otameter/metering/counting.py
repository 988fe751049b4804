"""The counting rules: which check-ins count for MAU.

A check-in counts unless it comes from an emulator or a dev build, or from a Google
data-centre address during the first 4 hours after a bundle of that app was uploaded
(Play Store pre-launch robots install every new build on many devices).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from enum import StrEnum

GOOGLE_WINDOW_MS = 4 * 3600 * 1000


class Verdict(StrEnum):
    COUNTED = "counted"
    # Emulators and dev builds: never in MAU, but kept apart for the 3% rule.
    EMUDEV = "emudev"
    # Google robots after a new bundle: not counted anywhere.
    GOOGLE_WINDOW = "google_window"


def in_upload_window(upload_times: Sequence[int], at_ms: int) -> bool:
    """Whether a bundle was uploaded at most 4 hours before ``at_ms`` (times sorted, in ms).

    The window of an upload at ``u`` is ``[u, u + 4h)``.
    """
    i = bisect_right(upload_times, at_ms - GOOGLE_WINDOW_MS)
    return i < len(upload_times) and upload_times[i] <= at_ms


def classify(
    is_emulator: bool,
    is_prod: bool,
    ip: str | None,
    at_ms: int,
    upload_times: Sequence[int],
    is_google_ip: Callable[[str], bool],
) -> Verdict:
    # Robots are checked first so that a pre-launch robot never weighs on the 3% rule either.
    # The address is looked up only inside a window, which is rare.
    if ip and upload_times and in_upload_window(upload_times, at_ms) and is_google_ip(ip):
        return Verdict.GOOGLE_WINDOW
    return device_verdict(is_emulator, is_prod)


def device_verdict(is_emulator: bool, is_prod: bool) -> Verdict:
    """The verdict of a check-in that no Google window touches."""
    return _EMUDEV if is_emulator or not is_prod else _COUNTED


_EMUDEV, _COUNTED = Verdict.EMUDEV, Verdict.COUNTED
