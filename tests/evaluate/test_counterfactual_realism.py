"""`counterfactuals` measures what a removal does: every output's change, the grey-level
change in lungs / infection mask / outside the lungs (with the right sign), realism per
frame mode, and paired tests between the modes."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from gifsplanation.datasets import MaskedCXRDataset
from gifsplanation.evaluate import Setup, run_counterfactuals
from gifsplanation.evaluate.counterfactuals import removal_effects
from gifsplanation.evaluate.data import load_lung_mask
from gifsplanation.evaluate.engine import EngineOptions
from gifsplanation.pixels import GREY_PER_UNIT


@pytest.fixture()
def lung_dataset(blob_folders):
    return MaskedCXRDataset(blob_folders(4, lung_masks=True), size=32, split="all")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_removal_effects_sign_and_scale_on_a_known_change():
    """x_λ is x_0 darkened by exactly 3 grey levels inside the mask: the function must say
    −3 there, 0 outside, and report the change of each output."""
    x0 = torch.zeros(1, 8, 8)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    lungs = np.zeros((8, 8), bool)
    lungs[:, :4] = True
    xl = x0.clone()
    xl[0][torch.from_numpy(mask)] -= 3 / GREY_PER_UNIT
    exp = SimpleNamespace(frames=torch.stack([xl, x0])[None], zero_index=torch.tensor([1]))
    probs = {0: [0.2, 0.7, 0.1], 1: [0.6, 0.3, 0.1]}  # counterfactual, λ = 0

    def predict(x):
        assert x.shape == (2, 1, 8, 8)
        return np.array([probs[0], probs[1]])

    out = removal_effects(exp, 0, predict, ["a", "b", "c"], infection=mask, lungs=lungs)
    assert out["dp[a]"] == pytest.approx(-0.4)
    assert out["dp[b]"] == pytest.approx(0.4)
    assert out["dp[c]"] == pytest.approx(0.0)
    assert out["grey_infection"] == pytest.approx(-3.0)
    inside = (mask & lungs).sum() / lungs.sum()
    assert out["grey_lungs"] == pytest.approx(-3.0 * inside)
    outside = (mask & ~lungs).sum() / (~lungs).sum()
    assert out["grey_outside_lungs"] == pytest.approx(-3.0 * outside)
    none = removal_effects(exp, 0, predict, ["a", "b", "c"])
    assert np.isnan(none["grey_lungs"]) and np.isnan(none["grey_infection"])
    with pytest.raises(ValueError, match="3 outputs but 2 names"):
        removal_effects(exp, 0, predict, ["a", "b"])


def test_lung_masks_are_read_when_the_dataset_has_them(lung_dataset, blob_dataset):
    lungs = load_lung_mask(lung_dataset, 0)
    assert lungs is not None and lungs.shape == (32, 32) and lungs.any() and not lungs.all()
    assert load_lung_mask(blob_dataset, 0) is None  # no lung_masks/ folder
    assert load_lung_mask(object(), 0) is None


def test_removing_the_bright_blob_darkens_it_in_both_modes(tiny, lung_dataset, tmp_path):
    """The tiny classifier finds a *bright* blob; its removal counterfactual must darken
    the blob (inside the infection mask and the lungs) and leave the rest alone."""
    clf, ae, _ = tiny
    setup = Setup(
        clf,
        ae,
        lung_dataset,
        tmp_path,
        methods=[],
        limit=4,
        progress=False,
        engine=EngineOptions(mode="both"),
    )
    result = run_counterfactuals(setup)
    rows = result["rows"]
    assert len(rows) == 8 and {r["mode"] for r in rows} == {"residual", "reconstruction"}
    for r in rows:
        assert r["valid"], r
        assert r["grey_infection"] < -2.0, r  # clearly darker, in 8-bit grey levels
        assert r["grey_lungs"] < 0, r
        assert abs(r["grey_outside_lungs"]) < abs(r["grey_lungs"]) / 5, r
        assert r["dp[blob]"] == pytest.approx(-r["pred_change"], abs=1e-5)
    res = [r for r in rows if r["mode"] == "residual"]
    assert all(r["ae_effect"] == 0 for r in res)  # λ = 0 is the input in residual mode
    assert all(0 < r["ssim"] <= 1 and r["sharpness"] > 0 for r in rows)
    summary = {s["mode"]: s for s in result["summary"]}
    for s in summary.values():
        assert s["grey_lungs_n"] == 4 and s["grey_lungs_mean"] < 0
        assert s["grey_infection_mean"] < s["grey_lungs_mean"]
        assert s["validity"] == 1.0 and s["ssim_n"] == 4
    paired = {p["metric"]: p for p in result["paired"]}
    assert {"valid", "ssim", "sharpness", "proximity", "grey_lungs"} <= set(paired)
    assert all(p["n"] == 4 for p in paired.values())
    table = (tmp_path / "table.md").read_text()
    assert "grey Δ lungs" in table and "Residual vs reconstruction" in table
    per_item = _rows(tmp_path / "per_item.csv")
    assert {"grey_lungs", "grey_infection", "grey_outside_lungs", "ssim", "sharpness"} <= set(
        per_item[0]
    )
    assert {r["mode"] for r in per_item} == {"residual", "reconstruction"}
    assert (tmp_path / "paired_modes.csv").is_file()


class TwoOutputs(nn.Module):
    """The tiny blob classifier as two sigmoid-style outputs: ``blob`` and ``none``
    (= 1 − p(blob)), so a removal of one must raise the other by as much."""

    output_kind = "probability"
    targets = ["blob", "none"]

    def __init__(self, clf: nn.Module) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.clf(x)
        return torch.cat([p, 1 - p], 1)


def test_the_change_of_every_output_is_reported(tiny, lung_dataset, tmp_path):
    clf, ae, _ = tiny
    setup = Setup(TwoOutputs(clf), ae, lung_dataset, tmp_path, methods=[], limit=2, progress=False)
    result = run_counterfactuals(setup)
    rows = result["rows"]
    assert {r["target"] for r in rows} == {"blob", "none"}
    for r in rows:
        assert r["dp[blob]"] == pytest.approx(-r["dp[none]"], abs=1e-5)
        own = r["dp[blob]"] if r["target"] == "blob" else r["dp[none]"]
        assert own == pytest.approx(-r["pred_change"], abs=1e-5) and own < 0
    per_item = _rows(tmp_path / "per_item.csv")
    assert {"dp[blob]", "dp[none]"} <= set(per_item[0])
    for s in result["summary"]:
        assert s["dp[blob]_n"] == s["dp[none]_n"] == 2
    table = (tmp_path / "table.md").read_text()
    assert "Δ blob" in table and "Δ none" in table
