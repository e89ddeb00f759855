"""gifsplanation: Latent Shift counterfactual explanations for chest X-ray classifiers.

Give it a classifier and an autoencoder, an image and a target; get back the
counterfactual frames (a GIF that removes and adds what the classifier uses), a 2D
attribution map, and the numbers that say how far to trust them.

Example:
    >>> from gifsplanation import LatentShift
    >>> from gifsplanation.testing import tiny_models
    >>> clf, ae, data = tiny_models()
    >>> exp = LatentShift(clf, ae).explain(data.positive(1), target="blob")
    >>> sorted(exp.stop_reasons[0])
    ['lower', 'upper']
"""

from ._core.adapters import Autoencoder, Classifier, infer_output_kind, resolve_target
from ._core.explanation import Cost, Explanation
from ._core.heatmaps import HEATMAPS, compute_heatmap
from ._core.latent_shift import FRAME_MODES, LatentShift, sweep_lambdas
from ._core.ood import OODAssessment, OODGate
from ._core.search import STRATEGIES, SearchConfig, StopReason, paper_schedule

__version__ = "0.1.0"

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
    "resolve_target",
    "sweep_lambdas",
]
