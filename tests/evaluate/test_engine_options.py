"""Engine options reach every LatentShift the experiments build, the manifest records all
of them, and a folder written with other options is never resumed."""

from __future__ import annotations

import json

import pytest

from gifsplanation._core.latent_shift import LatentShift
from gifsplanation.evaluate import (
    Setup,
    run_ae_impact,
    run_counterfactuals,
    run_iou,
    run_randomization,
    run_robustness,
)
from gifsplanation.evaluate.engine import EngineOptions, parse_lambda_range, split_variant
from gifsplanation.evaluate.maps import build_methods
from gifsplanation.methods import get_method

CUSTOM = EngineOptions(
    mode="reconstruction",
    strategy="paper",
    n_frames=5,
    batch_size=3,
    lower_change=0.2,
    upper_change=None,
    threshold_mode="absolute",
    max_lambda=123,
    max_image_change=0.4,
)


def _setup(tiny, dataset, out, methods, engine=None, limit=2, **kw):
    clf, ae, _ = tiny
    return Setup(
        classifier=clf,
        autoencoder=ae,
        dataset=dataset,
        out=out,
        methods=methods,
        limit=limit,
        seed=0,
        progress=False,
        engine=engine or EngineOptions(),
        **kw,
    )


def test_engine_options_validate_and_convert():
    opts = EngineOptions(max_lambda=1000, lambda_range=(-5, 0))
    kw = opts.kwargs()
    assert kw["max_lambda"] == 1000.0 and kw["mode"] == "residual"
    assert kw["lambda_range"] == (-5.0, 0.0)
    engine = LatentShift(*_two_models(), **kw)  # every key is a LatentShift argument
    assert engine.config.max_lambda == 1000.0 and engine.config.lambda_range == (-5.0, 0.0)
    rec = opts.record()
    assert rec["lambda_range"] == [-5.0, 0.0] and rec["rtol"] == 0.05
    assert set(rec) >= {
        "mode",
        "strategy",
        "n_frames",
        "batch_size",
        "lower_change",
        "upper_change",
        "threshold_mode",
        "max_lambda",
        "max_image_change",
        "lambda_range",
        "ood",
        "pixel_range",
    }
    assert json.loads(json.dumps(rec)) == rec
    assert EngineOptions(max_lambda=1000).record() == EngineOptions(max_lambda=1000.0).record()
    assert EngineOptions(mode="both").modes == ("residual", "reconstruction")
    with pytest.raises(ValueError, match="pass the frame mode"):
        EngineOptions(mode="both").kwargs()
    for bad in ({"mode": "paper"}, {"strategy": "slow"}, {"ood": "ignore"}, {"max_lambda": 0}):
        with pytest.raises(ValueError):
            EngineOptions(**bad)
    with pytest.raises(ValueError, match="lo <= 0 <= hi"):
        EngineOptions(lambda_range=(1, 2))
    assert parse_lambda_range("-500, 0") == (-500.0, 0.0)
    assert parse_lambda_range("") is None
    with pytest.raises(ValueError, match="LO,HI"):
        parse_lambda_range("-500")
    assert split_variant("latentshift-max@reconstruction") == ("latentshift-max", "reconstruction")
    assert split_variant("grad") == ("grad", None)


def _two_models():
    from gifsplanation.testing import tiny_models

    clf, ae, _ = tiny_models()
    return clf, ae


def test_every_experiment_builds_its_engines_from_the_options(
    tiny, blob_dataset, tmp_path, monkeypatch
):
    """A spy on LatentShift.__init__: every engine built (directly, or through
    get_method("latentshift-...")) got the run's options, in each experiment."""
    built: list[tuple[str, dict]] = []
    real_init = LatentShift.__init__

    def spy(self, classifier, autoencoder, **kwargs):
        real_init(self, classifier, autoencoder, **kwargs)
        built.append((self.mode, {**kwargs}))

    monkeypatch.setattr(LatentShift, "__init__", spy)
    want = CUSTOM.kwargs()
    ls = ["latentshift-max"]
    runs = {
        "iou": lambda s: run_iou(s),
        "randomization": lambda s: run_randomization(s, n_steps=1),
        "robustness": lambda s: run_robustness(s, noise_levels=(0, 1), blur_sigmas=(0,)),
        "counterfactuals": lambda s: run_counterfactuals(s),
    }
    for name, fn in runs.items():
        built.clear()
        fn(_setup(tiny, blob_dataset, tmp_path / name, ls, CUSTOM, limit=1))
        assert built, name
        for mode, kwargs in built:
            assert mode == "reconstruction", name
            assert {k: kwargs[k] for k in want} == want, name
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["engine"] == CUSTOM.record() == manifest["args"]["engine"], name
        assert manifest["engine"]["max_lambda"] == 123.0
        assert manifest["engine"]["mode"] == "reconstruction"


