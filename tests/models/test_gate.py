"""The out-of-distribution gate's bundled detector, its thresholds and the gate it makes:
photos, noise and inverted radiographs are refused, real chest X-rays pass."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gifsplanation import LatentShift, StopReason
from gifsplanation.io import load_image
from gifsplanation.models import demo_image, get_autoencoder, get_classifier
from gifsplanation.models.gate import (
    FORMAT,
    GateNet,
    autoencoder_ood_record,
    bundled_gate,
    gate_for_autoencoder,
    load_detector,
    n_parameters,
    recon_threshold,
    weights_dir,
)

GATE = weights_dir() / "cxr-gate.pt"
# the SIIM DICOM's pixels relabelled MONOCHROME1: a correct reader inverts them, so it
# loads as an inverted radiograph (bones dark), which the gate must refuse
FAKE_MONOCHROME1 = "Fake_MONOHR1.dcm"


def _as_input(array: np.ndarray, tmp_path: Path, name: str) -> torch.Tensor:
    """An image as a user would bring it: a PNG file read by ``load_image``."""
    path = tmp_path / f"{name}.png"
    Image.fromarray(array).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colour photos warn that they are converted
        return load_image(path)


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


@pytest.fixture(scope="module")
def gate():
    return bundled_gate()


def test_bundled_detector_is_small_and_loads_with_weights_only():
    ckpt = torch.load(GATE, map_location="cpu", weights_only=True)
    assert ckpt["format"] == FORMAT
    assert all(
        v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert GATE.stat().st_size < 1_000_000
    det = load_detector()
    assert isinstance(det, GateNet) and not det.training
    assert n_parameters(det) < 200_000
    assert all(p.dtype == torch.float32 for p in det.parameters())


def test_load_detector_refuses_pickled_code(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(GateNet(), path)  # a whole pickled module: weights_only must refuse it
    with pytest.raises(ValueError, match="not a gate checkpoint"):
        load_detector(path)


def test_load_detector_refuses_mismatched_weights(tmp_path):
    ckpt = torch.load(GATE, map_location="cpu", weights_only=True)
    ckpt["config"]["hidden"] = 7
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="damaged"):
        load_detector(tmp_path / "bad.pt")


def test_thresholds_are_read_from_the_sidecar(tmp_path):
    side = json.loads(GATE.with_suffix(".json").read_text())
    assert 0.5 <= side["detector_threshold"] < 1
    assert bundled_gate().detector_threshold == side["detector_threshold"]
    # a copy whose sidecar says otherwise: the sidecar wins
    shutil.copyfile(GATE, tmp_path / "g.pt")
    (tmp_path / "g.json").write_text(json.dumps({**side, "detector_threshold": 0.77}))
    assert bundled_gate(path=tmp_path / "g.pt").detector_threshold == 0.77
    # a sidecar describing another file is ignored: the checkpoint's own value is used
    (tmp_path / "g.json").write_text(
        json.dumps({**side, "sha256": "0" * 64, "detector_threshold": 0.77})
    )
    ckpt_value = torch.load(GATE, weights_only=True)["meta"]["detector_threshold"]
    assert bundled_gate(path=tmp_path / "g.pt").detector_threshold == ckpt_value


@pytest.mark.parametrize("name", ["cxr-ae-7x7", "cxr-ae-14x14"])
def test_gate_for_bundled_autoencoders_reads_their_recon_threshold(name):
    ae = get_autoencoder(name)
    side = json.loads(Path(ae.weights_path).with_suffix(".json").read_text())
    gate = gate_for_autoencoder(ae)
    assert gate.recon_threshold == side["ood"]["recon_threshold"]
    assert side["ood"]["quantile"] == 0.995 and side["ood"]["n"] > 2000
    assert gate.detector is not None


def test_gate_for_other_autoencoders_is_the_detector_alone(tiny):
    _, ae, _ = tiny
    assert autoencoder_ood_record(ae) is None
    gate = gate_for_autoencoder(ae)
    assert gate.recon_threshold is None and gate.detector is not None


def test_checkpoint_meta_takes_precedence_over_the_sidecar():
    ae = get_autoencoder("cxr-ae-7x7")
    ae.checkpoint_meta = {**ae.checkpoint_meta, "ood": {"recon_threshold": 123.0}}
    assert gate_for_autoencoder(ae).recon_threshold == 123.0


def test_recon_threshold_lets_at_most_the_quantile_pass():
    class Scale:
        def encode(self, x):
            return x

        def decode(self, z):
            return 0.5 * z

    x = torch.arange(1, 1001, dtype=torch.float32).view(1000, 1, 1, 1)  # errors 0.5 ... 500
    t = recon_threshold(Scale(), x, quantile=0.995)
    errors = 0.5 * x.flatten()
    assert t == 498.0  # an observed error, rounded up: 4 of 1000 above
    assert (errors > t).float().mean() <= 0.005


def test_detector_accepts_any_size_and_channels(gate):
    det = gate.detector
    for shape in [(2, 1, 224, 224), (1, 1, 512, 384), (3, 1, 40, 40), (1, 3, 224, 224)]:
        p = det(torch.zeros(shape))
        assert p.shape == (shape[0],) and ((p >= 0) & (p <= 1)).all()


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "camera", "coffee", "moon", "rocket"])
def test_bundled_gate_refuses_scikit_image_photos(gate, tmp_path, name):
    x = _as_input(_skimage(name), tmp_path, name)
    verdict = gate.assess(x, None)
    assert verdict.flagged == [True], verdict.record(0)


def test_bundled_gate_refuses_uniform_noise(gate):
    x = torch.rand(1, 1, 224, 224, generator=torch.Generator().manual_seed(5)) * 2048 - 1024
    assert gate.assess(x, None).flagged == [True]


def test_bundled_gate_passes_the_demo_image_and_refuses_it_inverted(gate):
    x = demo_image()  # a CXR-like image decoded by the bundled autoencoder
    assert gate.assess(x, None).flagged == [False]
    assert gate.assess(-x, None).flagged == [True]
    assert gate.assess(x.flip(3), None).flagged == [False]  # mirrored: still a frontal CXR
    assert gate.assess(x.flip(2), None).flagged == [True]  # upside down
    assert gate.assess(torch.rot90(x, 1, dims=(2, 3)), None).flagged == [True]


def test_latent_shift_refuses_a_photo(tmp_path):
    clf, ae = get_classifier(), get_autoencoder()
    x = _as_input(_skimage("chelsea"), tmp_path, "chelsea")
    exp = LatentShift(clf, ae, gate=bundled_gate()).explain(torch.cat([x, demo_image()]))
    assert exp.refused == [True, False]
    assert exp.stop_reasons[0] == {
        "lower": StopReason.OUT_OF_DISTRIBUTION,
        "upper": StopReason.OUT_OF_DISTRIBUTION,
    }
    assert exp.ood is not None and "p(not a frontal CXR)" in (exp.ood.reason(0) or "")


def _full_gate_flags(ae, x: torch.Tensor) -> list[bool]:
    gate = gate_for_autoencoder(ae)
    assert gate.recon_threshold is not None
    with torch.no_grad():
        return gate.assess(x, ae.decode(ae.encode(x))).flagged


@pytest.mark.shared_data
def test_real_xrv_test_images_pass_the_full_gate(shared_data):
    ae = get_autoencoder("cxr-ae-7x7")
    files = sorted((shared_data / "xrv-test-images").iterdir())
    real = [p for p in files if p.name != FAKE_MONOCHROME1]
    assert len(real) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.cat([load_image(p) for p in real])
        fake = load_image(shared_data / "xrv-test-images" / FAKE_MONOCHROME1)
    flags = _full_gate_flags(ae, x)
    assert flags == [False] * 5, dict(zip([p.name for p in real], flags, strict=True))
    assert _full_gate_flags(ae, fake) == [True]  # it reads as an inverted radiograph


@pytest.mark.shared_data
def test_validation_cxrs_pass_the_full_gate(shared_data):
    from gifsplanation.datasets import MaskedCXRDataset, uint8_to_model

    # the validation split of the bundled models (seed 0, 20%): none of it trained the gate
    ds = MaskedCXRDataset(shared_data / "covid-qu-ex" / "train.csv", split="val", seed=0)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(1))[:50].tolist()
    x = uint8_to_model(torch.stack([torch.from_numpy(ds.load_uint8(i))[None] for i in idx]))
    ae = get_autoencoder("cxr-ae-7x7")
    assert sum(_full_gate_flags(ae, x)) <= 1
    assert sum(_full_gate_flags(ae, x.flip(3))) <= 1  # mirrored
    assert sum(_full_gate_flags(ae, -x)) >= 49  # inverted


@pytest.mark.slow
def test_train_gate_writes_a_loadable_detector_with_its_threshold(tiny_dataset, tmp_path):
    from gifsplanation.models.gate import train_gate

    torch.set_num_threads(1)
    out = tmp_path / "gate.pt"
    side = train_gate(tiny_dataset, out, steps=2, batch_size=8, threads=1)
    det = load_detector(out)
    assert det.threshold == side["detector_threshold"] >= 0.5
    assert json.loads(out.with_suffix(".json").read_text())["sha256"] == det.weights_sha256
    assert side["data"]["n_fit"] + side["data"]["n_calibration"] > 0
