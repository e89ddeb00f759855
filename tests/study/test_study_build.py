"""Making a study: CASES.csv parsing, case selection like the paper, asset generation with
the real methods/renderers/io on tiny models, and the `study` commands end to end."""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gifsplanation.cli import app
from gifsplanation.cli import study as study_cli
from gifsplanation.io import load_image
from gifsplanation.study.build import create_study, parse_truth, read_cases
from gifsplanation.study.selection import candidates, select_cases
from gifsplanation.study.server import create_app
from gifsplanation.study.store import StudyStore
from gifsplanation.testing import write_png

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx2
    from fastapi.testclient import TestClient


@pytest.mark.parametrize(
    ("label", "target", "truth"),
    [("1", "COVID-19", True), ("0", "COVID-19", False), ("yes", "x", True),
     ("Negative", "x", False), ("covid-19", "COVID-19", True), ("Normal", "COVID-19", False),
     ("Normal|COVID-19", "COVID-19", True)],
)  # fmt: skip
def test_parse_truth(label: str, target: str, truth: bool) -> None:
    assert parse_truth(label, target) is truth


def test_read_cases_resolves_paths_and_names_missing_columns(tmp_path: Path) -> None:
    good = tmp_path / "cases.csv"
    good.write_text("image,target,label,extra\nimgs/a.png,blob,1,x\n/abs/b.png,blob,0,y\n")
    specs = read_cases(good)
    assert specs[0].image == str(tmp_path / "imgs" / "a.png") and specs[1].image == "/abs/b.png"
    assert [s.truth for s in specs] == [True, False]
    assert len(read_cases(good, limit=1)) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("path,target\nx.png,blob\n")
    with pytest.raises(ValueError, match="missing column.*image.*label"):
        read_cases(bad)


def _pool(n_per: int = 6) -> list[dict]:
    rows = []
    for target in ("A", "B", "C"):
        for i in range(n_per):
            for label in (0, 1):
                rows.append({"image": f"{target}{i}{label}.png", "target": target,
                             "label": label, "prediction": 0.7 + 0.01 * i})  # fmt: skip
        rows.append({"image": f"{target}low.png", "target": target, "label": 1, "prediction": 0.6})
    return rows


def test_select_cases_like_the_paper() -> None:
    chosen = select_cases(_pool(), per_target=4, fp_share=0.5, threshold=0.6, seed=1)
    assert len(chosen) == 12
    for target in ("A", "B", "C"):
        mine = [r for r in chosen if r["target"] == target]
        assert sorted(r["label"] for r in mine) == [0, 0, 1, 1]
    assert all(r["prediction"] > 0.6 for r in chosen)  # strictly above: 0.6 is out
    assert len({r["image"] for r in chosen}) == len(chosen)
    assert chosen == select_cases(_pool(), per_target=4, fp_share=0.5, threshold=0.6, seed=1)
    quarter = select_cases(_pool(), per_target=4, fp_share=0.25, targets=["B"])
    assert sorted(r["label"] for r in quarter) == [0, 1, 1, 1]  # order: shuffled
    with pytest.raises(ValueError, match="fp_share"):
        select_cases(_pool(), fp_share=1.5)


