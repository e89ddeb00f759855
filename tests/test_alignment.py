"""Counterfactual alignment (gifsplanation.alignment): observers that use the base
classifier's feature align, unrelated ones do not; statistics by hand; outputs; the
fabricated shortcut; the regression head the extent regressor is trained with."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats as sps

from gifsplanation import LatentShift
from gifsplanation.alignment import (
    Alignment,
    Observer,
    add_marker,
    align,
    align_explanation,
    marker_mask,
    observe,
    observers_for,
    write_marked_dataset,
    write_outputs,
)
from gifsplanation.datasets import MaskedCXRDataset
from gifsplanation.models import get_classifier
from gifsplanation.models.training import TrainConfig, mask_quantities, train
from gifsplanation.testing import BlobData, write_dataset

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "gifsplanation" / "weights"


def blob_detector(x: torch.Tensor) -> torch.Tensor:
    """A second 'classifier' that uses the blob: the brightest 5x5 patch, squashed."""
    return torch.sigmoid((F.avg_pool2d(x, 5, 1).amax(dim=(1, 2, 3)) - 300) / 150)


def corner_reader(x: torch.Tensor) -> torch.Tensor:
    """A 'classifier' of an unrelated feature: the top-left corner's brightness."""
    return torch.sigmoid(x[..., :4, :4].mean(dim=(1, 2, 3)) / 150)


def constant(x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), 0.5)


@pytest.fixture(scope="module")
def positives() -> torch.Tensor:
    return BlobData(seed=5).positive(24)


@pytest.mark.parametrize("mode", ["residual", "reconstruction"])
def test_an_observer_of_the_same_feature_aligns_and_unrelated_ones_do_not(
    tiny, positives, mode
) -> None:
    clf, ae, _ = tiny
    observers = [
        Observer(blob_detector, name="blob detector", scale="probability"),
        Observer(corner_reader, name="corner", scale="probability"),
        Observer(constant, name="constant"),
    ]
    res = align(LatentShift(clf, ae, mode=mode), positives, "blob", observers, images_per_call=7)
    assert res.mode == mode and len(res) == 24 and int(res.included.sum()) == 24
    s = res.statistics()
    blob, corner, const = s["blob detector"], s["corner"], s["constant"]
    # the blob detector moves about as much as the classifier, in the same direction
    assert blob["relative_change"]["mean"] > 0.6 and blob["relative_change"]["ci"][0] > 0.5
    assert blob["pearson"]["mean"] > 0.9 and blob["spearman"]["mean"] > 0.9
    assert blob["pooled_pearson"]["r"] > 0.6 and blob["agreement"]["mean"] == 1.0
    # the corner barely moves (its tiny drift may still correlate: read both numbers)
    assert abs(corner["relative_change"]["mean"]) < 0.02
    assert corner["relative_change"]["ci"][1] < 0.02
    assert corner["pearson"]["mean"] < 0.7 and corner["pooled_pearson"]["r"] < 0.5
    assert blob["relative_change"]["mean"] > 30 * abs(corner["relative_change"]["mean"])
    # a constant: no change at all, correlations undefined and counted as such
    assert const["relative_change"]["mean"] == 0.0 and const["slope"]["mean"] == 0.0
    assert const["pearson"] == {"mean": None, "ci": [None, None], "n": 0}


