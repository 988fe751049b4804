"""Release health's rules: which plugin action is which outcome, what version an event names,
and the launch-time histogram. No database here: ``otameter import``'s parsing processes use it.

Ingest (``release_ingest.py``) turns each ``/stats`` event into facts that merge in any order
and any number of times:

- per (app, day, outcome, version) the counted devices it happened to, as roaring bitmaps of
  the same device ordinals as MAU, appended to ``activity_deltas`` under the outcome's kind and
  merged by the rollups like activity (a device that retries, or sends its queue again, is in
  the set once; emulators and dev builds are never in it);
- per (app, day, version) a histogram of launch times (``release_launches``), whose buckets
  add up; a launch is added once, when its raw event is new (see ``device_events``' unique
  index on the device's own timestamp);
- the raw event itself, in ``device_events``, for the device's log (pruned after
  ``Settings.stats_retention_days``).

``offered`` comes from check-ins (``CheckIn.offered_version``, folded by ``fold.Fold``) and
``active`` from the per-version activity bitmaps that MAU already keeps.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

OFFERED = "offered"
DOWNLOADED = "downloaded"
INSTALLED = "installed"
FAILED = "failed"
ROLLED_BACK = "rolled_back"
CRASHED = "crashed"
#: The outcomes kept as device sets, in the order of a release row (``active`` is MAU's).
OUTCOMES = (OFFERED, DOWNLOADED, INSTALLED, FAILED, ROLLED_BACK, CRASHED)
#: The fields of a release row, in order (contract.md "Release health"); the API, its
#: OpenAPI schema and the CLI's table and CSV all read them from here.
RELEASE_ROW_FIELDS = (
    "version",
    "active",
    *OUTCOMES,
    "launches",
    "launch_ms_p50",
    "launch_ms_p95",
)
LAUNCH_ACTION = "app_launch_ready"
#: What an action may look like (as protocol.py checks it on ``POST /stats``).
ACTION_RE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)

#: Which outcome each plugin action stands for (contract.md "Release health";
#: plugin-protocol.md §3). Other actions are kept in the device's log only.
ACTION_OUTCOMES: dict[str, str] = {
    "download_complete": DOWNLOADED,
    "download_zip_complete": DOWNLOADED,
    "set": INSTALLED,
    **dict.fromkeys(
        (
            "download_fail",
            "finish_download_fail",
            "checksum_fail",
            "decrypt_fail",
            "unzip_fail",
            "set_fail",
            "download_manifest_file_fail",
            "download_manifest_checksum_fail",
            "download_manifest_brotli_fail",
            "manifest_path_fail",
            "low_mem_fail",
            "insufficient_disk_space",
        ),
        FAILED,
    ),
    "update_fail": ROLLED_BACK,
    **dict.fromkeys(
        ("app_crash", "app_crash_native", "app_anr", "app_initialization_failure"), CRASHED
    ),
}

# -- launch-time histogram -----------------------------------------------------------------
# Durations below EXACT_BELOW ms have a bucket each (exact). Above, bucket k holds
# (GAMMA**(k-1), GAMMA**k] and is read as 2*GAMMA**k/(GAMMA+1), which is within
# RELATIVE_ERROR of every value in it (the bound of DDSketch, Masson et al., VLDB 2019).
# A quantile read from the histogram is therefore within 1% of the exact nearest-rank
# quantile, plus the rounding to a whole millisecond.
GAMMA = 1.02
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)  # 0.0099
EXACT_BELOW = 128
MAX_DURATION_MS = 24 * 3600 * 1000
_LOG_GAMMA = math.log(GAMMA)
_FIRST_LOG_INDEX = math.ceil(math.log(EXACT_BELOW) / _LOG_GAMMA)


def release_version(version_name: str) -> str:
    """The version an event names: ``"1.2.0:file.js"`` (a per-file failure) means ``1.2.0``."""
    return version_name.split(":", 1)[0].strip()


def parse_duration(metadata: dict[str, Any] | None) -> int | None:
    """``metadata.duration_ms`` as whole milliseconds, or None when absent or not a duration."""
    raw = (metadata or {}).get("duration_ms")
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value < 0 or value > MAX_DURATION_MS:
        return None
    return round(value)


def launch_bucket(duration_ms: int) -> int:
    if duration_ms < EXACT_BELOW:
        return duration_ms
    return EXACT_BELOW + math.ceil(math.log(duration_ms) / _LOG_GAMMA) - _FIRST_LOG_INDEX


def bucket_value(bucket: int) -> float:
    """The duration a bucket stands for."""
    if bucket < EXACT_BELOW:
        return float(bucket)
    k = bucket - EXACT_BELOW + _FIRST_LOG_INDEX
    return 2 * GAMMA**k / (GAMMA + 1)


def histogram_quantile(histogram: dict[int, int], q: float) -> int | None:
    """The nearest-rank ``q`` quantile of a histogram (None when it is empty)."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return round(bucket_value(bucket))
    raise AssertionError("unreachable: rank is at most the total")


def stat_metadata(metadata: dict[str, Any] | None, timestamp: int | None) -> str | None:
    """The metadata column of a raw event: the plugin's metadata and its own timestamp."""
    extra: dict[str, Any] = dict(metadata or {})
    if timestamp is not None:
        extra["device_timestamp"] = timestamp
    return orjson.dumps(extra).decode() if extra else None
