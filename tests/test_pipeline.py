"""The explain pipeline: output files, JSON against the engine, batching, skips, failures."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gifsplanation import LatentShift
from gifsplanation.io import ImageLoadError, load_image
from gifsplanation.pipeline import ExplainOptions, explain_many, explain_one, slug

FILES = {
    "latentshift.gif",
    "latentshift.mp4",
    "map-max.png",
    "map-max.npy",
    "curve.png",
    "flow.png",
    "explanation.json",
    "report.html",
}


@pytest.fixture(scope="module")
def models(tiny):
    clf, ae, _ = tiny
    clf, ae = copy.deepcopy(clf), copy.deepcopy(ae)
    clf.input_size = 32
    return clf, ae


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    from gifsplanation.testing import BlobData

    folder = tmp_path_factory.mktemp("pngs")
    x, _, _ = BlobData(seed=5).batch(3, positive=True)
    paths = []
    for k in range(3):
        a = ((x[k, 0].numpy() + 1024) / 2048 * 255).round().astype(np.uint8)
        paths.append(folder / f"img{k}.png")
        Image.fromarray(a).save(paths[-1])
    return paths


FAST = ExplainOptions(n_frames=5, mp4=False, flow=False)


def test_outputs_and_json_match_the_engine(models, pngs, tmp_path):
    clf, ae = models
    options = ExplainOptions(n_frames=6, maps=("max", "mean"))
    res = explain_many(pngs[:2], clf, ae, ["blob"], tmp_path, options)
    assert [e["status"] for e in res.entries] == ["done", "done"]
    folder = tmp_path / "img1" / "blob"
    assert FILES | {"map-mean.png", "map-mean.npy"} == {p.name for p in folder.iterdir()}
    record = json.loads((folder / "explanation.json").read_text())

    x = load_image(pngs[1], size=32)
    exp = LatentShift(clf, ae, n_frames=6).explain(x, target="blob")
    assert record["lambdas"] == pytest.approx(exp.lambdas[0].tolist(), rel=1e-5, abs=1e-6)
    assert record["preds"] == pytest.approx(exp.preds[0].tolist(), abs=1e-5)
    assert record["stop_reasons"] == {k: str(v) for k, v in exp.stop_reasons[0].items()}
    assert record["n_evaluations"] > 0 and record["engine_call"]["images"] == 2
    assert record["models"]["classifier"]["weights_sha256"] is None
    assert (
        record["versions"]["torch"] == torch.__version__.split("+")[0]
        or record["versions"]["torch"]
    )
    assert record["arguments"]["n_frames"] == 6 and record["seed"] == 0
    heat = np.load(folder / "map-max.npy")
    assert np.allclose(heat, exp.heatmap("max")[0].numpy(), atol=1e-3 * max(heat.max(), 1))
    gif = Image.open(folder / "latentshift.gif")
    assert gif.n_frames == 2 * 6 - 2

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    assert "img1/blob/report.html" in (tmp_path / "index.html").read_text()


def test_rerun_skips_force_recomputes_and_changed_settings_rerun(models, pngs, tmp_path):
    clf, ae = models
    explain_many(pngs[:1], clf, ae, None, tmp_path, FAST)
    json_path = tmp_path / "img0" / "blob" / "explanation.json"
    first = json_path.stat().st_mtime_ns
    again = explain_many(pngs[:1], clf, ae, None, tmp_path, FAST)
    assert [e["status"] for e in again.entries] == ["skipped"]
    assert json_path.stat().st_mtime_ns == first
    forced = explain_many(
        pngs[:1], clf, ae, None, tmp_path, ExplainOptions(**{**FAST.__dict__, "force": True})
    )
    assert [e["status"] for e in forced.entries] == ["done"]
    changed = explain_many(
        pngs[:1], clf, ae, None, tmp_path, ExplainOptions(**{**FAST.__dict__, "n_frames": 4})
    )
    assert [e["status"] for e in changed.entries] == ["done"]
    assert len(json.loads(json_path.read_text())["lambdas"]) == 4


def test_a_corrupt_file_fails_alone(models, pngs, tmp_path):
    clf, ae = models
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    res = explain_many(
        [pngs[0], bad, tmp_path / "missing.dcm", pngs[2]], clf, ae, None, tmp_path / "out", FAST
    )
    status = {e["name"]: e["status"] for e in res.entries}
    assert status == {"img0": "done", "broken": "failed", "missing": "failed", "img2": "done"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    reasons = [e["reason"] for e in manifest["entries"] if e["status"] == "failed"]
    assert any("broken.png" in r for r in reasons) and any("not found" in r for r in reasons)
    assert "failed" in (tmp_path / "out" / "index.html").read_text()


def test_images_per_call_batches_the_engine(models, pngs, tmp_path):
    clf, ae = models
    res = explain_many(
        pngs,
        clf,
        ae,
        ["blob"],
        tmp_path,
        ExplainOptions(n_frames=4, mp4=False, flow=False, images_per_call=2),
    )
    assert [r["engine_call"]["images"] for r in res.records] == [2, 2, 1]


def test_explain_one_with_a_tensor_and_errors(models, tmp_path):
    clf, ae = models
    from gifsplanation.testing import BlobData

    records = explain_one(
        BlobData(seed=9).positive(1), clf, ae, [0], tmp_path, FAST, name="demo image"
    )
    assert records[0]["target_name"] == "blob"
    assert (tmp_path / "demo_image" / "blob" / "report.html").is_file()
    with pytest.raises(ImageLoadError, match="file not found"):
        explain_one(tmp_path / "nope.png", clf, ae, None, tmp_path, FAST)
    with pytest.raises(ValueError, match="unknown target 'lungs'"):
        explain_one(BlobData(seed=9).positive(1), clf, ae, ["lungs"], tmp_path, FAST)
    with pytest.raises(ValueError, match="unknown map method"):
        ExplainOptions(maps=("best",))


def test_same_stems_get_distinct_folders(models, pngs, tmp_path):
    clf, ae = models
    other = tmp_path / "other"
    other.mkdir()
    twin = other / pngs[0].name
    twin.write_bytes(pngs[0].read_bytes())
    res = explain_many([pngs[0], twin], clf, ae, None, tmp_path / "out", FAST)
    assert [e["name"] for e in res.entries] == ["img0", "img0-2"]
    assert slug("Non-COVID pneumonia") == "Non-COVID_pneumonia"
