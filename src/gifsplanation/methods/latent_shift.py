"""Latent Shift maps behind the shared ``attribute`` call.

Wraps :class:`gifsplanation.LatentShift`: one explanation (λ search + sweep) per call,
reduced to a 2D map by one of :data:`gifsplanation.HEATMAPS` (``max``, ``mean``,
``minmax``, ``interval``, or ``endpoint`` — the paper code's "reconstruction minus
most-shifted frame", under its honest name).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._core.explanation import Explanation
from .._core.heatmaps import HEATMAPS
from .._core.latent_shift import LatentShift
from .base import AttributionMethod, TargetArg, smooth_maps


class LatentShiftMap(AttributionMethod):
    """``"latentshift-<heatmap>"``: a Latent Shift counterfactual sequence reduced to a map.

    Args:
        classifier: the classifier.
        autoencoder: the autoencoder (required).
        heatmap: one of ``max``, ``mean``, ``minmax``, ``interval``, ``endpoint``.
        smooth_sigma, output, targets: as :class:`~gifsplanation.methods.base.AttributionMethod`.
        **engine_options: passed to :class:`gifsplanation.LatentShift` (``strategy``,
            ``n_frames``, ``batch_size``, ``lower_change``, ``upper_change``,
            ``threshold_mode``, ``max_lambda``, ``max_image_change`` ...).

    Attributes:
        engine: the :class:`~gifsplanation.LatentShift` used; :meth:`explain` returns the
            full :class:`~gifsplanation.Explanation` (frames, λs, stop reasons).

    Example:
        >>> from gifsplanation.methods import get_method
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> m = get_method("latentshift-max", classifier=clf, autoencoder=ae)
        >>> m.attribute(data.positive(1), "blob").shape
        torch.Size([1, 1, 32, 32])
    """

    needs_autoencoder = True

    def __init__(
        self,
        classifier: nn.Module,
        autoencoder: Any = None,
        *,
        heatmap: str = "max",
        output: Any = None,
        targets: Any = None,
        smooth_sigma: float = 0.0,
        **engine_options: Any,
    ) -> None:
        super().__init__(
            classifier, autoencoder, output=output, targets=targets, smooth_sigma=smooth_sigma
        )
        if autoencoder is None:
            raise ValueError(
                f"latentshift-{heatmap} needs an autoencoder; pass autoencoder=... "
                "(e.g. gifsplanation.models.get_autoencoder())"
            )
        if heatmap not in HEATMAPS:
            raise ValueError(f"unknown heatmap {heatmap!r}; choose one of {', '.join(HEATMAPS)}")
        self.heatmap = heatmap
        self.name = f"latentshift-{heatmap}"
        self.engine_options = dict(engine_options)
        self.engine = LatentShift(
            classifier,
            autoencoder,
            output=self.classifier.output_kind,
            targets=self.classifier.targets,
            **engine_options,
        )

    def explain(self, inputs: torch.Tensor, target: TargetArg = None) -> Explanation:
        """The full Latent Shift explanation behind the map."""
        return self.engine.explain(inputs, target)

    def maps_from(self, exp: Explanation) -> torch.Tensor:
        """This method's ``(B, 1, H, W)`` maps from an existing explanation (no model calls)."""
        maps = exp.heatmap(self.heatmap)[:, None]
        return self._postprocess(maps)

    def attribute(self, inputs: torch.Tensor, target: TargetArg = None) -> torch.Tensor:
        return self.maps_from(self.explain(inputs, target)).to(inputs.device)

    def _postprocess(self, maps: torch.Tensor) -> torch.Tensor:
        maps = maps.abs()
        return smooth_maps(maps, self.smooth_sigma) if self.smooth_sigma > 0 else maps
