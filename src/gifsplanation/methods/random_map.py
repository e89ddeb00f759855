"""A random map: the chance baseline every other method must beat.

Each image's map is uniform noise drawn from a generator seeded by ``seed`` and the image's
own bytes, so a map does not depend on which batch the image came in.
"""

from __future__ import annotations

import zlib

import torch

from .base import AttributionMethod


class RandomMap(AttributionMethod):
    """``"random"``: uniform noise in [0, 1), deterministic per (seed, image).

    Args:
        seed: base seed (default 0).

    Example:
        >>> from gifsplanation.methods import get_method
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> x = data.positive(2)
        >>> m = get_method("random", classifier=clf)
        >>> bool((m.attribute(x) == m.attribute(x)).all())
        True
    """

    name = "random"

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seed = int(seed)

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        maps = []
        for img, t in zip(x, targets, strict=True):
            key = zlib.crc32(img.detach().cpu().contiguous().numpy().tobytes())
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + key + t) % 2**63)
            maps.append(torch.rand(img.shape, generator=g))
        return torch.stack(maps).to(x.device)
