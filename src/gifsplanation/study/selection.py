"""Pick reader-study cases like the paper: predicted positives, a chosen share of them false
positives, balanced over targets.

The paper (§4.6, Appendix F) used, per target, 10 true and 10 false positives with
prediction > 0.6, from one classifier. :func:`candidates` turns a list of labelled images
and the classifier's probabilities into (image, target) candidates; :func:`select_cases`
draws, for every target, ``per_target`` predicted positives of which ``round(per_target ×
fp_share)`` are false positives, seeded, each image used at most once by default, and
returns them in a seeded random order: a list grouped by target and ground truth would
hand its order on to everything built from it (file times, row ids) and leak the answer.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)


def candidates(
    images: Sequence[str],
    labels: Sequence[str | Iterable[str]],
    probabilities: Sequence[Sequence[float]],
    targets: Sequence[str],
) -> list[dict[str, Any]]:
    """Every (image, target) pair with its ground truth and prediction.

    Args:
        images: image paths.
        labels: per image, the ground-truth class name(s) present (a string may join
            several with ``|``).
        probabilities: per image, the classifier's probability for each target.
        targets: the classifier's target names (columns of ``probabilities``); unnamed
            outputs (``""``, as TorchXRayVision uses for outputs a model was not trained
            on) are skipped.

    Returns:
        Rows ``image, target, label (1/0), prediction``.

    Example:
        >>> candidates(["a.png"], ["Normal"], [[0.9, 0.2]], ["COVID-19", "Normal"])[0]
        {'image': 'a.png', 'target': 'COVID-19', 'label': 0, 'prediction': 0.9}
    """
    if not len(images) == len(labels) == len(probabilities):
        raise ValueError(
            f"candidates: {len(images)} images, {len(labels)} labels and "
            f"{len(probabilities)} prediction rows must match"
        )
    rows = []
    for image, label, probs in zip(images, labels, probabilities, strict=True):
        present = (
            {p.strip().lower() for p in label.split("|")}
            if isinstance(label, str)
            else {str(p).strip().lower() for p in label}
        )
        if len(probs) != len(targets):
            raise ValueError(f"{image}: {len(probs)} probabilities for {len(targets)} targets")
        for target, p in zip(targets, probs, strict=True):
            if not target:  # TorchXRayVision leaves untrained outputs unnamed ("")
                continue
            rows.append(
                {
                    "image": image,
                    "target": target,
                    "label": int(target.strip().lower() in present),
                    "prediction": float(p),
                }
            )
    return rows


def select_cases(
    rows: Iterable[Mapping[str, Any]],
    per_target: int = 20,
    fp_share: float = 0.5,
    threshold: float = 0.6,
    targets: Sequence[str] | None = None,
    seed: int = 0,
    unique_images: bool = True,
    shuffle: bool = True,
) -> list[dict[str, Any]]:
    """Choose study cases among candidates.

    Args:
        rows: candidates with ``image, target, label (1 = target present), prediction``
            (see :func:`candidates`).
        per_target: cases per target (paper: 20 = 10 TP + 10 FP).
        fp_share: the share of false positives per target, in [0, 1] (paper: 0.5).
        threshold: only predictions strictly above it count (paper: 0.6).
        targets: targets to use (default: every target among the rows, sorted).
        seed: seed of the random draw and of the output order.
        unique_images: use each image at most once (default True).
        shuffle: return the rows in a seeded random order (default True); ``False``
            groups them by target, true positives first (never hand that order to readers).

    Returns:
        The chosen rows (copies). When a target has too few candidates of a kind, all of
        them are used and a warning is logged.

    Example:
        >>> rows = [{"image": f"{i}.png", "target": "t", "label": i % 2, "prediction": 0.9}
        ...         for i in range(10)]
        >>> sorted(r["label"] for r in select_cases(rows, per_target=4, fp_share=0.25))
        [0, 1, 1, 1]
    """
    if not 0.0 <= fp_share <= 1.0:
        raise ValueError(f"fp_share must be in [0, 1], got {fp_share}")
    if per_target < 1:
        raise ValueError(f"per_target must be at least 1, got {per_target}")
    pool: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if float(row["prediction"]) > threshold:
            pool[(str(row["target"]), int(bool(int(row["label"]))))].append(dict(row))
    chosen_targets = list(targets) if targets is not None else sorted({t for t, _ in pool})
    rng = random.Random(seed)
    used: set[str] = set()
    out: list[dict[str, Any]] = []
    n_fp = round(per_target * fp_share)
    for target in chosen_targets:
        for truth, wanted in ((1, per_target - n_fp), (0, n_fp)):
            options = sorted(pool.get((target, truth), []), key=lambda r: str(r["image"]))
            rng.shuffle(options)
            picked = []
            for row in options:
                if len(picked) == wanted:
                    break
                if unique_images and str(row["image"]) in used:
                    continue
                picked.append(row)
                used.add(str(row["image"]))
            if len(picked) < wanted:
                kind = "true" if truth else "false"
                log.warning(
                    "target %s: only %d %s positives above %.2f (wanted %d)",
                    target,
                    len(picked),
                    kind,
                    threshold,
                    wanted,
                )
            out.extend(picked)
    if shuffle:
        rng.shuffle(out)
    return out


__all__ = ["candidates", "select_cases"]
