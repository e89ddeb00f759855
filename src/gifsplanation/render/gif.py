"""The Latent Shift sequence as a looping GIF (Pillow only, no ffmpeg).

Frames run from the most negative λ (the features removed) through λ = 0 to the most
positive λ and back, so the loop never jumps. Side by side, each frame shows the input,
the counterfactual frame x_λ (real grey levels), the *change* x_λ − x_0 and a bar with the
classifier's prediction. Residual frames differ from the input by a few grey levels, which
no eye sees in a loop; the change panel makes it visible: on a dimmed copy of the input,
blue where x_λ is darker than x_0 (less dense: removed), orange where it is brighter
(denser: added), contrast-stretched so that full colour is the 99.5th percentile of
|x_λ − x_0| over the whole sequence, a scale printed under the panels. A thin strip at the
bottom marks the frame's position in the sweep.

Frames are drawn as indices into one fixed 256-colour :data:`PALETTE` (192 grey levels,
a 32-step blue ramp and a 32-step orange ramp), so every GIF frame shares an exact
palette and the MP4 writer gets the same pixels as RGB (:func:`compose_rgb`).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._core.explanation import Explanation
from .._core.search import SETTLED
from ..files import atomic_path
from ..pixels import GREY_PER_UNIT, to_uint8
from ._common import to_numpy_2d, upscale_factor

HEADER = 18
"""Height in pixels of the text strip above the panels."""
LEGEND = 15
"""Height in pixels of the legend strip under the panels (side by side only)."""
SCRUBBER = 6
"""Height in pixels of the strip marking the frame's position in the sweep."""
BAR_WIDTH = 40
"""Width in pixels of the prediction bar."""
MIN_PANEL = 224
"""Images smaller than this are upscaled by an integer factor (nearest neighbour)."""

GREYS = 192
"""Palette entries 0..191 are grey levels 0..255 (evenly spaced)."""
RAMP = 32
"""Entries 192..223 are the blue ramp (darker than x_0), 224..255 the orange one."""
BLUE0, ORANGE0 = GREYS, GREYS + RAMP


def _palette() -> np.ndarray:
    grey = np.rint(np.linspace(0, 255, GREYS)).astype(np.uint8)
    t = np.linspace(0, 1, RAMP)[:, None]
    blue = (np.array([0, 45, 150]) * (1 - t) + np.array([120, 200, 255]) * t).round()
    orange = (np.array([150, 60, 0]) * (1 - t) + np.array([255, 215, 90]) * t).round()
    return np.concatenate(
        [np.repeat(grey[:, None], 3, 1), blue.astype(np.uint8), orange.astype(np.uint8)]
    )


PALETTE: np.ndarray = _palette()
"""``(256, 3)`` uint8: the colours every frame's indices refer to."""
MIN_CHANGE_SCALE = 1.0
"""The change panel's full-colour scale never goes below this many grey levels, so that
changes smaller than one grey level are not stretched into vivid colour."""
DIM = 0.45
"""Brightness of the input copy under the change colours."""


def grey_index(grey: np.ndarray) -> np.ndarray:
    """Palette indices of 8-bit grey levels."""
    return np.rint(grey.astype(np.float64) * ((GREYS - 1) / 255.0)).astype(np.uint8)


FONT_SIZE = 12
"""Point size of the header text."""
MIN_FONT_SIZE = 7
"""Smallest point size a long target name is shrunk to before it is shortened with "…"."""


@lru_cache(maxsize=16)
def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Matplotlib's bundled DejaVu Sans has "λ"; Pillow's default font does not.
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        try:
            return ImageFont.load_default(size=size)
        except (TypeError, OSError):  # Pillow without FreeType: the bitmap default
            return ImageFont.load_default()


