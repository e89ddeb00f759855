"""The four maps by their definitions, on frame sequences where the answers are known."""

from __future__ import annotations

import pytest
import torch

from gifsplanation import HEATMAPS, compute_heatmap


def sequence():
    """One image, 5 frames over 1 pixel row of 3 pixels; λ = 0 is frame 2."""
    values = torch.tensor(
        [
            [0.0, 4.0, 1.0],  # λ min
            [0.0, 1.0, 1.0],
            [0.0, 0.0, 0.0],  # λ = 0
            [3.0, 0.0, 1.0],
            [1.0, 0.0, 1.0],  # λ max
        ]
    )
    frames = values.view(1, 5, 1, 1, 3)
    return frames, torch.tensor([2])


def test_max_is_the_per_pixel_maximum_not_the_mean():
    frames, zero = sequence()
    assert compute_heatmap(frames, zero, "max").flatten().tolist() == [3.0, 4.0, 1.0]
    assert compute_heatmap(frames, zero, "mean").flatten().tolist() == [1.0, 1.25, 1.0]


def test_minmax_interval_endpoint():
    frames, zero = sequence()
    assert compute_heatmap(frames, zero, "minmax").flatten().tolist() == [1.0, 4.0, 0.0]
    # consecutive |diffs|: px0 0,0,3,2 -> 1.25; px1 3,1,0,0 -> 1; px2 0,1,1,0 -> 0.5
    assert compute_heatmap(frames, zero, "interval").flatten().tolist() == [1.25, 1.0, 0.5]
    # The paper code's "max"/"mean": |x_0 - x_λmin| only.
    assert compute_heatmap(frames, zero, "endpoint").flatten().tolist() == [0.0, 4.0, 1.0]


def test_zero_index_is_per_image():
    frames, _ = sequence()
    both = torch.cat([frames, frames.flip(1)])
    maps = compute_heatmap(both, torch.tensor([2, 2]), "max")
    assert torch.equal(maps[0], maps[1])
    shifted = compute_heatmap(both, torch.tensor([2, 0]), "max")
    assert not torch.equal(shifted[0], shifted[1])


def test_every_map_is_non_negative_and_2d():
    frames = torch.randn(2, 7, 1, 4, 5)
    for name in HEATMAPS:
        m = compute_heatmap(frames, torch.tensor([3, 3]), name)
        assert m.shape == (2, 4, 5) and (m >= 0).all(), name


def test_unknown_method_lists_the_choices():
    frames, zero = sequence()
    with pytest.raises(ValueError, match="max, mean, minmax, interval"):
        compute_heatmap(frames, zero, "gradcam")
