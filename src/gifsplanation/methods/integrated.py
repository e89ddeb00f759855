"""Integrated gradients (Sundararajan et al. 2017) via Captum, with a zero baseline.

A zero image is mid-grey in the [−1024, 1024] convention (the paper's choice: Captum's
default baseline). ``internal_batch_size`` bounds memory: without it Captum pushes
``B × n_steps`` images through the classifier at once, which runs CXR DenseNets out of
memory.
"""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients as _CaptumIntegratedGradients

from .base import AttributionMethod


class IntegratedGradients(AttributionMethod):
    """``"integrated"``: integrated gradients from a zero baseline.

    Args:
        n_steps: points on the path from the baseline to the input (default 50).
        internal_batch_size: images per forward/backward pass (default 16).
        **kwargs: as :class:`~gifsplanation.methods.base.AttributionMethod`.

    Example:
        >>> from gifsplanation.methods import get_method
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> m = get_method("integrated", classifier=clf, n_steps=8)
        >>> m.attribute(data.positive(2), "blob").shape
        torch.Size([2, 1, 32, 32])
    """

    name = "integrated"

    def __init__(self, *args, n_steps: int = 50, internal_batch_size: int = 16, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if n_steps < 1 or internal_batch_size < 1:
            raise ValueError("n_steps and internal_batch_size must be >= 1")
        self.n_steps, self.internal_batch_size = int(n_steps), int(internal_batch_size)

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        ig = _CaptumIntegratedGradients(self.forward_module)
        return ig.attribute(
            x.detach().requires_grad_(True),
            baselines=torch.zeros_like(x),
            target=targets,
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
        )
