"""`gifsplanation evaluate ...` runs end to end on a tiny generated dataset (models from
``gifsplanation.testing`` stand in for the bundled ones)."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from gifsplanation.cli import app


def assert_usage_error(res, text: str) -> None:
    """Exit 2 with one ``error:`` line (the command line's rule) that contains ``text``."""
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and text in errors[0], res.output


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
def test_evaluate_end_to_end(experiment, extra, tiny_cli, blob_folders, tmp_path):
    data = blob_folders(3)
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


def test_evaluate_errors_name_the_fix(tiny_cli, blob_folders, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "iou", "--no-progress"])
    assert_usage_error(res, "pass exactly one of --data PATH or --xrv-dataset NAME")
    data = blob_folders(2)
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
    assert_usage_error(res, "unknown methods ['gradcam']")


def test_commands_without_methods_record_only_their_own_options(tiny_cli, blob_folders, tmp_path):
    data = blob_folders(2)
    out = tmp_path / "ae"
    args = ["evaluate", "ae-impact", "--data", str(data), "--split", "all", "--size", "32"]
    result = CliRunner().invoke(app, [*args, "--limit", "1", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["args"]["methods"] == []
    recorded = set(manifest["args"]["cli"])
    assert not {"methods", "ig_steps", "ls_strategy", "id_iter", "mode", "max_lambda"} & recorded


ENGINE_COMMANDS = [
    ("iou", ["--methods", "grad,latentshift-max"]),
    ("randomization", ["--methods", "latentshift-max", "--steps", "1"]),
    ("robustness", ["--methods", "latentshift-max", "--noise-levels", "0,1", "--blur-sigmas", "0"]),
    ("counterfactuals", []),
]
CUSTOM_ENGINE = [
    "--mode",
    "reconstruction",
    "--strategy",
    "paper",
    "--frames",
    "5",
    "--batch-size",
    "3",
    "--lower-change",
    "0.2",
    "--upper-change",
    "0",
    "--threshold-mode",
    "absolute",
    "--max-lambda",
    "1234",
    "--max-image-change",
    "0.4",
    "--ood",
    "off",
]


def _run(data, out, experiment, *args):
    return CliRunner().invoke(
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
            "1",
            "--out",
            str(out),
            "--no-progress",
            *args,
        ],
    )


@pytest.mark.parametrize("experiment, extra", ENGINE_COMMANDS)
def test_every_engine_command_takes_and_records_every_engine_option(
    experiment, extra, tiny_cli, blob_folders, tmp_path
):
    data = blob_folders(2)
    out = tmp_path / experiment
    result = _run(data, out, experiment, *extra, *CUSTOM_ENGINE)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"] == {
        "mode": "reconstruction",
        "modes": ["reconstruction"],
        "strategy": "paper",
        "n_frames": 5,
        "batch_size": 3,
        "ood": "off",
        "lower_change": 0.2,
        "upper_change": None,
        "threshold_mode": "absolute",
        "max_lambda": 1234.0,
        "max_image_change": 0.4,
        "rtol": 0.05,
        "ftol": 0.05,
        "lambda_range": None,
        "pixel_range": [-1024.0, 1024.0],
    }
    cli = manifest["args"]["cli"]
    assert cli["max_lambda"] == 1234.0 and cli["mode"] == "reconstruction"
    assert not any(k.startswith("run_") for k in cli)  # no imported function recorded
    assert "mode reconstruction" in (out / "table.md").read_text()
    rows = list(csv.DictReader((out / "per_item.csv").open()))
    assert {r["mode"] for r in rows if "latentshift" in r.get("method", "latentshift")} == {
        "reconstruction"
    }


@pytest.mark.parametrize("experiment, extra", ENGINE_COMMANDS)
def test_default_engine_is_residual_with_the_default_cap(
    experiment, extra, tiny_cli, blob_folders, tmp_path
):
    data = blob_folders(2)
    out = tmp_path / experiment
    result = _run(data, out, experiment, *extra)
    assert result.exit_code == 0, result.output
    engine = json.loads((out / "manifest.json").read_text())["engine"]
    assert engine["mode"] == "residual" and engine["max_lambda"] == 10000.0
    assert engine["strategy"] == "fast" and engine["n_frames"] == 10


def test_max_lambda_changes_the_manifest_and_a_resume_with_other_options_is_refused(
    tiny_cli, blob_folders, tmp_path
):
    data = blob_folders(2)
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(data, a, "counterfactuals").exit_code == 0
    assert _run(data, b, "counterfactuals", "--max-lambda", "1000").exit_code == 0
    ma = json.loads((a / "manifest.json").read_text())
    mb = json.loads((b / "manifest.json").read_text())
    assert ma["engine"]["max_lambda"] == 10000.0 and mb["engine"]["max_lambda"] == 1000.0
    assert ma["fingerprint"] != mb["fingerprint"]
    table = (a / "table.md").read_text()
    before = table
    for args, what in (
        (["--mode", "reconstruction"], "mode 'residual' → 'reconstruction'"),
        (["--max-lambda", "1000"], "max_lambda 10000.0 → 1000.0"),
        (["--mode", "both"], "modes"),
    ):
        res = _run(data, a, "counterfactuals", *args)
        assert res.exit_code == 2, res.output
        assert "other Latent Shift engine options" in res.output and what in res.output
    assert (a / "table.md").read_text() == before  # nothing overwritten
    res = _run(data, a, "counterfactuals")  # same options: resumes from the cache
    assert res.exit_code == 0, res.output
    assert json.loads((a / "manifest.json").read_text())["cache"]["misses"] == 0


def test_lambda_range_and_mode_both(tiny_cli, blob_folders, tmp_path):
    data = blob_folders(2)
    out = tmp_path / "fixed"
    res = _run(data, out, "counterfactuals", "--lambda-range", "-0.5,0.1")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["engine"]["lambda_range"] == [-0.5, 0.1]
    rows = list(csv.DictReader((out / "per_item.csv").open()))
    assert {r["stop_reason"] for r in rows} == {"fixed_range"}
    assert {float(r["lambda"]) for r in rows} == {-0.5}
    res = _run(data, tmp_path / "bad", "counterfactuals", "--lambda-range", "-5")
    assert_usage_error(res, "LO,HI")
    res = _run(data, tmp_path / "bad", "iou", "--mode", "paper")
    assert_usage_error(res, "mode must be one of")
    out = tmp_path / "both"
    res = _run(data, out, "counterfactuals", "--mode", "both")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "per_item.csv").open()))
    assert sorted(r["mode"] for r in rows) == ["reconstruction", "residual"]
    assert (out / "paired_modes.csv").is_file()
    assert json.loads((out / "manifest.json").read_text())["engine"]["modes"] == [
        "residual",
        "reconstruction",
    ]


def test_ae_impact_has_no_engine_options(tiny_cli, blob_folders, tmp_path):
    data = blob_folders(2)
    res = _run(data, tmp_path / "ae", "ae-impact", "--max-lambda", "5")
    assert res.exit_code == 2 and "No such option" in res.output
    assert _run(data, tmp_path / "ae", "ae-impact").exit_code == 0
    assert json.loads((tmp_path / "ae" / "manifest.json").read_text())["engine"] is None
