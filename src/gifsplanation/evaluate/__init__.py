"""The paper's experiments as functions over any classifier, autoencoder and masked dataset.

* ``iou`` (:func:`run_iou`) — Table 1: top-p IoU, pointing game, relevance mass per method
  per target, with the classifier's AUC.
* ``randomization`` (:func:`run_randomization`) — Fig. 5: cascading re-initialisation.
* ``robustness`` (:func:`run_robustness`) — Fig. G.1: uniform noise and Gaussian blur.
* ``ae-impact`` (:func:`run_ae_impact`) — Table K.1: f(x) vs f(D(E(x))).
* ``counterfactuals`` (:func:`run_counterfactuals`) — validity, Δp, proximity, SSIM and
  sharpness, AE effect, every output's change and the grey-level change in the lungs.

Each writes ``per_item.csv``, ``summary.csv``, ``table.md``, a PNG plot and
``manifest.json`` into its output folder, and caches computed maps under ``cache/`` so an
interrupted run resumes. The command line is ``gifsplanation evaluate <experiment>``.

Every Latent Shift engine the experiments build takes its settings from one
:class:`EngineOptions` (``Setup(engine=...)``; frame mode, search strategy and goals, λ
cap, frames, batch size, OOD policy), recorded in full as the manifest's ``"engine"``; a
folder holding the same experiment with other engine options is refused, never mixed.
``EngineOptions(mode="both")`` runs residual and reconstruction mode on the same images
and adds paired Wilcoxon tests (``paired_modes.csv``).

Example:
    >>> from gifsplanation.evaluate import EXPERIMENTS
    >>> sorted(EXPERIMENTS)
    ['ae-impact', 'counterfactuals', 'iou', 'randomization', 'robustness']
"""

from __future__ import annotations

from .ae_impact import run_ae_impact
from .common import Setup
from .counterfactuals import run_counterfactuals
from .data import XRVMaskedDataset, select_items, xrv_dataset
from .engine import EngineOptions
from .iou import run_iou
from .randomization import cascade_layers, cascade_steps, randomized_copy, run_randomization
from .robustness import perturb, run_robustness
from .run import Run

EXPERIMENTS = {
    "iou": run_iou,
    "randomization": run_randomization,
    "robustness": run_robustness,
    "ae-impact": run_ae_impact,
    "counterfactuals": run_counterfactuals,
}

__all__ = [
    "EXPERIMENTS",
    "EngineOptions",
    "Run",
    "Setup",
    "XRVMaskedDataset",
    "cascade_layers",
    "cascade_steps",
    "perturb",
    "randomized_copy",
    "run_ae_impact",
    "run_counterfactuals",
    "run_iou",
    "run_randomization",
    "run_robustness",
    "select_items",
    "xrv_dataset",
]