def test_select_cases_warns_when_short(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        chosen = select_cases(_pool(2), per_target=6, fp_share=0.5, targets=["A"])
    assert len(chosen) == 4 and "only 2 false positives" in caplog.text


def test_candidates_from_predictions() -> None:
    rows = candidates(["x.png", "y.png"], ["COVID-19", "Normal|COVID-19"],
                      [[0.9, 0.1, 0.5], [0.8, 0.7, 0.5]], ["COVID-19", "Normal", ""])  # fmt: skip
    assert [(r["image"], r["target"], r["label"]) for r in rows] == [
        ("x.png", "COVID-19", 1), ("x.png", "Normal", 0),
        ("y.png", "COVID-19", 1), ("y.png", "Normal", 1),
    ]  # fmt: skip


def _write_blob_cases(folder: Path, data, n: int = 3) -> Path:
    """PNG files of generated blob images and their CASES.csv (alternating labels)."""
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        write_png(data.batch(1, positive=positive)[0], folder / f"blob{i}.png")
        rows.append(f"blob{i}.png,blob,{int(positive)}")
    path = folder / "cases.csv"
    path.write_text("image,target,label\n" + "\n".join(rows) + "\n")
    return path


def _load32(path: str) -> torch.Tensor:
    return load_image(path, size=32)


@pytest.mark.slow
def test_create_study_with_real_methods_and_renderers(tiny, blob_data, tmp_path) -> None:
    clf, ae, _ = tiny
    cases = _write_blob_cases(tmp_path / "in", blob_data, n=3)
    store = create_study(cases, tmp_path / "study", clf, ae, loader=_load32, threshold=None)
    stored = store.cases()
    by_source = sorted(stored, key=lambda c: c.source)  # built in a shuffled order
    assert len(stored) == 3 and [c.truth for c in by_source] == [True, False, True]
    for case in stored:
        assert set(case.assets) == {"image", "grad", "guided", "integrated", "latentshift", "gif"}
        for rel in case.assets.values():
            assert rel.startswith(case.public_id + "/")
            assert "blob" not in rel and "1" not in rel.split("/")[1]  # names leak nothing
            assert store.asset_path(rel).is_file()
        with Image.open(store.asset_path(case.assets["gif"])) as gif:
            assert gif.n_frames > 2
        x = _load32(case.source)
        with torch.no_grad():
            assert case.prediction == pytest.approx(float(clf(x)[0, 0]), abs=1e-5)
    # a reader can fetch every visual through the app
    reader = store.add_reader("ann", seed=0)
    client = TestClient(create_app(store.root))
    view = client.get(
        "/api/reader/case/1/0", headers={"Authorization": f"Bearer {reader.token}"}
    ).json()
    for url in [view["image"]] + [v["url"] for v in view["visuals"]]:
        assert client.get(url).status_code == 200
    with pytest.raises(FileExistsError):
        create_study(cases, tmp_path / "study", clf, ae, loader=_load32)
    # a case that fails leaves neither a study nor a half-made folder behind

    def flaky(path: str) -> torch.Tensor:
        if path.endswith("blob1.png"):
            raise OSError("disk on fire")
        return _load32(path)

    with pytest.raises(RuntimeError, match=r"case 2 .*blob1.png.*disk on fire"):
        create_study(cases, tmp_path / "failed", clf, ae, loader=flaky, threshold=None)
    assert not (tmp_path / "failed").exists()
    assert not (tmp_path / ".failed.partial").exists()
    with pytest.raises(ValueError, match="not outputs of the classifier"):
        bad = tmp_path / "bad.csv"
        bad.write_text(f"image,target,label\n{stored[0].source},Nodule,1\n")
        create_study(bad, tmp_path / "other", clf, ae, loader=_load32)


@pytest.mark.slow
def test_study_commands_end_to_end(tiny_cli, blob_data, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(study_cli, "_loader", lambda size: _load32)
    cases = _write_blob_cases(tmp_path / "in", blob_data, n=2)
    out = tmp_path / "study"
    runner = CliRunner()
    res = runner.invoke(app, ["study", "create", str(cases), "--out", str(out), "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert "admin token" in res.output
    res = runner.invoke(app, ["study", "add-reader", str(out), "ann", "--base-url", "http://h:9"])
    assert res.exit_code == 0, res.output
    link = res.stdout.strip()
    store = StudyStore(out)
    reader = store.readers()[0]
    assert link == f"http://h:9/r/{reader.token}"
    again = runner.invoke(app, ["study", "add-reader", str(out), "ann"])
    assert again.exit_code == 2 and again.output.count("error:") == 1, again.output
    assert "ann" in again.output
    public = {c.id: c.public_id for c in store.cases()}
    for slot in store.schedule(reader.id):
        for q in ("confidence", "feature"):
            store.save_answer(reader.id, public[slot.case_id], slot.round, q,
                              4 if slot.method == "B" else 2)  # fmt: skip
    res = runner.invoke(app, ["study", "readers", str(out)])
    assert res.exit_code == 0 and "ann" in res.output and "2/2" in res.output
    res = runner.invoke(app, ["study", "export", str(out)])
    assert res.exit_code == 0, res.output
    with open(out / "answers.csv") as f:
        assert len(list(csv.DictReader(f))) == 8
    res = runner.invoke(app, ["study", "export", str(out), "--history", "--out",
                              str(tmp_path / "h.csv")])  # fmt: skip
    assert res.exit_code == 0 and (tmp_path / "h.csv").is_file()
    res = runner.invoke(app, ["study", "analyze", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "analysis" / "summary.md").is_file()
    assert (out / "analysis" / "per_target.png").is_file()
    assert "+2.00" in res.output
    # select: predicted positives above the threshold, half false positives
    folder = tmp_path / "pool"
    lines = []
    for i in range(6):
        write_png(blob_data.batch(1, positive=i % 2 == 0)[0], folder / f"p{i}.png")
        lines.append(f"p{i}.png,{'blob' if i % 2 == 0 else 'none'}")
    (folder / "images.csv").write_text("image,label\n" + "\n".join(lines) + "\n")
    res = runner.invoke(app, ["study", "select", str(folder / "images.csv"), "--out",
                              str(tmp_path / "cases.csv"), "--per-target", "2",
                              "--threshold", "0.0"])  # fmt: skip
    assert res.exit_code == 0, res.output
    with open(tmp_path / "cases.csv") as f:
        chosen = list(csv.DictReader(f))
    assert sorted(r["label"] for r in chosen) == ["0", "1"]
    assert {r["target"] for r in chosen} == {"blob"}
    assert all(Path(r["image"]).is_file() for r in chosen)
    missing = runner.invoke(app, ["study", "export", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "study create" in missing.output
    assert len(tiny_cli) == 2  # create and select loaded the models, nothing else did
