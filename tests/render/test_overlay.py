"""Map figures people can read: the one renderer of every map image (issue #16).

Measured on the pixels: strong values are saturated colour over the anatomy, weak values
leave the image as it is, the colour bar shows the colour map in order, the figure is big
enough, the top-p outline is the set the IoU counts, and one scaling rule makes a map look
the same whatever its units.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib.colors import rgb_to_hsv
from PIL import Image

from gifsplanation.metrics import iou_top_p, top_p_intersection
from gifsplanation.render import (
    MAP_UNITS,
    map_scale,
    overlay_rgb,
    render_map,
    save_overlay,
    top_p_region,
    units_for,
)
from gifsplanation.render.colorbar import DEFAULT_CMAP
from gifsplanation.render.overlay import GENERIC_UNITS, OUTLINE_RGB, PNG_KEY

N = 224


def anatomy(n: int = N) -> np.ndarray:
    """A grey test image in [−1024, 1024] with structure at every grey level."""
    yy, xx = np.mgrid[0:n, 0:n] / n
    return 900 * np.sin(6 * xx) * np.cos(4 * yy)


def blob_map(n: int = N, seed: int = 0) -> np.ndarray:
    """A known map: one Gaussian blob plus weak noise (values in arbitrary units)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    blob = np.exp(-((yy - 0.4 * n) ** 2 + (xx - 0.6 * n) ** 2) / (2 * (0.08 * n) ** 2))
    return blob + 0.02 * rng.random((n, n))


def crop(fig, name: str) -> np.ndarray:
    left, top, right, bottom = fig.boxes[name]
    return fig.rgb[top:bottom, left:right]


