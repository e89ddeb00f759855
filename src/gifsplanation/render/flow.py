"""Optical flow along the λ sequence drawn on the image (the paper's Fig. 1B).

The GIF shows *that* the image changes; the flow shows *where things move* when the
classifier's feature is added: the dense optical flow (TV-L1 or iterative Lucas–Kanade
from scikit-image) between each pair of consecutive frames, summed from the most negative
to the most positive λ, drawn as arrows over the reconstruction. Flow is estimated on a
copy of the frames downscaled to at most ``work_size`` pixels, which keeps it to a
fraction of a second per pair on a CPU.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .._core.explanation import Explanation
from ._common import to_numpy_2d, write_bytes

FLOW_METHODS = ("tvl1", "ilk")


def sequence_flow(
    frames: torch.Tensor, *, method: str = "tvl1", work_size: int = 128
) -> np.ndarray:
    """Summed optical flow over consecutive frames, ``(2, H, W)`` as (row, col) pixels.

    Args:
        frames: ``(T, C, H, W)`` frames in [−1024, 1024], λ ascending.
        method: ``"tvl1"`` (default) or ``"ilk"`` (faster, less smooth).
        work_size: frames are downscaled so the larger side is at most this many pixels.

    Returns:
        The flow at the frames' full resolution (displacements in full-size pixels).
    """
    from skimage.registration import optical_flow_ilk, optical_flow_tvl1

    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    x = frames.detach().float().cpu().mean(1, keepdim=True)  # (T, 1, H, W)
    h, w = x.shape[-2:]
    scale = min(1.0, work_size / max(h, w))
    if scale < 1.0:
        x = F.interpolate(x, scale_factor=scale, mode="area")
    arr = ((x[:, 0].numpy() + 1024.0) / 2048.0).astype(np.float32)
    fn = optical_flow_tvl1 if method == "tvl1" else optical_flow_ilk
    total = np.zeros((2, *arr.shape[1:]), dtype=np.float32)
    for k in range(len(arr) - 1):
        total += fn(arr[k], arr[k + 1])
    if scale < 1.0:
        t = torch.from_numpy(total)[None]
        total = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
        total /= scale
    return total


def save_flow(
    exp: Explanation,
    index: int,
    path: str | os.PathLike[str],
    *,
    method: str = "tvl1",
    arrows: int = 24,
    work_size: int = 128,
    dpi: int = 100,
) -> Path:
    """Draw the optical flow of image ``index``'s λ sequence over its λ = 0 frame (PNG).

    Args:
        exp: an :class:`~gifsplanation.Explanation`.
        index: which image of the batch.
        path: the ``.png`` file to write (atomically).
        method: ``"tvl1"`` (default) or ``"ilk"``; see :func:`sequence_flow`.
        arrows: arrows along each side of the grid (default 24).
        work_size: resolution at which the flow is estimated (default 128).
        dpi: output resolution (the figure is 5×5 inches).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    flow = sequence_flow(exp.frames[index], method=method, work_size=work_size)
    background = to_numpy_2d(exp.frames[index, int(exp.zero_index[index])].mean(0))  # λ = 0
    h, w = background.shape
    step = max(1, min(h, w) // max(arrows, 1))
    ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    v, u = flow[0, ys, xs], flow[1, ys, xs]
    mag = np.hypot(u, v)
    peak = float(mag.max()) if mag.size else 0.0
    keep = mag > 0.1 * peak if peak > 0 else np.zeros_like(mag, dtype=bool)

    fig = Figure(figsize=(5, 5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 0.94))
    ax.imshow(background, cmap="gray", vmin=-1024, vmax=1024, interpolation="nearest")
    if keep.any():
        ax.quiver(
            xs[keep],
            ys[keep],
            u[keep],
            v[keep],
            mag[keep],
            cmap="autumn",
            angles="xy",
            scale_units="xy",
            scale=max(peak / (1.5 * step), 1e-9),
            width=0.006,
        )
    ax.set_axis_off()
    fig.suptitle(f"optical flow, λ min → max (peak {peak:.2f} px)", fontsize=9, y=0.985)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_bytes(path, buf.getvalue())
