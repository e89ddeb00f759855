"""Metrics checked by hand on small arrays (including ties), and against Quantus when it
is importable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gifsplanation import LatentShift
from gifsplanation.metrics import (
    chance_iou,
    counterfactual_quality,
    iou_top_p,
    pointing_game,
    relevance_mass,
    spearman_similarity,
    top_p_intersection,
)

MASK = np.array(
    [
        [1, 1, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    dtype=bool,
)  # p = 3


def test_iou_top_p_by_hand():
    m = np.zeros((4, 4))
    m[0, 0], m[0, 1], m[3, 3] = 9, 8, 7  # top-3: two hits, one miss
    # |A∩B| = 2, |A ∪ B| = 3 + 3 − 2 = 4
    assert iou_top_p(m, MASK) == pytest.approx(0.5)
    m[3, 3] = 0
    m[1, 0] = 7
    assert iou_top_p(m, MASK) == pytest.approx(1.0)
    assert iou_top_p(torch.tensor(m)[None, None], torch.tensor(MASK)) == pytest.approx(1.0)


def test_iou_ties_are_shared_fractionally_not_by_raster_order():
    m = np.zeros((4, 4))
    m[0, 0] = 5  # one clear winner (hit); the other 15 pixels tie at 0 for 2 places
    # tied pixels: 15, of which 2 are in the mask -> expected hits 2 * 2/15
    inter = 1 + 2 * 2 / 15
    assert top_p_intersection(m, MASK)[0] == pytest.approx(inter)
    assert iou_top_p(m, MASK) == pytest.approx(inter / (6 - inter))
    # Raster order would hand both places to (0,1) and (0,2): one more hit, by position.
    assert iou_top_p(m, MASK, ties="raster") == pytest.approx(2 / 4)
    # A constant map scores exactly chance.
    assert iou_top_p(np.ones((4, 4)), MASK) == pytest.approx(chance_iou(MASK))


def test_iou_percentile_rule_matches_the_paper_code():
    m = np.arange(16.0).reshape(4, 4)[::-1, ::-1].copy()  # highest values at the top-left
    inter, n_a, n_b = top_p_intersection(m, MASK, ties="percentile")
    # a = 3/16: values above the 81.25th percentile (12.1875) are 13, 14, 15 -> 3 pixels
    assert (n_a, n_b) == (3, 3)
    assert inter == 2  # (0,0)=15, (0,1)=14, (0,2)=13; the mask has (0,0), (0,1), (1,0)


def test_iou_rejects_empty_masks_and_shape_mismatch():
    with pytest.raises(ValueError, match="mask is empty"):
        iou_top_p(np.ones((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        iou_top_p(np.ones((4, 4)), np.ones((3, 4), bool))


def test_pointing_game_and_ties():
    m = np.zeros((4, 4))
    m[1, 0] = 2
    assert pointing_game(m, MASK) == 1.0
    m[3, 3] = 2  # a tie between a hit and a miss
    assert pointing_game(m, MASK) == 0.5
    m[1, 0] = 0
    assert pointing_game(m, MASK) == 0.0
    assert pointing_game(np.ones((4, 4)), MASK) == pytest.approx(3 / 16)


def test_relevance_mass_by_hand():
    m = np.zeros((4, 4))
    m[0, 0], m[0, 1], m[2, 2] = 2, 1, 1
    assert relevance_mass(m, MASK) == pytest.approx(3 / 4)
    assert math.isnan(relevance_mass(np.zeros((4, 4)), MASK))


def test_spearman_similarity():
    a = np.arange(16.0).reshape(4, 4)
    assert spearman_similarity(a, a**2) == pytest.approx(1.0)
    assert spearman_similarity(a, -a) == pytest.approx(-1.0)
    assert math.isnan(spearman_similarity(a, np.ones((4, 4))))


def test_agrees_with_quantus_when_installed():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(0)
    a = rng.random((2, 1, 8, 8))
    s = np.zeros((2, 1, 8, 8))
    s[:, :, 2:5, 3:6] = 1
    x, y = np.zeros_like(a), np.zeros(2, dtype=int)
    rm = quantus.RelevanceMassAccuracy(disable_warnings=True)(
        model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s
    )
    pg = quantus.PointingGame(disable_warnings=True)(
        model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s
    )
    for i in range(2):
        assert relevance_mass(a[i], s[i]) == pytest.approx(float(rm[i]))
        assert pointing_game(a[i], s[i]) == float(pg[i])


def test_counterfactual_quality_on_the_tiny_task(tiny, blob_data):
    clf, ae, _ = tiny
    exp = LatentShift(clf, ae).explain(blob_data.positive(2), target="blob")
    for i in range(2):
        q = counterfactual_quality(exp, i, autoencoder=ae)
        assert q["pred_change"] == pytest.approx(q["initial_pred"] - q["counterfactual_pred"])
        assert q["proximity"] > 0 and 0 < q["proximity_fraction"] < 1
        assert q["lambda"] < 0
        assert q["realism"] > 0
        if q["valid"]:
            assert q["relative_change"] >= 0.3 * (1 - exp.config.ftol) - 1e-6
        # Hand check of proximity from the frames.
        zi = int(exp.zero_index[i])
        expected = float((exp.frames[i, 0] - exp.frames[i, zi]).abs().mean())
        assert q["proximity"] == pytest.approx(expected)
    assert math.isnan(counterfactual_quality(exp, 0)["realism"])
