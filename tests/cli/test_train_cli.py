"""`gifsplanation train classifier|autoencoder` on a tiny generated dataset."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gifsplanation.cli import app
from gifsplanation.models.synthetic import write_dataset

runner = CliRunner()
TINY = ["--size", "32", "--channels", "4,8", "--batch-size", "4", "--threads", "1"]


def test_train_classifier_then_resume(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "run"
    r1 = runner.invoke(
        app, ["train", "classifier", str(data), "--out", str(out), "--epochs", "1", *TINY]
    )
    assert r1.exit_code == 0, r1.output
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    r2 = runner.invoke(
        app,
        ["train", "classifier", str(data), "--out", str(out), "--epochs", "2", "--resume", *TINY],
    )
    assert r2.exit_code == 0, r2.output
    record = json.loads((out / "run.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert "train classifier" in record["command"] or record["command"]


def test_train_autoencoder_steps(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "ae"
    args = ["train", "autoencoder", str(data), "--out", str(out), "--max-steps", "2"]
    r = runner.invoke(app, [*args, "--latent-channels", "2", *TINY])
    assert r.exit_code == 0, r.output
    side = json.loads((out / "model.json").read_text())
    assert side["kind"] == "autoencoder" and side["config"]["latent_channels"] == 2


def test_train_errors_are_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "classifier", str(tmp_path / "missing.csv"), *TINY])
    assert r.exit_code == 2
    assert "does not exist" in r.output and "Traceback" not in r.output
    bad = runner.invoke(app, ["train", "autoencoder", str(tmp_path), "--channels", "a,b"])
    assert bad.exit_code != 0
