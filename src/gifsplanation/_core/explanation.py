"""The value :meth:`LatentShift.explain` returns: frames, λs, predictions, maps, and why.

An :class:`Explanation` is plain data (tensors and small records) so renderers, the CLI and
evaluation code read it without touching the models again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .heatmaps import compute_heatmap
from .ood import OODAssessment
from .search import SETTLED, SearchConfig, StopReason

SIDES = ("lower", "upper")


@dataclass
class Cost:
    """Model calls spent on an explanation (a batch of images).

    Attributes:
        search_evaluations: decoder+classifier evaluations of single images made by the λ
            search, per image.
        sweep_evaluations: evaluations added by the frame sweep (search results reused).
        gradient_passes: forward+backward passes through decoder and classifier (one per
            batch of images; it also yields λ = 0 for free).
        input_evaluations: classifier-only evaluations of the input images.
        batches: sequential decoder+classifier calls (a batch of images is one call).
        seconds: wall time of ``explain``.
    """

    search_evaluations: list[int]
    sweep_evaluations: list[int]
    gradient_passes: int = 1
    input_evaluations: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def evaluations(self) -> int:
        """Total decoder+classifier evaluations (search + sweep) over the batch."""
        return sum(self.search_evaluations) + sum(self.sweep_evaluations)


@dataclass
class Explanation:
    """A Latent Shift explanation of a batch of ``B`` images for one target each.

    Attributes:
        images: the inputs, ``(B, C, H, W)``.
        frames: the counterfactuals, ``(B, T, C, H, W)``, λ ascending: x + D(z + λ·dz) −
            D(z) (``mode="residual"``, clamped to ``pixel_range``) or D(z + λ·dz)
            (``mode="reconstruction"``).
        lambdas: the λ of each frame, ``(B, T)``; negative removes, positive adds.
        preds: the classifier's probability for the target at each frame, ``(B, T)``.
        zero_index: position of λ = 0 in each sequence, ``(B,)`` (that frame is the input
            in residual mode, the reconstruction in reconstruction mode).
        input_preds: the probability on the input itself, ``(B,)``.
        targets: the output index explained for each image.
        target_names: their names (``None`` when the classifier has none).
        bounds: the searched (λ_lo, λ_hi) per image, ``(B, 2)``.
        goals: the prediction each side aimed for, ``(B, 2)`` (NaN when disabled).
        stop_reasons: per image, ``{"lower": StopReason, "upper": StopReason}``.
        cost: model calls and time spent.
        strategy, config: how the search was run.
        mode: ``"residual"`` or ``"reconstruction"``: how the frames were composed.
        reconstructions: D(E(x)) per image, ``(B, C, H, W)``.
        operating_points: per image, the probability above which the classifier finds
            its target, ``(B,)``; below it the target is absent (:attr:`target_present`).
        ood: the out-of-distribution gate's verdict (``None`` when no gate was used).
        pixel_range: where residual frames were clamped (``None``: not clamped).

    Example:
        >>> from gifsplanation import LatentShift
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> exp = LatentShift(clf, ae).explain(data.positive(2), target="blob")
        >>> exp.heatmap("max").shape
        torch.Size([2, 32, 32])
    """

    images: torch.Tensor
    frames: torch.Tensor
    lambdas: torch.Tensor
    preds: torch.Tensor
    zero_index: torch.Tensor
    input_preds: torch.Tensor
    targets: list[int]
    target_names: list[str | None]
    bounds: torch.Tensor
    goals: torch.Tensor
    stop_reasons: list[dict[str, StopReason]]
    cost: Cost
    strategy: str
    config: SearchConfig
    mode: str = "reconstruction"
    reconstructions: torch.Tensor | None = None
    operating_points: torch.Tensor | None = None
    ood: OODAssessment | None = None
    pixel_range: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def n_evaluations(self) -> int:
        """Decoder+classifier evaluations spent (search + sweep), over the batch."""
        return self.cost.evaluations

    @property
    def initial_preds(self) -> torch.Tensor:
        """The prediction at λ = 0, ``(B,)`` (equal to :attr:`input_preds` in residual
        mode; on the reconstruction in reconstruction mode)."""
        idx = torch.arange(len(self))
        return self.preds[idx, self.zero_index.cpu()]

    @property
    def target_present(self) -> list[bool]:
        """Per image, whether the classifier finds its target (input prediction at or
        above the operating point). When it does not, the frames show what would add it."""
        if self.operating_points is None:
            return [True] * len(self)
        return [
            float(p) >= float(op)
            for p, op in zip(self.input_preds, self.operating_points, strict=True)
        ]

    @property
    def refused(self) -> list[bool]:
        """Per image, whether it was refused as out of distribution (not explained)."""
        return [r["lower"] is StopReason.OUT_OF_DISTRIBUTION for r in self.stop_reasons]

    def notes(self, index: int = 0) -> list[str]:
        """Plain-language warnings about image ``index``: refused or flagged input, absent
        target, sides that did not reach their goal. Empty when all went as asked."""
        out = []
        reasons = self.stop_reasons[index]
        name = self.target_names[index] or f"output {self.targets[index]}"
        if self.ood is not None and self.ood.flagged[index]:
            verdict = "refused" if self.refused[index] else "explained anyway"
            out.append(f"input {verdict}: {self.ood.reason(index)}")
        if self.refused[index]:
            return out
        if not self.target_present[index]:
            out.append(
                f"the classifier does not find {name} here (p = "
                f"{float(self.input_preds[index]):.3g} < operating point "
                f"{float(self.operating_points[index]):.3g}); "  # type: ignore[index]
                "the frames show what would add it"
            )
        for k, side in enumerate(SIDES):
            if reasons[side] not in SETTLED:
                out.append(self._side_note(index, k, name))
        return out

    def _side_note(self, index: int, k: int, name: str) -> str:
        """Why side ``k`` (0 = removal, 1 = exaggeration) of image ``index`` fell short, with
        the prediction it reached against its goal."""
        side = SIDES[k]
        what = ("removal (λ < 0)", "exaggeration (λ > 0)")[k]
        reason = self.stop_reasons[index][side]
        text = f"{what}: {reason.description}"
        goal = float(self.goals[index, k])
        if reason.reached or math.isnan(goal):
            return text
        start = float(self.input_preds[index])
        end = float(self.preds[index][0 if k == 0 else -1])
        return (
            f"{text}; p({name}) went from {start:.3g} to {end:.3g} against a goal of "
            f"{goal:.3g}: read its end frame as a partial change, not a counterfactual"
        )

    def reached(self, side: str = "lower") -> list[bool]:
        """Whether ``side`` ("lower" or "upper") reached its goal, per image."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return [r[side].reached for r in self.stop_reasons]

    def heatmap(self, method: str = "max") -> torch.Tensor:
        """A 2D attribution map per image, ``(B, H, W)``, non-negative.

        Args:
            method: ``"max"`` (default), ``"mean"``, ``"minmax"``, ``"interval"`` or
                ``"endpoint"`` (the paper code's variant); see
                :mod:`gifsplanation._core.heatmaps`.
        """
        return compute_heatmap(self.frames, self.zero_index, method)

    def summary(self, index: int = 0) -> dict[str, Any]:
        """A JSON-ready record of image ``index``: λs, predictions, bounds, reasons, cost."""
        reasons = self.stop_reasons[index]
        return {
            "target": self.targets[index],
            "target_name": self.target_names[index],
            "input_pred": float(self.input_preds[index]),
            "initial_pred": float(self.initial_preds[index]),
            "lambdas": [float(v) for v in self.lambdas[index]],
            "preds": [float(v) for v in self.preds[index]],
            "zero_index": int(self.zero_index[index]),
            "bounds": {
                "lower": float(self.bounds[index, 0]),
                "upper": float(self.bounds[index, 1]),
            },
            "goals": {
                side: (None if torch.isnan(self.goals[index, i]) else float(self.goals[index, i]))
                for i, side in enumerate(SIDES)
            },
            "stop_reasons": {side: str(reasons[side]) for side in SIDES},
            "stop_descriptions": {side: reasons[side].description for side in SIDES},
            "evaluations": {
                "search": self.cost.search_evaluations[index],
                "sweep": self.cost.sweep_evaluations[index],
            },
            "strategy": self.strategy,
            "mode": self.mode,
            "pixel_range": list(self.pixel_range) if self.pixel_range else None,
            "operating_point": (
                None if self.operating_points is None else float(self.operating_points[index])
            ),
            "target_present": self.target_present[index],
            "ood": None if self.ood is None else self.ood.record(index),
            "notes": self.notes(index),
            "config": asdict(self.config),
        }
