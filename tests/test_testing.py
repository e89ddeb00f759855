"""The shipped tiny test models: loaded, not trained, and still good at their task."""

from __future__ import annotations

import torch

from gifsplanation import testing


def test_tiny_models_load_without_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("tiny_models() trained instead of loading the shipped weights")

    monkeypatch.setattr(testing, "train_tiny_models", boom)
    testing.tiny_models.cache_clear()
    try:
        clf, ae, data = testing.tiny_models()
    finally:
        testing.tiny_models.cache_clear()
    assert isinstance(clf, testing.TinyClassifier) and isinstance(ae, testing.TinyAutoencoder)
    assert not any(p.requires_grad for p in clf.parameters())


def test_tiny_models_do_their_task():
    from sklearn.metrics import roc_auc_score

    clf, ae, _ = testing.tiny_models()
    x, y, _ = testing.BlobData(seed=99).batch(128)
    with torch.no_grad():
        p = clf(x)[:, 0]
        err = (ae(x) - x).abs().mean() / 2048
    assert roc_auc_score(y.numpy(), p.numpy()) > 0.95
    assert err < 0.05  # reconstructs within 5% of the range
