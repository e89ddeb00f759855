"""`gifsplanation train classifier|autoencoder` on a tiny generated dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from gifsplanation.cli import app

runner = CliRunner()
TINY = ["--size", "32", "--channels", "4,8", "--batch-size", "4", "--threads", "1"]


def test_train_classifier_then_resume(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    data, out = tiny_dataset, tmp_path / "run"
    args = ["train", "classifier", str(data), "--out", str(out), "--epochs", "1", *TINY]
    # the command line as a shell would pass it (CliRunner leaves pytest's in sys.argv)
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/gifsplanation", *args])
    r1 = runner.invoke(app, args)
    assert r1.exit_code == 0, r1.output
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    r2 = runner.invoke(
        app,
        ["train", "classifier", str(data), "--out", str(out), "--epochs", "2", "--resume", *TINY],
    )
    assert r2.exit_code == 0, r2.output
    record = json.loads((out / "run.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["command"] == " ".join(["gifsplanation", *args])  # as typed


def test_train_autoencoder_steps(tiny_dataset: Path, tmp_path: Path) -> None:
    data, out = tiny_dataset, tmp_path / "ae"
    args = ["train", "autoencoder", str(data), "--out", str(out), "--max-steps", "2"]
    r = runner.invoke(app, [*args, "--latent-channels", "2", *TINY])
    assert r.exit_code == 0, r.output
    side = json.loads((out / "model.json").read_text())
    assert side["kind"] == "autoencoder" and side["config"]["latent_channels"] == 2


def test_train_errors_are_one_line(tmp_path: Path) -> None:
    for args, text in (
        (["classifier", str(tmp_path / "missing.csv"), *TINY], "does not exist"),
        (["autoencoder", str(tmp_path), "--channels", "a,b"], "--channels 'a,b': expected"),
        (["classifier", str(tmp_path), "--head", "tree"], "--head 'tree' is not one of"),
    ):
        r = runner.invoke(app, ["train", *args])
        errors = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert r.exit_code == 2 and len(errors) == 1 and text in errors[0], r.output
        assert "Traceback" not in r.output
