"""The shared machinery of every attribution method: one call, one convention.

:class:`AttributionMethod` turns ``attribute(inputs, target)`` into a non-negative
``(B, 1, H, W)`` map. It wraps the user's classifier once (:class:`ProbabilityModule`: the
model's output as *probabilities*, a sigmoid applied to logit models only, so every method
explains the same number), resolves targets (index, name, one per image, or ``None`` for
the most confident output), takes ``|map|``, and optionally smooths maps with a Gaussian
(off by default, as in the paper's IoU tables). A method is a small subclass that
implements :meth:`AttributionMethod._attribute`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .._core.adapters import Classifier, OutputKind, check_images

TargetArg = int | str | Sequence[int | str] | None


class ProbabilityModule(nn.Module):
    """An ``nn.Module`` returning the classifier's probabilities ``(B, n_targets)``.

    Captum's hook-based methods (guided backprop) need a module whose sub-modules are the
    user's layers; this wrapper keeps the user's model as its ``model`` child and applies a
    sigmoid only when the model returns logits.
    """

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.model = classifier.model
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


class AttributionMethod:
    """Base class: ``attribute(inputs, target) -> (B, 1, H, W)`` non-negative maps.

    Args:
        classifier: any ``nn.Module`` mapping ``(B, C, H, W)`` to ``(B, n_targets)``.
        autoencoder: the autoencoder (used by Latent Shift methods only; ignored otherwise).
        output: ``"probability"`` or ``"logit"``; ``None`` asks the model.
        targets: output names (default: the model's ``targets``/``pathologies``).
        smooth_sigma: standard deviation in pixels of a Gaussian applied to each map
            (default 0 = no smoothing).
    """

    name: str = "base"
    needs_autoencoder: bool = False

    def __init__(
        self,
        classifier: nn.Module,
        autoencoder: Any = None,
        *,
        output: OutputKind | None = None,
        targets: Sequence[str] | None = None,
        smooth_sigma: float = 0.0,
    ) -> None:
        if smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0 pixels, got {smooth_sigma}")
        self.classifier = Classifier(classifier, output=output, targets=targets)
        if isinstance(classifier, nn.Module):
            classifier.eval()
        self.forward_module = ProbabilityModule(self.classifier).eval()
        self.autoencoder = autoencoder
        self.smooth_sigma = float(smooth_sigma)

    @property
    def targets(self) -> list[str] | None:
        return self.classifier.targets

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, smooth_sigma={self.smooth_sigma})"

    def resolve_targets(self, inputs: torch.Tensor, target: TargetArg) -> list[int]:
        """Output index per image; ``None`` picks each image's most confident output."""
        b = inputs.shape[0]
        if target is None:
            with torch.no_grad():
                return [int(t) for t in self.classifier(inputs).argmax(1)]
        n_out = len(self.targets) if self.targets else None
        if n_out is None:
            with torch.no_grad():
                n_out = int(self.classifier(inputs[:1]).shape[1])
        if isinstance(target, (int, str)):
            return [self.classifier.target_index(target, n_out)] * b
        targets = list(target)
        if len(targets) != b:
            raise ValueError(f"got {len(targets)} targets for a batch of {b} images")
        return [self.classifier.target_index(t, n_out) for t in targets]

    def attribute(self, inputs: torch.Tensor, target: TargetArg = None) -> torch.Tensor:
        """Attribution maps for a batch of images.

        Args:
            inputs: ``(B, 1, H, W)`` (or ``(1, H, W)``) float images in the model's
                convention (TorchXRayVision: [−1024, 1024]).
            target: output index or name, one per image, or ``None`` (most confident).

        Returns:
            ``(B, 1, H, W)`` non-negative float tensor on the inputs' device.

        Example:
            >>> from gifsplanation.methods import get_method
            >>> from gifsplanation.testing import tiny_models
            >>> clf, ae, data = tiny_models()
            >>> get_method("grad", classifier=clf).attribute(data.positive(2), "blob").shape
            torch.Size([2, 1, 32, 32])
        """
        x = check_images(inputs)
        idx = self.resolve_targets(x, target)
        maps = self._attribute(x, idx).detach()
        if maps.ndim == 3:
            maps = maps[:, None]
        maps = maps.abs().mean(dim=1, keepdim=True)
        if self.smooth_sigma > 0:
            maps = smooth_maps(maps, self.smooth_sigma)
        return maps

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        raise NotImplementedError


def smooth_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian-smooth each ``(B, C, H, W)`` map spatially (scipy, reflect borders)."""
    arr = maps.detach().cpu().numpy()
    out = np.stack(
        [ndimage.gaussian_filter(m, sigma=(0, sigma, sigma), mode="reflect") for m in arr]
    )
    return torch.from_numpy(out).to(maps.device, maps.dtype)
