"""gifsplanation: Latent Shift counterfactual explanations for chest X-ray classifiers.

Give it a classifier and an autoencoder, an image and a target; get back the
counterfactual frames (a GIF that removes and adds what the classifier uses), a 2D
attribution map, and the numbers that say how far to trust them.

Importing the package is cheap: the names below load their module (and PyTorch) on first
use, so ``gifsplanation --help`` and other commands that need no model start quickly.

Example:
    >>> from gifsplanation import LatentShift
    >>> from gifsplanation.testing import tiny_models
    >>> clf, ae, data = tiny_models()
    >>> exp = LatentShift(clf, ae).explain(data.positive(1), target="blob")
    >>> sorted(exp.stop_reasons[0])
    ['lower', 'upper']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Autoencoder": "._core.adapters",
    "Classifier": "._core.adapters",
    "infer_output_kind": "._core.adapters",
    "resolve_target": "._core.adapters",
    "Cost": "._core.explanation",
    "Explanation": "._core.explanation",
    "HEATMAPS": "._core.heatmaps",
    "compute_heatmap": "._core.heatmaps",
    "FRAME_MODES": "._core.latent_shift",
    "LatentShift": "._core.latent_shift",
    "place_frames": "._core.latent_shift",
    "sweep_lambdas": "._core.latent_shift",
    "OODAssessment": "._core.ood",
    "OODGate": "._core.ood",
    "STRATEGIES": "._core.search",
    "SearchConfig": "._core.search",
    "StopReason": "._core.search",
    "paper_schedule": "._core.search",
}
"""Public name -> the module that defines it (imported on first access)."""

__all__ = [
    "FRAME_MODES",
    "HEATMAPS",
    "STRATEGIES",
    "Autoencoder",
    "Classifier",
    "Cost",
    "Explanation",
    "LatentShift",
    "OODAssessment",
    "OODGate",
    "SearchConfig",
    "StopReason",
    "compute_heatmap",
    "infer_output_kind",
    "paper_schedule",
    "place_frames",
    "resolve_target",
    "sweep_lambdas",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._core.adapters import Autoencoder, Classifier, infer_output_kind, resolve_target
    from ._core.explanation import Cost, Explanation
    from ._core.heatmaps import HEATMAPS, compute_heatmap
    from ._core.latent_shift import FRAME_MODES, LatentShift, place_frames, sweep_lambdas
    from ._core.ood import OODAssessment, OODGate
    from ._core.search import STRATEGIES, SearchConfig, StopReason, paper_schedule


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
