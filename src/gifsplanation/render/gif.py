"""The Latent Shift sequence as a looping grayscale GIF (Pillow only, no ffmpeg).

Frames run from the most negative λ (the features removed) through λ = 0 (the
reconstruction) to the most positive λ and back, so the loop never jumps. Each frame can
show, side by side, the input, the counterfactual frame and a bar with the classifier's
prediction; a thin strip at the bottom marks the frame's position in the sweep. Frames
stay 8-bit grayscale, the native format of a chest X-ray.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._core.explanation import Explanation
from ._common import atomic_path, to_uint8, upscale_factor

HEADER = 18
"""Height in pixels of the text strip above the panels."""
SCRUBBER = 6
"""Height in pixels of the strip marking the frame's position in the sweep."""
BAR_WIDTH = 40
"""Width in pixels of the prediction bar."""
MIN_PANEL = 224
"""Images smaller than this are upscaled by an integer factor (nearest neighbour)."""


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
    draw: ImageDraw.ImageDraw, text: str, max_width: int
) -> tuple[str, ImageFont.ImageFont | ImageFont.FreeTypeFont]:
    """``text`` and a font that make it at most ``max_width`` pixels wide and fit the header.

    The font shrinks from :data:`FONT_SIZE` down to :data:`MIN_FONT_SIZE`; only a name too
    long even then is shortened, ending in "…".
    """

    def fits(t: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> bool:
        left, top, right, bottom = draw.textbbox((0, 0), t, font=font)
        return right - left <= max_width and bottom <= HEADER - 2

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


def compose_frames(
    exp: Explanation, index: int, *, side_by_side: bool = True, labels: bool = True
) -> list[np.ndarray]:
    """Render the ``T`` frames of image ``index`` as uint8 ``(H', W')`` arrays, λ ascending.

    Args:
        exp: the explanation.
        index: which image of the batch.
        side_by_side: show ``input | frame | prediction bar``; otherwise the frame alone.
        labels: draw the text header (λ and prediction).

    Returns:
        One grayscale array per frame, all the same size: height ``HEADER + P + SCRUBBER``
        and width ``2P + BAR_WIDTH`` (side by side) or ``P``, where ``P = panel_size(H)``.
    """
    frames = exp.frames[index]  # (T, C, H, W)
    t, _, h, w = frames.shape
    factor = upscale_factor(h, MIN_PANEL)
    ph, pw = h * factor, w * factor
    lambdas = [float(v) for v in exp.lambdas[index]]
    preds = [float(v) for v in exp.preds[index]]
    input_pred = float(exp.input_preds[index])
    name = exp.target_names[index] or f"output {exp.targets[index]}"

    def up(img: np.ndarray) -> np.ndarray:
        return np.kron(img, np.ones((factor, factor), dtype=np.uint8)) if factor > 1 else img

    input_panel = up(to_uint8(exp.images[index].mean(0)))
    width = 2 * pw + BAR_WIDTH if side_by_side else pw
    height = HEADER + ph + SCRUBBER
    frame_labels = [f"λ={lam:+.4g}  p={p:.2f}" for lam, p in zip(lambdas, preds, strict=True)]
    caption, caption_font, caption_width = "", _font(), 0
    if labels and side_by_side:
        # The target name goes right-aligned in the header, after the widest frame label
        # (over the frame panel and the bar); one font for all frames, shrunk to fit.
        measure = ImageDraw.Draw(Image.new("L", (1, 1)))
        label_end = pw + 3 + max(round(measure.textlength(t, font=_font())) for t in frame_labels)
        caption, caption_font = _fit_caption(measure, name, width - 3 - (label_end + 8))
        caption_width = round(measure.textlength(caption, font=caption_font))
    out = []
    for k in range(t):
        canvas = Image.new("L", (width, height), 0)
        frame_panel = Image.fromarray(up(to_uint8(frames[k].mean(0))))
        x_frame = pw if side_by_side else 0
        if side_by_side:
            canvas.paste(Image.fromarray(input_panel), (0, HEADER))
        canvas.paste(frame_panel, (x_frame, HEADER))
        draw = ImageDraw.Draw(canvas)
        if side_by_side:
            _draw_bar(draw, 2 * pw, HEADER, ph, preds[k], input_pred)
        if labels:
            font = _font()
            if side_by_side:
                draw.text((3, 2), f"input  p={input_pred:.2f}", fill=255, font=font)
            draw.text((x_frame + 3, 2), frame_labels[k], fill=255, font=font)
            if caption:
                draw.text((width - 3 - caption_width, 2), caption, fill=200, font=caption_font)
        # Position marker: makes consecutive frames distinct even when λ repeats, so the
        # GIF writer never merges them and the frame count stays 2T − 2.
        x0 = round(k * width / t)
        x1 = max(round((k + 1) * width / t) - 1, x0)
        draw.rectangle((0, HEADER + ph, width - 1, height - 1), fill=40)
        draw.rectangle((x0, HEADER + ph + 1, x1, height - 2), fill=230)
        out.append(np.asarray(canvas))
    return out


def _draw_bar(
    draw: ImageDraw.ImageDraw, x: int, y: int, height: int, pred: float, input_pred: float
) -> None:
    pad = 8
    left, right = x + pad, x + BAR_WIDTH - pad
    top, bottom = y + pad, y + height - pad
    draw.rectangle((left, top, right, bottom), outline=160, fill=20)
    p = min(max(pred, 0.0), 1.0)
    fill_top = bottom - round(p * (bottom - top))
    if fill_top <= bottom - 1:
        draw.rectangle((left + 1, fill_top, right - 1, bottom - 1), fill=220)
    q = min(max(input_pred, 0.0), 1.0)
    ty = bottom - round(q * (bottom - top))
    draw.line((left - 5, ty, right + 5, ty), fill=255, width=1)


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
        side_by_side: show ``input | frame | prediction bar`` (default) or the frame alone.
        duration_ms: display time of each frame in milliseconds (default 100).
        labels: draw λ and the prediction above the panels (default True).

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
    images = [Image.fromarray(arrays[k]) for k in loop_order(len(arrays))]
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
