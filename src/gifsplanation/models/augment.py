"""Augmentation of training batches: small geometric and intensity changes, applied to
model-space images (and moved with them, their masks). No flips: chest X-rays have a left
and a right.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F


def augment_batch(
    x: torch.Tensor,
    gen: torch.Generator,
    strength: str = "light",
    masks: torch.Tensor | None = None,
) -> Any:
    """Augment model-space images (and move ``masks`` with the same geometry).

    ``"light"``: rotation ±5°, scale ±5%, shift ±4%, contrast ×[0.9, 1.1], brightness ±50
    (of 2048). ``"strong"`` (for classifiers that must not read an image's source from its
    style): rotation ±10°, scale ±15%, shift ±8%, then per image a random blur (σ ≤ 1.5 px)
    or sharpening, gamma in [0.7, 1.4], contrast ×[0.75, 1.25], brightness ±100 and
    Gaussian noise (σ ≤ 30).

    Returns the images, or ``(images, masks)`` when ``masks`` (float, any size) are given.
    """
    strong = strength == "strong"
    if strength not in ("light", "strong"):
        raise ValueError(f"augmentation strength must be 'light' or 'strong', got {strength!r}")
    b = x.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) * 2 - 1

    ang = uniform(b) * math.radians(10 if strong else 5)
    scale = 1 + uniform(b) * (0.15 if strong else 0.05)
    shift = uniform(b, 2) * (0.16 if strong else 0.08)  # grid units: 2 = full width
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # pad with the darkest value: outside the field of view is black on a radiograph
    out = F.grid_sample(x + 1024, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out - 1024
    if masks is not None:
        mgrid = F.affine_grid(theta.to(masks), list(masks.shape), align_corners=False)
        masks = F.grid_sample(
            masks, mgrid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    if strong:
        out = _blur_or_sharpen(out, uniform(b), gen)
        gamma = torch.exp(uniform(b, 1, 1, 1) * math.log(1.4)).clamp(0.7, 1.4).to(x)
        out = ((out + 1024).clamp(0, 2048) / 2048) ** gamma * 2048 - 1024
        out = out + torch.randn(out.shape, generator=gen).to(x) * (
            torch.rand(b, 1, 1, 1, generator=gen) * 30
        ).to(x)
    contrast = (1 + uniform(b, 1, 1, 1) * (0.25 if strong else 0.1)).to(x)
    bright = (uniform(b, 1, 1, 1) * (100 if strong else 50)).to(x)
    out = (out * contrast + bright).clamp(-1024, 1024)
    return out if masks is None else (out, masks)


def _blur_or_sharpen(x: torch.Tensor, amount: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per image: ``amount`` < 0 blurs with σ = 1.5·|amount| px, > 0 sharpens (unsharp mask,
    σ = 1 px, gain ``amount``)."""
    b = x.shape[0]
    sigma = torch.where(amount < 0, -1.5 * amount, torch.ones_like(amount)).clamp_min(0.05)
    r = 4
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).to(x.device)  # (B, 2r+1)
    h = x.transpose(0, 1)  # (1, B, H, W): one group per image
    h = F.conv2d(F.pad(h, (r, r, 0, 0), mode="replicate"), k[:, None, None, :], groups=b)
    h = F.conv2d(F.pad(h, (0, 0, r, r), mode="replicate"), k[:, None, :, None], groups=b)
    blurred = h.transpose(0, 1)
    gain = amount.clamp_min(0).view(b, 1, 1, 1).to(x)
    return torch.where(amount.view(b, 1, 1, 1).to(x.device) < 0, blurred, x + gain * (x - blurred))
