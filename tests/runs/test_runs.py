"""The run layer: output files, JSON against the engine, batching, skips, failures, and
the integrity rules (one input per folder, no overwrite without --force, interrupted
redos redone, foreign files never replaced, links that work from any --out)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gifsplanation import LatentShift, OODGate
from gifsplanation.io import ImageLoadError, load_image
from gifsplanation.runs import (
    PARTIAL,
    ExplainOptions,
    OutDirError,
    RunInterrupted,
    check_out_dir,
    content_sha256,
    explain_many,
    explain_one,
    folder_name,
    slug,
)
from gifsplanation.testing import BlobData, write_png

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
FAST = ExplainOptions(n_frames=5, mp4=False, flow=False)


def blob_png(path, seed=5, k=0):
    x, _, _ = BlobData(seed=seed).batch(k + 1, positive=True)
    return write_png(x[k], path)


@pytest.fixture()
def pngs(tmp_path):
    return [blob_png(tmp_path / "in" / f"img{k}.png", k=k) for k in range(3)]


def folder_of(out, png, target="blob"):
    return out / folder_name(png.stem, content_sha256(png)) / target


def test_outputs_and_json_match_the_engine(tiny32, pngs, tmp_path):
    clf, ae = tiny32
    options = ExplainOptions(n_frames=6, maps=("max", "mean"))
    res = explain_many(pngs[:2], clf, ae, ["blob"], tmp_path / "out", options)
    assert [e["status"] for e in res.entries] == ["done", "done"]
    folder = folder_of(tmp_path / "out", pngs[1])
    assert FILES | {"map-mean.png", "map-mean.npy"} == {p.name for p in folder.iterdir()}
    record = json.loads((folder / "explanation.json").read_text())

    x = load_image(pngs[1], size=32)
    exp = LatentShift(clf, ae, n_frames=6).explain(x, target="blob")
    assert record["lambdas"] == pytest.approx(exp.lambdas[0].tolist(), rel=1e-5, abs=1e-6)
    assert record["preds"] == pytest.approx(exp.preds[0].tolist(), abs=1e-5)
    assert record["stop_reasons"] == {k: str(v) for k, v in exp.stop_reasons[0].items()}
    assert record["mode"] == "residual" and record["input_sha256"] == content_sha256(pngs[1])
    assert record["n_evaluations"] > 0 and record["engine_call"]["images"] == 2
    assert record["models"]["classifier"]["weights_sha256"] is None
    assert record["versions"]["torch"] == torch.__version__.split("+")[0]
    assert record["arguments"]["n_frames"] == 6 and record["seed"] == 0
    heat = np.load(folder / "map-max.npy")
    assert np.allclose(heat, exp.heatmap("max")[0].numpy(), atol=1e-3 * max(heat.max(), 1))
    assert Image.open(folder / "latentshift.gif").n_frames == 2 * 6 - 2

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 2, "skipped": 0, "refused": 0, "failed": 0}
    rel = folder.relative_to(tmp_path / "out").as_posix()
    assert f'href="./{rel}/report.html"' in (tmp_path / "out" / "index.html").read_text()


def test_reconstruction_mode_is_one_option_away(tiny32, pngs, tmp_path):
    clf, ae = tiny32
    options = ExplainOptions(n_frames=4, mp4=False, flow=False, mode="reconstruction")
    (record,) = explain_one(pngs[0], clf, ae, ["blob"], tmp_path, options)
    assert record["mode"] == "reconstruction"
    assert record["initial_pred"] != record["input_pred"]
    html = (folder_of(tmp_path, pngs[0]) / "report.html").read_text()
    assert "Reconstruction frames" in html


def test_rerun_skips_force_recomputes_and_other_settings_are_not_overwritten(
    tiny32, pngs, tmp_path
):
    clf, ae = tiny32
    explain_many(pngs[:1], clf, ae, None, tmp_path, FAST)
    json_path = folder_of(tmp_path, pngs[0]) / "explanation.json"
    first = json_path.stat().st_mtime_ns
    again = explain_many(pngs[:1], clf, ae, None, tmp_path, FAST)
    assert [e["status"] for e in again.entries] == ["skipped"]
    assert json_path.stat().st_mtime_ns == first
    forced = explain_many(
        pngs[:1], clf, ae, None, tmp_path, ExplainOptions(**{**FAST.__dict__, "force": True})
    )
    assert [e["status"] for e in forced.entries] == ["done"]
    # Other settings into the same folder: refused with the fix, nothing replaced.
    before = json_path.read_bytes()
    changed = explain_many(
        pngs[:1], clf, ae, None, tmp_path, ExplainOptions(**{**FAST.__dict__, "n_frames": 4})
    )
    (entry,) = changed.entries
    assert entry["status"] == "failed"
    assert "other settings" in entry["reason"] and "--force" in entry["reason"]
    assert str(pngs[0]) in entry["reason"]
    assert json_path.read_bytes() == before
    replaced = explain_many(
        pngs[:1],
        clf,
        ae,
        None,
        tmp_path,
        ExplainOptions(**{**FAST.__dict__, "n_frames": 4, "force": True}),
    )
    assert [e["status"] for e in replaced.entries] == ["done"]
    assert len(json.loads(json_path.read_text())["lambdas"]) == 4


def test_same_names_never_share_a_folder_whatever_the_order(tiny32, tmp_path):
    """a/x.png and b/x.png, and two names that slug alike, get their own folders, and
    the folders do not depend on the input order."""
    clf, ae = tiny32
    a = blob_png(tmp_path / "a" / "x.png", seed=1)
    b = blob_png(tmp_path / "b" / "x.png", seed=2)
    c = blob_png(tmp_path / "c" / "胸部.png", seed=3)
    d = blob_png(tmp_path / "d" / "肺.png", seed=4)
    first = explain_many([a, b, c, d], clf, ae, ["blob"], tmp_path / "o1", FAST)
    second = explain_many([d, c, b, a], clf, ae, ["blob"], tmp_path / "o2", FAST)
    dirs1 = {e["image"]: e["dir"] for e in first.entries}
    dirs2 = {e["image"]: e["dir"] for e in second.entries}
    assert dirs1 == dirs2 and len(set(dirs1.values())) == 4
    for e in first.entries:
        record = json.loads((tmp_path / "o1" / e["dir"] / "explanation.json").read_text())
        assert record["image"] == e["image"]
        assert record["input_sha256"] == content_sha256(e["image"])


def test_another_images_explanation_is_never_reported_as_finished(tiny32, tmp_path):
    """The attack: a Normal image was reported 'skipped' with another image's result."""
    clf, ae = tiny32
    covid = blob_png(tmp_path / "a" / "x.png", seed=1)
    normal = blob_png(tmp_path / "b" / "x.png", seed=2)
    explain_many([covid], clf, ae, ["blob"], tmp_path / "out", FAST)
    # Even if another image's finished folder sits exactly where this image's would go
    # (a copied or renamed folder), it is not taken for this image's result.
    theirs = folder_of(tmp_path / "out", covid)
    mine = folder_of(tmp_path / "out", normal)
    shutil.copytree(theirs.parent, mine.parent)
    res = explain_many([normal], clf, ae, ["blob"], tmp_path / "out", FAST)
    (entry,) = res.entries
    assert entry["status"] == "failed" and "different image" in entry["reason"]
    record = json.loads((mine / "explanation.json").read_text())
    assert record["input_sha256"] == content_sha256(covid)  # left alone


