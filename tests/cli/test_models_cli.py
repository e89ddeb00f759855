"""`gifsplanation models`: a table that fits 80 columns with every registry name and no
empty target names, one model's details, JSON; and `--classifier/--autoencoder PATH` with
a malicious pickle under every TorchXRayVision file name refused in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gifsplanation.cli import app
from gifsplanation.models import list_models
from gifsplanation.models import xrv as xrv_loader

runner = CliRunner()
XRV_ENTRIES = [e for e in list_models() if e.source == "torchxrayvision"]


def test_models_table_fits_80_columns_and_lists_every_name() -> None:
    result = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    first_words = [line.split()[0] for line in lines if line.strip()]
    for entry in list_models():
        assert entry.name in first_words  # whole, on one line
        row = next(line for line in lines if line.startswith(entry.name + " "))
        assert entry.kind in row
        n = str(len(entry.targets)) if entry.targets else "-"
        assert row.split()[2] == n
    assert "gifsplanation models NAME" in result.output and "--json" in result.output


def test_models_table_narrower_terminal_keeps_names_whole() -> None:
    result = runner.invoke(app, ["models"], env={"COLUMNS": "60"})
    assert result.exit_code == 0
    assert "xrv-densenet121-mimic_ch" in result.output
    assert "SOURCE" not in result.output  # dropped to fit


@pytest.mark.parametrize("name", ["xrv-densenet121-rsna", "xrv-densenet121-chex", "cxr-classifier"])
def test_models_details_have_named_targets_with_indices(name: str) -> None:
    result = runner.invoke(app, ["models", name], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    entry = next(e for e in list_models() if e.name == name)
    for i, target in enumerate(entry.targets):
        assert any(line.split()[:1] == [str(i)] and target in line for line in lines)
    # only a path or a URL (one unbroken token) may run past 80 columns
    assert all(len(line) <= 80 or len(line.split()) == 1 for line in lines), result.output
    assert "input:" in result.output and "output:" in result.output
    if entry.source == "torchxrayvision":
        if name == "xrv-densenet121-rsna":
            assert "(XRV 8)" in result.output  # Pneumonia: output 8 of XRV's 18
        assert entry.files()[0][1] in result.output  # the URL
        assert str(entry.weights_location()) in result.output


def test_models_details_of_the_vqgan_name_both_files(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["models", "xrv-vqgan-768-sd", "--cache-dir", str(tmp_path)], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0
    for path, url in xrv_loader.expected_files("vqgan", "cxr2-vqgan-768-sd", tmp_path):
        assert str(path) in result.output and url in result.output


def test_models_unknown_name() -> None:
    result = runner.invoke(app, ["models", "densenet"])
    assert result.exit_code == 2 and result.output.startswith("error: unknown model 'densenet'")
    assert result.output.count("\n") == 1  # one line


def test_models_json_reports_availability_and_named_targets(tmp_path: Path) -> None:
    name = xrv_loader.weights_filename("densenet", "densenet121-res224-mimic_ch")
    (tmp_path / name).write_bytes(b"placeholder")  # availability = the file is there
    result = runner.invoke(app, ["models", "--json", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == {e.name for e in list_models()}
    assert rows["xrv-densenet121-mimic_ch"]["available"] is True
    assert rows["xrv-densenet121-all"]["available"] is False
    assert rows["xrv-densenet121-all"]["weights"].startswith(str(tmp_path))
    assert rows["cxr-classifier"]["targets"] == ["COVID-19", "Pneumonia", "Non-COVID pneumonia"]
    assert rows["xrv-resnetae-101-elastic"]["kind"] == "autoencoder"
    for r in rows.values():
        if r["kind"] == "classifier":
            assert r["targets"] and all(r["targets"]), r["name"]  # no empty name anywhere
        else:
            assert r["targets"] is None, r["name"]
    rsna = rows["xrv-densenet121-rsna"]
    assert rsna["targets"] == ["Pneumonia", "Lung Opacity"] and rsna["xrv_outputs"] == [8, 16]
    assert len(rows["xrv-vqgan-768-sd"]["files"]) == 2
    one = runner.invoke(app, ["models", "xrv-densenet121-rsna", "--json"])
    assert json.loads(one.output)["targets"] == ["Pneumonia", "Lung Opacity"]


def test_models_kind_filter_and_bad_kind() -> None:
    result = runner.invoke(app, ["models", "--json", "--kind", "autoencoder"])
    assert result.exit_code == 0
    assert {r["kind"] for r in json.loads(result.output)} == {"autoencoder"}
    bad = runner.invoke(app, ["models", "--kind", "segmenter"])
    assert bad.exit_code == 2 and bad.output == (
        "error: --kind 'segmenter' is not one of: classifier, autoencoder\n"
    )


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


TINY_VQGAN_YAML = """\
model:
  params:
    embed_dim: 4
    n_embed: 16
    ddconfig:
      double_z: false
      z_channels: 4
      resolution: 64
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult:
      - 1
      - 1
      num_res_blocks: 1
      attn_resolutions: []
      dropout: 0.0
"""


@pytest.mark.parametrize("entry", XRV_ENTRIES, ids=lambda e: e.name)
def test_explain_refuses_a_malicious_weights_file(entry, tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "marker"
    path = tmp_path / entry.weights_location().name
    torch.save(_Payload(marker), path)
    if entry.xrv_kind == "vqgan":
        path.with_suffix(".yaml").write_text(TINY_VQGAN_YAML)
    image = tmp_path / "x.png"
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(image)
    option = "--classifier" if entry.kind == "classifier" else "--autoencoder"
    result = runner.invoke(
        app, ["explain", str(image), option, str(path), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and path.name in errors[0], result.output
    assert "refused without unpickling it" in errors[0]
    assert not marker.exists()
