"""The reader study's design: its questions, its two methods, and each reader's schedule.

As in the paper (§4.6), every case is read twice: once with Method A (input gradient,
guided backprop and integrated gradients side by side) and once with Method B (the Latent
Shift map and its looping GIF), in two separate rounds. Which method a case gets in round 1
is balanced within each (target, ground truth) stratum, and the order inside each round is
shuffled, both from a per-reader seed that is stored so the schedule can be rebuilt and
audited. This module is pure (no I/O); the store records what it returns.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

QUESTIONS: dict[str, str] = {
    "confidence": "How confident are you in the model's prediction?",
    "feature": "Is the model looking at the correct feature?",
}
"""Question id → the text readers see (paper §4.6). Answers are Likert 1–5."""

LIKERT_ANCHORS: dict[str, tuple[str, str]] = {
    "confidence": ("not at all confident", "very confident"),
    "feature": ("definitely not", "definitely yes"),
}
"""Question id → the labels of 1 and 5 shown under the scale."""

LIKERT = (1, 2, 3, 4, 5)

METHODS: dict[str, str] = {
    "A": "Method A — input gradient, guided backprop, integrated gradients",
    "B": "Method B — Latent Shift map and counterfactual GIF",
}
"""Method id → its label (shown to readers, so it is always the method actually shown)."""

METHOD_VISUALS: dict[str, tuple[tuple[str, str], ...]] = {
    "A": (
        ("grad", "Input gradient"),
        ("guided", "Guided backprop"),
        ("integrated", "Integrated gradients"),
    ),
    "B": (("latentshift", "Latent Shift map"), ("gif", "Latent Shift GIF (loops)")),
}
"""Method id → the (asset kind, caption) pairs shown next to the image, in order."""

ROUNDS = (1, 2)


@dataclass(frozen=True)
class Slot:
    """One case shown to one reader: round, position in that round (0-based), method."""

    round: int
    position: int
    case_id: int
    method: str


def make_schedule(cases: Sequence[tuple[int, str, bool]], seed: int) -> list[Slot]:
    """Build one reader's two rounds.

    Args:
        cases: ``(case_id, target, truth)`` for every case of the study; ``truth`` is the
            ground truth for the target (a predicted positive with ``truth=False`` is a false
            positive). Strata are (target, truth).
        seed: the reader's seed; the same cases and seed give the same schedule.

    Returns:
        ``2 × len(cases)`` slots: every case once in round 1 and once in round 2, with
        different methods; within each stratum the round-1 methods differ in count by at
        most one (odd strata alternate which method gets the extra case).

    Example:
        >>> slots = make_schedule([(1, "a", True), (2, "a", True)], seed=0)
        >>> sorted((s.round, s.method) for s in slots)
        [(1, 'A'), (1, 'B'), (2, 'A'), (2, 'B')]
    """
    ids = [c[0] for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("make_schedule: case ids must be unique")
    rng = random.Random(seed)
    strata: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for case_id, target, truth in cases:
        strata[(str(target), bool(truth))].append(case_id)
    first_method: dict[int, str] = {}
    extra = rng.choice("AB")  # which method gets the odd case of an odd stratum
    for key in sorted(strata):
        members = sorted(strata[key])
        rng.shuffle(members)
        start = extra if len(members) % 2 else rng.choice("AB")
        other = "B" if start == "A" else "A"
        for i, case_id in enumerate(members):
            first_method[case_id] = start if i % 2 == 0 else other
        if len(members) % 2:
            extra = other
    slots: list[Slot] = []
    for rnd in ROUNDS:
        order = sorted(ids)
        rng.shuffle(order)
        for position, case_id in enumerate(order):
            method = first_method[case_id]
            if rnd == 2:
                method = "B" if method == "A" else "A"
            slots.append(Slot(rnd, position, case_id, method))
    return slots
