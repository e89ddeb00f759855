"""Every attribution method answers the same call with the same shapes, batched or not,
and the good ones find the blob on the tiny task."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from gifsplanation.methods import METHODS, get_method
from gifsplanation.metrics import iou_top_p

FAST = {"integrated": {"n_steps": 8}, "iterativedelete": {"n_iter": 3}}


def _method(name, tiny, **kw):
    clf, ae, _ = tiny
    return get_method(name, classifier=clf, autoencoder=ae, **{**FAST.get(name, {}), **kw})


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("batch", [1, 3])
def test_shape_nonnegative_and_batched_equals_single(name, batch, tiny, blob_data):
    x, _, _ = blob_data.batch(batch, positive=True)
    m = _method(name, tiny)
    maps = m.attribute(x, target="blob")
    assert maps.shape == (batch, 1, 32, 32)
    assert maps.dtype == torch.float32
    assert bool((maps >= 0).all()) and bool(torch.isfinite(maps).all())
    single = torch.cat([m.attribute(x[i : i + 1], target=0) for i in range(batch)])
    scale = float(maps.abs().max()) + 1e-12
    assert float((maps - single).abs().max()) / scale < 1e-4


@pytest.mark.parametrize("name", ["latentshift-max", "latentshift-mean", "grad", "integrated"])
def test_maps_land_on_the_blob(name, tiny, blob_data):
    x, _, masks = blob_data.batch(8, positive=True)
    maps = _method(name, tiny).attribute(x, target="blob")
    ious = [iou_top_p(maps[i, 0].numpy(), masks[i].numpy()) for i in range(8)]
    chance = float(masks.float().mean())  # ≈ IoU of a random map is a/(2−a) < a
    mean_iou = sum(ious) / len(ious)
    assert mean_iou > 0.3 and mean_iou > 4 * chance, (name, ious)


def test_random_map_is_near_chance(tiny, blob_data):
    x, _, masks = blob_data.batch(8, positive=True)
    maps = _method("random", tiny).attribute(x)
    mean_iou = sum(iou_top_p(maps[i, 0].numpy(), masks[i].numpy()) for i in range(8)) / 8
    assert mean_iou < 0.2


def test_targets_by_name_index_list_and_none_agree(tiny, blob_data):
    x, _, _ = blob_data.batch(2, positive=True)
    m = _method("grad", tiny)
    ref = m.attribute(x, "blob")
    for target in (0, "BLOB", [0, "blob"], None):
        assert torch.allclose(m.attribute(x, target), ref)


def test_unknown_names_and_targets_are_explained(tiny, blob_data):
    clf, ae, _ = tiny
    with pytest.raises(ValueError, match="choose one of"):
        get_method("gradcam", classifier=clf)
    with pytest.raises(ValueError, match="needs an autoencoder"):
        get_method("latentshift-max", classifier=clf, autoencoder=None)
    with pytest.raises(ValueError, match="valid targets"):
        get_method("grad", classifier=clf).attribute(blob_data.positive(1), "cat")


def test_smoothing_is_off_by_default_and_spreads_the_map(tiny, blob_data):
    x = blob_data.positive(1)
    raw = _method("grad", tiny).attribute(x)
    smooth = _method("grad", tiny, smooth_sigma=2.0).attribute(x)
    assert float((raw - smooth).abs().max()) > 0.1 * float(raw.max())
    assert float(smooth.max()) < float(raw.max())  # a blur lowers the peak
    assert float(smooth.sum()) == pytest.approx(float(raw.sum()), rel=0.05)


class _LogitNet(nn.Module):
    """A logit model: every method must explain sigmoid(out), not out."""

    output_kind = "logit"
    targets = ["blob"]

    def __init__(self, prob_model):
        super().__init__()
        self.prob_model = prob_model

    def forward(self, x):
        return self.prob_model.logits(x)


def test_logit_and_probability_models_give_the_same_maps(tiny, blob_data):
    clf, ae, _ = tiny
    x = blob_data.positive(2)
    a = get_method("grad", classifier=clf).attribute(x, "blob")
    b = get_method("grad", classifier=_LogitNet(clf)).attribute(x, "blob")
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-9)


def test_guided_warns_when_nothing_can_be_guided(caplog):
    class FunctionalRelu(nn.Module):
        output_kind = "probability"

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return torch.sigmoid(torch.relu(self.conv(x)).mean((1, 2, 3)))[:, None]

    with caplog.at_level(logging.WARNING, logger="gifsplanation"):
        get_method("guided", classifier=FunctionalRelu())
    assert "no nn.ReLU module" in caplog.text


def test_iterative_delete_unveils_new_regions(tiny, blob_data):
    """Round 1 is the plain gradient; later rounds, run on the image with the most salient
    pixels deleted, add relevance elsewhere and never take any away."""
    x = blob_data.positive(1)
    grad = _method("grad", tiny).attribute(x)[0, 0]
    one = _method("iterativedelete", tiny, n_iter=1).attribute(x)[0, 0]
    five = _method("iterativedelete", tiny, n_iter=5).attribute(x)[0, 0]
    assert torch.allclose(one, grad / grad.max(), atol=1e-6)
    assert bool((five >= one - 1e-7).all())
    assert int((five > 0.5).sum()) > int((one > 0.5).sum())


def test_random_map_depends_on_image_not_batch(tiny, blob_data):
    x = blob_data.positive(2)
    m = _method("random", tiny, seed=3)
    assert torch.equal(m.attribute(x)[1:], m.attribute(x[1:]))
    assert not torch.equal(m.attribute(x)[0], m.attribute(x)[1])
