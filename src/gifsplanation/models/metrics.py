"""How good a trained model is, on held-out data in the training's own format.

Classifiers: :func:`classifier_metrics` (per-output AUC, accuracy, NLL, expected
calibration error; exclusive classes or multi-label outputs given as a label→output
matrix), :func:`operating_points` (per-output thresholds) and :func:`regression_metrics`
(for a regression head). Autoencoders: :func:`realism` of their reconstructions of the
cached ``uint8`` images. Training validates every epoch with these, and
:mod:`~gifsplanation.models.validation` measures the model card with them. They live
here, not in :mod:`gifsplanation.metrics` (which scores explanations), because they read
the training's representations: dataset label indices, the label→output matrix and the
8-bit image cache; the one AUC they use is :func:`gifsplanation.metrics.roc_auc`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from ..metrics import fine_edge_ratio, roc_auc, ssim
from ..pixels import uint8_to_model


def classifier_metrics(
    probs: torch.Tensor,
    targets: torch.Tensor,
    names: list[str],
    matrix: torch.Tensor | None = None,
) -> dict:
    """Per-output AUC, accuracy, NLL and calibration error of predicted probabilities.

    ``targets`` are dataset label indices. Without ``matrix`` the outputs are exclusive
    classes (softmax: top-label accuracy and ECE); with the ``(n_labels, n_outputs)``
    label→output ``matrix`` of a multi-label sigmoid classifier, each output is scored as
    its own yes/no question (accuracy at 0.5, binary NLL and ECE averaged over outputs).
    """
    p = probs.numpy()
    if matrix is None:
        t = targets.numpy()
        aucs = {n: roc_auc(p[:, i], t == i) for i, n in enumerate(names)}
        return {
            "auc": aucs,
            "mean_auc": float(np.nanmean(list(aucs.values()))),
            "accuracy": float((p.argmax(1) == t).mean()),
            "nll": float(F.nll_loss(torch.log(probs.clamp_min(1e-7)), targets)),
            "ece": expected_calibration_error(probs, targets),
        }
    y = matrix[targets]
    aucs = {n: roc_auc(p[:, i], y[:, i].numpy() > 0.5) for i, n in enumerate(names)}
    eces = [
        expected_calibration_error(torch.stack([1 - probs[:, i], probs[:, i]], 1), y[:, i].long())
        for i in range(len(names))
    ]
    return {
        "auc": aucs,
        "mean_auc": float(np.nanmean(list(aucs.values()))),
        "accuracy": float(((probs > 0.5).float() == y).float().mean()),
        "nll": float(F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), y)),
        "ece": float(np.mean(eces)),
    }


def operating_points(probs: torch.Tensor, positives: torch.Tensor) -> list[float]:
    """Per output, the probability threshold maximising Youden's J (sensitivity +
    specificity − 1) on held-out data: where the classifier "finds" the target."""
    from sklearn.metrics import roc_curve

    out = []
    for i in range(probs.shape[1]):
        pos = positives[:, i].numpy() > 0.5
        if pos.all() or not pos.any():
            out.append(0.5)
            continue
        fpr, tpr, thr = roc_curve(pos.astype(int), probs[:, i].numpy())
        k = int(np.argmax(tpr - fpr))
        out.append(float(min(max(thr[k], 1e-4), 1 - 1e-4)))
    return out


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = 10) -> float:
    """Top-label expected calibration error with equal-width confidence bins."""
    conf, pred = probs.max(1)
    correct = (pred == targets).float()
    ece = 0.0
    for lo in range(bins):
        sel = (conf > lo / bins) & (conf <= (lo + 1) / bins)
        if sel.any():
            ece += float(sel.float().mean() * (conf[sel].mean() - correct[sel].mean()).abs())
    return ece


def regression_metrics(pred: torch.Tensor, target: torch.Tensor, names: list[str]) -> dict:
    """Per output: mean absolute error, RMSE, Pearson and Spearman correlation with the
    target, and the AUC of the prediction for "the target is above 0"; ``loss`` is the
    mean squared error over outputs."""
    per: dict[str, dict[str, float]] = {}
    for k, n in enumerate(names):
        p, t = pred[:, k].numpy().astype(float), target[:, k].numpy().astype(float)
        varies = p.std() > 0 and t.std() > 0
        per[n] = {
            "mean_abs_error": float(np.abs(p - t).mean()),
            "rmse": float(np.sqrt(((p - t) ** 2).mean())),
            "pearson": float(stats.pearsonr(p, t)[0]) if varies else float("nan"),
            "spearman": float(stats.spearmanr(p, t)[0]) if varies else float("nan"),
            "auc_positive": roc_auc(p, t > 0),
            "target_mean": float(t.mean()),
        }
    return {
        "regression": per,
        "mean_abs_error": float(np.mean([v["mean_abs_error"] for v in per.values()])),
        "loss": float(((pred - target) ** 2).mean()),
    }


@torch.no_grad()
def realism(ae: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Mean SSIM and fine-edge ratio of ``ae``'s reconstructions of cached ``uint8`` images
    (:func:`gifsplanation.metrics.ssim`, :func:`~gifsplanation.metrics.fine_edge_ratio`)."""
    x = uint8_to_model(images)
    r = torch.cat([ae(x[i : i + 32]) for i in range(0, len(x), 32)])
    return reconstruction_realism(r, x)


def reconstruction_realism(recon: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """Mean SSIM and fine-edge ratio of reconstructions ``recon`` (clamped to the pixel
    range) against the images ``x``, both ``(N, 1, H, W)`` in [−1024, 1024]."""
    r = recon.clamp(-1024, 1024)
    pairs = [(r[i, 0].numpy(), x[i, 0].numpy()) for i in range(len(x))]
    return {
        "ssim": float(np.mean([ssim(a, b) for a, b in pairs])),
        "edge_ratio": float(np.mean([fine_edge_ratio(a, b) for a, b in pairs])),
    }
