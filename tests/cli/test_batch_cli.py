"""`gifsplanation batch` in one process: a folder with a corrupt file, a rerun that skips,
and one-line errors for a wrong command line. (torchrun runs: tests/test_distributed.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gifsplanation.cli import app
from gifsplanation.testing import BlobData, write_png

runner = CliRunner()


def _folder(root: Path, n: int) -> Path:
    x, _, _ = BlobData(seed=21).batch(n, positive=True)
    for k in range(n):
        write_png(x[k], root / f"scan{k}.png")
    return root


def _args(images: Path, out: Path, *extra: str) -> list[str]:
    return [
        "batch",
        str(images),
        "--out",
        str(out),
        "--frames",
        "4",
        "--images-per-call",
        "2",
        "--workers",
        "1",
        "--no-mp4",
        "--no-flow",
        "--no-progress",
        *extra,
    ]


def test_batch_explains_a_folder_reports_the_bad_file_and_skips_on_rerun(tiny_cli, tmp_path):
    images = _folder(tmp_path / "in", 3)
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"

    first = runner.invoke(app, _args(images, out, "--target", "blob"))
    assert first.exit_code == 1, first.output
    assert "3 explained, 0 already finished (skipped), 0 refused" in first.output
    assert "1 failed" in first.output and "broken.png" in first.output
    assert tiny_cli == [(None, None, "cpu")]
    manifest = json.loads((out / "manifest.json").read_text())
    dirs = {e["name"]: out / e["dir"] for e in manifest["entries"] if e["dir"]}
    for k in range(3):
        record = json.loads((dirs[f"scan{k}"] / "explanation.json").read_text())
        assert record["arguments"]["command"] == "batch"
        assert len(record["lambdas"]) == 4
    assert manifest["counts"] == {"done": 3, "skipped": 0, "refused": 0, "failed": 1}
    assert manifest["world_size"] == 1
    assert [Path(e["image"]).name for e in manifest["entries"]] == [
        "broken.png",
        "scan0.png",
        "scan1.png",
        "scan2.png",
    ]
    assert (out / "index.html").is_file()
    assert not (out / "ranks").exists()  # per-process manifests only with several processes

    again = runner.invoke(app, _args(images, out, "--target", "blob"))
    assert "0 explained, 3 already finished (skipped), 0 refused" in again.output

    forced = runner.invoke(app, _args(images, out, "--target", "blob", "--force", "--workers", "0"))
    assert "3 explained, 0 already finished (skipped), 0 refused" in forced.output


def test_batch_default_target_rerun_skips_without_reexplaining(tiny_cli, tmp_path):
    images = _folder(tmp_path / "in", 2)
    out = tmp_path / "out"
    first = runner.invoke(app, _args(images, out))
    assert first.exit_code == 0, first.output
    assert "2 explained" in first.output
    again = runner.invoke(app, _args(images, out))
    assert again.exit_code == 0, again.output
    assert "0 explained, 2 already finished (skipped), 0 refused" in again.output
    assert "0 failed" in again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--map", "nope"], "--map 'nope' is not one of"),
        (["--strategy", "slow"], "--strategy 'slow' is not one of"),
        (["--target", "elephant"], "unknown target 'elephant'"),
    ],
)
def test_batch_wrong_command_line_is_one_line_exit_2(tiny_cli, tmp_path, extra, message):
    images = _folder(tmp_path / "in", 1)
    result = runner.invoke(app, _args(images, tmp_path / "out", *extra))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_batch_without_images_or_gpu_exits_2(tiny_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, _args(tmp_path / "empty", tmp_path / "out"))
    assert result.exit_code == 2
    assert "no image files found" in result.output
    if not torch.cuda.is_available():
        images = _folder(tmp_path / "in", 1)
        result = runner.invoke(app, _args(images, tmp_path / "out", "--device", "cuda"))
        assert result.exit_code == 2
        assert "no CUDA device" in result.output
