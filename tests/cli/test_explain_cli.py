"""End to end: `gifsplanation explain` and `demo` on generated, shared and pydicom files,
then the report opened in headless Chromium."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gifsplanation.cli import app, common
from gifsplanation.pixels import to_uint8
from gifsplanation.testing import BlobData, write_png

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
runner = CliRunner()


def _dirs(out: Path) -> dict[str, Path]:
    """Output folder of each (image name, target) in a run, from its manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {e["name"]: out / e["dir"] for e in manifest["entries"] if e["dir"]}


def _blob_pngs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    x, _, _ = BlobData(seed=11).batch(4, positive=True)
    # Larger than the model input so loading crops and resizes.
    big = [np.kron(to_uint8(x[k, 0].numpy()), np.ones((3, 4), np.uint8)) for k in range(4)]
    files = {
        "gray8": folder / "gray8.png",
        "gray16": folder / "gray16.png",
        "rgb": folder / "rgb.png",
        "jpg": folder / "photo.jpg",
    }
    write_png(x[0], files["gray8"], repeat=(3, 4))
    Image.fromarray(big[1].astype(np.uint16) * 257).save(files["gray16"])
    Image.fromarray(np.stack([big[2]] * 3, -1)).save(files["rgb"])
    Image.fromarray(big[3]).save(files["jpg"], quality=95)
    return files


