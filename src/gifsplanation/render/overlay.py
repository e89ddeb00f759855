"""An attribution map drawn over its chest X-ray as a PNG.

The image stays grayscale; the map is normalised by its maximum and painted with a
perceptually uniform colour map whose opacity grows with the map's value, so pixels the
map ignores show the X-ray unchanged.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ._common import ArrayLike, to_numpy_2d, to_uint8, write_bytes


def overlay_rgb(
    image: ArrayLike, heatmap: ArrayLike, *, alpha: float = 0.5, cmap: str = "inferno"
) -> np.ndarray:
    """Blend ``heatmap`` over ``image``; returns a uint8 ``(H, W, 3)`` array.

    Args:
        image: ``(H, W)`` (or ``(1, H, W)``) in [−1024, 1024].
        heatmap: ``(H, W)`` map, non-negative; normalised by its maximum.
        alpha: opacity of the colour at the map's maximum, in [0, 1] (default 0.5).
        cmap: a Matplotlib colour map name (default ``"inferno"``).
    """
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    gray = to_uint8(image).astype(np.float64) / 255.0
    heat = to_numpy_2d(heatmap)
    if heat.shape != gray.shape:
        raise ValueError(
            f"heatmap shape {heat.shape} does not match image shape {gray.shape}; "
            "compute the map at the image's resolution"
        )
    heat = np.nan_to_num(np.clip(heat, 0, None))
    peak = heat.max()
    norm = heat / peak if peak > 0 else heat
    color = colormaps[cmap](norm)[..., :3]
    weight = (alpha * norm)[..., None]
    rgb = (1.0 - weight) * gray[..., None] + weight * color
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def save_overlay(
    image: ArrayLike,
    heatmap: ArrayLike,
    path: str | os.PathLike[str],
    *,
    alpha: float = 0.5,
    cmap: str = "inferno",
) -> Path:
    """Write ``heatmap`` blended over ``image`` as a PNG (atomically).

    Args:
        image: ``(H, W)`` tensor or array in [−1024, 1024] (``(1, H, W)`` also accepted).
        heatmap: ``(H, W)`` map, ``>= 0``.
        path: the ``.png`` file to write.
        alpha: opacity of the colour at the map's maximum (default 0.5).
        cmap: Matplotlib colour map name (default ``"inferno"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`; the PNG has the image's size.

    Example:
        >>> import tempfile, pathlib, torch
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "map.png"
        >>> _ = save_overlay(torch.zeros(8, 8), torch.rand(8, 8), out)
        >>> Image.open(out).size
        (8, 8)
    """
    rgb = overlay_rgb(image, heatmap, alpha=alpha, cmap=cmap)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return write_bytes(path, buf.getvalue())
