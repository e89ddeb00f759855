"""The experiments run end to end on tiny models and a generated dataset, and their
numbers behave: good maps beat random, randomisation decorrelates, caches resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from gifsplanation.evaluate import (
    Setup,
    cascade_layers,
    cascade_steps,
    perturb,
    randomized_copy,
    run_ae_impact,
    run_counterfactuals,
    run_iou,
    run_randomization,
    run_robustness,
    select_items,
)

METHODS = ["random", "grad", "latentshift-max"]


def _setup(tiny, dataset, out, methods=METHODS, limit=4):
    clf, ae, _ = tiny
    return Setup(
        classifier=clf,
        autoencoder=ae,
        dataset=dataset,
        out=out,
        methods=methods,
        limit=limit,
        seed=0,
        progress=False,
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_select_items_is_seeded_and_matches_labels_to_targets(blob_dataset):
    a = select_items(blob_dataset, ["blob"], limit=3, seed=1)
    b = select_items(blob_dataset, ["blob"], limit=3, seed=1)
    assert a == b and len(a) == 3
    assert all(blob_dataset[i.index]["label"] == "blob" for i in a)
    neg = select_items(blob_dataset, ["blob"], limit=None, seed=1, positives=False, need_mask=False)
    assert len(neg) == 6 and all(blob_dataset[i.index]["label"] == "none" for i in neg)
    # Negatives have empty masks: none qualifies when a mask is needed.
    assert select_items(blob_dataset, ["blob"], limit=None, seed=1, positives=False) == []


def test_iou_experiment_writes_outputs_beats_random_and_resumes(tiny, blob_dataset, tmp_path):
    result = run_iou(_setup(tiny, blob_dataset, tmp_path))
    for name in (
        "per_item.csv",
        "summary.csv",
        "paired.csv",
        "table.md",
        "iou.png",
        "manifest.json",
    ):
        assert (tmp_path / name).is_file(), name
    summary = {s["method"]: s for s in result["summary"]}
    assert summary["grad"]["iou_mean"] > summary["random"]["iou_mean"] + 0.2
    assert summary["latentshift-max"]["iou_mean"] > summary["random"]["iou_mean"] + 0.2
    assert summary["grad"]["auc"] > 0.9  # tiny classifier separates blobs from none
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["versions"]["torch"]
    assert manifest["args"]["limit"] == 4
    table = (tmp_path / "table.md").read_text()
    assert "latentshift-max" in table and "classifier AUC" in table
    paired = {r["method"]: r for r in _rows(tmp_path / "paired.csv")}
    assert float(paired["random"]["mean_diff"]) > 0.2  # Latent Shift beats random
    assert set(paired) == {"random", "grad"}
    # Second run: every map comes from the cache and the numbers are identical.
    again = run_iou(_setup(tiny, blob_dataset, tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["cache"]["misses"] == 0 and manifest["cache"]["hits"] > 0
    assert [r["iou"] for r in again["rows"]] == [r["iou"] for r in result["rows"]]


def test_cascade_layers_top_first_and_batchnorm_left_alone():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(1)
    )
    model(torch.zeros(1, 1, 5, 5))
    assert [n for n, _ in cascade_layers(model)] == ["4", "0"]
    model[1].running_mean += 3.0
    clone = randomized_copy(model, ["4", "0"], seed=0)
    assert not torch.equal(clone[0].weight, model[0].weight)
    assert torch.equal(clone[1].running_mean, model[1].running_mean)
    assert cascade_steps(model, None) == [["4"], ["0"]]
    assert cascade_steps(model, 1) == [["4", "0"]]


def test_randomization_decorrelates_gradient_maps(tiny, blob_dataset, tmp_path):
    result = run_randomization(
        _setup(tiny, blob_dataset, tmp_path, ["grad", "random"], 3), n_steps=2
    )
    s = {(r["method"], r["step"]): r for r in result["summary"]}
    assert s[("grad", 0)]["spearman_mean"] == pytest.approx(1.0)
    assert s[("grad", 2)]["spearman_mean"] < 0.7  # maps follow the weights
    assert s[("random", 2)]["spearman_mean"] == pytest.approx(1.0)  # random ignores them
    assert (tmp_path / "randomization.png").is_file()
    assert {r["layers_reset"] for r in _rows(tmp_path / "summary.csv")} == {"0", "2", "3"}


def test_perturbations():
    x = torch.zeros(1, 1, 16, 16)
    x[..., 8, 8] = 1000
    assert torch.equal(perturb(x, "noise", 0, seed=0), x)
    noisy = perturb(x, "noise", 2, seed=0)
    d = noisy - x
    assert float(d.min()) >= 0 and float(d.max()) < 200
    assert torch.equal(noisy, perturb(x, "noise", 2, seed=0))
    blurred = perturb(x, "blur", 2, seed=0)
    assert float(blurred.max()) < 1000 and float(blurred.sum()) == pytest.approx(1000, rel=1e-3)
    with pytest.raises(ValueError, match="noise' or 'blur"):
        perturb(x, "jpeg", 1, seed=0)


def test_robustness_runs_and_clean_level_is_self_similar(tiny, blob_dataset, tmp_path):
    result = run_robustness(
        _setup(tiny, blob_dataset, tmp_path, ["grad"], 2), noise_levels=(0, 2), blur_sigmas=(0, 3)
    )
    s = {(r["kind"], r["level"]): r for r in result["summary"]}
    assert s[("noise", 0.0)]["spearman_mean"] == pytest.approx(1.0)
    assert s[("blur", 3.0)]["spearman_mean"] < 1.0
    assert (tmp_path / "robustness.png").is_file()


def test_ae_impact_and_counterfactuals(tiny, blob_dataset, tmp_path):
    ae_res = run_ae_impact(_setup(tiny, blob_dataset, tmp_path / "ae", [], 3))
    groups = {(s["target"], s["group"]): s for s in ae_res["summary"]}
    assert groups[("blob", "positive")]["p_x_mean"] > groups[("blob", "negative")]["p_x_mean"]
    assert np.isfinite(groups[("blob", "positive")]["auc_recon"])
    cf = run_counterfactuals(_setup(tiny, blob_dataset, tmp_path / "cf", [], 3))
    (s,) = cf["summary"]
    assert s["n"] == 3 and 0 <= s["validity"] <= 1
    rows = _rows(tmp_path / "cf" / "per_item.csv")
    assert {"valid", "pred_change", "proximity", "realism", "stop_reason"} <= set(rows[0])
    assert (tmp_path / "cf" / "counterfactuals.png").is_file()


def test_setup_items_draws_like_select_items_and_names_the_labels_when_empty(
    tiny, blob_dataset, tmp_path
):
    setup = _setup(tiny, blob_dataset, tmp_path, ["grad"], 3)
    assert setup.items() == select_items(blob_dataset, ["blob"], limit=3, seed=0)
    assert setup.items(positives=False, need_mask=False, seed_offset=1) == select_items(
        blob_dataset, ["blob"], limit=3, seed=1, positives=False, need_mask=False
    )
    # Negatives have empty masks: an experiment that needs them fails naming the data.
    assert setup.items(positives=False) == []
    with pytest.raises(ValueError, match=r"robustness: no negative image.*'blob', 'none'"):
        setup.items(positives=False, required_by="robustness")


def test_resumed_iou_reads_only_the_positives(tiny, blob_dataset, tmp_path, monkeypatch):
    import gifsplanation.evaluate.iou as iou_module

    first = run_iou(_setup(tiny, blob_dataset, tmp_path, ["grad"], 2))
    read: list[bool] = []
    real = iou_module.load_item

    def counting(ds, item):
        read.append(item.positive)
        return real(ds, item)

    monkeypatch.setattr(iou_module, "load_item", counting)
    again = run_iou(_setup(tiny, blob_dataset, tmp_path, ["grad"], 2))
    assert read and all(read)  # masks are needed again; cached negatives are not decoded
    assert again["summary"] == first["summary"]
