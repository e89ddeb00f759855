"""Bad input gets a clear error naming the problem; model conventions are read correctly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gifsplanation import LatentShift, infer_output_kind


def test_unknown_target_lists_the_valid_ones(tiny, blob_data):
    clf, ae, _ = tiny
    with pytest.raises(ValueError, match=r"unknown target 'Pneumonia'; valid targets: 'blob'"):
        LatentShift(clf, ae).explain(blob_data.positive(1), target="Pneumonia")
    with pytest.raises(ValueError, match="out of range"):
        LatentShift(clf, ae).explain(blob_data.positive(1), target=3)
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        LatentShift(clf, ae).explain(blob_data.positive(1), target=[0, 0])


def test_target_names_are_case_insensitive(tiny, blob_data):
    clf, ae, _ = tiny
    assert LatentShift(clf, ae).explain(blob_data.positive(1), target="BLOB").targets == [0]


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (torch.zeros(32, 32), ValueError, r"shape \(B, C, H, W\)"),
        (torch.zeros(1, 1, 1, 32, 32), ValueError, r"shape \(B, C, H, W\)"),
        (torch.zeros(0, 1, 32, 32), ValueError, "empty batch"),
        (torch.zeros(2, 3, 32, 32), ValueError, "3 channel"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_are_refused(tiny, images, error, message):
    clf, ae, _ = tiny
    with pytest.raises(error, match=message):
        LatentShift(clf, ae).explain(images, target=0)


def test_nan_pixels_name_the_image(tiny, blob_data):
    clf, ae, _ = tiny
    x = blob_data.positive(3)
    x[1, 0, 4, 4] = float("nan")
    x[2, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"images \[1, 2\] of the batch contain NaN or inf"):
        LatentShift(clf, ae).explain(x, target=0)


def test_autoencoder_without_encode_decode(tiny):
    clf, _, _ = tiny
    with pytest.raises(TypeError, match="has no encode or decode method"):
        LatentShift(clf, nn.Identity())

    class OnlyEncode:
        def encode(self, x):
            return x

    with pytest.raises(TypeError, match="has no decode method"):
        LatentShift(clf, OnlyEncode())


def test_output_semantics_must_be_known(tiny):
    _, ae, _ = tiny
    plain = nn.Sequential(nn.Flatten(), nn.LazyLinear(1))
    with pytest.raises(ValueError, match="output='probability' or output='logit'"):
        LatentShift(plain, ae)
    LatentShift(plain, ae, output="logit")
    with pytest.raises(ValueError, match="output must be one of"):
        LatentShift(plain, ae, output="softmax")


def test_bad_options(tiny):
    clf, ae, _ = tiny
    with pytest.raises(ValueError, match="unknown strategy 'slow'"):
        LatentShift(clf, ae, strategy="slow")
    with pytest.raises(ValueError, match="n_frames"):
        LatentShift(clf, ae, n_frames=2)
    with pytest.raises(TypeError, match="unknown search option"):
        LatentShift(clf, ae, max_lambdaa=3)


def test_models_on_another_device_are_named(tiny, blob_data):
    clf, ae, _ = tiny
    x = blob_data.positive(1).to("meta")
    with pytest.raises(ValueError, match="the classifier is on cpu but the images are on meta"):
        LatentShift(clf, ae).explain(x, target=0)


def test_torchxrayvision_conventions():
    xrv = pytest.importorskip("torchxrayvision")
    raw = xrv.models.DenseNet(weights=None)
    assert infer_output_kind(raw) == "logit"
    raw.op_threshs = torch.full((18,), 0.5)
    assert infer_output_kind(raw) == "probability"