def test_an_interrupted_redo_is_redone_not_taken_as_finished(tiny32, pngs, tmp_path, monkeypatch):
    clf, ae = tiny32
    explain_many(pngs[:1], clf, ae, ["blob"], tmp_path, ExplainOptions(n_frames=10, flow=False))
    folder = folder_of(tmp_path, pngs[0])

    from gifsplanation.runs import outputs

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the GIF, before the JSON

    monkeypatch.setattr(outputs, "save_curve", killed)
    redo = ExplainOptions(n_frames=10, flow=False, force=True)
    with pytest.raises(RunInterrupted):
        explain_many(pngs[:1], clf, ae, ["blob"], tmp_path, redo)
    assert not (folder / "explanation.json").exists()
    assert (folder / PARTIAL).exists()
    monkeypatch.undo()
    again = explain_many(pngs[:1], clf, ae, ["blob"], tmp_path, ExplainOptions(10, flow=False))
    assert [e["status"] for e in again.entries] == ["done"]  # redone, not "skipped"
    record = json.loads((folder / "explanation.json").read_text())
    assert Image.open(folder / "latentshift.gif").n_frames == 2 * len(record["lambdas"]) - 2
    assert not (folder / PARTIAL).exists()


def test_files_we_did_not_write_are_never_replaced(tiny32, pngs, tmp_path):
    clf, ae = tiny32
    folder = folder_of(tmp_path / "out", pngs[0])
    folder.mkdir(parents=True)
    (folder / "latentshift.gif").write_text("the user's own file")
    for force in (False, True):
        options = ExplainOptions(**{**FAST.__dict__, "force": force})
        (entry,) = explain_many(pngs[:1], clf, ae, ["blob"], tmp_path / "out", options).entries
        assert entry["status"] == "failed" and "did not write" in entry["reason"]
    assert (folder / "latentshift.gif").read_text() == "the user's own file"
    # A user's own index.html or manifest.json in --out: refused before any work.
    for name in ("index.html", "manifest.json"):
        other = tmp_path / f"mine-{name}"
        other.mkdir()
        (other / name).write_text("my notes")
        with pytest.raises(OutDirError, match=f"{name} exists and was not written"):
            explain_many(pngs[:1], clf, ae, ["blob"], other, FAST)
        assert (other / name).read_text() == "my notes"


