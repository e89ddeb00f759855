"""Training: a couple of steps on a tiny generated dataset, checkpoints, resume, the JSON
record, the exported weights and their sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gifsplanation.models import get_autoencoder, get_classifier
from gifsplanation.models.augment import augment_batch
from gifsplanation.models.checkpoint import sha256_file
from gifsplanation.models.training import TrainConfig, fit_temperature, train


def _cfg(kind: str, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=4, size=32, channels=[4, 8], latent_channels=2, seed=0)
    base.update(kw)
    return TrainConfig(kind=kind, data=str(data), out=str(out), **base)  # type: ignore[arg-type]


def test_classifier_trains_records_and_resumes(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "clf"
    rec = train(_cfg("classifier", tiny_dataset, out, epochs=1), command="test")
    assert rec["status"] == "done" and len(rec["history"]) == 1
    assert rec["data"]["labels"] == ["COVID-19", "Non-COVID pneumonia", "Normal"]
    assert rec["data"]["n_train"] + rec["data"]["n_val"] == 12
    saved = json.loads((out / "run.json").read_text())
    assert saved["command"] == "test" and saved["history"][0]["epoch"] == 1
    assert "temperature" in saved["calibration"]
    # resume: epoch 1 is not repeated, epoch 2 is added, the step counter continues
    rec2 = train(_cfg("classifier", tiny_dataset, out, epochs=2), resume=True)
    assert [h["epoch"] for h in rec2["history"]] == [1, 2]
    assert rec2["history"][1]["step"] == 2 * rec2["history"][0]["step"]
    side = json.loads((out / "model.json").read_text())
    assert side["sha256"] == sha256_file(out / "model.pt")
    assert side["kind"] == "classifier" and side["data"]["n_val"] == rec2["data"]["n_val"]
    clf = get_classifier(out / "model.pt")
    p = clf(torch.zeros(2, 1, 32, 32))
    assert p.shape == (2, 3) and torch.allclose(p.sum(1), torch.ones(2), atol=1e-3)


def test_resume_refuses_a_different_architecture(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ae"
    train(_cfg("autoencoder", tiny_dataset, out, max_steps=2))
    with pytest.raises(ValueError, match="configuration differs"):
        train(_cfg("autoencoder", tiny_dataset, out, latent_channels=3, epochs=2), resume=True)


def test_autoencoder_trains_and_stores_class_mean_latents(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ae"
    rec = train(_cfg("autoencoder", tiny_dataset, out, max_steps=2, epochs=3))
    assert rec["stopped_early"] == "max_steps 2 reached"
    assert rec["history"][-1]["step"] == 2 and rec["final_val"]["mae"] > 0
    ae = get_autoencoder(out / "model.pt")
    z = ae.checkpoint_extras["mean_latent/COVID-19"]
    assert z.shape == ae.latent_shape == (2, 8, 8)
    assert ae.decode(z[None]).shape == (1, 1, 32, 32)


def test_training_is_seeded(tiny_dataset: Path, tmp_path: Path) -> None:
    a = train(_cfg("classifier", tiny_dataset, tmp_path / "a", max_steps=2))
    b = train(_cfg("classifier", tiny_dataset, tmp_path / "b", max_steps=2))
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]


def test_augmentation_is_light_and_in_range() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1024, 1024, 64 * 64).reshape(1, 1, 64, 64).repeat(4, 1, 1, 1)
    y = augment_batch(x, g)
    assert y.shape == x.shape and y.min() >= -1024 and y.max() <= 1024
    assert 0 < (y - x).abs().mean() < 200


def test_temperature_scaling_softens_overconfident_logits() -> None:
    torch.manual_seed(0)
    targets = torch.randint(0, 3, (400,))
    logits = torch.randn(400, 3)
    logits[torch.arange(400), targets] += 1.0
    assert fit_temperature(logits * 5, targets, "softmax") > 2.0


def test_classifier_can_train_on_reconstructions(tiny_dataset: Path, tmp_path: Path) -> None:
    ae_out = tmp_path / "ae"
    train(_cfg("autoencoder", tiny_dataset, ae_out, max_steps=1))
    rec = train(
        _cfg(
            "classifier",
            tiny_dataset,
            tmp_path / "clf",
            max_steps=2,
            recon_autoencoders=[str(ae_out / "model.pt")],
            recon_prob=1.0,
        )
    )
    assert rec["config"]["recon_autoencoders"] == [str(ae_out / "model.pt")]
    plain = train(_cfg("classifier", tiny_dataset, tmp_path / "plain", max_steps=2))
    # every image was swapped for its reconstruction, so the loss differs from plain training
    assert rec["history"][0]["train_loss"] != plain["history"][0]["train_loss"]


def test_resume_from_a_damaged_last_checkpoint_names_the_file(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot resume .*last\.pt: unreadable"):
        train(_cfg("classifier", tiny_dataset, out, epochs=1), resume=True)


def test_a_damaged_dataset_cache_is_rebuilt(tiny_dataset: Path, tmp_path: Path) -> None:
    from gifsplanation.models.training import load_split

    cfg = _cfg("classifier", tiny_dataset, tmp_path / "run", cache_dir=str(tmp_path / "c"))
    _, images, targets = load_split(cfg, "train")
    (cache,) = (tmp_path / "c").iterdir()
    cache.write_bytes(b"truncated")
    _, again, again_targets = load_split(cfg, "train")
    assert torch.equal(images, again) and torch.equal(targets, again_targets)


def test_install_weights_checks_the_hash_and_renames_the_sidecar(tmp_path):
    from gifsplanation.models.checkpoint import install_weights, sidecar_path

    src = tmp_path / "run" / "model.pt"
    src.parent.mkdir()
    src.write_bytes(b"weights")
    sidecar_path(src).write_text(json.dumps({"sha256": sha256_file(src), "name": "run-1"}))
    side = install_weights(src, tmp_path / "w" / "cxr-ae.pt")
    assert (tmp_path / "w" / "cxr-ae.pt").read_bytes() == b"weights"
    assert side["name"] == "cxr-ae" and side["run_name"] == "run-1"
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["cxr-ae.json", "cxr-ae.pt"]
    src.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="model.pt does not match"):
        install_weights(src, tmp_path / "w" / "x.pt")