def at_panel(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``values`` at the map's resolution, repeated to the panel's pixels (nearest)."""
    fy, fx = shape[0] // values.shape[0], shape[1] // values.shape[1]
    return np.repeat(np.repeat(values, fy, axis=0), fx, axis=1)


def test_strong_values_are_saturated_and_weak_values_leave_the_image_grey():
    heat = blob_map()
    fig = render_map(anatomy(), heat, units="test units")
    plain = crop(fig, "image").astype(float)
    over = crop(fig, "overlay").astype(float)
    assert plain.shape == over.shape == (2 * N, 2 * N, 3)
    up = at_panel(heat, over.shape[:2])

    top5 = up >= np.percentile(heat, 95)
    saturation = rgb_to_hsv(over / 255.0)[..., 1]
    assert np.median(saturation[top5]) >= 0.5

    low50 = up <= np.percentile(heat, 50)
    assert np.abs(over[low50] - plain[low50]).mean() <= 10
    # the plain panel is the grey image itself
    assert (plain[..., 0] == plain[..., 1]).all() and (plain[..., 1] == plain[..., 2]).all()


def test_colour_bar_is_there_and_shows_the_colour_map_in_order():
    fig = render_map(anatomy(), blob_map())
    panel_w = fig.boxes["overlay"][2] - fig.boxes["overlay"][0]
    assert fig.rgb.shape[1] > 2 * panel_w
    bar = crop(fig, "colorbar")
    assert bar.shape[0] == 2 * N
    column = bar[::-1, bar.shape[1] // 2].astype(float)  # bottom (0) to top (full)
    expected = colormaps[DEFAULT_CMAP](np.linspace(0, 1, len(column)))[:, :3] * 255
    assert np.abs(column - expected).max() <= 2
    lightness = column @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(lightness) >= -1.0)  # perceptually ordered: darkest at 0
    assert lightness[-1] - lightness[0] > 150


def test_caption_states_units_and_scaling_rule():
    fig = render_map(anatomy(), blob_map(), units="|x_λ − x₀|, image units")
    text = " ".join(fig.caption)
    assert "|x_λ − x₀|, image units" in text
    assert "99th percentile of this map" in text and "full colour" in text
    assert fig.scale.rule == "p99"
    assert fig.scale.full == pytest.approx(np.percentile(blob_map(), 99))


@pytest.mark.parametrize("shape", [(224, 224), (32, 32), (16, 20), (600, 400)])
def test_longer_side_is_at_least_448(shape):
    image = np.zeros(shape)
    heat = np.random.default_rng(1).random(shape)
    fig = render_map(image, heat)
    assert max(fig.rgb.shape[:2]) >= 448
    left, top, right, bottom = fig.boxes["overlay"]
    assert max(right - left, bottom - top) == 448
    assert (bottom - top) / (right - left) == pytest.approx(shape[0] / shape[1], rel=0.02)


def test_all_zero_map_renders_and_says_no_change(tmp_path):
    fig = render_map(anatomy(), np.zeros((N, N)), outline=0.05)
    assert fig.scale.rule == "zero" and fig.scale.full == 0
    assert "no change" in " ".join(fig.caption)
    assert np.array_equal(crop(fig, "image"), crop(fig, "overlay"))
    assert fig.outline is None
    out = save_overlay(torch.zeros(N, N), torch.zeros(N, N), tmp_path / "zero.png")
    meta = json.loads(Image.open(out).text[PNG_KEY])
    assert meta["scale"]["rule"] == "zero"


@pytest.mark.parametrize(
    "title", ["$x_1^2$ \\frac weird", "$\\frac$ broken $x_$", "cost $5 a_b^c \\ d"]
)
def test_dollar_titles_render_literally(tmp_path, title):
    out = save_overlay(anatomy(), blob_map(), tmp_path / "t.png", title=title)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.text["Title"] == title
        rgb = np.asarray(im.convert("RGB"))
    fig = render_map(anatomy(), blob_map(), title=title)
    assert fig.title == title
    assert np.array_equal(rgb, fig.rgb)
    top = fig.boxes["overlay"][1]
    assert (fig.rgb[: top // 2] != fig.rgb[0, 0]).any()  # the title row has text


def test_one_rule_for_every_method_no_map_looks_weaker_for_its_units():
    """A gradient map (1e-8) and a Latent Shift map (100s) with the same shape are drawn
    with identical pixels; only the tick labels differ."""
    heat = blob_map()
    small = render_map(anatomy(), heat * 1e-8)
    large = render_map(anatomy(), heat * 300)
    assert small.scale.rule == large.scale.rule == "p99"
    assert np.array_equal(crop(small, "overlay"), crop(large, "overlay"))
    assert np.array_equal(overlay_rgb(anatomy(), heat * 1e-8), overlay_rgb(anatomy(), heat * 300))


def test_scale_options():
    heat = np.arange(1.0, 101.0).reshape(10, 10)
    assert map_scale(heat).full == pytest.approx(np.percentile(heat, 99))
    assert map_scale(heat, "max").full == 100
    assert map_scale(heat, "p95").rule == "p95"
    fixed = map_scale(heat, 50.0)
    assert fixed.rule == "fixed" and fixed.normalise(heat).max() == 1.0
    assert fixed.normalise(heat)[2, 4] == pytest.approx(0.5)  # the value 25
    sparse = np.zeros((20, 20))
    sparse[3, 4] = 2.0
    s = map_scale(sparse)
    assert s.rule == "max" and s.full == 2.0 and s.fallback
    for bad in ("p0", "p101", "median", -1.0, float("nan")):
        with pytest.raises(ValueError):
            map_scale(heat, bad)


def test_outline_is_the_region_the_top_p_iou_counts():
    rng = np.random.default_rng(3)
    heat = rng.random((N, N)) + blob_map()
    mask = np.zeros((N, N), bool)
    mask[60:130, 100:170] = True
    top = top_p_region(heat, mask)
    assert top.p == mask.sum() == top.region.sum() and top.source == "mask"
    inter, n_a, n_b = top_p_intersection(heat, mask)
    assert (top.region & mask).sum() == inter and n_a == top.region.sum()
    # and for a fraction
    top5 = top_p_region(heat, 0.05)
    assert top5.p == round(0.05 * N * N) == top5.region.sum()
    assert top5.region[heat >= np.percentile(heat, 96)].all()

    fig = render_map(anatomy(), heat, outline=mask, show_mask=True)
    text = " ".join(fig.caption)
    assert f"p = {int(mask.sum()):,}" in text and "top-p IoU" in text
    assert f"IoU with the mask {iou_top_p(heat, mask):.2f}" in text
    over = crop(fig, "overlay")
    cyan = np.all(over == np.asarray(OUTLINE_RGB, np.uint8), axis=-1)
    assert cyan.sum() > 100
    # the cyan line runs along the region's edge, not inside or far outside it
    ys, xs = np.nonzero(cyan)
    region_up = at_panel(top.region, over.shape[:2])
    assert region_up[ys, xs].mean() > 0.9
    assert json.loads(json.dumps(fig.metadata()))["outline"]["p"] == int(mask.sum())


def test_outline_handles_ties_and_bad_input():
    flat = np.zeros((10, 10))
    flat[0, :3] = 1.0
    top = top_p_region(flat, 0.1)  # 10 pixels wanted, 3 above a cut-off at the minimum
    assert top.region.sum() == 3 and "above the map's minimum" in top.note
    with pytest.raises(ValueError, match="fraction"):
        top_p_region(flat, 1.5)
    with pytest.raises(ValueError, match="does not match"):
        top_p_region(flat, np.ones((4, 4)))
    empty = top_p_region(flat, np.zeros((10, 10)))
    assert empty.p == 0 and not empty.region.any()


def test_units_come_from_the_method_or_the_pipeline_file_name(tmp_path):
    assert units_for("grad") == MAP_UNITS["grad"]
    assert units_for("latentshift-max") == units_for("map-max") == MAP_UNITS["max"]
    assert units_for("unknown") == units_for(None) == GENERIC_UNITS
    out = save_overlay(anatomy(), blob_map(), tmp_path / "map-max.png")
    meta = json.loads(Image.open(out).text[PNG_KEY])
    assert meta["units"] == MAP_UNITS["max"] and meta["scale"]["rule"] == "p99"
    other = save_overlay(anatomy(), blob_map(), tmp_path / "x.png", units="my units")
    assert json.loads(Image.open(other).text[PNG_KEY])["units"] == "my units"


def test_plain_false_draws_the_overlay_and_bar_only():
    fig = render_map(anatomy(), blob_map(), plain=False)
    assert "image" not in fig.boxes
    assert fig.rgb.shape[1] < 2 * 448


def test_overlay_rgb_keeps_the_image_size_and_marks_the_hot_spot(tmp_path):
    image = torch.zeros(16, 20)
    heat = torch.zeros(16, 20)
    heat[4, 5] = 3.0
    arr = overlay_rgb(image, heat, alpha=0.8)
    assert arr.shape == (16, 20, 3)
    gray = overlay_rgb(image, torch.zeros(16, 20))
    assert (gray[..., 0] == gray[..., 2]).all()  # a zero map leaves the image gray
    assert np.abs(arr[4, 5].astype(int) - arr[0, 0].astype(int)).sum() > 60


def test_shape_and_option_errors(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        save_overlay(torch.zeros(8, 8), torch.zeros(4, 4), tmp_path / "m.png")
    with pytest.raises(ValueError, match="alpha"):
        render_map(torch.zeros(8, 8), torch.zeros(8, 8), alpha=2)
    with pytest.raises(ValueError, match="size"):
        render_map(torch.zeros(8, 8), torch.zeros(8, 8), size=8)
    assert not (tmp_path / "m.png").exists()


def test_nan_and_negative_values_are_drawn_as_zero():
    heat = blob_map()
    dirty = heat.copy()
    dirty[:10] = -5.0
    dirty[10:12] = np.nan
    clean = heat.copy()
    clean[:12] = 0.0
    assert np.array_equal(render_map(anatomy(), dirty).rgb, render_map(anatomy(), clean).rgb)
