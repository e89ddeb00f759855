"""TorchXRayVision weights: never unpickled with code execution (malicious pickles under every
XRV file name, by path, as ``weights=PATH`` and in the cache), genuine-format files load
through the safe path and give XRV's own outputs, named outputs only, corrupt files and
the CXR VQGAN (tiny local config + checkpoint through the real loading code)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from xrv_files import (
    PAYLOADS,
    vqgan_names,
    write_malicious,
    write_tiny_vqgan,
    write_tiny_vqgan_config,
    write_xrv_densenet,
)

from gifsplanation.models import (
    WeightsUnavailableError,
    get_autoencoder,
    get_classifier,
    get_entry,
    list_models,
)
from gifsplanation.models import xrv as xrv_loader
from gifsplanation.models.xrv import PickledObject, WeightsFileError, safe_unpickle

xrv = xrv_loader.import_xrv()
XRV_ENTRIES = [e for e in list_models() if e.source == "torchxrayvision"]


def _get(kind: str):
    return get_classifier if kind == "classifier" else get_autoencoder


def _assert_refused(err: pytest.ExceptionInfo, path: Path, marker: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path.name) in msg, msg
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("entry", XRV_ENTRIES, ids=lambda e: e.name)
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_malicious_pickle_under_every_xrv_name_is_refused(
    entry, payload: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    folder = tmp_path / "cache"
    path = write_malicious(folder / entry.weights_location().name, marker, payload)
    if entry.xrv_kind == "vqgan":  # the checkpoint is read once its config checks out
        write_tiny_vqgan_config(folder, str(entry.xrv_weights))
    get = _get(entry.kind)
    with pytest.raises(WeightsFileError) as err:  # a path with XRV's file name
        get(str(path))
    _assert_refused(err, path, marker)
    with pytest.raises(WeightsFileError) as err:  # weights=PATH
        get(entry.name, weights=path)
    _assert_refused(err, path, marker)
    with pytest.raises(WeightsFileError) as err:  # planted in the cache
        get(entry.name, cache_dir=folder, download=False)
    _assert_refused(err, path, marker)
    assert "refused without unpickling it" in str(err.value)


@pytest.mark.parametrize("kind", ["densenet", "vqgan"])
def test_malicious_legacy_format_pickle_is_refused(kind: str, tmp_path: Path) -> None:
    entry = next(e for e in XRV_ENTRIES if e.xrv_kind == kind)
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / entry.weights_location().name, marker, legacy=True)
    write_tiny_vqgan_config(tmp_path, "cxr2-vqgan-768-sd")
    with pytest.raises(WeightsFileError) as err:
        _get(entry.kind)(path)
    _assert_refused(err, path, marker)


def test_allowed_classes_are_inert_stand_ins(tmp_path: Path, monkeypatch) -> None:
    """A class a weights file may name (here Conv2d, called with arguments through the
    pickle's REDUCE) is never constructed: an inert stand-in records the arguments."""

    class CallsConv:
        def __reduce__(self):
            return (torch.nn.Conv2d, (1, 1, 1))

    calls = []
    real_init = torch.nn.Conv2d.__init__

    def spy(self, *args, **kwargs):
        calls.append(args)
        real_init(self, *args, **kwargs)

    path = tmp_path / "calls.pt"
    torch.save({"layer": CallsConv()}, path)
    monkeypatch.setattr(torch.nn.Conv2d, "__init__", spy)
    for legacy in (False, True):
        torch.save({"layer": CallsConv()}, path, _use_new_zipfile_serialization=not legacy)
        obj = safe_unpickle(
            path, {"torch.nn.modules.conv.Conv2d"}.__contains__, "a test file", "try again"
        )
        layer = obj["layer"]
        assert isinstance(layer, PickledObject) and not isinstance(layer, torch.nn.Module)
        assert layer.pickled_as == "torch.nn.modules.conv.Conv2d"
        assert layer.pickled_args == (1, 1, 1)
    assert calls == []


@pytest.mark.parametrize("entry", XRV_ENTRIES, ids=lambda e: e.name)
def test_corrupt_file_with_an_xrv_name_gives_one_line(entry, tmp_path: Path) -> None:
    path = tmp_path / entry.weights_location().name
    path.write_bytes(b"\x80\x02not really a pickle" + bytes(range(256)))
    if entry.xrv_kind == "vqgan":
        write_tiny_vqgan_config(tmp_path, str(entry.xrv_weights))
    with pytest.raises(WeightsFileError) as err:
        _get(entry.kind)(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "download the genuine file" in msg
    # a truncated zip (an interrupted copy of a real torch.save file)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    path.write_bytes(good.read_bytes()[:600])
    with pytest.raises(WeightsFileError) as err:
        _get(entry.kind)(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_file_that_does_not_fit_the_architecture_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / xrv_loader.weights_filename("densenet", "densenet121-res224-all")
    small = xrv.models.DenseNet(weights=None, num_classes=18, block_config=(1, 1, 1, 1))
    torch.save(small.state_dict(), path)
    with pytest.raises(WeightsFileError, match=r"does not fit .* missing") as err:
        get_classifier(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("weights", ["densenet121-res224-all", "densenet121-res224-rsna"])
def test_genuine_format_densenet_gives_xrvs_outputs(
    weights: str, legacy: bool, tmp_path: Path
) -> None:
    path = write_xrv_densenet(tmp_path, weights, legacy=legacy)
    name = "xrv-densenet121-" + weights.rsplit("-", 1)[1]
    entry = get_entry(name)
    clf = get_classifier(name, cache_dir=tmp_path, download=False)
    ref = xrv.models.DenseNet(weights=weights, cache_dir=str(tmp_path))  # XRV's own loading
    x = torch.randn(2, 1, 224, 224).clamp(-3, 3) * 300
    with torch.no_grad():
        ours, theirs = clf(x), ref(x)
    keep = list(entry.xrv_outputs)
    assert ours.shape == (2, len(keep))
    torch.testing.assert_close(ours, theirs[:, keep])
    assert clf.targets == entry.targets == [ref.targets[i] for i in keep]
    assert clf.xrv_outputs == keep and not clf.training
    assert clf.weights_path == str(path) and clf.output_kind == "probability"


def test_every_xrv_densenet_exposes_only_named_calibrated_outputs() -> None:
    for w in ("all", "nih", "pc", "chex", "rsna", "mimic_nb", "mimic_ch"):
        entry = get_entry(f"xrv-densenet121-{w}")
        info = xrv.models.model_urls[f"densenet121-res224-{w}"]
        assert entry.targets and all(entry.targets)
        assert entry.targets == [info["labels"][i] for i in entry.xrv_outputs]
        kept = torch.tensor(info["op_threshs"], dtype=torch.float32)[list(entry.xrv_outputs)]
        assert not kept.isnan().any()
    assert get_entry("xrv-densenet121-rsna").targets == ["Pneumonia", "Lung Opacity"]


# ResNetAE and JF Healthcare files in XRV's formats: tests/models/test_registry.py


# ------------------------------------------------------------------------------ the VQGAN


def test_vqgan_entries_are_listed() -> None:
    names = [e.name for e in list_models("autoencoder")]
    assert "xrv-vqgan-768-sd" in names and "xrv-vqgan-768-msdd" in names
    entry = get_entry("xrv-vqgan-768-msdd")
    files = [p.name for p, _ in entry.files()]
    assert files == list(vqgan_names("cxr2-vqgan-768-msdd"))


def test_vqgan_round_trip_resizes_to_the_input_size(tmp_path: Path) -> None:
    ckpt, config = write_tiny_vqgan(tmp_path)
    ae = get_autoencoder("xrv-vqgan-768-sd", cache_dir=tmp_path, download=False)
    assert ae.name == "xrv-vqgan-768-sd" and ae.weights_path == str(ckpt)
    assert ae.input_size == 224 and ae.latent_shape == (4, 16, 16)
    x = torch.randn(2, 1, 224, 224).clamp(-3, 3) * 300
    z = ae.encode(x)
    assert z.shape == (2, *ae.latent_shape)
    z = z.detach().requires_grad_(True)
    out = ae.decode(z)
    assert out.shape == (2, 1, 224, 224)  # the classifier's size, for the engine's batches
    assert out.min() >= -1024 and out.max() <= 1024
    out.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # differentiable in the latents
    # XRV's own VQGAN on the same files: the same latents and (resized) images
    ref = xrv.baseline_models.ieee8023.VQGAN(ckpt_path=str(ckpt), yaml_path=str(config))
    with torch.no_grad():
        torch.testing.assert_close(ae.encode(x), ref.encode(x))
        big = ref.decode(ref.encode(x))
        assert big.shape == (2, 1, 64, 64)
        up = F.interpolate(big, size=(224, 224), mode="bilinear", align_corners=False)
        torch.testing.assert_close(ae(x), up)
    # the same files passed by path (either of the pair) and as weights=PATH
    other = tmp_path / "copy"
    other.mkdir()
    for f in (ckpt, config):
        shutil.copy(f, other / f.name)
    assert get_autoencoder(other / config.name).name == "xrv-vqgan-768-sd"
    alone = tmp_path / "alone"  # a checkpoint without its config
    alone.mkdir()
    shutil.copy(ckpt, alone / ckpt.name)
    with pytest.raises(FileNotFoundError, match=f"needs its config {config.name}"):
        get_autoencoder(alone / ckpt.name)
    assert get_autoencoder("xrv-vqgan-768-sd", weights=other / ckpt.name).latent_shape == (
        4,
        16,
        16,
    )


@pytest.mark.slow
def test_vqgan_at_768_decodes_to_the_input_size(tmp_path: Path) -> None:
    ckpt, _ = write_tiny_vqgan(tmp_path, resolution=768, levels=5)  # a 48x48 latent grid
    ae = get_autoencoder(ckpt)
    assert ae.resolution == 768 and ae.latent_shape == (4, 48, 48)
    x = torch.zeros(1, 1, 224, 224)
    with torch.no_grad():
        z = ae.encode(x)
        assert z.shape == (1, 4, 48, 48) and ae.vqgan.decode(z).shape == (1, 1, 768, 768)
        assert ae.decode(z).shape == (1, 1, 224, 224)


def test_vqgan_offline_error_names_both_files(tmp_path: Path, monkeypatch) -> None:
    import requests

    def refuse(url: str, filename: str) -> None:
        raise requests.exceptions.ConnectionError("no network in this test")

    monkeypatch.setattr(xrv.utils, "download", refuse)
    ckpt_name, config_name = vqgan_names("cxr2-vqgan-768-sd")
    with pytest.raises(WeightsUnavailableError) as err:
        get_autoencoder("xrv-vqgan-768-sd", cache_dir=tmp_path)
    msg = str(err.value)
    assert "could not be downloaded (ConnectionError)" in msg and "\n" not in msg
    for name in (ckpt_name, config_name):
        assert str(tmp_path / name) in msg
        assert f"https://github.com/mlmed/torchxrayvision/releases/download/v1/{name}" in msg
    assert "--autoencoder PATH" in msg and "weights=PATH" in msg
    write_tiny_vqgan_config(tmp_path, "cxr2-vqgan-768-sd")  # only the config is here
    with pytest.raises(WeightsUnavailableError, match="downloading is off"):
        get_autoencoder("xrv-vqgan-768-sd", cache_dir=tmp_path, download=False)
    assert not get_entry("xrv-vqgan-768-sd").available(tmp_path)


@pytest.mark.parametrize(
    "change, problem",
    [
        ("ch: 32", "ch: 100000"),
        ("num_res_blocks: 1", "num_res_blocks: many"),
        ("in_channels: 3", "in_channels: 1"),
        ("resolution: 64", "resolution: 4096"),  # a 1024^2 attention grid
        ("n_embed: 16", "n_embed: 16\n    ddconfig2: {}"),  # harmless extra key: accepted
    ],
)
def test_vqgan_config_is_bounded_before_anything_is_built(
    change: str, problem: str, tmp_path: Path
) -> None:
    config = write_tiny_vqgan_config(tmp_path, "cxr2-vqgan-768-sd")
    config.write_text(config.read_text().replace(change, problem))
    if "ddconfig2" in problem:
        assert xrv_loader.vqgan_config(config)["n_embed"] == 16
        return
    with pytest.raises(WeightsFileError) as err:
        xrv_loader.vqgan_config(config)
    assert str(config) in str(err.value) and "\n" not in str(err.value)


def test_vqgan_parameter_limit(tmp_path: Path) -> None:
    config = write_tiny_vqgan_config(tmp_path, "cxr2-vqgan-768-sd")
    text = config.read_text().replace("ch: 32", "ch: 1024").replace("- 1\n", "- 8\n")
    config.write_text(text)  # 8192-channel blocks: billions of parameters
    with pytest.raises(WeightsFileError, match=r"M parameters, above the limit"):
        xrv_loader.vqgan_config(config)


def test_read_yaml_subset(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "# comment\na:\n  b: 1\n  c:\n  - 1\n  - 2.5\n  d: [3, 4]\n  e: 'x: y'\n"
        "  f: true\n  g: null\nh: text  # trailing comment\n"
    )
    assert xrv_loader.read_yaml(path) == {
        "a": {"b": 1, "c": [1, 2.5], "d": [3, 4], "e": "x: y", "f": True, "g": None},
        "h": "text",
    }
    path.write_text("a: !!python/object:os.system x\n")
    with pytest.raises(ValueError, match="unsupported YAML"):
        xrv_loader.read_yaml(path)
