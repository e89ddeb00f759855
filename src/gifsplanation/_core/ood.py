"""Out-of-distribution gate: is this input a frontal chest X-ray our models can read?

A classifier must answer something for any image (the bundled one called a cat photo
COVID-19 with p = 0.99), and an explanation of such an answer is meaningless. An
:class:`OODGate` scores each input with up to two signals and refuses it when either
exceeds its threshold:

* ``detector`` — the probability, from a small network trained to tell frontal chest
  X-rays from other images (photos, patterns, inverted or rotated radiographs), that the
  input is *not* a frontal CXR;
* ``recon_error`` — mean |x − D(E(x))| of the autoencoder, which the engine computes
  anyway: textured images that the CXR autoencoder never saw reconstruct badly.

Thresholds are calibrated on training images (see ``gifsplanation.models.gate``) and
stored with the weights. The gate is attached to an autoencoder as its ``ood_gate``
attribute (the registry does this for the bundled and TorchXRayVision autoencoders);
:class:`~gifsplanation.LatentShift` reads it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class OODAssessment:
    """The gate's verdict on a batch of images.

    Attributes:
        scores: per signal (``"detector"``, ``"recon_error"``), one score per image.
        thresholds: per signal, the score above which an image is out of distribution.
        flagged: per image, whether any score exceeds its threshold.
    """

    scores: dict[str, list[float]]
    thresholds: dict[str, float]
    flagged: list[bool]

    def reason(self, index: int) -> str | None:
        """One line saying why image ``index`` was flagged (``None`` if it was not)."""
        if not self.flagged[index]:
            return None
        parts = [
            f"{_LABELS[name]} {_fmt(self.scores[name][index])} > {_fmt(self.thresholds[name])}"
            for name in self.scores
            if self.scores[name][index] > self.thresholds[name]
        ]
        return "not like the frontal chest X-rays the models were built for (" + (
            "; ".join(parts) + ")"
        )

    def record(self, index: int) -> dict[str, Any]:
        """A JSON-ready record of image ``index``'s scores, thresholds and verdict."""
        return {
            "scores": {k: v[index] for k, v in self.scores.items()},
            "thresholds": dict(self.thresholds),
            "flagged": self.flagged[index],
            "reason": self.reason(index),
        }


def _fmt(value: float) -> str:
    """Probabilities with 4 decimals (0.99995 must not print as 1); others with 4 digits."""
    return f"{value:.4f}" if 0.0 <= value <= 1.0 else f"{value:.4g}"


_LABELS = {
    "detector": "p(not a frontal CXR)",
    "recon_error": "autoencoder reconstruction error",
}


class OODGate:
    """Scores inputs for "frontal chest X-ray in the models' convention or not".

    Args:
        detector: a module mapping ``(B, 1, H, W)`` images in [−1024, 1024] to the
            probability ``(B,)`` that each is *not* a frontal chest X-ray; ``None`` skips
            that signal.
        detector_threshold: refuse above this probability.
        recon_threshold: refuse when mean |x − D(E(x))| exceeds this (in pixel units);
            ``None`` skips that signal.

    Example:
        >>> import torch
        >>> gate = OODGate(recon_threshold=100.0)
        >>> x = torch.zeros(2, 1, 8, 8)
        >>> recon = torch.stack([torch.zeros(1, 8, 8), torch.full((1, 8, 8), 300.0)])
        >>> gate.assess(x, recon).flagged
        [False, True]
    """

    def __init__(
        self,
        detector: nn.Module | None = None,
        detector_threshold: float = 0.5,
        recon_threshold: float | None = None,
    ) -> None:
        if detector is None and recon_threshold is None:
            raise ValueError("an OODGate needs a detector, a recon_threshold or both")
        self.detector = detector.eval() if detector is not None else None
        self.detector_threshold = float(detector_threshold)
        self.recon_threshold = None if recon_threshold is None else float(recon_threshold)

    @torch.no_grad()
    def assess(self, x: torch.Tensor, reconstruction: torch.Tensor | None) -> OODAssessment:
        """Score ``x`` (``(B, 1, H, W)``); ``reconstruction`` is D(E(x)) when known."""
        scores: dict[str, list[float]] = {}
        thresholds: dict[str, float] = {}
        if self.detector is not None:
            device = next(self.detector.parameters(), torch.empty(0)).device
            p = self.detector(x.to(device)).flatten().float().cpu()
            scores["detector"] = [float(v) for v in p]
            thresholds["detector"] = self.detector_threshold
        if self.recon_threshold is not None and reconstruction is not None:
            err = (reconstruction - x).abs().flatten(1).mean(1).float().cpu()
            scores["recon_error"] = [float(v) for v in err]
            thresholds["recon_error"] = self.recon_threshold
        flagged = [any(scores[k][i] > thresholds[k] for k in scores) for i in range(x.shape[0])]
        return OODAssessment(scores=scores, thresholds=thresholds, flagged=flagged)


def autoencoder_gate(autoencoder: Any) -> OODGate | None:
    """The gate attached to ``autoencoder`` (its ``ood_gate`` attribute), if any."""
    gate = getattr(autoencoder, "ood_gate", None)
    if gate is None and hasattr(autoencoder, "model"):
        gate = getattr(autoencoder.model, "ood_gate", None)
    return gate if isinstance(gate, OODGate) else None
