"""Plain gradient saliency, |∂f/∂x| (Simonyan et al. 2014), via Captum's ``Saliency``."""

from __future__ import annotations

import torch
from captum.attr import Saliency

from .base import AttributionMethod


class Gradient(AttributionMethod):
    """``"grad"``: the absolute gradient of the target probability w.r.t. each pixel.

    Example:
        >>> from gifsplanation.methods import get_method
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> float(get_method("grad", classifier=clf).attribute(data.positive(1)).min()) >= 0
        True
    """

    name = "grad"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        return Saliency(self.forward_module).attribute(
            x.detach().requires_grad_(True), target=targets, abs=True
        )
