"""The one scaling rule for attribution maps, and the colour bar that states it.

Every map drawn by :func:`gifsplanation.render.save_overlay` goes through :func:`map_scale`:
the map's values are divided by one number (by default the map's 99th percentile) and
clipped at 1, so every method fills the same colour range and no method looks weaker or
stronger because of how it is displayed. :class:`MapScale` records the rule, the number
and a sentence for the reader; the colour bar (:func:`colorbar_rgb`) shows the colour map
from 0 (bottom) to that number (top).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ._common import ArrayLike, to_numpy_2d

DEFAULT_CMAP = "plasma"
"""A perceptually ordered colour map (lightness grows with the value) that stays saturated
to its top (inferno's and magma's strongest values are near-white, which reads as bone on
an X-ray), and has no cyan, the top-p outline's colour."""

DEFAULT_SCALE = "p99"
"""Full colour at the map's 99th percentile; larger values are clipped."""

ScaleArg = str | float


@dataclass(frozen=True)
class MapScale:
    """How a map's values were turned into colours.

    Attributes:
        rule: ``"p<q>"`` (e.g. ``"p99"``: the map's q-th percentile is full colour),
            ``"max"`` (the map's maximum), ``"fixed"`` (a number given by the caller) or
            ``"zero"`` (the map is all zero: nothing is drawn).
        full: the map value drawn at full colour (0 for an all-zero map).
        text: the rule as a sentence for a caption, e.g.
            ``"0 → 99th percentile of this map (161) = full colour; larger values clipped"``.
        fallback: why ``rule`` differs from the one asked for (e.g. a sparse map whose
            99th percentile is 0 is scaled by its maximum), or ``""``.
    """

    rule: str
    full: float
    text: str
    fallback: str = ""

    def normalise(self, heatmap: np.ndarray) -> np.ndarray:
        """``heatmap / full`` clipped to [0, 1] (all zeros when ``full`` is 0)."""
        heat = np.nan_to_num(np.clip(np.asarray(heatmap, dtype=np.float64), 0, None))
        if self.full <= 0:
            return np.zeros_like(heat)
        return np.clip(heat / self.full, 0.0, 1.0)

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "full": self.full, "text": self.text, "fallback": self.fallback}


def fmt_value(value: float) -> str:
    """A map value for a tick label or caption: 3 significant digits (``4.6e-08``, ``161``)."""
    if value == 0:
        return "0"
    return f"{value:.3g}"


def _percentile_of(scale: str) -> float | None:
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", scale.strip().lower())
    if not m:
        return None
    q = float(m.group(1))
    return q if 0 < q <= 100 else None


def _ordinal(q: float) -> str:
    n = f"{q:g}"
    if "." in n:
        return f"{n}th"
    k = int(q)
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{n}{suffix}"


def map_scale(heatmap: ArrayLike, scale: ScaleArg = DEFAULT_SCALE) -> MapScale:
    """The value that ``heatmap`` is divided by before colouring, and the rule as text.

    Args:
        heatmap: ``(H, W)`` non-negative map, tensor or array (negative values and NaN
            count as 0).
        scale: ``"p99"`` (default; any ``"p<q>"`` with 0 < q <= 100: the map's q-th
            percentile is full colour), ``"max"`` (the map's maximum) or a positive number
            (that value is full colour, e.g. to draw several maps on one fixed scale).

    Returns:
        A :class:`MapScale`. A map that is all zero gets rule ``"zero"`` whatever ``scale``
        says; a percentile of 0 in a map with some non-zero pixels (a very sparse map)
        falls back to the maximum, and says so.

    Example:
        >>> s = map_scale(np.arange(101.0).reshape(1, 101))
        >>> s.rule, s.full
        ('p99', 99.0)
        >>> s.text
        '0 → 99th percentile of this map (99) = full colour; larger values clipped'
        >>> map_scale(np.zeros((4, 4))).rule
        'zero'
    """
    heat = np.nan_to_num(np.clip(to_numpy_2d(heatmap), 0, None), posinf=0.0)
    peak = float(heat.max()) if heat.size else 0.0
    if peak <= 0:
        return MapScale("zero", 0.0, "the map is all zero: no change, nothing is coloured")
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        value = float(scale)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"scale must be a positive number, 'max' or 'p<q>', got {scale!r}")
        return MapScale(
            "fixed",
            value,
            f"0 → {fmt_value(value)} (a fixed value) = full colour; larger values clipped",
        )
    if not isinstance(scale, str):
        raise TypeError(f"scale must be 'p<q>', 'max' or a number, got {type(scale).__name__}")
    if scale.strip().lower() == "max":
        return MapScale("max", peak, f"0 → maximum of this map ({fmt_value(peak)}) = full colour")
    q = _percentile_of(scale)
    if q is None:
        raise ValueError(
            f"scale must be 'p<q>' (0 < q <= 100, e.g. 'p99'), 'max' or a number, got {scale!r}"
        )
    value = float(np.percentile(heat, q))
    rule = f"p{q:g}"
    if value <= 0:
        return MapScale(
            "max",
            peak,
            f"0 → maximum of this map ({fmt_value(peak)}) = full colour "
            f"(its {_ordinal(q)} percentile is 0)",
            fallback=f"{rule} is 0 in this sparse map; scaled by the maximum",
        )
    return MapScale(
        rule,
        value,
        f"0 → {_ordinal(q)} percentile of this map ({fmt_value(value)}) = full colour; "
        "larger values clipped",
    )


def colorbar_rgb(height: int, width: int, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """A vertical colour bar, uint8 ``(height, width, 3)``: full colour at the top, 0 at
    the bottom (the colour map itself, without the overlay's opacity)."""
    from matplotlib import colormaps

    ramp = np.linspace(1.0, 0.0, max(height, 1))
    colours = colormaps[cmap](ramp)[:, :3]
    bar = np.repeat(colours[:, None, :], max(width, 1), axis=1)
    return np.clip(np.rint(bar * 255), 0, 255).astype(np.uint8)
