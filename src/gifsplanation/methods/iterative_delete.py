"""Iterative delete (Bordes et al., "Iteratively unveiling new regions of interest in Deep
Learning models", MIDL 2018), implemented from the paper's description.

A gradient map points at the few pixels a classifier relies on most and hides the rest of
the evidence. Iterative delete repeats: compute |∂f/∂x| on the current image, delete the
most salient ``fraction`` of the pixels that are still present (replace them with
``fill``), and re-attribute, so later iterations unveil regions the first map hid. The
final map keeps, per pixel, the highest relevance it reached (each iteration's map scaled
to max 1 over the pixels still present) before it was deleted.

This differs on purpose from the paper's released code, which multiplied the image by the
top-2% mask — *keeping* the most salient pixels and deleting everything else.
"""

from __future__ import annotations

import torch

from .base import AttributionMethod


class IterativeDelete(AttributionMethod):
    """``"iterativedelete"``: delete the most salient pixels and re-attribute, repeatedly.

    Args:
        n_iter: number of attribute-then-delete rounds (default 10).
        fraction: share of all pixels deleted per round (default 0.02, so 20% after 10).
        fill: value deleted pixels take: ``"mean"`` (the image's mean intensity, default)
            or a number in the model's convention (``0.0`` is mid-grey in [−1024, 1024]).
        **kwargs: as :class:`~gifsplanation.methods.base.AttributionMethod`.

    Example:
        >>> from gifsplanation.methods import get_method
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> m = get_method("iterativedelete", classifier=clf, n_iter=3)
        >>> m.attribute(data.positive(2), "blob").shape
        torch.Size([2, 1, 32, 32])
    """

    name = "iterativedelete"

    def __init__(
        self,
        *args,
        n_iter: int = 10,
        fraction: float = 0.02,
        fill: str | float = "mean",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        if isinstance(fill, str) and fill != "mean":
            raise ValueError(f"fill must be 'mean' or a number, got {fill!r}")
        self.n_iter, self.fraction, self.fill = int(n_iter), float(fraction), fill

    def _gradient(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.forward_module(x)[rows, cols]
            (g,) = torch.autograd.grad(out.sum(), x)
        return g.abs().mean(dim=1)  # (B, H, W)

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        b, _, h, w = x.shape
        rows = torch.arange(b, device=x.device)
        cols = torch.tensor(targets, device=x.device)
        k = max(1, round(self.fraction * h * w))
        if self.fill == "mean":
            fill = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
        else:
            fill = torch.full_like(x, float(self.fill))
        current = x.detach().clone()
        present = torch.ones(b, h * w, dtype=torch.bool, device=x.device)
        result = torch.zeros(b, h * w, device=x.device)
        for _ in range(self.n_iter):
            sal = self._gradient(current, rows, cols).flatten(1)
            sal = torch.where(present, sal, torch.zeros_like(sal))
            peak = sal.amax(dim=1, keepdim=True).clamp_min(1e-30)
            result = torch.maximum(result, torch.where(present, sal / peak, result))
            n_left = int(present.sum(1).min())
            if n_left == 0:
                break
            score = torch.where(present, sal, torch.full_like(sal, -1.0))
            top = score.topk(min(k, n_left), dim=1, sorted=False).indices
            present.scatter_(1, top, False)
            deleted = (~present).view(b, 1, h, w).expand_as(current)
            current = torch.where(deleted, fill, x)
        return result.view(b, 1, h, w)
