"""The two-round schedule: each case once per round, methods swapped, balanced, seeded."""

from __future__ import annotations

from collections import Counter

import pytest

from gifsplanation.study.design import make_schedule

CASES = [(i, "ab"[i % 2], bool(i % 3)) for i in range(1, 24)]


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_each_case_once_per_round_with_both_methods(seed: int) -> None:
    slots = make_schedule(CASES, seed)
    assert len(slots) == 2 * len(CASES)
    for rnd in (1, 2):
        in_round = [s for s in slots if s.round == rnd]
        assert sorted(s.case_id for s in in_round) == [c[0] for c in CASES]
        assert sorted(s.position for s in in_round) == list(range(len(CASES)))
    methods = {}
    for s in slots:
        methods.setdefault(s.case_id, set()).add(s.method)
    assert all(m == {"A", "B"} for m in methods.values())


@pytest.mark.parametrize("seed", [0, 3, 99])
def test_round_one_methods_are_balanced_within_strata(seed: int) -> None:
    slots = make_schedule(CASES, seed)
    info = {c[0]: (c[1], c[2]) for c in CASES}
    per_stratum: dict[tuple[str, bool], Counter] = {}
    for s in slots:
        if s.round == 1:
            per_stratum.setdefault(info[s.case_id], Counter())[s.method] += 1
    for counts in per_stratum.values():
        assert abs(counts["A"] - counts["B"]) <= 1
    total = Counter(s.method for s in slots if s.round == 1)
    assert abs(total["A"] - total["B"]) <= 1


def test_same_seed_same_schedule_and_seeds_differ() -> None:
    assert make_schedule(CASES, 5) == make_schedule(CASES, 5)
    orders = {tuple(s.case_id for s in make_schedule(CASES, seed)) for seed in range(5)}
    assert len(orders) > 1


def test_duplicate_case_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        make_schedule([(1, "a", True), (1, "a", False)], 0)
