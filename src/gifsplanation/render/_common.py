"""Helpers shared by the renderers: image conversions, and the atomic writers they use.

Every renderer writes through :func:`~gifsplanation.files.atomic_path` (a temporary file
in the target's folder, then ``os.replace``), so an interrupted run never leaves a
half-written file under its final name, and converts [−1024, 1024] images to 8-bit
grayscale with :func:`~gifsplanation.pixels.to_uint8`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# The renderers write through the package's one atomic writer (re-exported for them).
from ..files import atomic_path, write_bytes, write_text

__all__ = [
    "ArrayLike",
    "atomic_path",
    "thread_figure",
    "to_numpy_2d",
    "upscale_factor",
    "write_bytes",
    "write_text",
]

ArrayLike = torch.Tensor | np.ndarray


def to_numpy_2d(image: ArrayLike) -> np.ndarray:
    """A float64 ``(H, W)`` array from a tensor or array shaped (H,W), (1,H,W) or (1,1,H,W)."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.asarray(arr, dtype=np.float64)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a single-channel 2D image, got shape {tuple(arr.shape)}")
    return arr


def upscale_factor(size: int, minimum: int = 128) -> int:
    """The integer factor that brings a ``size``-pixel image to at least ``minimum`` pixels."""
    return max(1, -(-minimum // max(size, 1)))


_figures = threading.local()


def thread_figure(
    name: str, dpi: int, figsize: tuple[float, float], layout: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """This thread's Matplotlib figure ``name`` at ``dpi`` and its axes, cleared.

    Built on first use (``layout(fig)`` adds the axes) and reused afterwards: building a
    figure costs more than drawing a curve, and a figure must not be shared between the
    rendering threads.
    """
    cache = getattr(_figures, "cache", None)
    if cache is None:
        cache = _figures.cache = {}
    if (name, dpi) not in cache:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(fig)
        cache[name, dpi] = (fig, layout(fig))
    fig, ax = cache[name, dpi]
    ax.clear()
    return fig, ax
