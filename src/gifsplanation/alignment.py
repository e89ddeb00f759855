"""Counterfactual alignment: what do other classifiers make of one classifier's counterfactuals?

Cohen et al., "Identifying Spurious Correlations using Counterfactual Alignment"
(arXiv 2312.02186). Latent Shift generates counterfactual frames for a *base* classifier A
and one of its targets; every frame is also fed to *observers*: other classifiers, a
regressor, or A's other outputs. When an observer's prediction moves along A's sequence
as A's does, the observer relies on what A's counterfactual changes; when it stays put,
it does not. A shortcut shows as alignment with the wrong model (a marker-reading
classifier whose counterfactuals move no opacity reader), or as missing alignment where
the task says it should be.

Statistics, per image and observer (the λ = 0 frame is the reference, the counterfactual
is the end of the sequence on ``side``, by default the most negative λ: A's target
removed):

* **relative change** (the paper's metric): the observer's change between the
  counterfactual and λ = 0, divided by the base model's change. 1 means the observer
  moved as much as A, 0 not at all, a negative value the other way. Images whose base
  change is smaller than ``min_base_change`` (absolute, in A's probability) are excluded
  and counted, as the paper kept only rows whose base change exceeded a threshold.
* **slope**: least-squares slope of the observer's output against A's over every frame
  of the sequence (both sides), in observer units per unit of A's probability.
* **Pearson / Spearman**: correlation of the observer's output with A's along the
  sequence (undefined, and counted, when either is constant).

Over the dataset: means (and the median relative change), the share of images where the
observer moves in A's direction, and the Pearson correlation across images of the two
changes (the scatter plot), each with a percentile bootstrap confidence interval over
images.

The frames come from :class:`~gifsplanation.LatentShift` (either frame mode) and are
reused as they are: :func:`align_explanation` reads an :class:`~gifsplanation.Explanation`
already computed (A's predictions are its ``preds``); :func:`align` explains images in
chunks and aligns each chunk. Observers run batched under ``torch.no_grad()``.

To validate the method, fabricate a shortcut as the paper did: :func:`add_marker` draws a
small bright letter in a corner and :func:`write_marked_dataset` writes a copy of a
dataset in which most images of one label carry it (and few others), to train a
classifier on.

Example:
    >>> from gifsplanation import LatentShift
    >>> from gifsplanation.alignment import Observer, align
    >>> from gifsplanation.testing import tiny_models
    >>> clf, ae, data = tiny_models()
    >>> mean = lambda x: x.mean(dim=(1, 2, 3))            # the image's mean brightness
    >>> res = align(LatentShift(clf, ae), data.positive(4), "blob",
    ...             [Observer(clf, "blob", name="same"), Observer(mean, name="mean")])
    >>> stats = res.statistics()
    >>> round(stats["same"]["relative_change"]["mean"], 3)
    1.0
    >>> sorted(stats["mean"])[:3]
    ['agreement', 'excluded', 'n_images']
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import Explanation, LatentShift, infer_output_kind, resolve_target
from .render import write_bytes, write_text
from .render.report import data_uri

log = logging.getLogger(__name__)

Scale = Literal["probability", "logit", "value"]
Side = Literal["lower", "upper"]
SIDES: tuple[str, ...] = ("lower", "upper")
STATISTICS = ("relative_change", "slope", "pearson", "spearman")
"""The per-image statistics, in the order tables show them."""
DEFAULT_MIN_BASE_CHANGE = 0.1
"""Images whose base prediction moves less than this (absolute probability) between λ = 0
and the counterfactual are excluded (a 30% relative drop of p = 0.34 is 0.1)."""
_LITERAL = {"parse_math": False, "usetex": False}  # model and target names are user data


# -- observers ------------------------------------------------------------------------------
@dataclass
class Observer:
    """One output of a model, read on every counterfactual frame.

    Args:
        model: an ``nn.Module`` or any function mapping images ``(B, C, H, W)`` to
            ``(B, n_outputs)`` or ``(B,)``, e.g. another classifier, a regressor, the base
            classifier itself (for its other outputs) or a plain measurement such as
            ``lambda x: x.mean(dim=(1, 2, 3))``.
        output: which output, by index or name (names from the model's ``targets`` /
            ``pathologies``); default 0.
        name: label in tables and plots (default ``"<model name>:<output name>"``).
        scale: how the output is read: ``"probability"`` (as returned), ``"logit"``
            (a sigmoid is applied, as the engine does for logit classifiers) or
            ``"value"`` (as returned: a quantity such as an infection extent or a
            brightness). Default: the model's ``output_kind`` when it declares one
            (:func:`~gifsplanation.infer_output_kind`), else ``"value"``.

    ``nn.Module`` observers are put in eval mode (dropout would make the readings random).
    """

    model: Callable[[torch.Tensor], torch.Tensor]
    output: int | str = 0
    name: str | None = None
    scale: Scale | None = None
    index: int = field(init=False, default=-1)

    def __post_init__(self) -> None:
        if not callable(self.model):
            raise TypeError(f"an observer's model must be callable, got {type(self.model)}")
        if self.scale is None:
            kind = infer_output_kind(self.model) if isinstance(self.model, nn.Module) else None
            self.scale = kind or "value"
        if self.scale not in ("probability", "logit", "value"):
            raise ValueError(
                f"observer scale must be probability, logit or value, got {self.scale!r}"
            )
        targets = _targets(self.model)
        n = len(targets) if targets else None
        if isinstance(self.output, str) and not targets and not self.output.strip().isdigit():
            raise ValueError(
                f"observer output {self.output!r} given by name, but "
                f"{_model_name(self.model)} has no output names; pass an index"
            )
        self.index = resolve_target(self.output, targets, n)
        if self.name is None:
            out = targets[self.index] if targets else str(self.index)
            self.name = f"{_model_name(self.model)}:{out}"
        if isinstance(self.model, nn.Module):
            self.model.eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The observed output on ``images``, ``(B,)`` float."""
        device = _device(self.model)
        out = self.model(images if device is None else images.to(device))
        out = out[:, None] if out.ndim == 1 else out
        if out.ndim != 2 or out.shape[0] != images.shape[0]:
            raise ValueError(
                f"observer {self.name} returned shape {tuple(out.shape)} for "
                f"{images.shape[0]} images; expected (B,) or (B, n_outputs)"
            )
        if self.index >= out.shape[1]:
            raise ValueError(
                f"observer {self.name}: output {self.index} does not exist "
                f"(the model returns {out.shape[1]})"
            )
        value = out[:, self.index].float()
        return (torch.sigmoid(value) if self.scale == "logit" else value).cpu()


