"""`gifsplanation models`: every registry name, with targets and weight availability."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gifsplanation.cli import app
from gifsplanation.models import list_models
from gifsplanation.models import xrv as xrv_loader

runner = CliRunner()


def test_models_table_lists_every_name() -> None:
    result = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for entry in list_models():
        assert entry.name in result.output
    assert "probability" in result.output and "[-1024, 1024]" in result.output


def test_models_json_reports_availability(tmp_path: Path) -> None:
    name = xrv_loader.weights_filename("densenet", "densenet121-res224-mimic_ch")
    (tmp_path / name).write_bytes(b"placeholder")  # availability = the file is there
    result = runner.invoke(app, ["models", "--json", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["xrv-densenet121-mimic_ch"]["available"] is True
    assert rows["xrv-densenet121-all"]["available"] is False
    assert rows["xrv-densenet121-all"]["weights"].startswith(str(tmp_path))
    assert rows["cxr-classifier"]["targets"] == ["COVID-19", "Non-COVID pneumonia", "Normal"]
    assert rows["xrv-resnetae-101-elastic"]["kind"] == "autoencoder"


def test_models_kind_filter_and_bad_kind() -> None:
    result = runner.invoke(app, ["models", "--json", "--kind", "autoencoder"])
    assert result.exit_code == 0
    assert {r["kind"] for r in json.loads(result.output)} == {"autoencoder"}
    bad = runner.invoke(app, ["models", "--kind", "segmenter"])
    assert bad.exit_code != 0
