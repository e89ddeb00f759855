"""2D attribution maps computed from a Latent Shift frame sequence.

Every function takes ``frames`` of shape ``(B, T, C, H, W)`` ordered by λ (most negative
first), ``zero_index`` (B,) giving the position of λ = 0 in each sequence, and returns a
non-negative ``(B, H, W)`` map (channels are averaged). Definitions (the paper's §3):

* ``max``      per-pixel max over λ of |x_λ − x_0|
* ``mean``     per-pixel mean over λ ≠ 0 of |x_λ − x_0|
* ``minmax``   |x_λmin − x_λmax|
* ``interval`` mean over consecutive frames of |x_λ(i+1) − x_λ(i)|
* ``endpoint`` |x_0 − x_λmin|: what the paper's released code computed for both its
  "latentshift-max" and "latentshift-mean" (a reduction over a single frame); offered under
  an honest name for reproducing its numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

HeatmapFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _x0(frames: torch.Tensor, zero_index: torch.Tensor) -> torch.Tensor:
    idx = zero_index.to(frames.device).view(-1, 1, 1, 1, 1).expand(-1, 1, *frames.shape[2:])
    return frames.gather(1, idx)  # (B, 1, C, H, W)


def heatmap_max(frames: torch.Tensor, zero_index: torch.Tensor) -> torch.Tensor:
    return (frames - _x0(frames, zero_index)).abs().amax(dim=1).mean(dim=1)


def heatmap_mean(frames: torch.Tensor, zero_index: torch.Tensor) -> torch.Tensor:
    diff = (frames - _x0(frames, zero_index)).abs()
    # The λ = 0 frame contributes 0; divide by the number of shifted frames.
    n = max(frames.shape[1] - 1, 1)
    return diff.sum(dim=1).mean(dim=1) / n


def heatmap_minmax(frames: torch.Tensor, zero_index: torch.Tensor) -> torch.Tensor:
    return (frames[:, 0] - frames[:, -1]).abs().mean(dim=1)


def heatmap_interval(frames: torch.Tensor, zero_index: torch.Tensor) -> torch.Tensor:
    if frames.shape[1] < 2:
        return torch.zeros_like(frames[:, 0, 0])
    return (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=1).mean(dim=1)


def heatmap_endpoint(frames: torch.Tensor, zero_index: torch.Tensor) -> torch.Tensor:
    return (frames[:, 0] - _x0(frames, zero_index)[:, 0]).abs().mean(dim=1)


HEATMAPS: dict[str, HeatmapFn] = {
    "max": heatmap_max,
    "mean": heatmap_mean,
    "minmax": heatmap_minmax,
    "interval": heatmap_interval,
    "endpoint": heatmap_endpoint,
}


def compute_heatmap(frames: torch.Tensor, zero_index: torch.Tensor, method: str) -> torch.Tensor:
    """Compute the ``method`` map (one of :data:`HEATMAPS`) for a frame sequence."""
    try:
        fn = HEATMAPS[method]
    except KeyError:
        raise ValueError(
            f"unknown heatmap method {method!r}; choose one of {', '.join(HEATMAPS)}"
        ) from None
    return fn(frames, zero_index)
