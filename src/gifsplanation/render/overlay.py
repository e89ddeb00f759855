"""Attribution maps people can read: the image beside the map over the image, a colour bar.

:func:`save_overlay` is the one renderer for every map image the package writes (the CLI's
``map-<method>.png``, the HTML report, the reader study's Method A and Method B maps). It
draws, at a readable size (``size`` pixels on the panels' longer side, 448 by default):

* the plain image (grayscale, resampled with a Lanczos filter) | the same image with the
  map over it, in a perceptually ordered colour map (``plasma``), whose opacity grows
  with the value: values under :data:`RAMP_LOW` of full scale are transparent (the
  anatomy shows through), values from :data:`RAMP_HIGH` up are drawn at the full opacity
  ``alpha``;
* a colour bar from 0 to the value drawn at full colour, with tick labels in the map's
  units;
* a caption saying what the colours are (``units``), the scaling rule (one rule for every
  method, :func:`gifsplanation.render.colorbar.map_scale`: by default the map divided by
  its own 99th percentile and clipped at 1) and, when asked, what the outline is;
* optionally (``outline``) a cyan line around the top-p region: the p pixels with the
  largest values, p a fraction of the image or a mask's pixel count — the region the
  top-p IoU of :mod:`gifsplanation.metrics` counts.

The map is upsampled bilinearly (values between pixels, never new peaks); the PNG records
the rule, the value at full colour and the units in its text chunks (key
:data:`PNG_KEY`), so a figure can be checked after the fact. All text is drawn with Pillow,
literally: a name with ``$`` in it is never read as a formula.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from ..files import write_bytes
from ..pixels import to_uint8
from ._common import ArrayLike, to_numpy_2d
from .colorbar import (
    DEFAULT_CMAP,
    DEFAULT_SCALE,
    MapScale,
    ScaleArg,
    colorbar_rgb,
    fmt_value,
    map_scale,
)

DEFAULT_SIZE = 448
"""Pixels on the longer side of each panel (a 224-pixel image is drawn at 2×)."""

DEFAULT_ALPHA = 0.85
"""Opacity of the colour from :data:`RAMP_HIGH` of full scale up."""

RAMP_LOW = 0.15
"""Values below this fraction of full scale are transparent."""

RAMP_HIGH = 0.6
"""From this fraction of full scale up the colour has the full opacity ``alpha``."""

OUTLINE_RGB = (0, 229, 255)
"""The top-p region's outline (cyan: absent from the colour map)."""

MASK_RGB = (255, 255, 255)
"""The ground-truth mask's outline (``show_mask``), drawn on the plain image."""

PNG_KEY = "gifsplanation:map"
"""PNG text key holding the drawn map's scaling rule, units and outline as JSON."""

MAP_UNITS: dict[str, str] = {
    "grad": "|∂p/∂x|, gradient of the target probability (probability per image unit)",
    "guided": "|guided backprop| of the target probability (probability per image unit)",
    "integrated": "|integrated gradients| from a zero image (probability)",
    "iterativedelete": "|gradient| summed over iterative deletion steps (probability per unit)",
    "random": "random values (a baseline that ignores the image)",
    "max": "max over λ of |x_λ − x₀|, image units (black → white = 2048)",
    "mean": "mean over λ of |x_λ − x₀|, image units (black → white = 2048)",
    "minmax": "|x_λmin − x_λmax|, image units (black → white = 2048)",
    "interval": "mean over frames of |x_λ(i+1) − x_λ(i)|, image units (black → white = 2048)",
    "endpoint": "|x₀ − x_λmin|, image units (black → white = 2048)",
}
"""What each method's map measures, for the colour bar's caption. Latent Shift maps are
listed by reduction (``"max"``) and by method name (``"latentshift-max"``)."""
MAP_UNITS.update({f"latentshift-{k}": MAP_UNITS[k] for k in list(MAP_UNITS)[5:]})

