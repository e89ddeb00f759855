"""Classifier training options: multi-label sigmoid outputs with operating points, strong
augmentation, and the auxiliary infection-mask head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gifsplanation.models import get_classifier
from gifsplanation.models.augment import augment_batch
from gifsplanation.models.training import TrainConfig, train

OUTPUTS = ["COVID-19=COVID-19", "Pneumonia=COVID-19|Non-COVID pneumonia"]


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=4, size=32, channels=[4, 8], seed=0, head="sigmoid")
    base.update(kw)
    return TrainConfig(kind="classifier", data=str(data), out=str(out), **base)  # type: ignore[arg-type]


def test_multilabel_outputs_with_operating_points(tiny_dataset: Path, tmp_path: Path) -> None:
    rec = train(_cfg(tiny_dataset, tmp_path / "c", outputs=OUTPUTS), command="test")
    assert rec["data"]["outputs"] == ["COVID-19", "Pneumonia"]
    ops = rec["operating_points"]
    assert set(ops) == {"COVID-19", "Pneumonia"} and all(0 < v < 1 for v in ops.values())
    clf = get_classifier(tmp_path / "c" / "model.pt")
    assert clf.targets == ["COVID-19", "Pneumonia"]
    assert clf.operating_points == [ops["COVID-19"], ops["Pneumonia"]]
    p = clf(torch.zeros(3, 1, 32, 32))
    assert p.shape == (3, 2) and ((p > 0) & (p < 1)).all()  # independent sigmoids


def test_outputs_need_known_labels_and_a_sigmoid_head(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown label"):
        train(_cfg(tiny_dataset, tmp_path / "a", outputs=["X=cat"]))
    with pytest.raises(ValueError, match="needs head='sigmoid'"):
        train(_cfg(tiny_dataset, tmp_path / "b", outputs=OUTPUTS, head="softmax"))


def test_mask_head_trains_and_is_unused_at_inference(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = _cfg(
        tiny_dataset,
        tmp_path / "m",
        outputs=OUTPUTS,
        mask_weight=1.0,
        augment_strength="strong",
        max_steps=2,
    )
    train(cfg)
    clf = get_classifier(tmp_path / "m" / "model.pt")
    logits, mask = clf.logits_and_mask(torch.zeros(2, 1, 32, 32))
    assert logits.shape == (2, 2) and mask.shape[:2] == (2, 1)
    assert torch.allclose(clf.logits(torch.zeros(2, 1, 32, 32)), logits)


def test_strong_augmentation_moves_masks_with_the_image() -> None:
    x = torch.full((2, 1, 32, 32), -1024.0)
    x[:, :, 4:12, 20:28] = 1024.0  # a bright square
    m = (x > 0).float()
    g = torch.Generator().manual_seed(1)
    ax, am = augment_batch(x, g, "strong", masks=m.clone())
    for k in range(2):
        inside = ax[k, 0][am[k, 0] > 0.9].mean()
        outside = ax[k, 0][am[k, 0] < 0.1].mean()
        assert inside > outside + 1000  # the mask still covers the bright square
    with pytest.raises(ValueError, match="strength"):
        augment_batch(x, g, "extreme")


def test_adversarial_training_runs_and_its_attack_raises_the_loss(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from gifsplanation.models.training import adversarial, output_matrix

    cfg = _cfg(tiny_dataset, tmp_path / "adv", outputs=OUTPUTS, adv_eps=64.0, max_steps=2)
    train(cfg)
    clf = get_classifier(tmp_path / "adv" / "model.pt").train()
    x = torch.zeros(4, 1, 32, 32)
    y = torch.tensor([0, 1, 2, 0])
    _, matrix = output_matrix(cfg, ["COVID-19", "Non-COVID pneumonia", "Normal"])
    x_adv = adversarial(cfg, clf, x, y, matrix, torch.Generator().manual_seed(0))
    assert clf.training  # the attack leaves the model's mode as it was
    assert (x_adv - x).abs().max() <= 64.0 + 1e-4
    loss = torch.nn.functional.binary_cross_entropy_with_logits
    with torch.no_grad():
        clf.eval()
        assert loss(clf.logits(x_adv), matrix[y]) > loss(clf.logits(x), matrix[y])