def observers_for(
    model: Callable[[torch.Tensor], torch.Tensor],
    outputs: Sequence[int | str] | None = None,
    *,
    prefix: str | None = None,
    scale: Scale | None = None,
) -> list[Observer]:
    """Observers for several outputs of one model (default: every named output).

    Args:
        model: the model (see :class:`Observer`).
        outputs: indices or names; ``None`` = all the model's named outputs (or output 0
            when it names none).
        prefix: the model's label in the observers' names (default its ``name``).
        scale: see :class:`Observer`.
    """
    targets = _targets(model)
    chosen: list[int | str] = list(outputs) if outputs else list(targets or [0])
    out = []
    for o in chosen:
        obs = Observer(model, o, scale=scale)
        if prefix is not None:
            label = targets[obs.index] if targets else str(obs.index)
            obs.name = f"{prefix}:{label}"
        out.append(obs)
    return out


@torch.no_grad()
def observe(
    frames: torch.Tensor, observers: Sequence[Observer], batch_size: int = 16
) -> torch.Tensor:
    """Every observer's output on every frame: ``(B, T, C, H, W)`` → ``(B, K, T)``.

    Frames are flattened and read in chunks of ``batch_size`` (each chunk once per
    observer), under ``torch.no_grad()``.
    """
    if frames.ndim != 5:
        raise ValueError(f"frames must be (B, T, C, H, W), got {tuple(frames.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    b, t = frames.shape[:2]
    flat = frames.reshape(b * t, *frames.shape[2:])
    out = torch.empty(len(observers), b * t)
    for start in range(0, b * t, batch_size):
        chunk = flat[start : start + batch_size]
        for k, obs in enumerate(observers):
            out[k, start : start + len(chunk)] = obs(chunk)
    return out.view(len(observers), b, t).permute(1, 0, 2).contiguous()


# -- the result -----------------------------------------------------------------------------
@dataclass
class Alignment:
    """Predictions along a base classifier's counterfactual sequences, and their statistics.

    Attributes:
        base: label of the base model's explained output (``"<model>:<target>"``).
        observers: the observers' labels, ``K`` of them.
        names: a label per image (file names in the command line), ``N`` of them.
        lambdas: λ of each frame, ``(N, T)``, ascending.
        base_preds: the base model's prediction at each frame, ``(N, T)``.
        observed: each observer's output at each frame, ``(N, K, T)``.
        zero_index: position of λ = 0 in each sequence, ``(N,)``.
        refused: per image, whether the out-of-distribution gate refused it (no frames).
        notes: per image, the engine's plain-language notes (absent target, unmet goal).
        mode: frame mode of the counterfactuals (``"residual"`` or ``"reconstruction"``).
        side: which end of the sequence is "the counterfactual" (``"lower"``: the most
            negative λ, the target removed; ``"upper"``: the most positive).
        min_base_change: images whose base change is smaller (absolute) are excluded.
        scales: per observer, how its output is read (see :class:`Observer`).
        bootstrap: bootstrap resamples over images for the confidence intervals.
        confidence: confidence level of the intervals.
        seed: seed of the bootstrap.
        settings: anything else worth recording (models, search options, command).
    """

    base: str
    observers: list[str]
    names: list[str]
    lambdas: torch.Tensor
    base_preds: torch.Tensor
    observed: torch.Tensor
    zero_index: torch.Tensor
    refused: list[bool]
    notes: list[list[str]]
    mode: str = "residual"
    side: str = "lower"
    min_base_change: float = DEFAULT_MIN_BASE_CHANGE
    scales: list[str] = field(default_factory=list)
    bootstrap: int = 2000
    confidence: float = 0.95
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {self.side!r}")
        n, k = len(self.names), len(self.observers)
        if self.observed.shape[:2] != (n, k) or self.base_preds.shape[0] != n:
            raise ValueError(
                f"shapes disagree: {n} names, {k} observers, observed "
                f"{tuple(self.observed.shape)}, base {tuple(self.base_preds.shape)}"
            )
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if not self.scales:
            self.scales = ["probability"] * k
        self._cache: dict[tuple[int, float, int], dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.names)

    # per-image numbers ------------------------------------------------------------------
    @property
    def counterfactual_index(self) -> torch.Tensor:
        """Position of the counterfactual in each sequence, ``(N,)`` (first or last frame)."""
        t = self.base_preds.shape[1]
        return torch.full((len(self),), 0 if self.side == "lower" else t - 1, dtype=torch.long)

    @property
    def base_change(self) -> torch.Tensor:
        """The base prediction at the counterfactual minus at λ = 0, ``(N,)``."""
        i = torch.arange(len(self))
        b = self.base_preds.double()
        return b[i, self.counterfactual_index] - b[i, self.zero_index]

    @property
    def observer_change(self) -> torch.Tensor:
        """Each observer's output at the counterfactual minus at λ = 0, ``(N, K)``."""
        i = torch.arange(len(self))
        o = self.observed.double()
        return o[i, :, self.counterfactual_index] - o[i, :, self.zero_index]

    @property
    def relative_change(self) -> torch.Tensor:
        """Observer change / base change, ``(N, K)`` (NaN where the image is excluded)."""
        rel = self.observer_change / self.base_change[:, None]
        return torch.where(self.included[:, None], rel, torch.nan)

    def exclusion(self, index: int) -> str | None:
        """Why image ``index`` is left out of the statistics (``None``: it is used)."""
        if self.refused[index]:
            return "refused (out of distribution)"
        d = float(self.base_change[index])
        if not math.isfinite(d):
            return "base prediction not finite"
        if abs(d) < self.min_base_change:
            return f"base change {d:+.3g} smaller than {self.min_base_change:g}"
        return None

    @property
    def included(self) -> torch.Tensor:
        """Per image, whether it enters the statistics, ``(N,)`` bool."""
        return torch.tensor([self.exclusion(i) is None for i in range(len(self))], dtype=torch.bool)

    def sequence_statistics(self) -> dict[str, np.ndarray]:
        """Slope, Pearson and Spearman of each observer against the base along each
        sequence, ``{"slope": (N, K), "pearson": (N, K), "spearman": (N, K)}`` (NaN where
        undefined: a constant base or observer)."""
        x = self.base_preds.double().numpy()
        y = self.observed.double().numpy()
        return {
            "slope": _slope(x[:, None, :], y),
            "pearson": _pearson(x[:, None, :], y),
            "spearman": _pearson(_ranks(x)[:, None, :], _ranks(y)),
        }

    def per_image(self) -> list[dict[str, Any]]:
        """A JSON-ready record per image: sequences, changes, statistics, exclusion."""
        seq = self.sequence_statistics()
        rel, dobs, dbase = self.relative_change, self.observer_change, self.base_change
        cf = self.counterfactual_index
        out = []
        for i, name in enumerate(self.names):
            why = self.exclusion(i)
            observers = {}
            for k, label in enumerate(self.observers):
                observers[label] = {
                    "values": _floats(self.observed[i, k]),
                    "change": _num(dobs[i, k]),
                    "relative_change": _num(rel[i, k]),
                    "slope": _num(seq["slope"][i, k]),
                    "pearson": _num(seq["pearson"][i, k]),
                    "spearman": _num(seq["spearman"][i, k]),
                }
            out.append(
                {
                    "name": name,
                    "included": why is None,
                    "excluded_because": why,
                    "notes": list(self.notes[i]),
                    "lambdas": _floats(self.lambdas[i]),
                    "zero_index": int(self.zero_index[i]),
                    "counterfactual_index": int(cf[i]),
                    "base": {
                        "preds": _floats(self.base_preds[i]),
                        "initial": _num(self.base_preds[i, int(self.zero_index[i])]),
                        "change": _num(dbase[i]),
                    },
                    "observers": observers,
                }
            )
        return out

    # dataset statistics -----------------------------------------------------------------
    def statistics(
        self, bootstrap: int | None = None, confidence: float | None = None, seed: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Per observer, the dataset statistics with bootstrap confidence intervals.

        Returns:
            ``{observer: {"n_images", "n_used", "excluded": {reason: count},
            "relative_change": {"mean", "median", "ci", "n"}, "slope": {...},
            "pearson": {...}, "spearman": {...}, "agreement": {...},
            "pooled_pearson": {...}}}``: means over the images used, with percentile
            bootstrap intervals (``ci`` = [low, high]) from resampling images;
            ``agreement`` is the share of images where the observer moves in the base's
            direction; ``pooled_pearson`` the correlation across images of the observer's
            change with the base's (the scatter plot). Correlations along a sequence are
            undefined for a constant observer; their ``n`` counts the defined ones.
        """
        bootstrap = self.bootstrap if bootstrap is None else bootstrap
        confidence = self.confidence if confidence is None else confidence
        seed = self.seed if seed is None else seed
        key = (bootstrap, confidence, seed)
        if key not in self._cache:
            self._cache[key] = self._statistics(bootstrap, confidence, seed)
        return self._cache[key]

    def _statistics(self, bootstrap: int, confidence: float, seed: int) -> dict[str, Any]:
        used = self.included.numpy()
        reasons: dict[str, int] = {}
        for i in range(len(self)):
            why = self.exclusion(i)
            if why is not None:
                key = "too little base change" if why.startswith("base change") else why
                reasons[key] = reasons.get(key, 0) + 1
        seq = self.sequence_statistics()
        rel = self.relative_change.numpy()
        dobs = self.observer_change.numpy()
        dbase = self.base_change.numpy()
        out: dict[str, Any] = {}
        for k, label in enumerate(self.observers):
            # the same resamples for every statistic of an observer
            rng = np.random.default_rng(seed)
            n = int(used.sum())
            idx = rng.integers(0, n, size=(bootstrap, n)) if n and bootstrap else None
            values = {
                "relative_change": rel[used, k],
                "slope": seq["slope"][used, k],
                "pearson": seq["pearson"][used, k],
                "spearman": seq["spearman"][used, k],
                "agreement": (np.sign(dobs[used, k]) == np.sign(dbase[used])).astype(float),
            }
            record: dict[str, Any] = {
                "n_images": len(self),
                "n_used": n,
                "excluded": dict(reasons),
                "scale": self.scales[k],
            }
            for stat, v in values.items():
                record[stat] = _mean_with_ci(v, idx, confidence)
            record["relative_change"]["median"] = _nan_to_none(
                float(np.nanmedian(values["relative_change"])) if n else math.nan
            )
            record["pooled_pearson"] = _pooled_with_ci(dbase[used], dobs[used, k], idx, confidence)
            out[label] = record
        return out

    # serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data: settings, statistics and per-image records."""
        return {
            "base": self.base,
            "observers": list(self.observers),
            "scales": list(self.scales),
            "mode": self.mode,
            "side": self.side,
            "min_base_change": self.min_base_change,
            "bootstrap": self.bootstrap,
            "confidence": self.confidence,
            "seed": self.seed,
            "settings": self.settings,
            "statistics": self.statistics(),
            "images": self.per_image(),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per (image, observer): the table written as ``alignment.csv``."""
        out = []
        for rec in self.per_image():
            for label, o in rec["observers"].items():
                out.append(
                    {
                        "image": rec["name"],
                        "observer": label,
                        "included": rec["included"],
                        "excluded_because": rec["excluded_because"] or "",
                        "base_initial": rec["base"]["initial"],
                        "base_change": rec["base"]["change"],
                        "observer_initial": o["values"][rec["zero_index"]],
                        "observer_change": o["change"],
                        "relative_change": o["relative_change"],
                        "slope": o["slope"],
                        "pearson": o["pearson"],
                        "spearman": o["spearman"],
                    }
                )
        return out

    @classmethod
    def concatenate(cls, parts: Sequence[Alignment]) -> Alignment:
        """One alignment from several over the same base, observers and settings (chunks
        of a dataset); sequences of different lengths are not allowed."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if (p.base, p.observers, p.mode, p.side) != (
                first.base,
                first.observers,
                first.mode,
                first.side,
            ):
                raise ValueError("alignments over different bases, observers or settings")
        return cls(
            base=first.base,
            observers=list(first.observers),
            names=[n for p in parts for n in p.names],
            lambdas=torch.cat([p.lambdas for p in parts]),
            base_preds=torch.cat([p.base_preds for p in parts]),
            observed=torch.cat([p.observed for p in parts]),
            zero_index=torch.cat([p.zero_index for p in parts]),
            refused=[r for p in parts for r in p.refused],
            notes=[n for p in parts for n in p.notes],
            mode=first.mode,
            side=first.side,
            min_base_change=first.min_base_change,
            scales=list(first.scales),
            bootstrap=first.bootstrap,
            confidence=first.confidence,
            seed=first.seed,
            settings=dict(first.settings),
        )


# -- computing it ---------------------------------------------------------------------------
def align_explanation(
    explanation: Explanation,
    observers: Sequence[Observer],
    *,
    names: Sequence[str] | None = None,
    base: str | None = None,
    side: Side = "lower",
    min_base_change: float = DEFAULT_MIN_BASE_CHANGE,
    batch_size: int = 16,
    bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
) -> Alignment:
    """Align observers with an explanation already computed (its frames are reused).

    Args:
        explanation: from :meth:`LatentShift.explain` (either frame mode); its ``preds``
            are the base model's predictions (not recomputed).
        observers: what to read on every frame (:class:`Observer`).
        names: a label per image (default ``"image 0"``, ...).
        base: label of the base output (default ``"base:<target name>"``).
        side: ``"lower"`` (default: the counterfactual is the most negative λ, the target
            removed) or ``"upper"``.
        min_base_change: exclude images whose base change is smaller (absolute).
        batch_size: frames per observer call.
        bootstrap, confidence, seed: the confidence intervals' resampling.
        settings: recorded as they are (models, options).
    """
    if not observers:
        raise ValueError("give at least one observer")
    labels = [str(o.name) for o in observers]
    if len(set(labels)) != len(labels):
        raise ValueError(f"observer names must be unique, got {labels}")
    exp = explanation
    n = len(exp)
    if names is None:
        names = [f"image {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"got {len(names)} names for {n} images")
    if base is None:
        targets = {t or "?" for t in exp.target_names}
        base = f"base:{'/'.join(sorted(targets))}"
    return Alignment(
        base=base,
        observers=labels,
        names=list(names),
        lambdas=exp.lambdas.detach().cpu().double(),
        base_preds=exp.preds.detach().cpu().double(),
        observed=observe(exp.frames, observers, batch_size).double(),
        zero_index=exp.zero_index.detach().cpu().long(),
        refused=list(exp.refused),
        notes=[exp.notes(i) for i in range(n)],
        mode=exp.mode,
        side=side,
        min_base_change=float(min_base_change),
        scales=[str(o.scale) for o in observers],
        bootstrap=bootstrap,
        confidence=confidence,
        seed=seed,
        settings=dict(settings or {}),
    )


def align(
    explainer: LatentShift,
    images: torch.Tensor | Sequence[torch.Tensor],
    target: int | str,
    observers: Sequence[Observer],
    *,
    names: Sequence[str] | None = None,
    images_per_call: int = 8,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> Alignment:
    """Explain ``images`` for ``target`` with ``explainer`` and align ``observers`` with them.

    Args:
        explainer: a :class:`~gifsplanation.LatentShift` (its classifier is the base).
        images: ``(N, C, H, W)``, or a sequence of ``(C, H, W)`` / ``(1, C, H, W)``
            tensors of one size.
        target: the base classifier's output to explain (index or name).
        observers: what to read on every frame.
        names: a label per image.
        images_per_call: images explained together (memory: frames of this many images
            are held at once).
        progress: called with (images done, total) after each chunk.
        **options: :func:`align_explanation`'s options (``side``, ``min_base_change``,
            ``batch_size``, ``bootstrap``, ``confidence``, ``seed``, ``settings``).

    Returns:
        An :class:`Alignment` over all images.
    """
    if isinstance(images, torch.Tensor):
        x = images if images.ndim == 4 else images[None]
    else:
        x = torch.cat([im if im.ndim == 4 else im[None] for im in images])
    n = x.shape[0]
    names = list(names) if names is not None else [f"image {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"got {len(names)} names for {n} images")
    if images_per_call < 1:
        raise ValueError(f"images_per_call must be >= 1, got {images_per_call}")
    targets = explainer.targets
    t = explainer.classifier.target_index(target)
    base = options.pop("base", None) or f"{_model_name(explainer.classifier.model)}:" + (
        targets[t] if targets and t < len(targets) else str(t)
    )
    parts = []
    for start in range(0, n, images_per_call):
        chunk = slice(start, min(start + images_per_call, n))
        exp = explainer.explain(x[chunk], target=t)
        parts.append(align_explanation(exp, observers, names=names[chunk], base=base, **options))
        if progress is not None:
            progress(chunk.stop, n)
    return Alignment.concatenate(parts)


# -- statistics helpers ---------------------------------------------------------------------
def _centred(a: np.ndarray) -> np.ndarray:
    return a - a.mean(-1, keepdims=True)


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc, yc = _centred(x), _centred(y)
    var = (xc * xc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (xc * yc).sum(-1) / var
    return np.where(var > 1e-24, out, np.nan)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc, yc = _centred(x), _centred(y)
    sx, sy = np.sqrt((xc * xc).sum(-1)), np.sqrt((yc * yc).sum(-1))
    # "constant" relative to the values' size: float noise is no variation
    tiny = 1e-9 * (1 + np.abs(x).max(-1)) * np.sqrt(x.shape[-1])
    tiny_y = 1e-9 * (1 + np.abs(y).max(-1)) * np.sqrt(y.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / (sx * sy)
    return np.where((sx > tiny) & (sy > tiny_y), np.clip(r, -1, 1), np.nan)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties averaged (as Spearman's correlation needs)."""
    from scipy.stats import rankdata

    return rankdata(a, axis=-1).astype(float)


def _interval(samples: np.ndarray, confidence: float) -> list[float | None]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return [None, None]
    a = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(samples, [a, 100 - a])
    return [float(lo), float(hi)]


def _mean_with_ci(v: np.ndarray, idx: np.ndarray | None, confidence: float) -> dict[str, Any]:
    defined = np.isfinite(v)
    mean = float(v[defined].mean()) if defined.any() else math.nan
    ci: list[float | None] = [None, None]
    if idx is not None and defined.sum() >= 2:
        with np.errstate(invalid="ignore"):
            vals = np.where(defined, v, 0.0)[idx]
            counts = defined[idx].sum(1)
            boot = np.where(counts > 0, vals.sum(1) / np.maximum(counts, 1), np.nan)
        ci = _interval(boot, confidence)
    return {"mean": _nan_to_none(mean), "ci": ci, "n": int(defined.sum())}


def _pooled_with_ci(
    x: np.ndarray, y: np.ndarray, idx: np.ndarray | None, confidence: float
) -> dict[str, Any]:
    r = float(_pearson(x[None], y[None])[0]) if len(x) >= 3 else math.nan
    ci: list[float | None] = [None, None]
    if idx is not None and len(x) >= 3:
        ci = _interval(_pearson(x[idx], y[idx]), confidence)
    return {"r": _nan_to_none(r), "ci": ci, "n": len(x)}


def _nan_to_none(v: float) -> float | None:
    return None if not math.isfinite(v) else v


def _num(v: Any) -> float | None:
    return _nan_to_none(float(v))


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.reshape(-1)]


def _targets(model: Any) -> list[str] | None:
    for attr in ("targets", "pathologies"):
        names = getattr(model, attr, None)
        if names is not None:
            return [str(n) for n in names]
    return None


def _model_name(model: Any) -> str:
    name = getattr(model, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(model, "__name__", None) or type(model).__name__


def _device(model: Any) -> torch.device | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return None


# -- figures --------------------------------------------------------------------------------
def _figure(width: float, height: float, dpi: int = 100) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_bytes(path, buf.getvalue())


def _fmt_ci(stat: Mapping[str, Any], key: str = "mean") -> str:
    v, ci = stat.get(key), stat.get("ci") or [None, None]
    if v is None:
        return "n/a"
    if ci[0] is None:
        return f"{v:.3g}"
    return f"{v:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]"


def plot_image(alignment: Alignment, index: int, path: str | os.PathLike[str]) -> Path:
    """Image ``index``: every output along λ (left) and each observer's change against
    the base's change along the sequence (right; the diagonal is full alignment)."""
    a, i = alignment, index
    lam = a.lambdas[i].numpy()
    z = int(a.zero_index[i])
    base = a.base_preds[i].numpy()
    fig = _figure(10.0, 4.0, dpi=72)  # one per image: kept small for the report
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.plot(lam, base, "o-", color="black", lw=2, label=f"{a.base} (base)")
    for k, label in enumerate(a.observers):
        left.plot(lam, a.observed[i, k].numpy(), "o-", ms=3, label=label)
        right.plot(
            base - base[z], a.observed[i, k].numpy() - float(a.observed[i, k, z]), "o-", ms=3
        )
    left.axvline(0.0, color="gray", lw=0.8)
    left.set_xlabel("λ  (negative removes the base target, positive adds it)", **_LITERAL)
    left.set_ylabel("output", **_LITERAL)
    left.grid(alpha=0.3)
    for text in left.legend(fontsize=7, loc="best").get_texts():
        text.update(_LITERAL)
    lim = max(1e-3, float(np.abs(base - base[z]).max()))
    right.plot([-lim, lim], [-lim, lim], "--", color="gray", lw=0.8, label="moves as the base")
    right.axhline(0, color="gray", lw=0.5)
    right.axvline(0, color="gray", lw=0.5)
    right.set_xlabel(f"change of {a.base} from λ = 0", **_LITERAL)
    right.set_ylabel("observer's change from λ = 0", **_LITERAL)
    right.grid(alpha=0.3)
    why = a.exclusion(i)
    title = f"{a.names[i]}" + (f"  (excluded: {why})" if why else "")
    fig.suptitle(title, fontsize=9, **_LITERAL)
    return _save(fig, path)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return (n + cols - 1) // cols, cols


def plot_curves(alignment: Alignment, path: str | os.PathLike[str]) -> Path:
    """Per observer, every used image's observer change against the base change along its
    sequence (thin lines) and the median curve (binned on the base change)."""
    a = alignment
    stats = a.statistics()
    rows, cols = _grid(len(a.observers))
    fig = _figure(4.2 * cols, 3.6 * rows)
    used = a.included.numpy()
    i_all = np.arange(len(a))
    dz = a.base_preds.numpy() - a.base_preds.numpy()[i_all, a.zero_index.numpy()][:, None]
    for k, label in enumerate(a.observers):
        ax = fig.add_subplot(rows, cols, k + 1)
        obs = a.observed[:, k].numpy()
        do = obs - obs[i_all, a.zero_index.numpy()][:, None]
        for i in np.flatnonzero(used):
            ax.plot(dz[i], do[i], "-", color="tab:blue", alpha=0.25, lw=0.8)
        if used.any():
            xs, ys = dz[used].ravel(), do[used].ravel()
            edges = np.quantile(xs, np.linspace(0, 1, 11))
            mid, med = [], []
            for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                sel = (xs >= lo) & (xs <= hi)
                if sel.sum() >= 3:
                    mid.append(float(np.median(xs[sel])))
                    med.append(float(np.median(ys[sel])))
            ax.plot(mid, med, "o-", color="black", lw=2, ms=3, label="median")
            lim = float(np.abs(xs).max()) or 1.0
            ax.plot([-lim, lim], [-lim, lim], "--", color="gray", lw=0.8, label="moves as base")
        ax.axhline(0, color="gray", lw=0.5)
        ax.axvline(0, color="gray", lw=0.5)
        s = stats[label]
        ax.set_title(
            f"{label}\nrelative change {_fmt_ci(s['relative_change'])}",
            fontsize=8,
            **_LITERAL,
        )
        ax.set_xlabel(f"change of {a.base}", fontsize=8, **_LITERAL)
        ax.set_ylabel("observer's change", fontsize=8, **_LITERAL)
        ax.grid(alpha=0.3)
        if used.any():
            for text in ax.legend(fontsize=7, loc="best").get_texts():
                text.update(_LITERAL)
    fig.suptitle(
        f"Along {a.base}'s counterfactual sequences ({int(used.sum())} of {len(a)} images)",
        fontsize=10,
        **_LITERAL,
    )
    return _save(fig, path)


def plot_scatter(alignment: Alignment, path: str | os.PathLike[str]) -> Path:
    """Per observer, one point per image: its change against the base's change at the
    counterfactual (excluded images as grey crosses)."""
    a = alignment
    stats = a.statistics()
    rows, cols = _grid(len(a.observers))
    fig = _figure(4.2 * cols, 3.6 * rows)
    used = a.included.numpy()
    dbase, dobs = a.base_change.numpy(), a.observer_change.numpy()
    for k, label in enumerate(a.observers):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.scatter(dbase[used], dobs[used, k], s=12, color="tab:blue", label="used")
        if (~used).any():
            ax.scatter(
                dbase[~used], dobs[~used, k], s=12, marker="x", color="0.6", label="excluded"
            )
        finite = np.isfinite(dbase)
        lim = float(np.abs(dbase[finite]).max()) if finite.any() else 1.0
        ax.plot([-lim, lim], [-lim, lim], "--", color="gray", lw=0.8, label="moves as base")
        ax.axhline(0, color="gray", lw=0.5)
        ax.axvline(0, color="gray", lw=0.5)
        pooled = stats[label]["pooled_pearson"]
        ax.set_title(f"{label}\nr across images {_fmt_ci(pooled, 'r')}", fontsize=8, **_LITERAL)
        ax.set_xlabel(f"change of {a.base} (counterfactual − λ=0)", fontsize=8, **_LITERAL)
        ax.set_ylabel("observer's change", fontsize=8, **_LITERAL)
        ax.grid(alpha=0.3)
        for text in ax.legend(fontsize=7, loc="best").get_texts():
            text.update(_LITERAL)
    return _save(fig, path)


def plot_summary(alignment: Alignment, path: str | os.PathLike[str]) -> Path:
    """Per observer, the mean relative change and the mean Pearson correlation along the
    sequence, with their confidence intervals."""
    a = alignment
    stats = a.statistics()
    labels = list(a.observers)
    fig = _figure(9.0, 0.9 + 0.45 * len(labels))
    for j, (stat, title) in enumerate(
        (("relative_change", "relative change (observer / base)"), ("pearson", "Pearson r"))
    ):
        ax = fig.add_subplot(1, 2, j + 1)
        for k, label in enumerate(labels):
            s = stats[label][stat]
            if s["mean"] is None:
                continue
            lo, hi = s["ci"]
            if lo is not None:
                ax.plot([lo, hi], [k, k], "-", color="tab:blue", lw=2)
            ax.plot([s["mean"]], [k], "o", color="black")
        ax.axvline(0, color="gray", lw=0.8)
        if stat == "relative_change":
            ax.axvline(1, color="gray", lw=0.8, ls="--")
        else:
            ax.set_xlim(-1.05, 1.05)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if j == 0 else [""] * len(labels), fontsize=8)
        for text in ax.get_yticklabels():
            text.update(_LITERAL)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_title(title, fontsize=9, **_LITERAL)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(
        f"Base {a.base}, {a.mode} frames, {int(a.included.sum())} of {len(a)} images "
        f"({a.confidence:.0%} bootstrap intervals)",
        fontsize=9,
        **_LITERAL,
    )
    return _save(fig, path)


# -- files ----------------------------------------------------------------------------------
def safe_stem(text: str, limit: int = 60) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``-_.``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"
    return stem[:limit]


def write_outputs(
    alignment: Alignment,
    out: str | os.PathLike[str],
    *,
    image_plots: bool = True,
    title: str | None = None,
) -> dict[str, Path]:
    """Write ``alignment.json``, ``alignment.csv``, the figures and ``report.html`` to ``out``.

    Figures: ``alignment-summary.png`` (relative change and correlation with intervals),
    ``alignment-curves.png`` (observer change against base change along every sequence),
    ``alignment-scatter.png`` (one point per image) and, with ``image_plots``, one
    ``images/<n>-<name>.png`` per image (:func:`plot_image`). Every file is written
    atomically.

    Returns:
        ``{key: path}`` of everything written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    doc = alignment.to_dict()
    written["json"] = write_text(out / "alignment.json", json.dumps(doc, indent=2) + "\n")
    buf = io.StringIO()
    rows = alignment.rows()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["image"])
    writer.writeheader()
    writer.writerows(rows)
    written["csv"] = write_text(out / "alignment.csv", buf.getvalue())
    written["summary"] = plot_summary(alignment, out / "alignment-summary.png")
    written["curves"] = plot_curves(alignment, out / "alignment-curves.png")
    written["scatter"] = plot_scatter(alignment, out / "alignment-scatter.png")
    per_image: list[Path | None] = []
    if image_plots:
        width = len(str(max(len(alignment) - 1, 0)))
        for i, name in enumerate(alignment.names):
            p = out / "images" / f"{i:0{width}d}-{safe_stem(Path(name).stem or name)}.png"
            per_image.append(plot_image(alignment, i, p))
    written["report"] = write_alignment_report(
        alignment, out / "report.html", written, per_image, title=title
    )
    return written


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#111;color:#eee;max-width:1500px}
a{color:#8cf} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #444;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#222} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;background:#fff}
figcaption{font-size:.85em;color:#aaa;max-width:720px}
.legend{color:#ccc;font-size:.9em;max-width:900px}
.notes{background:#3a2a10;border-left:4px solid #fa3;padding:.5em 1em}
.excluded{color:#999} details{margin:.5em 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _n(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def write_alignment_report(
    alignment: Alignment,
    path: str | os.PathLike[str],
    figures: Mapping[str, Path],
    per_image: Sequence[Path | None] = (),
    *,
    title: str | None = None,
) -> Path:
    """A self-contained HTML page: settings, the statistics table, the figures (embedded)
    and a table per image (with its plot, when given)."""
    a = alignment
    stats = a.statistics()
    used = int(a.included.sum())
    head = title or f"Counterfactual alignment with {a.base}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        '<meta name="generator" content="gifsplanation">',
        f"<title>{_e(head)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(head)}</h1>",
        '<p class="legend">Counterfactual frames were generated for the base output '
        f"<b>{_e(a.base)}</b> ({_e(a.mode)} frames) and every frame was also given to each "
        "observer. <b>Relative change</b>: the observer's change between the "
        f"counterfactual (the {'most negative' if a.side == 'lower' else 'most positive'} "
        "λ) and λ = 0, divided by the base's change (1: moves as much as the base; 0: does "
        "not move). <b>Slope</b>: least-squares slope of the observer against the base over "
        "the sequence. <b>Pearson/Spearman</b>: their correlation along the sequence. "
        "<b>Agreement</b>: share of images where the observer moves in the base's "
        "direction. <b>r across images</b>: correlation of the two changes over images. "
        f"Means over the images used, with {a.confidence:.0%} percentile bootstrap "
        f"intervals ({a.bootstrap} resamples of images, seed {a.seed}).</p>",
    ]
    excluded = len(a) - used
    reasons = next(iter(stats.values()))["excluded"] if stats else {}
    if excluded:
        why = ", ".join(f"{v} {k}" for k, v in reasons.items())
        parts.append(
            f'<p class="notes">{used} of {len(a)} images used; {excluded} excluded ({_e(why)}; '
            f"minimum base change {a.min_base_change:g}).</p>"
        )
    else:
        parts.append(
            f"<p>All {len(a)} images used (minimum base change {a.min_base_change:g}).</p>"
        )
    header = (
        "<tr><th>observer</th><th>read as</th><th>n</th><th>relative change</th>"
        "<th>median</th><th>slope</th><th>Pearson</th><th>Spearman</th><th>agreement</th>"
        "<th>r across images</th></tr>"
    )
    body = []
    for label, s in stats.items():
        body.append(
            f"<tr><td>{_e(label)}</td><td>{_e(s['scale'])}</td><td class='num'>{s['n_used']}"
            f"</td><td class='num'>{_e(_fmt_ci(s['relative_change']))}</td>"
            f"<td class='num'>{_n(s['relative_change']['median'])}</td>"
            f"<td class='num'>{_e(_fmt_ci(s['slope']))}</td>"
            f"<td class='num'>{_e(_fmt_ci(s['pearson']))} (n={s['pearson']['n']})</td>"
            f"<td class='num'>{_e(_fmt_ci(s['spearman']))} (n={s['spearman']['n']})</td>"
            f"<td class='num'>{_e(_fmt_ci(s['agreement']))}</td>"
            f"<td class='num'>{_e(_fmt_ci(s['pooled_pearson'], 'r'))}</td></tr>"
        )
    parts.append(f"<h2>Over the dataset</h2><table>{header}{''.join(body)}</table>")
    captions = {
        "summary": "mean relative change and Pearson r per observer, with intervals",
        "curves": "each image's observer change against the base change along its sequence",
        "scatter": "one point per image: the two changes at the counterfactual",
    }
    for key, caption in captions.items():
        if key in figures:
            parts.append(
                f'<figure><img alt="{_e(key)}" src="{data_uri(figures[key])}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    if a.settings:
        parts.append("<details><summary>Settings</summary><table>")
        for k, v in a.settings.items():
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            parts.append(f"<tr><th>{_e(k)}</th><td>{_e(text)}</td></tr>")
        parts.append("</table></details>")
    parts.append("<h2>Per image</h2>")
    records = a.per_image()
    for i, rec in enumerate(records):
        cls = "" if rec["included"] else ' class="excluded"'
        parts.append(f"<details{cls}><summary>{_e(rec['name'])}: base ")
        parts.append(
            f"{_n(rec['base']['initial'])} → change {_n(rec['base']['change'])}"
            + (f" — excluded: {_e(rec['excluded_because'])}" if not rec["included"] else "")
            + "</summary>"
        )
        if rec["notes"]:
            notes = "".join(f"<li>{_e(n)}</li>" for n in rec["notes"])
            parts.append(f'<ul class="notes">{notes}</ul>')
        rows = "".join(
            f"<tr><td>{_e(label)}</td><td class='num'>{_n(o['values'][rec['zero_index']])}</td>"
            f"<td class='num'>{_n(o['change'])}</td><td class='num'>{_n(o['relative_change'])}"
            f"</td><td class='num'>{_n(o['slope'])}</td><td class='num'>{_n(o['pearson'])}</td>"
            f"<td class='num'>{_n(o['spearman'])}</td></tr>"
            for label, o in rec["observers"].items()
        )
        parts.append(
            "<table><tr><th>observer</th><th>at λ=0</th><th>change</th><th>relative</th>"
            f"<th>slope</th><th>Pearson</th><th>Spearman</th></tr>{rows}</table>"
        )
        plot = per_image[i] if i < len(per_image) else None
        if plot is not None:
            parts.append(f'<figure><img alt="curves" src="{data_uri(plot)}"></figure>')
        parts.append("</details>")
    parts.append("</body></html>\n")
    return write_text(path, "".join(parts))


# -- a fabricated shortcut ------------------------------------------------------------------
_GLYPHS = {
    "C": ("01111", "10000", "10000", "10000", "10000", "10000", "01111"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "X": ("10001", "10001", "01010", "00100", "01010", "10001", "10001"),
}
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def marker_mask(
    height: int,
    width: int,
    *,
    letter: str = "C",
    corner: str = "top-right",
    size: float = 0.1,
    margin: float = 0.06,
) -> np.ndarray:
    """Where :func:`add_marker` draws: a block letter ``size`` × the image side tall,
    ``margin`` × the side from ``corner`` (bool ``(height, width)``).

    Example:
        >>> m = marker_mask(224, 224)
        >>> m.shape, int(m.sum()) > 0, bool(m[:, :112].any())
        ((224, 224), True, False)
    """
    if letter not in _GLYPHS:
        raise ValueError(f"letter must be one of {', '.join(_GLYPHS)}, got {letter!r}")
    if corner not in CORNERS:
        raise ValueError(f"corner must be one of {', '.join(CORNERS)}, got {corner!r}")
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]])
    side = min(height, width)
    h = max(7, int(round(size * side)))
    w = max(5, int(round(h * 5 / 7)))
    rows = (np.arange(h) * 7 // h)[:, None]
    cols = (np.arange(w) * 5 // w)[None, :]
    block = glyph[rows, cols]
    m = int(round(margin * side))
    top = m if corner.startswith("top") else height - m - h
    left = m if corner.endswith("left") else width - m - w
    out = np.zeros((height, width), dtype=bool)
    out[top : top + h, left : left + w] = block
    return out


def add_marker(
    images: torch.Tensor | np.ndarray,
    *,
    value: float | None = None,
    **geometry: Any,
) -> torch.Tensor | np.ndarray:
    """A copy of ``images`` with a bright letter drawn in a corner (:func:`marker_mask`).

    Args:
        images: ``(..., H, W)`` tensor or array (model space [−1024, 1024], or ``uint8``).
        value: the letter's pixel value (default the brightest of the convention: 255 for
            ``uint8``, 1024 otherwise).
        **geometry: ``letter``, ``corner``, ``size``, ``margin`` of :func:`marker_mask`.

    Example:
        >>> x = add_marker(torch.zeros(1, 1, 64, 64))
        >>> float(x.max()), float(x[..., :, :32].max())
        (1024.0, 0.0)
    """
    h, w = images.shape[-2:]
    mask = marker_mask(int(h), int(w), **geometry)
    if isinstance(images, torch.Tensor):
        fill = 1024.0 if value is None else float(value)
        if images.dtype == torch.uint8 and value is None:
            fill = 255
        out = images.clone()
        out[..., torch.from_numpy(mask).to(images.device)] = fill
        return out
    arr = np.array(images, copy=True)
    fill = (255 if arr.dtype == np.uint8 else 1024.0) if value is None else value
    arr[..., mask] = fill
    return arr


def write_marked_dataset(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    rates: Mapping[str, float],
    *,
    default_rate: float = 0.0,
    split: Literal["train", "val", "all"] = "all",
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    **geometry: Any,
) -> dict[str, Any]:
    """Write a copy of a dataset in which a share of each label's images carry a marker.

    The copy keeps every image's path relative to the source's folder, so a
    :class:`~gifsplanation.datasets.MaskedCXRDataset` of the copy splits train/val exactly
    as the source does (same ``seed`` and ``val_fraction``): a classifier trained on the
    copy's training split is validated on the source's held-out images. Masks are not
    copied; the CSV points to the source's. Write it outside the repository.

    Args:
        source: a dataset CSV or folder (see :class:`~gifsplanation.datasets.MaskedCXRDataset`).
        out: output folder (``data.csv`` and the images).
        rates: per label (source name such as ``covid19`` or target name such as
            ``COVID-19``), the probability that an image carries the marker.
        default_rate: the probability for labels not in ``rates``.
        split: which part of the source to copy (``"all"`` for a training copy).
        labels: only these labels (default all).
        limit: at most this many images, a seeded random choice (in path order).
        seed: seeds which images are marked (and the ``limit`` choice).
        split_seed, val_fraction: the source's split (as in training).
        **geometry: the marker's ``letter``, ``corner``, ``size``, ``margin``.

    Returns:
        ``{"csv": path, "counts": {label: {"images": n, "marked": m}}}``.
    """
    from PIL import Image

    from .datasets import COVID_QU_EX_LABELS, MaskedCXRDataset, read_gray

    for k, v in {**rates, "default": default_rate}.items():
        if not 0 <= v <= 1:
            raise ValueError(f"marker rate for {k} must be in [0, 1], got {v}")
    ds = MaskedCXRDataset(source, split=split, seed=split_seed, val_fraction=val_fraction)
    root = Path(ds.source if ds.source.is_dir() else ds.source.parent)
    names = [ds.labels[t] for t in ds.targets]
    keep = [
        i
        for i, rec in enumerate(ds.records)
        if labels is None or rec.label in labels or names[i] in labels
    ]
    rng = np.random.default_rng(seed)
    if limit is not None and limit < len(keep):
        keep = sorted(int(i) for i in rng.permutation(keep)[:limit])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, counts = [], {}
    for i in keep:
        rec = ds.records[i]
        rate = rates.get(rec.label, rates.get(COVID_QU_EX_LABELS.get(rec.label, ""), None))
        rate = default_rate if rate is None else rate
        marked = bool(rng.random() < rate)
        rel = Path(os.path.relpath(rec.image, root))
        if rel.parts and rel.parts[0] == "..":
            rel = Path(rec.label) / rec.image.name
        img = read_gray(rec.image)
        if marked:
            img = add_marker(img, **geometry)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(dest)
        c = counts.setdefault(names[i], {"images": 0, "marked": 0})
        c["images"] += 1
        c["marked"] += int(marked)
        rows.append(
            {
                "image": rel.as_posix(),
                "label": rec.label,
                "infection_mask": str(rec.infection_mask.resolve()) if rec.infection_mask else "",
                "lung_mask": str(rec.lung_mask.resolve()) if rec.lung_mask else "",
                "marker": int(marked),
            }
        )
    path = out / "data.csv"
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["image", "label", "infection_mask", "lung_mask", "marker"]
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
    return {"csv": path, "counts": counts}