def test_explain_generated_images_with_a_corrupt_one_then_rerun(tiny_cli, tmp_path):
    files = _blob_pngs(tmp_path / "in")
    (tmp_path / "in" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"
    args = [
        "explain",
        str(tmp_path / "in"),
        "--out",
        str(out),
        "--frames",
        "5",
        "--map",
        "max",
        "--map",
        "interval",
        "--no-progress",
        "--batch-size",
        "4",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "4 explained, 0 already finished (skipped), 0 refused" in result.output
    assert "1 failed" in result.output
    assert "corrupt.png" in result.output and "Traceback" not in result.output
    # rgb.png is a grey image stored as RGB with identical channels: read silently.
    assert "converted to grayscale" not in " ".join(result.output.split())

    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {e["name"]: e for e in manifest["entries"]}
    assert by_name["corrupt"]["status"] == "failed"
    assert {by_name[f.stem]["status"] for f in files.values()} == {"done"}
    dirs = _dirs(out)
    for f in files.values():
        folder = dirs[f.stem]
        assert folder.parent.name.startswith(f.stem + "-") and folder.name == "blob"
        gif = Image.open(folder / "latentshift.gif")
        assert gif.n_frames == 8
        assert gif.size == (3 * 224 + 40, 18 + 224 + 15 + 6)  # 32 px panels upscaled ×7
        for name in (
            "map-max.png",
            "map-interval.png",
            "map-interval.npy",
            "curve.png",
            "flow.png",
            "latentshift.mp4",
            "report.html",
        ):
            assert (folder / name).is_file(), name
        record = json.loads((folder / "explanation.json").read_text())
        assert len(record["lambdas"]) == 5 and record["target_name"] == "blob"
        assert record["models"]["classifier"]["name"] == "tiny-blob-classifier"
        assert record["arguments"]["command"] == "explain"
    assert tiny_cli[0] == (None, None, "cpu")

    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert "0 explained, 4 already finished (skipped), 0 refused" in again.output


def test_explain_targets_csv_input_and_demo(tiny_cli, tmp_path):
    files = _blob_pngs(tmp_path / "in")
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        w.writerow(["in/gray8.png", "x"])
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "explain",
            str(tmp_path / "list.csv"),
            "-t",
            "blob",
            "-o",
            str(out),
            "--frames",
            "4",
            "--no-mp4",
            "--no-flow",
            "--strategy",
            "paper",
            "--seed",
            "3",
            "--frame-only",
            "--duration-ms",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    folder = _dirs(out)["gray8"]
    record = json.loads((folder / "explanation.json").read_text())
    assert record["strategy"] == "paper" and record["seed"] == 3
    assert not (folder / "latentshift.mp4").exists()
    gif = Image.open(folder / "latentshift.gif")
    assert gif.size == (224, 18 + 224 + 6) and gif.info["duration"] == 50
    assert record["arguments"]["side_by_side"] is False
    assert files

    demo = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--frames", "4"])
    assert demo.exit_code == 0, demo.output
    assert "report.html" in demo.output and "\nExplained: the demo image" in demo.output
    assert (_dirs(tmp_path / "demo")["demo"] / "latentshift.gif").is_file()
    again = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--frames", "4"])
    assert "\nAlready explained (skipped)" in again.output, again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "best"], "--map 'best' is not one of"),
        (["--strategy", "slow"], "--strategy 'slow' is not one of"),
        (["--target", "lungs"], "unknown target 'lungs'"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--threshold-mode", "percent"], "--threshold-mode 'percent' is not one of"),
        (["--lower-change", "-0.1"], "lower_change must be > 0"),
        (["--max-lambda", "0"], "max_lambda must be > 0"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tiny_cli, tmp_path, args, message):
    files = _blob_pngs(tmp_path / "in")
    result = runner.invoke(app, ["explain", str(files["gray8"]), "-o", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert any(message in ln for ln in lines) and "Traceback" not in result.output


def test_no_matching_files_and_model_errors(tiny_cli, tmp_path, monkeypatch):
    result = runner.invoke(app, ["explain", str(tmp_path / "*.png")])
    assert result.exit_code == 2 and "matched no files" in result.output

    def broken(*a):
        raise OSError("weights file cxr.pt is missing")

    monkeypatch.setattr(common, "load_models", broken)
    (tmp_path / "a.png").write_bytes(b"x")
    result = runner.invoke(app, ["explain", str(tmp_path / "a.png")])
    assert result.exit_code == 1
    assert result.output.strip() == "error: cannot load the models: weights file cxr.pt is missing"


def test_explain_shared_real_images_and_dicoms(tiny_cli, shared_data, tmp_path):
    folder = shared_data / "xrv-test-images"
    rows = list(csv.DictReader(open(shared_data / "covid-qu-ex" / "train.csv")))
    qu = [str(shared_data / "covid-qu-ex" / rows[k]["image"]) for k in (0, len(rows) - 1)]
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["explain", str(folder), *qu, "-o", str(out), "--frames", "4", "--no-mp4", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["done"] == len(list(folder.iterdir())) + 2
    names = {e["name"] for e in manifest["entries"]}
    assert "Fake_MONOHR1" in names
    assert "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819" in names


def test_explain_pydicom_test_files(tiny_cli, tmp_path):
    from pydicom.data import get_testdata_file

    good = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"]
    for name in [*good, "examples_rgb_color.dcm"]:
        shutil.copy(get_testdata_file(name), tmp_path / name)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "explain",
            str(tmp_path / "*.dcm"),
            "-o",
            str(out),
            "--frames",
            "4",
            "--no-mp4",
            "--no-flow",
            "--no-progress",
        ],
    )
    assert result.exit_code == 1
    assert "examples_rgb_color.dcm" in result.output and "colour" in result.output
    dirs = _dirs(out)
    for name in good:
        assert (dirs[Path(name).stem] / "report.html").is_file(), name


def test_report_renders_in_chromium(tiny_cli, tmp_path, artifacts):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed at /usr/bin/chromium")
    files = _blob_pngs(tmp_path / "in")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["explain", str(files["gray8"]), "-o", str(out), "--frames", "6", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = _dirs(out)["gray8"] / "report.html"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            sizes = {
                key: page.eval_on_selector(f"#asset-{key}", "e => [e.naturalWidth, e.complete]")
                for key in ("gif", "map-max", "curve", "flow")
            }
            page.screenshot(path=str(artifacts / "explain-report.png"), full_page=True)
            page.goto((out / "index.html").as_uri())
            links = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
            page.wait_for_function(
                "() => { const t = document.querySelector('img.thumb');"
                " return t && t.complete && t.naturalWidth > 0; }",
                timeout=15000,
            )
        finally:
            browser.close()
    assert sizes["gif"] == [3 * 224 + 40, True]
    assert all(w > 0 and ok for w, ok in sizes.values())
    assert any(link.endswith(f"{report.parent.parent.name}/blob/report.html") for link in links)


@pytest.mark.slow
def test_demo_with_the_bundled_models(tmp_path):
    """The README's command, unpatched: bundled models and demo image, fully offline."""
    try:
        common.load_models(None, None, "cpu")
    except Exception as e:  # noqa: BLE001 - weights not built/installed yet
        pytest.skip(f"bundled models unavailable: {type(e).__name__}: {e}")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--frames", "5"])
    assert result.exit_code == 0, result.output
    reports = list(tmp_path.glob("demo-*/COVID-19/report.html"))  # what the image shows
    assert len(reports) == 1 and "report.html" in result.output
    record = json.loads((reports[0].parent / "explanation.json").read_text())
    assert record["models"]["classifier"]["weights_sha256"]
    assert record["models"]["autoencoder"]["weights_sha256"]
    assert Image.open(reports[0].parent / "latentshift.gif").n_frames == 8


def test_search_options_reach_the_engine(tiny_cli, tmp_path):
    files = _blob_pngs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["explain", str(files["gray8"]), "-o", str(out), "--no-mp4", "--no-flow"]
    result = runner.invoke(
        app, [*args, "--upper-change", "0", "--max-lambda", "1000", "--threshold-mode", "absolute"]
    )
    assert result.exit_code == 0, result.output
    (record_path,) = out.glob("*/*/explanation.json")
    record = json.loads(record_path.read_text())
    config = record["config"]
    assert config["upper_change"] is None and config["max_lambda"] == 1000
    assert config["threshold_mode"] == "absolute"
    assert "disabled" in json.dumps(record)


def test_an_unusable_out_fails_before_any_model_is_loaded(tiny_cli, tmp_path):
    files = _blob_pngs(tmp_path / "in")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "index.html").write_text("<p>my own page</p>")
    (tmp_path / "a-file").write_text("x")
    for out, message in (
        ("taken", "index.html exists and was not written"),
        ("a-file", "is a file"),
    ):
        result = runner.invoke(app, ["explain", str(files["gray8"]), "-o", str(tmp_path / out)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert tiny_cli == []  # no model was loaded
    assert (tmp_path / "taken" / "index.html").read_text() == "<p>my own page</p>"


def test_ctrl_c_says_what_finished_and_how_to_resume(tiny_cli, tmp_path):
    files = _blob_pngs(tmp_path / "in")
    from gifsplanation.runs import outputs

    real, calls = outputs.write_explanation, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "out"
    args = ["explain", str(tmp_path / "in"), "-o", str(out), "--no-mp4", "--no-flow"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("gifsplanation.runs.runner.write_explanation", interrupt_second)
        result = runner.invoke(app, [*args, "--images-per-call", "1"])
    assert result.exit_code == 130, result.output
    assert "1 explained" in result.output
    assert "run the same command again to finish the rest" in result.output
    assert json.loads((out / "manifest.json").read_text())["interrupted"] is True
    again = runner.invoke(app, [*args, "--images-per-call", "1"])
    assert again.exit_code == 0, again.output
    assert f"{len(files) - 1} explained, 1 already finished (skipped)" in again.output


def test_an_absent_target_is_said_on_the_command_line(tiny_cli, tmp_path):
    x, _, _ = BlobData(seed=5).batch(1, positive=False)
    write_png(x[0], tmp_path / "clear.png")
    result = runner.invoke(
        app, ["explain", str(tmp_path / "clear.png"), "-o", str(tmp_path / "out"), "-t", "blob"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "does not find blob here" in text and "the frames show what would add it" in text
