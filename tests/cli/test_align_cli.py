"""`gifsplanation align` end to end on the tiny models: outputs, report, the same numbers as
the Python call, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from gifsplanation import LatentShift
from gifsplanation.alignment import Observer, align
from gifsplanation.cli import align as align_cli
from gifsplanation.cli import app
from gifsplanation.io import load_image
from gifsplanation.testing import BlobData

runner = CliRunner()


class Detector(torch.nn.Module):
    """Reads the blob (its brightest 5x5 patch) as a probability."""

    targets = ["blob"]
    output_kind = "probability"
    name = "detector"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((F.avg_pool2d(x, 5, 1).amax(dim=(1, 2, 3)) - 300) / 150)[:, None]


class Corner(torch.nn.Module):
    """Reads an unrelated feature: the top-left corner's brightness."""

    targets = ["corner", "half"]
    output_kind = "probability"
    name = "corner"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.sigmoid(x[..., :4, :4].mean(dim=(1, 2, 3)) / 150)
        return torch.stack([c, torch.full_like(c, 0.5)], 1)


@pytest.fixture()
def observers(monkeypatch):
    """--observe detector / corner load these; anything else is not found."""
    models = {"detector": Detector(), "corner": Corner()}
    calls = []

    def load(name, device):
        calls.append(name)
        if name not in models:
            raise FileNotFoundError(f"classifier checkpoint {name} does not exist")
        return models[name]

    monkeypatch.setattr(align_cli, "load_observer", load)
    return calls


def _pngs(folder: Path, n: int = 6) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    x = BlobData(seed=21).positive(n)
    files = []
    for k in range(n):
        a = ((x[k, 0].numpy() + 1024) / 2048 * 255).round().astype(np.uint8)
        files.append(folder / f"b{k}.png")
        Image.fromarray(a).save(files[-1])
    return files


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_align_writes_statistics_figures_and_report(tiny_cli, tiny32, observers, tmp_path):
    files = _pngs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["align", str(tmp_path / "in"), "--target", "blob", "--out", str(out)]
    args += ["--observe", "tiny-blob-classifier:blob", "--observe", "detector:blob"]
    args += ["--observe", "corner", "--bootstrap", "300", "--frames", "6"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "aligned 6 images with tiny-blob-classifier:blob (residual frames, lower side)" in (
        result.output
    )
    for name in ("detector:blob", "corner:corner", "corner:half", "tiny-blob-classifier:blob"):
        assert name in result.output
    assert observers == ["detector", "corner"]  # the base model is reused, not reloaded
    for f in ("alignment.json", "alignment.csv", "report.html", "alignment-summary.png"):
        assert (out / f).is_file()
    assert (out / "alignment-curves.png").is_file() and (out / "alignment-scatter.png").is_file()
    assert len(list((out / "images").glob("*.png"))) == 6
    doc = json.loads((out / "alignment.json").read_text())
    s = doc["statistics"]
    assert s["tiny-blob-classifier:blob"]["relative_change"]["mean"] == pytest.approx(1.0)
    assert s["detector:blob"]["relative_change"]["mean"] > 0.5
    assert abs(s["corner:corner"]["relative_change"]["mean"]) < 0.02
    assert s["corner:half"]["pearson"]["n"] == 0  # a constant output: undefined, counted
    assert doc["settings"]["engine"]["mode"] == "residual"
    assert "detector" in doc["settings"]["observers"]
    page = (out / "report.html").read_text()
    assert "detector:blob" in page and page.count("data:image/png") == 3 + 6

    # the Python call on the same files returns the same numbers
    clf, ae = tiny32
    x = torch.cat([load_image(f, 32) for f in files])
    obs = [
        Observer(clf, "blob", name="tiny-blob-classifier:blob"),
        Observer(Detector(), "blob", name="detector:blob"),
        Observer(Corner(), "corner", name="corner:corner"),
        Observer(Corner(), "half", name="corner:half"),
    ]
    res = align(
        LatentShift(clf, ae, n_frames=6), x, "blob", obs, names=[f.name for f in files],
        bootstrap=300,
    )  # fmt: skip
    assert json.loads(json.dumps(res.statistics())) == s


def test_align_in_reconstruction_mode_without_image_plots(tiny_cli, observers, tmp_path):
    _pngs(tmp_path / "in", 3)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["align", str(tmp_path / "in"), "-t", "0", "--observe", "detector:blob", "--out",
         str(out), "--mode", "reconstruction", "--no-image-plots", "--bootstrap", "50"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "alignment.json").read_text())
    assert doc["mode"] == "reconstruction" and not (out / "images").exists()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--target", "lung"], 2, "--target: unknown target 'lung'; valid targets: 'blob'"),
        (["--observe", "detector:nodule"], 2, "unknown target 'nodule'"),
        (["--observe", "missing.pt:blob"], 1, "cannot load observer 'missing.pt'"),
        (["--observe", ":blob"], 2, "no model before ':'"),
        (["--side", "middle"], 2, "--side 'middle' is not one of: lower, upper"),
        (["--mode", "blurry"], 2, "--mode 'blurry' is not one of"),
        (["--observe", "detector:blob"], 2, "lists an output twice"),
    ],
)
def test_errors_are_one_line(tiny_cli, observers, tmp_path, extra, code, message):
    _pngs(tmp_path / "in", 2)
    args = ["align", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--no-image-plots"]
    args += ["--observe", "detector:blob"]
    if "--target" not in extra:
        args += ["--target", "blob"]
    result = runner.invoke(app, args + extra)
    assert result.exit_code == code, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_unreadable_images_are_named_and_the_rest_aligned(tiny_cli, observers, tmp_path):
    _pngs(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["align", str(tmp_path / "in"), "-t", "blob", "--observe", "detector", "--out", str(out),
         "--no-image-plots", "--bootstrap", "50"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.output and "aligned 3 images" in result.output
    assert "Traceback" not in result.output
    doc = json.loads((out / "alignment.json").read_text())
    assert len(doc["images"]) == 3 and "broken.png" in doc["settings"]["failed_to_load"][0]


def test_an_unusable_out_or_no_images_exit_2_before_models_load(tiny_cli, observers, tmp_path):
    _pngs(tmp_path / "in", 1)
    (tmp_path / "file").write_text("x")
    for target, message in ((tmp_path / "in", "is a file"), (tmp_path / "none", "")):
        (tmp_path / "none").mkdir(exist_ok=True)
        result = runner.invoke(
            app,
            ["align", str(target), "-t", "blob", "--observe", "detector", "--out",
             str(tmp_path / "file")],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert len(_error_lines(result.output)) == 1 and message in result.output
    assert tiny_cli == [] and observers == []
