"""`analyze` against hand-computed results on small tables, and its files."""

from __future__ import annotations

import csv
import math

import pytest
from PIL import Image

from gifsplanation.study.analysis import (
    agreement_table,
    analyze,
    analyze_rows,
    describe,
    paired_differences,
)
from gifsplanation.study.store import StudyStore


def _rows(reader: str, group: str, question: str, pairs, target="COVID-19", prefix="c"):
    out = []
    for i, (a, b) in enumerate(pairs):
        for method, value in (("A", a), ("B", b)):
            out.append(
                {"reader": reader, "case_id": f"{prefix}{group}{i}", "target": target,
                 "group": group, "question": question, "method": method, "value": value}
            )  # fmt: skip
    return out


# TP differences B − A = +1, +2, −3, +4: |d| ranks 1, 2, 3, 4; T− = 3, T+ = 7.
# Exact null: 16 equally likely sign patterns; P(T− ≤ 3) = #{∅, {1}, {2}, {3}, {1,2}} / 16
# = 5/16, two-sided p = 10/16 = 0.625. Mean = 1, sd = sqrt((0² + 1² + 4² + 3²) / 3).
TP_PAIRS = [(1, 2), (2, 4), (5, 2), (1, 5)]
# FP differences −1, −2, 0: the zero is dropped; T+ = 0 of 4 patterns, p = 2 × 1/4 = 0.5.
FP_PAIRS = [(3, 2), (4, 2), (3, 3)]
# Tied differences +1 ×5, −1: T− = 3.5 when one sign is negative; P(≤ 1 negative) = 7/64.
TIED_PAIRS = [(2, 3)] * 5 + [(3, 2)]


def test_describe_matches_hand_computed_wilcoxon() -> None:
    tp = describe([a for a, _ in TP_PAIRS], [b for _, b in TP_PAIRS])
    assert tp["n"] == 4 and tp["mean_diff"] == pytest.approx(1.0)
    assert tp["sd_diff"] == pytest.approx(math.sqrt(26 / 3))
    assert tp["wilcoxon_statistic"] == pytest.approx(3.0)
    assert tp["p_value"] == pytest.approx(10 / 16)
    assert (tp["mean_a"], tp["mean_b"]) == (pytest.approx(9 / 4), pytest.approx(13 / 4))
    fp = describe([a for a, _ in FP_PAIRS], [b for _, b in FP_PAIRS])
    assert (fp["n"], fp["n_nonzero"]) == (3, 2)
    assert fp["mean_diff"] == pytest.approx(-1.0) and fp["p_value"] == pytest.approx(0.5)
    tied = describe([a for a, _ in TIED_PAIRS], [b for _, b in TIED_PAIRS])
    assert tied["p_value"] == pytest.approx(2 * 7 / 64)
    none = describe([3, 3], [3, 3])
    assert math.isnan(none["p_value"]) and none["mean_diff"] == 0


def test_summary_per_reader_pooled_and_groups() -> None:
    rows = (
        _rows("r1", "TP", "confidence", TP_PAIRS)
        + _rows("r1", "FP", "confidence", FP_PAIRS)
        + _rows("r2", "TP", "confidence", [(a, b) for b, a in TP_PAIRS])  # mirrored: −d
        + _rows("r1", "TP", "feature", TIED_PAIRS[:4], target="Normal", prefix="f")
    )
    result = analyze_rows(rows)
    by = {(r["scope"], r["group"], r["question"]): r for r in result.summary}
    assert by[("r1", "TP", "confidence")]["p_value"] == pytest.approx(0.625)
    assert by[("r1", "FP", "confidence")]["p_value"] == pytest.approx(0.5)
    assert by[("r2", "TP", "confidence")]["mean_diff"] == pytest.approx(-1.0)
    pooled = by[("pooled", "TP", "confidence")]
    assert pooled["n"] == 8 and pooled["mean_diff"] == pytest.approx(0.0)
    assert by[("r1", "all", "confidence")]["n"] == 7
    assert ("r2", "FP", "confidence") not in by  # no data, no row
    targets = {(r["target"], r["group"], r["question"]): r for r in result.per_target}
    assert targets[("Normal", "TP", "feature")]["mean_diff"] == pytest.approx(1.0)
    assert targets[("COVID-19", "TP", "confidence")]["n"] == 8


def test_incomplete_pairs_are_left_out() -> None:
    rows = _rows("r1", "TP", "feature", [(2, 4)])
    rows.append(dict(rows[0], case_id="only-a"))
    assert [d["case_id"] for d in paired_differences(rows)] == ["cTP0"]


def test_weighted_kappa() -> None:
    same = [(1, 2), (2, 3), (3, 4), (5, 5), (4, 1)]
    rows = _rows("r1", "TP", "feature", same) + _rows("r2", "TP", "feature", same)
    table = {(r["method"], r["question"]): r for r in agreement_table(rows)}
    assert table[("A", "feature")]["kappa_quadratic"] == pytest.approx(1.0)
    assert table[("B", "feature")]["exact_agreement"] == 1.0
    # r3 answers A with 6 − value: perfect disagreement in order, kappa < 0
    flipped = _rows("r3", "TP", "feature", [(6 - a, b) for a, b in same])
    table = {
        (r["reader_1"], r["reader_2"], r["method"]): r
        for r in agreement_table(rows[: 2 * len(same)] + flipped)
    }
    assert table[("r1", "r3", "A")]["kappa_linear"] < 0
    assert table[("r1", "r3", "B")]["kappa_linear"] == pytest.approx(1.0)


def test_analyze_writes_markdown_csv_and_png(study: StudyStore, tmp_path) -> None:
    readers = [study.add_reader(name, seed=i) for i, name in enumerate(("ann", "bob"))]
    public = {c.id: c.public_id for c in study.cases()}
    for reader in readers:
        for slot in study.schedule(reader.id):  # round 1 first, then round 2
            value = 4 if slot.method == "B" else 3
            for question in ("confidence", "feature"):
                study.save_answer(reader.id, public[slot.case_id], slot.round, question, value)
    result = analyze(study.root, tmp_path / "out")
    assert set(result.files) == {"stats", "differences", "per_target", "agreement", "plot",
                                 "summary"}  # fmt: skip
    with open(result.files["stats"]) as f:
        stats = list(csv.DictReader(f))
    pooled = [r for r in stats if r["scope"] == "pooled" and r["group"] == "all"]
    assert {r["question"] for r in pooled} == {"confidence", "feature"}
    assert all(float(r["mean_diff"]) == 1.0 and int(r["n"]) == 16 for r in pooled)
    # all 16 differences are +1 (all tied): scipy uses the normal approximation with the tie
    # correction: var = 16·17·33/24 − (16³ − 16)/48 = 374 − 85 = 289, z = (0 − 68)/17 = −4
    assert float(pooled[0]["p_value"]) == pytest.approx(math.erfc(4 / math.sqrt(2)))
    md = result.files["summary"].read_text()
    assert "How confident are you in the model's prediction?" in md and "| pooled |" in md
    assert study.admin_token not in md
    with Image.open(result.files["plot"]) as im:
        assert im.format == "PNG" and im.size[0] > 300
    with open(result.files["agreement"]) as f:
        agreement = list(csv.DictReader(f))
    assert len(agreement) == 4 and all(r["exact_agreement"] == "1.0" for r in agreement)
    with open(result.files["differences"]) as f:
        assert len(list(csv.DictReader(f))) == 2 * 2 * len(public)
