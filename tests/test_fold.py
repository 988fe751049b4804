"""Folds: merging the folds of parts gives the fold of the whole, in any order."""

from __future__ import annotations

import pickle
from collections import Counter
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from otameter.metering.events import CheckIn, Download
from otameter.metering.fold import Fold, FoldedBatch, FoldedFacts, merge_batches

DAY_MS = 86_400_000
START = 1_714_521_600_000  # 2024-05-01T00:00:00Z

checkins = st.builds(
    CheckIn,
    app_id=st.sampled_from(["com.a", "com.b"]),
    device_id=st.sampled_from([f"{n:08x}-0000-4000-8000-000000000000" for n in range(6)]),
    # Few distinct instants: ties between check-ins of one device are exercised too.
    at_ms=st.integers(0, 40).map(lambda n: START + n * DAY_MS // 8),
    platform=st.sampled_from(["ios", "android"]),
    version_name=st.sampled_from(["1.0.0", "1.0.1"]),
    is_emulator=st.booleans(),
    is_prod=st.booleans(),
    custom_id=st.sampled_from(["", "user"]),
)
downloads = st.builds(
    Download,
    app_id=st.sampled_from(["com.a", "com.b"]),
    device_id=st.just("00000000-0000-4000-8000-000000000000"),
    version=st.just("1.0.0"),
    bytes=st.integers(0, 10**9),
    at_ms=st.integers(0, 40).map(lambda n: START + n * DAY_MS // 8),
)


def fold(events: list[Any]) -> FoldedFacts:
    folding = Fold(lambda app_id: (), lambda ip: False)
    for event in events:
        if isinstance(event, CheckIn):
            folding.add_checkin(event)
        else:
            folding.add_download(event)
    return folding.seal()


def canonical(facts: FoldedFacts) -> tuple[Any, ...]:
    rows = facts.device_rows
    return (
        sorted(map(tuple, rows)),
        {group: {tuple(rows[i][:2]) for i in members} for group, members in facts.activity.items()},
        Counter(facts.downloads),
    )


def as_batch(facts: FoldedFacts) -> FoldedBatch:
    return FoldedBatch(facts, frozenset(), "[]", 0, 0)


def distinct_instants(events: list[Any]) -> bool:
    # With two check-ins of a device at the same instant, the one applied last gives the
    # attributes, in a fold as in the database: only then does the order decide.
    seen = Counter((e.app_id, e.device_id, e.at_ms) for e in events if isinstance(e, CheckIn))
    return all(count == 1 for count in seen.values())


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.one_of(checkins, downloads), max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
)
def test_merged_folds_equal_the_fold_of_the_whole(events: list[Any], cuts: list[int]) -> None:
    bounds = sorted({0, len(events), *(min(c, len(events)) for c in cuts)})
    parts = [events[a:b] for a, b in pairwise(bounds)] or [[]]
    merged = merge_batches([as_batch(fold(part)) for part in parts])
    assert canonical(merged.facts) == canonical(fold(events))


@settings(max_examples=200, deadline=None)
@given(events=st.lists(checkins, max_size=30).filter(distinct_instants), seed=st.randoms())
def test_a_fold_does_not_depend_on_the_order_of_events(events: list[Any], seed: Any) -> None:
    shuffled = list(events)
    seed.shuffle(shuffled)
    assert canonical(fold(shuffled)) == canonical(fold(events))


def test_sealed_rows_are_in_key_order_and_survive_pickling() -> None:
    events = [
        CheckIn("com.b", "b", START, "ios", "1", False, True),
        CheckIn("com.a", "c", START, "ios", "1", True, True),
        CheckIn("com.a", "a", START + 5, "android", "2", False, True),
        CheckIn("com.a", "a", START + 1, "ios", "1", False, True),
    ]
    facts = fold(events)
    assert [row[:2] for row in facts.device_rows] == [
        ["com.a", "a"],
        ["com.a", "c"],
        ["com.b", "b"],
    ]
    newest = facts.device_rows[0]
    assert (newest[2], newest[3], newest[5]) == (START + 1, START + 5, "android")
    assert facts.device_rows[1][4] is None  # an emulator never counts
    copy = pickle.loads(pickle.dumps(facts))
    assert canonical(copy) == canonical(facts)
