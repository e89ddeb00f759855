"""Registry: names, errors, offline behaviour, TorchXRayVision loading from local files,
our checkpoints by path, and the bundled models on real data (skipped when absent)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gifsplanation.models import (
    UnknownModelError,
    WeightsUnavailableError,
    get_autoencoder,
    get_classifier,
    get_entry,
    list_models,
)
from gifsplanation.models import xrv as xrv_loader
from gifsplanation.models.registry import WEIGHTS_DIR

xrv = xrv_loader.import_xrv()


def test_names_cover_the_issue() -> None:
    names = [e.name for e in list_models()]
    for name in (
        "cxr-classifier",
        "cxr-ae",
        "xrv-densenet121-all",
        "xrv-densenet121-mimic_ch",
        "xrv-jfhealthcare",
        "xrv-resnetae-101-elastic",
    ):
        assert name in names
    assert all(e.kind == "classifier" for e in list_models("classifier"))
    assert get_entry("xrv-densenet121-all").targets[0] == "Atelectasis"


def test_importing_xrv_keeps_warning_filters() -> None:
    before = list(warnings.filters)
    xrv_loader.import_xrv()
    assert warnings.filters == before


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(UnknownModelError, match="cxr-classifier.*xrv-jfhealthcare"):
        get_classifier("densenet")
    with pytest.raises(KeyError, match="unknown autoencoder 'xrv-densenet121-all'"):
        get_autoencoder("xrv-densenet121-all")  # a classifier is not an autoencoder
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_classifier("no/such/model.pt")


def test_offline_error_says_which_file_goes_where(tmp_path: Path, monkeypatch) -> None:
    import requests

    def refuse(url: str, filename: str) -> None:
        raise requests.exceptions.ConnectionError("no network in this test")

    monkeypatch.setattr(xrv.utils, "download", refuse)
    with pytest.raises(WeightsUnavailableError) as err:
        get_classifier("xrv-densenet121-all", cache_dir=tmp_path)
    msg = str(err.value)
    expected = tmp_path / xrv_loader.weights_filename("densenet", "densenet121-res224-all")
    assert "could not be downloaded (ConnectionError)" in msg
    assert str(expected) in msg and "--classifier PATH" in msg and "weights=PATH" in msg
    assert "https://github.com/mlmed/torchxrayvision" in msg
    with pytest.raises(WeightsUnavailableError, match="downloading is off"):
        get_autoencoder("xrv-resnetae-101-elastic", cache_dir=tmp_path, download=False)


def _write_xrv_densenet(folder: Path) -> Path:
    """A randomly initialised DenseNet saved as XRV saves it: a pickled whole module."""
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None, num_classes=18)
    path = folder / xrv_loader.weights_filename("densenet", "densenet121-res224-all")
    torch.save(model, path)
    return path


def test_xrv_densenet_loads_from_local_cache_and_path(tmp_path: Path) -> None:
    path = _write_xrv_densenet(tmp_path)
    saved = torch.load(path, weights_only=False).state_dict()
    clf = get_classifier("xrv-densenet121-all", cache_dir=tmp_path, download=False)
    assert clf.name == "xrv-densenet121-all" and clf.output_kind == "probability"
    assert clf.targets == list(xrv.models.model_urls["all"]["labels"])
    assert clf.weights_path == str(path) and len(clf.weights_sha256) == 64
    torch.testing.assert_close(clf.features.conv0.weight, saved["features.conv0.weight"])
    assert not clf.training and clf.op_threshs is not None  # XRV's calibration is on
    out = clf(torch.zeros(1, 1, 224, 224))
    assert out.shape == (1, 18)
    # the same file passed explicitly (any location, any name) and by its own path
    other = tmp_path / "elsewhere.pt"
    other.write_bytes(path.read_bytes())
    clf2 = get_classifier("xrv-densenet121-all", weights=other)
    torch.testing.assert_close(clf2.classifier.weight, clf.classifier.weight)
    clf3 = get_classifier(path)
    assert clf3.name == "xrv-densenet121-all"


@pytest.mark.slow
def test_xrv_resnetae_loads_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ae = xrv.autoencoders.ResNetAE101()
    path = tmp_path / xrv_loader.weights_filename("resnetae", "101-elastic")
    torch.save(ae.state_dict(), path)  # XRV stores a state dict for the AE
    loaded = get_autoencoder("xrv-resnetae-101-elastic", cache_dir=tmp_path, download=False)
    assert loaded.name == "xrv-resnetae-101-elastic" and loaded.weights == "101-elastic"
    torch.testing.assert_close(loaded.conv1.weight, ae.conv1.weight)
    with torch.no_grad():
        z = loaded.encode(torch.zeros(1, 1, 224, 224))
    assert z.shape == (1, 512, 3, 3)
    # the same outputs as XRV's own loading of the file
    ref = xrv.autoencoders.ResNetAE(weights="101-elastic", cache_dir=str(tmp_path))
    x = torch.randn(1, 1, 224, 224).clamp(-3, 3) * 300
    with torch.no_grad():
        z = loaded.encode(x)
        torch.testing.assert_close(z, ref.encode(x))
        torch.testing.assert_close(loaded.decode(z), ref.decode(z))
    assert loaded.weights_metadata == ref.weights_metadata and repr(loaded) == repr(ref)


@pytest.mark.slow
def test_xrv_jfhealthcare_loads_from_local_file_without_imagenet_download(
    tmp_path: Path, monkeypatch
) -> None:
    from torchxrayvision.baseline_models.jfhealthcare import DenseNet as JF

    def refuse(*args, **kwargs):
        raise AssertionError("no download may happen")

    monkeypatch.setattr(xrv.utils, "download", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    import json
    import os

    import torchxrayvision.baseline_models.jfhealthcare as jf_pkg
    from torchxrayvision.baseline_models.jfhealthcare.model import classifier

    with open(os.path.join(os.path.dirname(jf_pkg.__file__), "config", "example.json")) as f:
        conf = json.load(f)
    conf["pretrained"] = False  # a random JF classifier built from JF's own config
    torch.manual_seed(0)
    net = classifier.Classifier(type("Cfg", (), conf)())
    path = tmp_path / "jf.pth"
    torch.save(net.state_dict(), path)
    home = os.environ.get("HOME")
    clf = get_classifier("xrv-jfhealthcare", weights=path)
    assert os.environ.get("HOME") == home  # restored
    assert clf.targets == JF.targets and clf.output_kind == "probability"
    key = next(iter(net.state_dict()))
    torch.testing.assert_close(clf.model.module.state_dict()[key], net.state_dict()[key])
    # the same outputs as XRV's own loading, which reads ~/.torchxrayvision and first
    # fetches torchvision's ImageNet weights (skipped: the JF weights replace them)
    folder = tmp_path / "home" / ".torchxrayvision" / "models_data"
    folder.mkdir(parents=True)
    (folder / xrv_loader.weights_filename("jf", "")).write_bytes(path.read_bytes())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    from torchxrayvision.baseline_models.jfhealthcare.model.backbone import densenet

    monkeypatch.setattr(densenet.model_zoo, "load_url", lambda *a, **k: {})
    ref = JF()
    x = torch.randn(1, 1, 224, 224).clamp(-3, 3) * 300
    with torch.no_grad():
        torch.testing.assert_close(clf(x), ref(x))


def test_our_checkpoint_loads_by_path(tmp_path: Path) -> None:
    from gifsplanation.models import CXRAutoencoder, CXRClassifier
    from gifsplanation.models.checkpoint import export_model

    clf = CXRClassifier(targets=["x", "y"], channels=(4, 8))
    export_model(clf, tmp_path / "c.pt", meta={"note": "test"})
    loaded = get_classifier(tmp_path / "c.pt")
    assert loaded.targets == ["x", "y"] and loaded.output_kind == "probability"
    assert loaded.checkpoint_meta["note"] == "test"
    x = torch.randn(2, 1, 224, 224) * 300
    torch.testing.assert_close(loaded(x), clf.eval()(x), atol=2e-3, rtol=1e-2)  # fp16 storage
    with pytest.raises(ValueError, match="holds a classifier"):
        get_autoencoder(tmp_path / "c.pt")
    ae = CXRAutoencoder(channels=(4, 8), latent_channels=2)
    export_model(ae, tmp_path / "a.pt")
    assert get_autoencoder(str(tmp_path / "a.pt")).latent_shape == (2, 56, 56)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a gifsplanation checkpoint"):
        get_classifier(tmp_path / "junk.pt")


bundled = pytest.mark.skipif(
    not (WEIGHTS_DIR / "cxr-classifier.pt").is_file(), reason="bundled weights not built yet"
)


@bundled
def test_bundled_models_load_offline_with_provenance() -> None:
    from gifsplanation.models import demo_image

    clf, ae = get_classifier(), get_autoencoder()
    assert clf.name == "cxr-classifier" and ae.name == "cxr-ae"
    assert clf.targets == ["COVID-19", "Pneumonia", "Non-COVID pneumonia"]
    assert clf.output_kind == "probability" and clf.input_size == 224
    assert len(clf.weights_sha256) == 64
    assert len(clf.operating_points) == 3 and all(0 < v < 1 for v in clf.operating_points)
    x = demo_image()
    assert x.shape == (1, 1, 224, 224) and -1024 <= x.min() and x.max() <= 1024
    with torch.no_grad():
        p = clf(x)
    assert ((p > 0) & (p < 1)).all() and p.shape == (1, 3)  # independent sigmoids
    old = get_classifier("cxr-classifier-recon-softmax")
    assert old.targets == ["COVID-19", "Non-COVID pneumonia", "Normal"]
    with torch.no_grad():
        assert torch.allclose(old(x).sum(1), torch.ones(1), atol=1e-4)  # softmax
    assert ae.decode(ae.encode(x)).shape == x.shape


@bundled
def test_bundled_models_separate_covid_on_real_images(shared_data: Path) -> None:
    from gifsplanation.datasets import MaskedCXRDataset
    from gifsplanation.metrics import roc_auc

    ds = MaskedCXRDataset(shared_data / "covid-qu-ex" / "train.csv", split="val")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds))[:48].tolist()
    x = torch.stack([ds[i]["image"] for i in idx])
    y = np.array([ds[i]["target"] == 0 for i in idx])
    clf, ae = get_classifier(), get_autoencoder()
    with torch.no_grad():
        p = clf(x)[:, 0].numpy()
        pr = clf(ae.decode(ae.encode(x)))[:, 0].numpy()
    assert roc_auc(p, y) > 0.85
    assert roc_auc(pr, y) > 0.8
