"""The classifier's prediction against λ, with the searched bounds and goals (a PNG).

This is the plot to read first when a GIF looks wrong: it shows how far the search went
on each side, which goal it aimed for, and why it stopped.

Target names are user data (``$``, ``_``, ``^`` and ``\\`` are common in them), so every
text is drawn literally: Matplotlib's mathtext and usetex are off for each Text object
(not through the global ``rcParams``, which other threads may be using).

The figure is built once per thread and cleared for every curve (building a Matplotlib
figure and laying it out cost more than drawing it); margins are fixed instead of
``tight_layout`` (which draws the figure twice). :func:`warm_up` pays the one-time cost
(Matplotlib's import and font cache) ahead of time, e.g. in a rendering thread.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

from .._core.explanation import Explanation
from ._common import thread_figure, write_bytes

_LITERAL = {"parse_math": False, "usetex": False}
"""Text properties that draw a string as-is (no ``$…$`` mathtext, no LaTeX)."""
FIGSIZE = (6.4, 4.0)
"""Inches; at the default 100 dpi the PNG is 640×400 pixels."""
MARGINS = {"left": 0.1, "right": 0.98, "bottom": 0.12, "top": 0.92}
"""Fixed subplot margins (fractions of the figure) that fit the labels and the title."""


def _layout(fig: Any) -> Any:
    fig.subplots_adjust(**MARGINS)
    return fig.add_subplot(1, 1, 1)


def _figure(dpi: int) -> tuple[Any, Any]:
    """This thread's curve figure and axes, cleared."""
    return thread_figure("curve", dpi, FIGSIZE, _layout)


def warm_up(dpi: int = 100) -> None:
    """Import Matplotlib, load its fonts and build this thread's figure (first-call cost)."""
    fig, ax = _figure(dpi)
    ax.plot([0.0, 1.0], [0.0, 1.0], "o-", label="λ")
    ax.set_title("λ", **_LITERAL)
    ax.legend(fontsize=7)
    fig.savefig(io.BytesIO(), format="png")
    ax.clear()


def save_curve(
    exp: Explanation, index: int, path: str | os.PathLike[str], *, dpi: int = 100
) -> Path:
    """Plot prediction vs λ for image ``index`` and write it as a PNG (Matplotlib, Agg).

    Marks the sweep frames, λ = 0, the chosen bounds (vertical lines), the goal of each
    side (horizontal dashed lines) and the prediction on the unreconstructed input.

    Args:
        exp: an :class:`~gifsplanation.Explanation`.
        index: which image of the batch.
        path: the ``.png`` file to write (atomically).
        dpi: resolution (default 100; the figure is 6.4×4 inches).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    s = exp.summary(index)
    fig, ax = _figure(dpi)
    ax.plot(s["lambdas"], s["preds"], "o-", color="black", label="prediction at frame")
    ax.axvline(0.0, color="gray", lw=0.8)
    for side, color in (("lower", "tab:blue"), ("upper", "tab:red")):
        bound = s["bounds"][side]
        reason = s["stop_reasons"][side]
        ax.axvline(
            bound, color=color, ls="-", lw=1.2, label=f"{side} bound λ={bound:.4g} ({reason})"
        )
        goal = s["goals"][side]
        if goal is not None and math.isfinite(goal):
            ax.axhline(goal, color=color, ls="--", lw=1.0, label=f"{side} goal p={goal:.3f}")
    ax.plot(
        [0.0], [s["input_pred"]], "D", color="tab:green", label=f"input p={s['input_pred']:.3f}"
    )
    name = s["target_name"] or f"output {s['target']}"
    ax.set_xlabel("λ  (negative removes, positive adds)", **_LITERAL)
    ax.set_ylabel(f"p({name})", **_LITERAL)
    ax.set_ylim(-0.02, 1.02)
    n_evals = sum(s["evaluations"].values())
    ax.set_title(
        f"Latent Shift: {name}  ({exp.strategy} search, {n_evals} evaluations)",
        fontsize=10,
        **_LITERAL,
    )
    ax.grid(alpha=0.3)
    for text in ax.legend(fontsize=7, loc="best").get_texts():
        text.update(_LITERAL)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_bytes(path, buf.getvalue())