GENERIC_UNITS = "map value (the units of the map's .npy file)"

Outline = ArrayLike | float | None

_MARGIN = 12
_GAP = 10
_BAR_GAP = 12
_BAR_WIDTH = 18
_TICK = 4
_FONT = 13
_TITLE_FONT = 16
_MIN_FONT = 9
_LINE = 18
_BG = (17, 17, 17)
_FG = (235, 235, 235)
_MUTED = (170, 170, 170)


@dataclass(frozen=True)
class TopP:
    """The outlined top-p region.

    Attributes:
        region: ``(H, W)`` bool at the map's resolution (the pixels outlined).
        p: pixels the top-p rule keeps (a fraction of the image or a mask's count).
        fraction: ``p`` as a fraction of the image.
        source: ``"fraction"`` or ``"mask"``.
        note: how ties at the cut-off were drawn, or ``""``.
    """

    region: np.ndarray
    p: int
    fraction: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class MapFigure:
    """A rendered map figure: the pixels and what they say.

    Attributes:
        rgb: uint8 ``(H, W, 3)`` the whole figure.
        boxes: ``{"image", "overlay", "colorbar"}`` → ``(left, top, right, bottom)`` in
            ``rgb``'s pixels (``"image"`` is absent with ``plain=False``).
        scale: the :class:`~gifsplanation.render.colorbar.MapScale` used.
        units: what the colours measure (the caption's first line).
        cmap: the colour map's name.
        outline: the outlined :class:`TopP` region, or ``None``.
        caption: the caption lines under the panels.
        title: the title drawn, or ``None``.
    """

    rgb: np.ndarray
    boxes: dict[str, tuple[int, int, int, int]]
    scale: MapScale
    units: str
    cmap: str
    outline: TopP | None
    caption: list[str] = field(default_factory=list)
    title: str | None = None

    def metadata(self) -> dict[str, Any]:
        """What the PNG's :data:`PNG_KEY` text chunk holds."""
        meta: dict[str, Any] = {
            "scale": self.scale.as_dict(),
            "units": self.units,
            "cmap": self.cmap,
            "opacity": {"transparent_below": RAMP_LOW, "full_from": RAMP_HIGH},
            "boxes": {k: list(v) for k, v in self.boxes.items()},
        }
        if self.outline is not None:
            meta["outline"] = {
                "p": self.outline.p,
                "fraction": self.outline.fraction,
                "source": self.outline.source,
                "pixels_drawn": int(self.outline.region.sum()),
            }
        return meta


def units_for(name: str | None) -> str:
    """The caption text for a method or reduction name (``"grad"``, ``"max"``,
    ``"latentshift-max"``, ``"map-max"``), or :data:`GENERIC_UNITS` for others."""
    if not name:
        return GENERIC_UNITS
    key = name[4:] if name.startswith("map-") else name
    return MAP_UNITS.get(key, GENERIC_UNITS)