def test_get_method_passes_every_engine_option(tiny):
    clf, ae, _ = tiny
    m = get_method("latentshift-max", classifier=clf, autoencoder=ae, **CUSTOM.kwargs())
    assert m.engine.mode == "reconstruction" and m.engine.strategy == "paper"
    assert m.engine.n_frames == 5 and m.engine.batch_size == 3
    assert m.engine.config.max_lambda == 123.0 and m.engine.config.upper_change is None
    assert m.engine.config.threshold_mode == "absolute"


def test_method_options_cannot_contradict_the_recorded_engine(tiny, blob_dataset, tmp_path):
    with pytest.raises(ValueError, match="engine options \\['max_lambda'\\]"):
        _setup(
            tiny,
            blob_dataset,
            tmp_path,
            ["latentshift-max"],
            method_options={"latentshift-max": {"max_lambda": 5}},
        )
    # Options that are not engine settings still pass through.
    s = _setup(
        tiny,
        blob_dataset,
        tmp_path,
        ["latentshift-max"],
        method_options={"latentshift-max": {"smooth_sigma": 1.0}},
    )
    assert s.method_options["latentshift-max"]["smooth_sigma"] == 1.0
    assert s.method_options["latentshift-max"]["max_lambda"] == 10000.0


def test_mode_both_runs_each_method_in_both_modes_on_the_same_images(tiny, blob_dataset, tmp_path):
    setup = _setup(
        tiny, blob_dataset, tmp_path, ["grad", "latentshift-max"], EngineOptions(mode="both"), 3
    )
    assert setup.methods == ["grad", "latentshift-max@residual", "latentshift-max@reconstruction"]
    methods = build_methods(setup.methods, tiny[0], tiny[1], setup.method_options)
    assert methods["latentshift-max@reconstruction"].engine.mode == "reconstruction"
    assert methods["latentshift-max@residual"].engine.mode == "residual"
    result = run_iou(setup)
    modes = {(r["item"], r["mode"]) for r in result["rows"] if r["method"] != "grad"}
    items = {r["item"] for r in result["rows"]}
    assert modes == {(i, m) for i in items for m in ("residual", "reconstruction")}
    paired = {(p["method"], p["metric"]): p for p in result["paired_modes"]}
    assert set(paired) == {
        ("latentshift-max", "iou"),
        ("latentshift-max", "pointing_game"),
        ("latentshift-max", "relevance_mass"),
    }
    assert all(p["n"] == 3 for p in paired.values())
    assert (tmp_path / "paired_modes.csv").is_file()
    assert "Residual vs reconstruction" in (tmp_path / "table.md").read_text()


def test_a_run_with_other_engine_options_is_refused_not_mixed(tiny, blob_dataset, tmp_path):
    first = run_counterfactuals(_setup(tiny, blob_dataset, tmp_path, [], limit=2))
    with pytest.raises(ValueError, match="mode 'residual' → 'reconstruction'"):
        run_counterfactuals(
            _setup(tiny, blob_dataset, tmp_path, [], EngineOptions(mode="reconstruction"))
        )
    with pytest.raises(ValueError, match="max_lambda 10000.0 → 1000.0"):
        run_counterfactuals(
            _setup(tiny, blob_dataset, tmp_path, [], EngineOptions(max_lambda=1000))
        )
    # The refused runs left the first run's tables alone, and the same options resume.
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["engine"]["mode"] == "residual"
    again = run_counterfactuals(_setup(tiny, blob_dataset, tmp_path, [], limit=2))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["cache"]["misses"] == 0
    assert [r["pred_change"] for r in again["rows"]] == [r["pred_change"] for r in first["rows"]]
    # Other options into another folder: separate manifests that say what differs.
    run_counterfactuals(
        _setup(tiny, blob_dataset, tmp_path / "cap", [], EngineOptions(max_lambda=1000))
    )
    other = json.loads((tmp_path / "cap" / "manifest.json").read_text())
    assert other["engine"]["max_lambda"] == 1000.0 and manifest["engine"]["max_lambda"] == 10000.0
    assert other["fingerprint"] != manifest["fingerprint"]


def test_ae_impact_records_that_it_builds_no_engine(tiny, blob_dataset, tmp_path):
    run_ae_impact(_setup(tiny, blob_dataset, tmp_path, [], limit=1))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["engine"] is None and manifest["args"]["engine"] is None