def test_unusable_out_is_found_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutDirError, match="is a file"):
        check_out_dir(tmp_path / "file")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: a read-only folder is writable")
        with pytest.raises(OutDirError, match="not writable"):
            check_out_dir(locked / "sub")
    finally:
        locked.chmod(0o700)


def test_index_links_work_from_a_relative_and_a_hostile_out(tiny32, pngs, tmp_path, monkeypatch):
    clf, ae = tiny32
    monkeypatch.chdir(tmp_path)
    for out in ("rel/out", "javascript:alert(1)"):
        res = explain_many(pngs[:1], clf, ae, ["blob"], out, FAST)
        html = (tmp_path / out / "index.html").read_text()
        hrefs = [h.split('"')[1] for h in html.split("href=")[1:]]
        srcs = [h.split('"')[1] for h in html.split('class="thumb" loading="lazy" alt="" src=')[1:]]
        assert hrefs and all(h.startswith("./") for h in hrefs + srcs)
        assert "javascript:" not in "".join(hrefs + srcs)
        for h in hrefs:  # every link resolves from the index's own folder
            assert (tmp_path / out / h).is_file()
        assert res.entries[0]["report"] == hrefs[0][2:]


def test_a_corrupt_file_fails_alone(tiny32, pngs, tmp_path):
    clf, ae = tiny32
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    res = explain_many(
        [pngs[0], bad, tmp_path / "missing.dcm", pngs[2]], clf, ae, None, tmp_path / "out", FAST
    )
    status = {e["name"]: e["status"] for e in res.entries}
    assert status == {"img0": "done", "broken": "failed", "missing": "failed", "img2": "done"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    reasons = [e["reason"] for e in manifest["entries"] if e["status"] == "failed"]
    assert any(r.startswith(str(bad)) for r in reasons)
    assert any("missing.dcm" in r and "not found" in r for r in reasons)
    assert "failed" in (tmp_path / "out" / "index.html").read_text()


def test_a_rendering_failure_names_the_file(tiny32, pngs, tmp_path, monkeypatch):
    clf, ae = tiny32
    from gifsplanation.runs import outputs

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(outputs, "save_curve", broken)
    (entry,) = explain_many(pngs[:1], clf, ae, ["blob"], tmp_path, FAST).entries
    assert entry["status"] == "failed"
    assert entry["reason"].startswith(str(pngs[0])) and "disk full" in entry["reason"]


def test_images_per_call_batches_the_engine(tiny32, pngs, tmp_path):
    clf, ae = tiny32
    options = ExplainOptions(n_frames=4, mp4=False, flow=False, images_per_call=2)
    res = explain_many(pngs, clf, ae, ["blob"], tmp_path, options)
    assert [r["engine_call"]["images"] for r in res.records] == [2, 2, 1]


def test_explain_one_with_a_tensor_and_errors(tiny32, tmp_path):
    clf, ae = tiny32
    x = BlobData(seed=9).positive(1)
    records = explain_one(x, clf, ae, [0], tmp_path, FAST, name="demo image")
    assert records[0]["target_name"] == "blob" and records[0]["image"] == "demo image"
    folder = tmp_path / folder_name("demo image", content_sha256(x)) / "blob"
    assert (folder / "report.html").is_file()
    assert "<title>gifsplanation: demo image — blob</title>" in (folder / "report.html").read_text()
    with pytest.raises(ImageLoadError, match="file not found"):
        explain_one(tmp_path / "nope.png", clf, ae, None, tmp_path, FAST)
    with pytest.raises(ValueError, match="unknown target 'lungs'"):
        explain_one(x, clf, ae, ["lungs"], tmp_path, FAST)
    with pytest.raises(ValueError, match="target index -1 is out of range"):
        explain_one(x, clf, ae, [-1], tmp_path, FAST)
    with pytest.raises(ValueError, match="unknown map method"):
        ExplainOptions(maps=("best",))
    assert slug("Non-COVID pneumonia") == "Non-COVID_pneumonia"


def test_refused_images_are_reported_not_explained(tiny32, pngs, tmp_path):
    clf, ae = tiny32
    ae.ood_gate = OODGate(recon_threshold=1e-6)  # everything is "out of distribution"
    out = tmp_path / "out"
    res = explain_many(pngs[:2], clf, ae, ["blob"], out, FAST)
    assert [e["status"] for e in res.entries] == ["refused", "refused"]
    assert all(e["reason"].startswith(str(p)) for e, p in zip(res.entries, pngs, strict=False))
    assert "reconstruction error" in res.entries[0]["reason"]
    assert not any(p.is_dir() for p in out.iterdir())
    warned = explain_many(
        pngs[:1], clf, ae, ["blob"], out, ExplainOptions(**{**FAST.__dict__, "ood": "warn"})
    )
    (entry,) = warned.entries
    assert entry["status"] == "done" and "explained anyway" in entry["notes"][0]
    record = json.loads((out / entry["dir"] / "explanation.json").read_text())
    assert record["ood"]["flagged"] is True
    assert "explained anyway" in (out / entry["report"]).read_text()


def test_absent_target_is_said_in_the_entry_json_and_report(tiny32, tmp_path):
    clf, ae = tiny32
    x, _, _ = BlobData(seed=5).batch(1, positive=False)
    (entry,) = explain_many([x], clf, ae, ["blob"], tmp_path, FAST, names=["clear"]).entries
    assert entry["target_present"] is False
    assert any("does not find blob" in n for n in entry["notes"])
    report = (tmp_path / entry["report"]).read_text()
    assert "does not find blob" in report and "what would add it" in report


def test_other_weights_are_other_settings_even_without_a_weights_hash(tiny32, pngs, tmp_path):
    clf, ae = tiny32
    explain_many(pngs[:1], clf, ae, ["blob"], tmp_path, FAST)
    with torch.no_grad():
        clf.net[-1].bias += 1.0  # same class and name, other weights, no weights_sha256
    (entry,) = explain_many(pngs[:1], clf, ae, ["blob"], tmp_path, FAST).entries
    assert entry["status"] == "failed" and "other settings or models" in entry["reason"]
