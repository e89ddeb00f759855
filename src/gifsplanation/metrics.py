"""Scores for attribution maps and counterfactuals: localisation, similarity, quality.

Localisation against a ground-truth mask (the paper's Table 1 and beyond):
:func:`iou_top_p` (binarise the map to its top-p pixels, p = the mask's pixel count),
:func:`pointing_game` (is the map's maximum inside the mask) and :func:`relevance_mass`
(share of the map's total inside the mask). Map similarity: :func:`spearman_similarity`
(the randomisation and robustness experiments). Classification: :func:`roc_auc` (the one
AUC of the package; the model-training metrics built on it are in
:mod:`gifsplanation.models.metrics`). Counterfactual quality:
:func:`counterfactual_quality` (validity, prediction change, proximity, realism proxy,
similarity to the input and sharpness). Image realism: :func:`ssim` (structural
similarity, scikit-image) and :func:`fine_edge_ratio` (how much of an image's fine-edge
energy survives in another, e.g. a reconstruction or a counterfactual frame).

Ties are handled deterministically and without positional bias: pixels tied at the
cut-off share the remaining places fractionally (the expected value under uniform random
tie-breaking), so a constant map scores chance, not whatever the raster order favours.

Quantus (0.6.0) installs and runs with NumPy 2 and torch 2.14, and its ``PointingGame``
and ``RelevanceMassAccuracy`` agree with these functions (``tests/test_metrics.py`` checks
that when Quantus is importable), but it is not a dependency: it pulls OpenCV for what are
a few lines of NumPy here, and has no top-p IoU.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

TieRule = Literal["fractional", "raster", "percentile"]


def _as_numpy(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D (H, W) array (extra axes of size 1 are fine), "
            f"got shape {np.shape(a)}"
        )
    return arr


def _map_and_mask(attr: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    m = _as_numpy(attr, "map").astype(np.float64)
    b = _as_numpy(mask, "mask").astype(bool)
    if m.shape != b.shape:
        raise ValueError(
            f"map {m.shape} and mask {b.shape} differ in shape; resize the mask "
            "to the map (nearest neighbour) first"
        )
    if not np.isfinite(m).all():
        raise ValueError("map contains NaN or inf values")
    return m, b


def top_p_intersection(
    attr: Any, mask: Any, p: int | None = None, ties: TieRule = "fractional"
) -> tuple[float, int, int]:
    """``(|A∩B|, |A|, |B|)`` where A is the map binarised to its top-``p`` pixels.

    Args:
        attr: ``(H, W)`` attribution map.
        mask: ``(H, W)`` ground-truth mask (bool or 0/1).
        p: pixels to keep (default: the mask's pixel count).
        ties: ``"fractional"`` (default: pixels tied at the cut-off share the remaining
            places, giving the expected intersection under random tie-breaking),
            ``"raster"`` (ties go to the earliest pixels in row-major order) or
            ``"percentile"`` (the paper code's rule: keep values strictly above the
            (1 − a)·100th percentile, so |A| may differ from p).
    """
    m, b = _map_and_mask(attr, mask)
    flat, truth = m.ravel(), b.ravel()
    p = int(truth.sum()) if p is None else int(p)
    if ties == "percentile":
        a = truth.mean()
        keep = flat > np.percentile(flat, (1 - a) * 100)
        return float((keep & truth).sum()), int(keep.sum()), int(truth.sum())
    if ties == "raster":
        order = np.argsort(-flat, kind="stable")[:p]
        return float(truth[order].sum()), p, int(truth.sum())
    if ties != "fractional":
        raise ValueError(f"ties must be 'fractional', 'raster' or 'percentile', got {ties!r}")
    if p <= 0:
        return 0.0, 0, int(truth.sum())
    cut = np.sort(flat)[::-1][p - 1]
    above = flat > cut
    tied = flat == cut
    slots = p - int(above.sum())
    inter = float((above & truth).sum()) + slots * float((tied & truth).sum()) / float(tied.sum())
    return inter, p, int(truth.sum())


def iou_top_p(attr: Any, mask: Any, ties: TieRule = "fractional") -> float:
    """IoU of the map's top-p pixels with the mask, p = the mask's pixel count (paper rule).

    Args:
        attr: ``(H, W)`` map (numpy or torch; singleton axes are squeezed).
        mask: ``(H, W)`` mask; must contain at least one pixel.
        ties: see :func:`top_p_intersection`.

    Returns:
        IoU in [0, 1]. A random map scores a/(2 − a) on average, a = mask fraction.

    Example:
        >>> import numpy as np
        >>> m = np.array([[3, 2], [1, 0]]); mask = np.array([[1, 0], [1, 0]], bool)
        >>> iou_top_p(m, mask)  # top-2 = {(0,0), (0,1)}: 1 shared of 3 in the union
        0.3333333333333333
    """
    inter, n_a, n_b = top_p_intersection(attr, mask, ties=ties)
    if n_b == 0:
        raise ValueError("mask is empty: IoU with the top-p rule needs at least one mask pixel")
    union = n_a + n_b - inter
    return inter / union if union > 0 else 0.0


def pointing_game(attr: Any, mask: Any) -> float:
    """Whether the map's maximum lies inside the mask (Zhang et al. 2016).

    Returns 1.0 or 0.0; when several pixels share the maximum, the share of them inside the
    mask (the hit rate under random tie-breaking), so a constant map scores the mask
    fraction.

    Example:
        >>> import numpy as np
        >>> pointing_game(np.array([[0, 5], [5, 1]]), np.array([[0, 1], [0, 0]], bool))
        0.5
    """
    m, b = _map_and_mask(attr, mask)
    peak = m == m.max()
    return float((peak & b).sum()) / float(peak.sum())


def relevance_mass(attr: Any, mask: Any) -> float:
    """Share of the map's total (non-negative) relevance inside the mask (Arras et al.
    2022, "relevance mass accuracy"); NaN for an all-zero map.

    Example:
        >>> import numpy as np
        >>> relevance_mass(np.array([[3, 1], [0, 0]]), np.array([[1, 0], [0, 0]], bool))
        0.75
    """
    m, b = _map_and_mask(attr, mask)
    m = np.abs(m)
    total = m.sum()
    return float(m[b].sum() / total) if total > 0 else math.nan


def spearman_similarity(a: Any, b: Any) -> float:
    """Spearman rank correlation between two maps (flattened; scipy, average ranks for
    ties). NaN when either map is constant (rank correlation is undefined).

    Example:
        >>> import numpy as np
        >>> spearman_similarity(np.arange(4.).reshape(2, 2), np.arange(4.).reshape(2, 2) ** 3)
        1.0
    """
    x = _as_numpy(a, "map a").astype(np.float64).ravel()
    y = _as_numpy(b, "map b").astype(np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {x.size} vs {y.size} pixels")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def roc_auc(scores: Any, positive: Any) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` items (bool or 0/1;
    scikit-learn, ties count half); NaN when only one class is present.

    Example:
        >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive).astype(bool)
    if positive.all() or not positive.any():
        return math.nan
    return float(roc_auc_score(positive.astype(int), np.asarray(scores)))


def chance_iou(mask: Any) -> float:
    """Expected top-p IoU of a map that ignores the image: a / (2 − a)."""
    b = _as_numpy(mask, "mask").astype(bool)
    a = b.mean()
    return float(a / (2 - a))


def ssim(a: Any, b: Any, data_range: float = 2048.0) -> float:
    """Structural similarity of two ``(H, W)`` images (scikit-image, Gaussian window σ = 1.5
    as in Wang et al. 2004), with ``data_range`` the span of valid pixel values (2048 for
    [−1024, 1024]).

    Example:
        >>> import numpy as np
        >>> x = np.linspace(-1024, 1024, 64 * 64).reshape(64, 64)
        >>> ssim(x, x)
        1.0
    """
    from skimage.metrics import structural_similarity

    a, b = _as_numpy(a, "a").astype(np.float64), _as_numpy(b, "b").astype(np.float64)
    return float(
        structural_similarity(a, b, data_range=data_range, gaussian_weights=True, sigma=1.5)
    )


def fine_edge_energy(image: Any) -> float:
    """Mean magnitude of the image's fine edges: |∇(G_σ=1.5 ∗ x − G_σ=6 ∗ x)| (gradient of a
    difference of Gaussians: ribs, vessels, lines, text; not the smooth background)."""
    from scipy import ndimage

    x = _as_numpy(image, "image").astype(np.float64)
    dog = ndimage.gaussian_filter(x, 1.5) - ndimage.gaussian_filter(x, 6.0)
    return float(np.hypot(ndimage.sobel(dog, 0), ndimage.sobel(dog, 1)).mean() / 8.0)


def fine_edge_ratio(image: Any, reference: Any) -> float:
    """:func:`fine_edge_energy` of ``image`` over that of ``reference``: 1 keeps every fine
    edge, 0.5 means half the edge energy was blurred away.

    Example:
        >>> import numpy as np
        >>> from scipy import ndimage
        >>> x = np.random.default_rng(0).normal(0, 300, (64, 64))
        >>> fine_edge_ratio(x, x), fine_edge_ratio(ndimage.gaussian_filter(x, 3), x) < 0.5
        (1.0, True)
    """
    ref = fine_edge_energy(reference)
    return fine_edge_energy(image) / ref if ref > 0 else math.nan


def counterfactual_quality(exp: Any, index: int = 0, autoencoder: Any = None) -> dict[str, Any]:
    """Quality of the removal counterfactual (the most negative λ) of one explanation.

    Args:
        exp: a :class:`gifsplanation.Explanation`.
        index: the image in the batch.
        autoencoder: the explanation's autoencoder (a :class:`gifsplanation.Autoencoder` or
            any object with ``encode``/``decode``); needed for the realism proxy, else it
            is NaN.

    Returns:
        A dict with:

        * ``valid`` — the lower search reached its goal (the prediction fell by the
          requested amount, e.g. 30% of f(x_0)); ``stop_reason`` says why not.
        * ``initial_pred``, ``counterfactual_pred``, ``pred_change`` (f(x_0) − f(x_λmin))
          and ``relative_change`` (that over f(x_0)), ``goal``.
        * ``proximity`` — mean |x_λmin − x_0| in image units ([−1024, 1024] range), and
          ``proximity_fraction`` — that over x_0's dynamic range.
        * ``realism`` — the realism proxy: the autoencoder's reconstruction error of the
          counterfactual, mean |D(E(x_λ)) − x_λ|, divided by the same error of x_0. An
          autoencoder reconstructs images like its training data well; a ratio near 1
          means the counterfactual is as close to the data manifold as the reconstruction
          itself, above 1 means it drifted off it.
        * ``ssim`` — :func:`ssim` of the counterfactual x_λmin with the *input* x (not
          x_0): how much of the patient's image is still there; ``sharpness`` —
          :func:`fine_edge_ratio` of x_λmin to the input.
        * ``ae_effect`` — f(x_0) − f(x): how much the λ = 0 frame alone moved the
          prediction (0 in residual mode by construction).
        * ``mode`` — the explanation's frame mode.
        * ``lambda`` — λ_min.
    """
    from ._core.adapters import Autoencoder

    zi = int(exp.zero_index[index])
    frames = exp.frames[index]
    x0, xl = frames[zi], frames[0]
    p0 = float(exp.preds[index, zi])
    pl = float(exp.preds[index, 0])
    reason = exp.stop_reasons[index]["lower"]
    rng = float(x0.max() - x0.min()) or 1.0
    proximity = float((xl - x0).abs().mean())
    realism = math.nan
    if autoencoder is not None:
        ae = autoencoder if isinstance(autoencoder, Autoencoder) else Autoencoder(autoencoder)
        pair = torch.stack([x0, xl])
        with torch.no_grad():
            rec = ae.decode(ae.encode(pair), tuple(pair.shape[-2:]))
        err = (rec - pair).abs().flatten(1).mean(1)
        realism = float(err[1] / err[0].clamp_min(1e-12))
    goal = float(exp.goals[index, 0])
    x_in = exp.images[index].mean(0)
    return {
        "valid": bool(reason.reached),
        "stop_reason": str(reason),
        "initial_pred": p0,
        "counterfactual_pred": pl,
        "goal": goal,
        "pred_change": p0 - pl,
        "relative_change": (p0 - pl) / p0 if p0 > 0 else math.nan,
        "proximity": proximity,
        "proximity_fraction": proximity / rng,
        "realism": realism,
        "ssim": ssim(xl.mean(0), x_in),
        "sharpness": fine_edge_ratio(xl.mean(0), x_in),
        "ae_effect": p0 - float(exp.input_preds[index]),
        "mode": getattr(exp, "mode", "reconstruction"),
        "lambda": float(exp.lambdas[index, 0]),
    }
