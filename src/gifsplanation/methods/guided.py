"""Guided backpropagation (Springenberg et al. 2015) via Captum's ``GuidedBackprop``.

Captum guides the gradient through ``nn.ReLU`` *modules* only, by hooking them: a model
that calls ``torch.nn.functional.relu`` (or another activation) in its ``forward`` is not
guided at those places and the map silently falls back towards a plain gradient there.
The method logs a warning when the classifier has no ``nn.ReLU`` module at all.
"""

from __future__ import annotations

import logging
import warnings

import torch
from captum.attr import GuidedBackprop as _CaptumGuidedBackprop
from torch import nn

from .base import AttributionMethod

log = logging.getLogger(__name__)


class GuidedBackprop(AttributionMethod):
    """``"guided"``: guided backpropagation (only ``nn.ReLU`` modules are guided).

    Example:
        >>> from gifsplanation.methods import get_method
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> get_method("guided", classifier=clf).attribute(data.positive(1), 0).shape
        torch.Size([1, 1, 32, 32])
    """

    name = "guided"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.n_relu_modules = sum(isinstance(m, nn.ReLU) for m in self.forward_module.modules())
        if self.n_relu_modules == 0:
            log.warning(
                "guided backprop: %s has no nn.ReLU module, so nothing is guided (Captum "
                "hooks nn.ReLU modules only; functional F.relu calls are not guided) and "
                "the map equals a plain gradient",
                type(self.classifier.model).__name__,
            )

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        gbp = _CaptumGuidedBackprop(self.forward_module)
        with warnings.catch_warnings():
            # Captum announces every time that it hooks ReLUs (and removes the hooks after).
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            return gbp.attribute(x.detach().requires_grad_(True), target=targets)
