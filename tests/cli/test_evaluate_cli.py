"""`gifsplanation evaluate ...` runs end to end on a tiny generated dataset (models from
``gifsplanation.testing`` stand in for the bundled ones)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gifsplanation.cli import app
from gifsplanation.cli import evaluate as evaluate_cli
from gifsplanation.evaluate.testing import write_blob_dataset


@pytest.fixture()
def tiny_registry(monkeypatch, tiny):
    clf, ae, _ = tiny
    monkeypatch.setattr(
        evaluate_cli, "_load_models", lambda c, a, device, need_ae: (clf, ae if need_ae else None)
    )


@pytest.mark.parametrize(
    "experiment, extra",
    [
        ("iou", ["--methods", "random,grad,latentshift-max"]),
        ("randomization", ["--methods", "grad", "--steps", "2"]),
        ("robustness", ["--methods", "grad", "--noise-levels", "0,1", "--blur-sigmas", "0,2"]),
        ("ae-impact", []),
        ("counterfactuals", []),
    ],
)
def test_evaluate_end_to_end(experiment, extra, tiny_registry, tmp_path):
    data = write_blob_dataset(tmp_path / "data", n_per_label=3)
    out = tmp_path / experiment
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            experiment,
            "--data",
            str(data),
            "--split",
            "all",
            "--size",
            "32",
            "--limit",
            "2",
            "--seed",
            "1",
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "table.md").is_file() and (out / "summary.csv").is_file()
    assert list(out.glob("*.png"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["args"]["seed"] == 1 and manifest["args"]["cli"]["limit"] == 2
    assert "wrote" in result.output


def test_evaluate_errors_name_the_fix(tiny_registry, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "iou", "--no-progress"])
    assert res.exit_code != 0 and "--data" in res.output
    data = write_blob_dataset(tmp_path / "d", n_per_label=2)
    res = runner.invoke(
        app,
        [
            "evaluate",
            "iou",
            "--data",
            str(data),
            "--size",
            "32",
            "--methods",
            "gradcam",
            "--no-progress",
        ],
    )
    assert res.exit_code != 0 and "unknown methods" in res.output


def test_commands_without_methods_record_only_their_own_options(tiny_registry, tmp_path):
    data = write_blob_dataset(tmp_path / "data", n_per_label=2)
    out = tmp_path / "ae"
    args = ["evaluate", "ae-impact", "--data", str(data), "--split", "all", "--size", "32"]
    result = CliRunner().invoke(app, [*args, "--limit", "1", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["args"]["methods"] == []
    assert not {"methods", "ig_steps", "ls_strategy", "id_iter"} & set(manifest["args"]["cli"])