def _fit_caption(
    draw: ImageDraw.ImageDraw, text: str, max_width: int, height: int = HEADER
) -> tuple[str, ImageFont.ImageFont | ImageFont.FreeTypeFont]:
    """``text`` and a font that make it at most ``max_width`` pixels wide and fit a strip
    ``height`` pixels high.

    The font shrinks from :data:`FONT_SIZE` down to :data:`MIN_FONT_SIZE`; only a name too
    long even then is shortened, ending in "…".
    """

    def fits(t: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> bool:
        left, top, right, bottom = draw.textbbox((0, 0), t, font=font)
        return right - left <= max_width and bottom <= height - 2

    for size in range(FONT_SIZE, MIN_FONT_SIZE - 1, -1):
        font = _font(size)
        if fits(text, font):
            return text, font
    font = _font(MIN_FONT_SIZE)
    for n in range(len(text) - 1, 0, -1):
        short = text[:n].rstrip() + "…"
        if fits(short, font):
            return short, font
    return "", font


def loop_order(n_frames: int) -> list[int]:
    """Frame indices of one loop: 0 → n−1 → back to 1 (``2n − 2`` frames for n ≥ 2).

    Example:
        >>> loop_order(4)
        [0, 1, 2, 3, 2, 1]
    """
    if n_frames <= 1:
        return list(range(n_frames))
    return list(range(n_frames)) + list(range(n_frames - 2, 0, -1))


def panel_size(height: int) -> int:
    """The displayed size of an image ``height`` pixels high (upscaled if small)."""
    return height * upscale_factor(height, MIN_PANEL)


def change_scale(exp: Explanation, index: int) -> float:
    """Full-colour scale of the change panel for image ``index``, in 8-bit grey levels:
    the 99.5th percentile of |x_λ − x_0| over every frame of its sequence (at least
    :data:`MIN_CHANGE_SCALE`)."""
    frames = exp.frames[index].float()
    x0 = frames[int(exp.zero_index[index])]
    diff = (frames - x0).abs().mean(1).flatten().numpy() * GREY_PER_UNIT
    return max(float(np.percentile(diff, 99.5)), MIN_CHANGE_SCALE)


def change_indices(image: np.ndarray, diff: np.ndarray, scale: float) -> np.ndarray:
    """Palette indices of the change panel: ``image`` (8-bit) dimmed, blue where ``diff``
    (grey levels) is negative, orange where positive, full colour at ``scale``; changes
    under 10% of ``scale`` show the dimmed image only.

    Example:
        >>> idx = change_indices(np.full((1, 3), 200, np.uint8), np.array([[-8.0, 0.0, 4.0]]), 4)
        >>> [int(v) for v in idx[0]], int(BLUE0 + RAMP - 1), int(ORANGE0 + RAMP - 1)
        ([223, 67, 255], 223, 255)
    """
    base = grey_index(image.astype(np.float64) * DIM)
    level = np.clip(np.abs(diff) / scale, 0.0, 1.0)
    ramp = np.rint(level * (RAMP - 1)).astype(np.uint8)
    out = base.copy()
    shown = level >= 0.1
    out[shown & (diff < 0)] = BLUE0 + ramp[shown & (diff < 0)]
    out[shown & (diff > 0)] = ORANGE0 + ramp[shown & (diff > 0)]
    return out


def compose_frames(
    exp: Explanation, index: int, *, side_by_side: bool = True, labels: bool = True
) -> list[np.ndarray]:
    """Render the ``T`` frames of image ``index`` as :data:`PALETTE` index arrays.

    Args:
        exp: the explanation.
        index: which image of the batch.
        side_by_side: show ``input | frame | change | prediction bar`` with a legend;
            otherwise the frame alone.
        labels: draw the text header (λ and prediction) and the legend.

    Returns:
        One uint8 ``(H', W')`` array of palette indices per frame, λ ascending, all the
        same size: height ``HEADER + P + LEGEND + SCRUBBER`` and width
        ``3P + BAR_WIDTH`` (side by side) or ``HEADER + P + SCRUBBER`` by ``P`` (frame
        alone), where ``P = panel_size(H)``.
    """
    frames = exp.frames[index]  # (T, C, H, W)
    t, _, h, w = frames.shape
    factor = upscale_factor(h, MIN_PANEL)
    ph, pw = h * factor, w * factor
    preds = [float(v) for v in exp.preds[index]]
    input_pred = float(exp.input_preds[index])
    zero = int(exp.zero_index[index])
    name = exp.target_names[index] or f"output {exp.targets[index]}"
    if not exp.target_present[index]:
        name += " (not found: frames show what would add it)"

    def up(img: np.ndarray) -> np.ndarray:
        return np.kron(img, np.ones((factor, factor), dtype=img.dtype)) if factor > 1 else img

    input_grey = to_uint8(to_numpy_2d(exp.images[index].mean(0)))
    x0 = frames[zero].float().mean(0).numpy()
    scale = change_scale(exp, index)
    width = 3 * pw + BAR_WIDTH if side_by_side else pw
    legend = LEGEND if side_by_side else 0
    height = HEADER + ph + legend + SCRUBBER
    labels_text = frame_labels(exp, index)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    fitted = [_fit_caption(measure, text, pw - 6) for text in labels_text]
    caption, caption_font = "", _font()
    key = ""
    if labels and side_by_side:
        caption, caption_font = _fit_caption(measure, name, pw + BAR_WIDTH - 6)
        reference = "the input" if exp.mode == "residual" else "λ=0 (reconstruction)"
        key = (
            f"change vs {reference}: blue darker (removed), orange brighter (added); "
            f"full colour = ±{scale:.3g} grey levels of 255"
        )
        key, key_font = _fit_caption(measure, key, width - 6, height=LEGEND)
    white = int(grey_index(np.array([255]))[0])
    out = []
    for k in range(t):
        canvas = Image.new("P", (width, height), 0)
        frame = frames[k].float().mean(0).numpy()
        frame_panel = up(grey_index(to_uint8(to_numpy_2d(frame))))
        x_frame = pw if side_by_side else 0
        if side_by_side:
            diff = (frame - x0) * GREY_PER_UNIT
            canvas.paste(Image.fromarray(up(grey_index(input_grey))), (0, HEADER))
            canvas.paste(
                Image.fromarray(up(change_indices(to_uint8(to_numpy_2d(x0)), diff, scale))),
                (2 * pw, HEADER),
            )
        canvas.paste(Image.fromarray(frame_panel), (x_frame, HEADER))
        draw = ImageDraw.Draw(canvas)
        if side_by_side:
            _draw_bar(draw, 3 * pw, HEADER, ph, preds[k], input_pred)
        if labels:
            font = _font()
            if side_by_side:
                draw.text((3, 2), f"input  p={input_pred:.2f}", fill=white, font=font)
                draw.text((2 * pw + 3, 2), caption, fill=white, font=caption_font)
                draw.text((3, HEADER + ph + 1), key, fill=white, font=key_font)
            draw.text((x_frame + 3, 2), fitted[k][0], fill=white, font=fitted[k][1])
        # Position marker: makes consecutive frames distinct even when λ repeats, so the
        # GIF writer never merges them and the frame count stays 2T − 2.
        x_left = round(k * width / t)
        x_right = max(round((k + 1) * width / t) - 1, x_left)
        top = HEADER + ph + legend
        draw.rectangle((0, top, width - 1, height - 1), fill=int(grey_index(np.array([40]))[0]))
        draw.rectangle(
            (x_left, top + 1, x_right, height - 2), fill=int(grey_index(np.array([230]))[0])
        )
        out.append(np.asarray(canvas))
    return out


def frame_labels(exp: Explanation, index: int) -> list[str]:
    """The header of each frame of image ``index``: λ and the prediction; an end frame of a
    side that stopped short of its goal says so (a GIF is often seen without its report).

    Example:
        >>> from gifsplanation import LatentShift
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> exp = LatentShift(clf, ae, n_frames=3).explain(data.positive(1), target="blob")
        >>> frame_labels(exp, 0)[1].startswith("λ=+0  p=")  # the input's frame
        True
    """
    lambdas = [float(v) for v in exp.lambdas[index]]
    preds = [float(v) for v in exp.preds[index]]
    out = [f"λ={lam:+.4g}  p={p:.2f}" for lam, p in zip(lambdas, preds, strict=True)]
    reasons = exp.stop_reasons[index]
    for k, side, end in ((0, "lower", 0), (1, "upper", len(out) - 1)):
        goal = float(exp.goals[index, k])
        if reasons[side] not in SETTLED and lambdas[end] != 0 and not math.isnan(goal):
            out[end] += f"  goal {goal:.2f} not reached"
    return out


def compose_rgb(
    exp: Explanation, index: int, *, side_by_side: bool = True, labels: bool = True
) -> list[np.ndarray]:
    """:func:`compose_frames` as uint8 RGB ``(H', W', 3)`` arrays (for video writers)."""
    return [
        PALETTE[a] for a in compose_frames(exp, index, side_by_side=side_by_side, labels=labels)
    ]


def _draw_bar(
    draw: ImageDraw.ImageDraw, x: int, y: int, height: int, pred: float, input_pred: float
) -> None:
    g = lambda v: int(grey_index(np.array([v]))[0])  # noqa: E731
    pad = 8
    left, right = x + pad, x + BAR_WIDTH - pad
    top, bottom = y + pad, y + height - pad
    draw.rectangle((left, top, right, bottom), outline=g(160), fill=g(20))
    p = min(max(pred, 0.0), 1.0)
    fill_top = bottom - round(p * (bottom - top))
    if fill_top <= bottom - 1:
        draw.rectangle((left + 1, fill_top, right - 1, bottom - 1), fill=g(220))
    q = min(max(input_pred, 0.0), 1.0)
    ty = bottom - round(q * (bottom - top))
    draw.line((left - 5, ty, right + 5, ty), fill=g(255), width=1)


def save_gif(
    exp: Explanation,
    index: int,
    path: str | os.PathLike[str],
    *,
    side_by_side: bool = True,
    duration_ms: int = 100,
    labels: bool = True,
) -> Path:
    """Write the λ sequence of image ``index`` as a looping grayscale GIF.

    Args:
        exp: an :class:`~gifsplanation.Explanation`.
        index: which image of the batch.
        path: the ``.gif`` file to write (atomically).
        side_by_side: show ``input | frame | change | prediction bar`` with a legend
            (default) or the frame alone.
        duration_ms: display time of each frame in milliseconds (default 100).
        labels: draw λ and the prediction above the panels, and the legend (default True).

    Returns:
        ``path`` as a :class:`~pathlib.Path`. The GIF has ``2T − 2`` frames for ``T`` sweep
        frames (negative → 0 → positive → back) and loops forever.

    Example:
        >>> import tempfile, pathlib
        >>> from gifsplanation import LatentShift
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> exp = LatentShift(clf, ae, n_frames=5).explain(data.positive(1), target="blob")
        >>> out = save_gif(exp, 0, pathlib.Path(tempfile.mkdtemp()) / "x.gif")
        >>> Image.open(out).n_frames
        8
    """
    if duration_ms <= 0:
        raise ValueError(f"duration_ms must be positive, got {duration_ms}")
    arrays = compose_frames(exp, index, side_by_side=side_by_side, labels=labels)
    images = []
    for k in loop_order(len(arrays)):
        im = Image.fromarray(arrays[k], mode="P")
        im.putpalette(PALETTE.flatten().tolist())
        images.append(im)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=duration_ms,
            loop=0,
            disposal=1,
            optimize=False,
        )
    return Path(path)