def top_p_region(heatmap: ArrayLike, outline: ArrayLike | float) -> TopP:
    """The top-p region of ``heatmap``: its p largest pixels (the set the top-p IoU of
    :func:`gifsplanation.metrics.iou_top_p` compares with the mask).

    Args:
        heatmap: ``(H, W)`` map.
        outline: a fraction of the image in (0, 1] (p = round(fraction × H × W), at least
            1), or an ``(H, W)`` mask (p = its pixel count, the IoU's rule).

    Returns:
        A :class:`TopP`. Pixels tied at the cut-off share the last places in the metric
        (fractionally); the drawing cannot be fractional, so it includes them all, except
        when the cut-off is the map's minimum (then it draws only the pixels above it)
        — :attr:`TopP.note` says when either happened.

    Example:
        >>> m = np.array([[3.0, 2.0], [1.0, 0.0]])
        >>> top_p_region(m, np.array([[1, 0], [1, 0]])).region.tolist()
        [[True, True], [False, False]]
    """
    heat = np.nan_to_num(np.clip(to_numpy_2d(heatmap), 0, None))
    n = heat.size
    if isinstance(outline, (int, float)) and not isinstance(outline, bool):
        frac = float(outline)
        if not 0 < frac <= 1:
            raise ValueError(f"outline fraction must be in (0, 1], got {outline}")
        p, source = max(1, int(round(frac * n))), "fraction"
    else:
        mask = to_numpy_2d(outline) > 0
        if mask.shape != heat.shape:
            raise ValueError(
                f"outline mask shape {mask.shape} does not match the map's {heat.shape}; "
                "resize the mask to the map (nearest neighbour) first"
            )
        p, source = int(mask.sum()), "mask"
    if p <= 0:
        return TopP(np.zeros(heat.shape, bool), 0, 0.0, source, "the mask is empty")
    flat = heat.ravel()
    cut = float(np.partition(flat, n - p)[n - p])  # the p-th largest value
    note = ""
    if cut > float(flat.min()):
        region = heat >= cut
    else:
        region = heat > cut
    drawn = int(region.sum())
    if drawn > p:
        note = f"{drawn - p:,} more pixels tie at the cut-off and are drawn"
    elif drawn < p:
        note = (
            f"only {drawn:,} pixels are above the map's minimum"
            if drawn
            else "the map is flat: no region stands out"
        )
    return TopP(region, p, p / n, source, note)


def _blend(gray: np.ndarray, v: np.ndarray, cmap: str, alpha: float) -> np.ndarray:
    """Float RGB in [0, 1]: ``cmap(v)`` over ``gray`` with opacity ``alpha·ramp(v)``."""
    from matplotlib import colormaps

    colour = colormaps[cmap](v)[..., :3]
    weight = alpha * np.clip((v - RAMP_LOW) / (RAMP_HIGH - RAMP_LOW), 0.0, 1.0)
    return (1.0 - weight[..., None]) * gray[..., None] + weight[..., None] * colour


def _check(image: ArrayLike, heatmap: ArrayLike, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    gray = to_uint8(to_numpy_2d(image))
    heat = to_numpy_2d(heatmap)
    if heat.shape != gray.shape:
        raise ValueError(
            f"heatmap shape {heat.shape} does not match image shape {gray.shape}; "
            "compute the map at the image's resolution"
        )
    return gray, np.nan_to_num(np.clip(heat, 0, None), posinf=0.0)


def overlay_rgb(
    image: ArrayLike,
    heatmap: ArrayLike,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
    scale: ScaleArg = DEFAULT_SCALE,
) -> np.ndarray:
    """The map over the image at the image's own size; a uint8 ``(H, W, 3)`` array.

    The overlay panel of :func:`save_overlay` without the upsampling, the plain image, the
    colour bar and the caption.

    Args:
        image: ``(H, W)`` (or ``(1, H, W)``) in [−1024, 1024].
        heatmap: ``(H, W)`` map, non-negative.
        alpha: opacity of the colour from :data:`RAMP_HIGH` of full scale up, in [0, 1].
        cmap: a Matplotlib colour map name (default ``"plasma"``).
        scale: the scaling rule (see :func:`map_scale`; default ``"p99"``).
    """
    gray, heat = _check(image, heatmap, alpha)
    v = map_scale(heat, scale).normalise(heat)
    rgb = _blend(gray.astype(np.float64) / 255.0, v, cmap, alpha)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Matplotlib's bundled DejaVu Sans has λ, ∂, ₀ and −; Pillow's default font does not.
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        try:
            return ImageFont.load_default(size=size)
        except (TypeError, OSError):  # Pillow without FreeType: the bitmap default
            return ImageFont.load_default()


def _width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def _shorten(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: int) -> str:
    if _width(draw, text, font) <= max_width:
        return text
    for n in range(len(text) - 1, 0, -1):
        short = text[:n].rstrip() + "…"
        if _width(draw, short, font) <= max_width:
            return short
    return ""


def _fit_line(draw: ImageDraw.ImageDraw, text: str, max_width: int, size: int) -> tuple[str, Any]:
    """``text`` on one line: the font shrinks down to the minimum, then "…" shortens it."""
    for s in range(size, _MIN_FONT - 1, -1):
        if _width(draw, text, _font(s)) <= max_width:
            return text, _font(s)
    font = _font(_MIN_FONT)
    return _shorten(draw, text, font, max_width), font


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}" if line else word
        if _width(draw, trial, font) <= max_width:
            line = trial
            continue
        if line:
            lines.append(line)
        line = _shorten(draw, word, font, max_width)
    if line:
        lines.append(line)
    return lines