def test_the_base_output_itself_is_exactly_aligned_and_frames_are_reused(tiny, positives):
    clf, ae, _ = tiny
    exp = LatentShift(clf, ae).explain(positives[:5], target="blob")
    calls = []

    class Counting(torch.nn.Module):
        targets = ["blob"]
        output_kind = "probability"

        def forward(self, x):
            calls.append((x.shape[0], torch.is_grad_enabled()))
            return clf(x)

    res = align_explanation(exp, [Observer(Counting(), "blob", name="same")], batch_size=8)
    n_frames = exp.frames.shape[0] * exp.frames.shape[1]
    assert sum(b for b, _ in calls) == n_frames and len(calls) == math.ceil(n_frames / 8)
    assert not any(grad for _, grad in calls)  # under no_grad
    assert torch.equal(res.base_preds, exp.preds.double())  # the engine's, not recomputed
    s = res.statistics()["same"]
    assert s["relative_change"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert s["slope"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert s["pearson"]["mean"] == pytest.approx(1.0, abs=1e-6)


def _toy(observed: np.ndarray, base: np.ndarray, **kw) -> Alignment:
    n, k, t = observed.shape
    return Alignment(
        base="A:t",
        observers=[f"o{j}" for j in range(k)],
        names=[f"i{j}" for j in range(n)],
        lambdas=torch.linspace(-1, 1, t).repeat(n, 1).double(),
        base_preds=torch.tensor(base, dtype=torch.float64),
        observed=torch.tensor(observed, dtype=torch.float64),
        zero_index=torch.full((n,), t // 2),
        refused=[False] * n,
        notes=[[] for _ in range(n)],
        **kw,
    )


def test_statistics_by_hand() -> None:
    rng = np.random.default_rng(0)
    base = np.sort(rng.random((6, 5)), axis=1)  # ascending along λ: removing lowers it
    base[:, 0] -= 0.3
    obs = np.stack([0.5 * base + rng.normal(0, 0.01, base.shape), rng.random(base.shape)], 1)
    res = _toy(obs, base, bootstrap=500, seed=3)
    s = res.statistics()
    z, cf = 2, 0
    rel = (obs[:, 0, cf] - obs[:, 0, z]) / (base[:, cf] - base[:, z])
    assert s["o0"]["relative_change"]["mean"] == pytest.approx(rel.mean())
    assert s["o0"]["relative_change"]["median"] == pytest.approx(np.median(rel))
    slopes = [np.polyfit(base[i], obs[i, 1], 1)[0] for i in range(6)]
    assert s["o1"]["slope"]["mean"] == pytest.approx(np.mean(slopes))
    pear = [sps.pearsonr(base[i], obs[i, 1])[0] for i in range(6)]
    spear = [sps.spearmanr(base[i], obs[i, 1])[0] for i in range(6)]
    assert s["o1"]["pearson"]["mean"] == pytest.approx(np.mean(pear))
    assert s["o1"]["spearman"]["mean"] == pytest.approx(np.mean(spear))
    pooled = sps.pearsonr(base[:, cf] - base[:, z], obs[:, 1, cf] - obs[:, 1, z])[0]
    assert s["o1"]["pooled_pearson"]["r"] == pytest.approx(pooled)
    lo, hi = s["o0"]["relative_change"]["ci"]
    assert lo <= s["o0"]["relative_change"]["mean"] <= hi
    assert res.statistics() == _toy(obs, base, bootstrap=500, seed=3).statistics()  # seeded
    assert res.statistics(seed=4) != res.statistics()


def test_images_with_too_little_base_change_are_excluded_and_counted() -> None:
    base = np.array([[0.5, 0.9, 0.95], [0.88, 0.9, 0.92], [0.1, 0.9, 0.9]])
    obs = base[:, None, :] * 2
    res = _toy(obs, base, min_base_change=0.1)
    assert res.included.tolist() == [True, False, True]
    assert "smaller than 0.1" in str(res.exclusion(1))
    s = res.statistics()["o0"]
    assert s["n_used"] == 2 and s["excluded"] == {"too little base change": 1}
    assert s["relative_change"]["mean"] == pytest.approx(2.0)
    rows = res.rows()
    assert [r["included"] for r in rows] == [True, False, True]
    assert math.isnan(res.relative_change[1, 0])
    nothing = _toy(obs, base, min_base_change=0.9).statistics()["o0"]
    assert nothing["n_used"] == 0 and nothing["relative_change"]["mean"] is None


def test_refused_images_are_excluded(tiny) -> None:
    clf, ae, _ = tiny
    base = np.tile(np.linspace(0.2, 0.9, 5), (2, 1))
    res = _toy(base[:, None, :], base)
    res.refused[1] = True
    assert res.exclusion(1) == "refused (out of distribution)"
    assert res.statistics()["o0"]["excluded"] == {"refused (out of distribution)": 1}


def test_observers_resolve_outputs_by_name_and_read_logits(tiny) -> None:
    class Two(torch.nn.Module):
        targets = ["a", "b"]
        output_kind = "logit"
        name = "two"

        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([m, -m], 1)

    o = Observer(Two(), "B")
    assert o.index == 1 and o.name == "two:b" and o.scale == "logit"
    x = torch.full((3, 1, 8, 8), 2.0)
    assert torch.allclose(o(x), torch.sigmoid(torch.tensor(-2.0)).repeat(3))
    assert [ob.name for ob in observers_for(Two(), prefix="m")] == ["m:a", "m:b"]
    with pytest.raises(ValueError, match="unknown target 'c'; valid targets: 'a', 'b'"):
        Observer(Two(), "c")
    with pytest.raises(ValueError, match="has no output names"):
        Observer(constant, "x")
    assert Observer(constant).scale == "value"
    frames = torch.zeros(2, 4, 1, 8, 8)
    assert observe(frames, [o, Observer(constant)], batch_size=3).shape == (2, 2, 4)
    with pytest.raises(ValueError, match="unique"):
        align_explanation(
            LatentShift(tiny[0], tiny[1]).explain(BlobData(seed=1).positive(1), "blob"),
            [Observer(constant, name="c"), Observer(constant, name="c")],
        )


def test_write_outputs_json_csv_figures_and_report(tiny, positives, tmp_path) -> None:
    clf, ae, _ = tiny
    res = align(
        LatentShift(clf, ae),
        positives[:4],
        "blob",
        [Observer(blob_detector, name="det <b>"), Observer(corner_reader, name="corner")],
        names=[f"x{i}.png" for i in range(4)],
        bootstrap=200,
        settings={"note": "test"},
    )
    files = write_outputs(res, tmp_path / "out")
    doc = json.loads(files["json"].read_text())
    assert doc["statistics"] == json.loads(json.dumps(res.statistics()))
    assert [im["name"] for im in doc["images"]] == [f"x{i}.png" for i in range(4)]
    assert doc["settings"] == {"note": "test"} and doc["mode"] == "residual"
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["observer"] for r in rows} == {"det <b>", "corner"}
    for key in ("summary", "curves", "scatter"):
        with Image.open(files[key]) as im:
            assert im.size[0] > 300
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 4
    page = files["report"].read_text()
    assert "det &lt;b&gt;" in page and "det <b>" not in page  # names are escaped
    assert page.count("data:image/png;base64,") == 3 + 4
    assert "relative change" in page


def test_marker_is_a_bright_letter_in_a_corner() -> None:
    m = marker_mask(224, 224, corner="top-right")
    rows, cols = np.nonzero(m)
    assert rows.max() < 40 and cols.min() > 180 and 60 < m.sum() < 400
    x = torch.zeros(2, 1, 224, 224)
    y = add_marker(x)
    assert float(y.max()) == 1024.0 and torch.equal(y[0, 0] > 0, torch.from_numpy(m))
    assert float(x.max()) == 0.0  # a copy
    u = add_marker(np.zeros((256, 256), np.uint8), corner="bottom-left")
    assert u.max() == 255 and u[:128].max() == 0 and u[:, 128:].max() == 0
    with pytest.raises(ValueError, match="letter"):
        marker_mask(32, 32, letter="Q")


def test_marked_copy_keeps_the_split_and_marks_as_asked(tmp_path: Path) -> None:
    src = write_dataset(tmp_path / "src", n_per_label=10)
    got = write_marked_dataset(
        src, tmp_path / "marked", {"COVID-19": 1.0}, default_rate=0.0, seed=1
    )
    assert got["counts"] == {
        "COVID-19": {"images": 10, "marked": 10},
        "Normal": {"images": 10, "marked": 0},
    }
    for split in ("train", "val"):
        a, b = MaskedCXRDataset(src, split=split), MaskedCXRDataset(got["csv"], split=split)
        assert [r.image.name for r in a.records] == [r.image.name for r in b.records]
        assert a.targets == b.targets
    b = MaskedCXRDataset(got["csv"], split="all")
    marked = [i for i, r in enumerate(b.records) if r.label == "covid19"]
    corner = marker_mask(40, 36)[2:38, :]  # the dataset crops 40x36 to 36x36
    assert all(b.load_uint8(i).shape == (224, 224) for i in marked[:1])
    img = np.asarray(Image.open(b.records[marked[0]].image))
    assert (img[marker_mask(40, 36)] == 255).all() and corner.any()
    val = write_marked_dataset(src, tmp_path / "val", {}, split="val", labels=["COVID-19"], limit=1)
    assert val["counts"] == {"COVID-19": {"images": 1, "marked": 0}}


# -- the regression head (the extent regressor) -------------------------------------------
def _with_lung_masks(csv_path: Path) -> Path:
    root = csv_path.parent
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    lung = np.zeros((40, 36), np.uint8)
    lung[4:36, 2:34] = 255
    for r in rows:
        rel = r["image"].replace("images", "lung_masks")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lung).save(root / rel)
        r["lung_mask"] = rel
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def test_regression_head_learns_mask_quantities(tmp_path: Path) -> None:
    data = _with_lung_masks(write_dataset(tmp_path / "d", n_per_label=6))
    ds = MaskedCXRDataset(data, size=32, split="all")
    q = mask_quantities(ds, ["infection_extent", "infection_area"])
    for i in range(len(ds)):
        inf, lung = ds.load_mask(i, "infection"), ds.load_mask(i, "lung")
        expected = (inf & lung).sum() / lung.sum() if inf.any() else 0.0
        assert float(q[i, 0]) == pytest.approx(float(expected))
        assert float(q[i, 1]) == pytest.approx(float(inf.mean()))
    assert (q[:6] > 0).all() and (q[6:] == 0).all()  # covid19 first, with squares
    cfg = TrainConfig(
        kind="classifier",
        data=str(data),
        out=str(tmp_path / "r"),
        epochs=2,
        batch_size=4,
        size=32,
        channels=[4, 8],
        head="regression",
        outputs=["Extent=infection_extent"],
    )
    rec = train(cfg, command="test")
    metrics = rec["final_val"]["regression"]["Extent"]
    assert set(metrics) >= {"mean_abs_error", "rmse", "pearson", "spearman", "auc_positive"}
    assert "calibration" not in rec and "operating_points" not in rec
    model = get_classifier(tmp_path / "r" / "model.pt")
    assert model.head == "regression" and model.targets == ["Extent"]
    assert model.operating_points is None and model.output_kind == "probability"
    y = model(torch.zeros(3, 1, 32, 32))
    assert y.shape == (3, 1) and ((y > 0) & (y < 1)).all()


def test_regression_outputs_are_checked(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d", n_per_label=2)
    for outputs, match in (([], "needs outputs"), (["E=volume"], "QUANTITY one of")):
        cfg = TrainConfig(
            kind="classifier", data=str(data), out=str(tmp_path / "x"), size=32,
            channels=[4, 8], head="regression", outputs=outputs,
        )  # fmt: skip
        with pytest.raises(ValueError, match=match):
            train(cfg)
    no_lungs = TrainConfig(
        kind="classifier", data=str(data), out=str(tmp_path / "y"), size=32,
        channels=[4, 8], head="regression", outputs=["E=infection_extent"],
    )  # fmt: skip
    with pytest.raises(ValueError, match="needs a lung mask"):
        train(no_lungs)


# -- real chest X-rays ----------------------------------------------------------------------
def _held_out_covid(shared_data: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` held-out COVID-19 images (the validation split every bundled model kept out),
    as they are and with the fabricated marker drawn on them."""
    ds = MaskedCXRDataset(shared_data / "covid-qu-ex" / "train.csv", split="val")
    idx = [i for i, t in enumerate(ds.targets) if t == 0][:n]
    x = torch.stack([ds[i]["image"] for i in idx])
    return x, add_marker(x)


def test_alignment_on_real_held_out_cxrs(shared_data: Path) -> None:
    """``cxr-classifier-accurate``'s COVID-19 counterfactuals (the classifier
    docs/alignment.md was measured with; the default until 0.2): its own output is exactly
    aligned, and they lower the bundled extent regressor's predicted opacity extent."""
    from gifsplanation.models import get_autoencoder

    torch.set_num_threads(1)
    x, _ = _held_out_covid(shared_data, 8)
    clf, ae = get_classifier("cxr-classifier-accurate"), get_autoencoder()
    extent = get_classifier(WEIGHTS / "cxr-extent.pt")
    assert extent.head == "regression" and extent.targets == ["OpacityExtent"]
    observers = [Observer(clf, "COVID-19", name="A"), Observer(extent, "OpacityExtent", name="X")]
    s = align(LatentShift(clf, ae), x, "COVID-19", observers).statistics()
    assert s["A"]["n_used"] >= 5
    assert s["A"]["relative_change"]["mean"] == pytest.approx(1.0, abs=1e-4)
    assert s["X"]["relative_change"]["mean"] > 0.05 and s["X"]["agreement"]["mean"] >= 0.6


def test_the_fabricated_shortcut_is_exposed_on_real_cxrs(shared_data: Path) -> None:
    """Seen from ``cxr-classifier-accurate``'s counterfactuals (the classifier
    docs/alignment.md was measured with; the default until 0.2), the marker-trained
    classifier follows the disease on clean images and stops following it once the marker
    is drawn; the same recipe trained without the marker keeps following it."""
    from gifsplanation.models import get_autoencoder

    torch.set_num_threads(1)
    clean, marked = _held_out_covid(shared_data, 10)
    clf, ae = get_classifier("cxr-classifier-accurate"), get_autoencoder()
    shortcut = get_classifier(WEIGHTS / "cxr-shortcut-marker.pt")
    with torch.no_grad():  # it reads the marker: p(COVID-19) jumps when it is drawn
        assert float(shortcut(marked)[:, 0].mean()) > float(shortcut(clean)[:, 0].mean()) + 0.2
    obs = [Observer(shortcut, "COVID-19", name="S")]
    ls = LatentShift(clf, ae)
    rel = {
        name: align(ls, x, "COVID-19", obs).statistics()["S"]["relative_change"]
        for name, x in (("clean", clean), ("marked", marked))
    }
    assert rel["marked"]["mean"] < 0.05 and rel["clean"]["mean"] > 0.2