def _resize(arr: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize a 2-D array to ``size`` = (width, height) (uint8 as 'L', floats as 'F')."""
    if arr.dtype == np.uint8:
        return np.asarray(Image.fromarray(arr, mode="L").resize(size, resample))
    img = Image.fromarray(arr.astype(np.float32), mode="F")
    return np.asarray(img.resize(size, resample), dtype=np.float64)


def _edge(region: np.ndarray, size: tuple[int, int], width: int) -> np.ndarray:
    """The boundary (``width`` px thick, inside the region) of ``region`` drawn at
    ``size``; the region is upsampled bilinearly and cut at 0.5, so its outline follows
    the pixels' shape without staircase steps at every map pixel."""
    from scipy import ndimage

    up = _resize(region.astype(np.float64), size, Image.Resampling.BILINEAR) >= 0.5
    if not up.any():
        return up
    inner = ndimage.binary_erosion(up, iterations=width, border_value=0)
    return up & ~inner


def render_map(
    image: ArrayLike,
    heatmap: ArrayLike,
    *,
    units: str | None = None,
    scale: ScaleArg = DEFAULT_SCALE,
    outline: Outline = None,
    show_mask: bool = False,
    title: str | None = None,
    size: int = DEFAULT_SIZE,
    plain: bool = True,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
) -> MapFigure:
    """Draw a map figure (see the module docstring) and return it with its layout.

    Args:
        image: ``(H, W)`` tensor or array in [−1024, 1024] (``(1, H, W)`` also accepted).
        heatmap: ``(H, W)`` map, ``>= 0`` (negative values and NaN are drawn as 0).
        units: what the map measures, for the caption (default :data:`GENERIC_UNITS`;
            :func:`units_for` gives the text for a method name).
        scale: the scaling rule: ``"p99"`` (default), ``"p<q>"``, ``"max"`` or a number
            drawn at full colour (:func:`map_scale`). Use one rule for maps that are compared.
        outline: ``None`` (default), a fraction in (0, 1] or an ``(H, W)`` mask: outline
            the map's top-p pixels, p = that fraction of the image or the mask's pixel
            count (:func:`top_p_region`).
        show_mask: with a mask as ``outline``, also draw the mask's outline (white) on the
            plain image.
        title: a line of plain text above the panels (drawn literally), or ``None``.
        size: pixels on the panels' longer side (default 448).
        plain: draw the plain image beside the overlay (default ``True``); ``False`` for
            pages that already show the image next to the map.
        alpha: opacity of strong values, in [0, 1] (default 0.85).
        cmap: a Matplotlib colour map (default ``"plasma"``; use a perceptually ordered one).
    """
    if int(size) < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    gray, heat = _check(image, heatmap, alpha)
    rule = map_scale(heat, scale)
    v = rule.normalise(heat)
    top = None if outline is None or rule.rule == "zero" else top_p_region(heat, outline)
    truth = None
    if show_mask and outline is not None and not isinstance(outline, (int, float)):
        truth = to_numpy_2d(outline) > 0
    units_text = units or GENERIC_UNITS

    h, w = gray.shape
    longer = max(h, w)
    pw, ph = max(1, round(w * size / longer)), max(1, round(h * size / longer))
    gray_up = _resize(gray, (pw, ph), Image.Resampling.LANCZOS).astype(np.float64) / 255.0
    v_up = np.clip(_resize(v, (pw, ph), Image.Resampling.BILINEAR), 0.0, 1.0)
    over = _blend(gray_up, v_up, cmap, alpha)
    line_w = max(1, round(size / 448))
    if top is not None and top.region.any():
        over[_edge(top.region, (pw, ph), line_w)] = np.asarray(OUTLINE_RGB) / 255.0
    plain_rgb = np.repeat(gray_up[..., None], 3, axis=2)
    if truth is not None and truth.any():
        plain_rgb[_edge(truth, (pw, ph), line_w)] = np.asarray(MASK_RGB) / 255.0

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font(_FONT)
    ticks: list[tuple[float, str]] = [(0.0, "0")]
    if rule.full > 0:
        top_label = fmt_value(rule.full)
        if rule.rule not in ("max",) and float(heat.max()) > rule.full:
            top_label = "≥ " + top_label
        ticks += [(0.5, fmt_value(rule.full / 2)), (1.0, top_label)]
    tick_w = max(_width(measure, t, font) for _, t in ticks)

    x = _MARGIN
    y = _MARGIN
    title_y = None
    if title:
        title_y = y
        y += _TITLE_FONT + 10
    labels_y = y
    y += _FONT + 8
    boxes: dict[str, tuple[int, int, int, int]] = {}
    if plain:
        boxes["image"] = (x, y, x + pw, y + ph)
        x += pw + _GAP
    boxes["overlay"] = (x, y, x + pw, y + ph)
    x += pw + _BAR_GAP
    boxes["colorbar"] = (x, y, x + _BAR_WIDTH, y + ph)
    x += _BAR_WIDTH + _TICK + 3 + tick_w
    width = x + _MARGIN
    text_w = width - 2 * _MARGIN

    lines = [f"Colour: {units_text}."]
    lines.append(
        f"Scale: {rule.text}."
        if rule.rule == "zero"
        else f"Scale: {rule.text}. Opacity grows with the value: clear below "
        f"{RAMP_LOW:.0%} of full, {alpha:.0%} from {RAMP_HIGH:.0%}."
    )
    if outline is not None:
        if top is None:
            lines.append("Cyan line: none (the map is all zero, so there is no top-p region).")
        else:
            what = "the mask's pixel count" if top.source == "mask" else "the given fraction"
            sentence = (
                f"Cyan line: the map's top {top.fraction:.1%} of pixels (p = {top.p:,}, "
                f"{what}), the region the top-p IoU counts"
            )
            if top.source == "mask" and top.p > 0:
                from gifsplanation.metrics import iou_top_p

                sentence += f" (IoU with the mask {iou_top_p(heat, to_numpy_2d(outline)):.2f})"
            lines.append(sentence + (f"; {top.note}." if top.note else "."))
    if truth is not None:
        lines.append("White line on the image: the mask.")
    wrapped = [part for line in lines for part in _wrap(measure, line, font, text_w)]
    height = y + ph + 8 + _LINE * len(wrapped) + _MARGIN - 4

    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    if title and title_y is not None:
        text, tfont = _fit_line(draw, title, text_w, _TITLE_FONT)
        draw.text((_MARGIN, title_y), text, fill=_FG, font=tfont)
    right_label = (
        "map over the image: no change (all zero)" if rule.rule == "zero" else "map over the image"
    )
    if plain:
        left = boxes["image"][0]
        text, lfont = _fit_line(draw, "image", pw, _FONT)
        draw.text((left, labels_y), text, fill=_MUTED, font=lfont)
    ox = boxes["overlay"][0]
    text, lfont = _fit_line(draw, right_label, pw, _FONT)
    draw.text((ox, labels_y), text, fill=_MUTED, font=lfont)

    def paste(rgb: np.ndarray, box: tuple[int, int, int, int]) -> None:
        arr = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
        canvas.paste(Image.fromarray(arr, mode="RGB"), box[:2])

    if plain:
        paste(plain_rgb, boxes["image"])
    paste(over, boxes["overlay"])
    bx0, by0, bx1, by1 = boxes["colorbar"]
    bar = colorbar_rgb(by1 - by0, bx1 - bx0, cmap)
    if rule.rule == "zero":
        bar = (bar.astype(np.float64) * 0.35).astype(np.uint8)  # dimmed: nothing uses it
    canvas.paste(Image.fromarray(bar, mode="RGB"), (bx0, by0))
    draw.rectangle((bx0 - 1, by0 - 1, bx1, by1), outline=(110, 110, 110))
    for frac, label in ticks:
        ty = round(by1 - 1 - frac * (by1 - by0 - 1))
        draw.line((bx1, ty, bx1 + _TICK, ty), fill=_FG)
        box = draw.textbbox((0, 0), label, font=font)
        th = box[3] - box[1]
        ty_text = min(max(ty - th // 2 - box[1], by0 - 6), by1 - th + 2)
        draw.text((bx1 + _TICK + 3, ty_text), label, fill=_FG, font=font)
    cy = by1 + 8
    for line in wrapped:
        draw.text((_MARGIN, cy), line, fill=_FG, font=font)
        cy += _LINE
    return MapFigure(
        rgb=np.asarray(canvas),
        boxes=boxes,
        scale=rule,
        units=units_text,
        cmap=cmap,
        outline=top,
        caption=wrapped,
        title=title,
    )


def save_overlay(
    image: ArrayLike,
    heatmap: ArrayLike,
    path: str | os.PathLike[str],
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
    units: str | None = None,
    scale: ScaleArg = DEFAULT_SCALE,
    outline: Outline = None,
    show_mask: bool = False,
    title: str | None = None,
    size: int = DEFAULT_SIZE,
    plain: bool = True,
) -> Path:
    """Write a map figure (:func:`render_map`) as a PNG, atomically.

    Args:
        image: ``(H, W)`` tensor or array in [−1024, 1024] (``(1, H, W)`` also accepted).
        heatmap: ``(H, W)`` map, ``>= 0``.
        path: the ``.png`` file to write.
        alpha, cmap, scale, outline, show_mask, title, size, plain: see :func:`render_map`.
        units: what the map measures. ``None`` (default) takes it from the file name when
            that is ``map-<method>.png`` with a known method (:data:`MAP_UNITS`, e.g. the
            pipeline's ``map-max.png``), else :data:`GENERIC_UNITS`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`. The PNG's text chunk :data:`PNG_KEY` holds the
        scaling rule, the value at full colour, the units and the outline as JSON.

    Example:
        >>> import tempfile, pathlib, torch
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "map.png"
        >>> _ = save_overlay(torch.zeros(8, 8), torch.rand(8, 8), out)
        >>> im = Image.open(out)
        >>> max(im.size) >= 2 * DEFAULT_SIZE, json.loads(im.text[PNG_KEY])["scale"]["rule"]
        (True, 'p99')
    """
    target = Path(path)
    if units is None:
        units = units_for(target.stem) if target.stem.startswith("map-") else None
    fig = render_map(
        image,
        heatmap,
        units=units,
        scale=scale,
        outline=outline,
        show_mask=show_mask,
        title=title,
        size=size,
        plain=plain,
        alpha=alpha,
        cmap=cmap,
    )
    info = PngInfo()
    if title:
        info.add_itxt("Title", title)
    info.add_itxt("Description", " ".join(fig.caption))
    info.add_itxt(PNG_KEY, json.dumps(fig.metadata(), ensure_ascii=False))
    buf = io.BytesIO()
    Image.fromarray(fig.rgb, mode="RGB").save(buf, format="PNG", pnginfo=info)
    return write_bytes(target, buf.getvalue())
