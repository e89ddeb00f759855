"""Renderers: GIF/MP4 frames and sizes, overlay, curve, flow, reports, atomic writes."""

from __future__ import annotations

import re

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from gifsplanation import LatentShift
from gifsplanation.render import (
    compose_frames,
    loop_order,
    save_curve,
    save_flow,
    save_gif,
    save_mp4,
    save_overlay,
    sequence_flow,
    write_index,
    write_report,
)
from gifsplanation.render.gif import (
    BAR_WIDTH,
    BLUE0,
    HEADER,
    LEGEND,
    ORANGE0,
    PALETTE,
    RAMP,
    SCRUBBER,
    change_scale,
    panel_size,
)

N_FRAMES = 6


@pytest.fixture(scope="module")
def exp(tiny):
    clf, ae, _ = tiny
    from gifsplanation.testing import BlobData

    return LatentShift(clf, ae, n_frames=N_FRAMES).explain(
        BlobData(seed=7).positive(2), target="blob"
    )


def test_loop_order_goes_there_and_back():
    assert loop_order(3) == [0, 1, 2, 1]
    assert loop_order(1) == [0]


@pytest.mark.parametrize("side_by_side", [True, False])
def test_gif_frame_count_size_and_colours(exp, tmp_path, side_by_side):
    out = save_gif(exp, 1, tmp_path / "a.gif", side_by_side=side_by_side, duration_ms=70)
    im = Image.open(out)
    p = panel_size(32)
    width = 3 * p + BAR_WIDTH if side_by_side else p
    height = HEADER + p + (LEGEND if side_by_side else 0) + SCRUBBER
    assert im.n_frames == 2 * N_FRAMES - 2
    assert im.size == (width, height)
    assert im.info["loop"] == 0
    assert im.info["duration"] == 70
    rgb = np.asarray(im.convert("RGB")).astype(int)
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    if side_by_side:  # only the change panel is coloured
        assert grey[:, : 2 * p].all() and grey[:, 3 * p :].all()
        assert not grey[HEADER : HEADER + p, 2 * p : 3 * p].all()
    else:
        assert grey.all()


def test_gif_frames_follow_the_sequence(exp):
    # The frame panel of composed frame k is the upscaled counterfactual frame k.
    arrays = compose_frames(exp, 0, side_by_side=False, labels=False)
    p = panel_size(32)
    f = p // 32
    for k in (0, N_FRAMES - 1):
        panel = PALETTE[arrays[k][HEADER : HEADER + p : f, ::f]][..., 0]
        expected = ((exp.frames[0, k, 0].numpy() + 1024) / 2048 * 255).round().clip(0, 255)
        assert np.abs(panel.astype(float) - expected).max() <= 1.5  # 192 grey levels


def test_change_panel_shows_removed_blue_and_added_orange(exp):
    # Frame 0 is the most negative λ: where it is darker than λ = 0 the panel is blue,
    # where brighter orange, and the strongest change reaches the top of its ramp.
    arrays = compose_frames(exp, 0, side_by_side=True, labels=False)
    p = panel_size(32)
    f = p // 32
    zero = int(exp.zero_index[0])
    x0 = exp.frames[0, zero, 0].numpy()
    scale = change_scale(exp, 0)
    for k in (0, N_FRAMES - 1):
        panel = arrays[k][HEADER : HEADER + p : f, 2 * p : 3 * p : f]
        diff = (exp.frames[0, k, 0].numpy() - x0) * 255 / 2048
        blue = (panel >= BLUE0) & (panel < ORANGE0)
        orange = panel >= ORANGE0
        strong = np.abs(diff) >= 0.2 * scale
        assert (blue[strong] == (diff[strong] < 0)).all()
        assert (orange[strong] == (diff[strong] > 0)).all()
        assert not (blue | orange)[np.abs(diff) < 0.05 * scale].any()
    # λ = 0 shows no change at all; the extremes reach full colour somewhere.
    assert (arrays[zero][HEADER : HEADER + p, 2 * p : 3 * p] < BLUE0).all()
    full = {BLUE0 + RAMP - 1, ORANGE0 + RAMP - 1}
    assert any(np.isin(arrays[k], list(full)).any() for k in (0, N_FRAMES - 1))


def test_change_scale_is_the_sequence_percentile_and_printed(exp):
    frames = exp.frames[0]
    x0 = frames[int(exp.zero_index[0])]
    d = (frames - x0).abs().mean(1).flatten().numpy() * 255 / 2048
    assert change_scale(exp, 0) == pytest.approx(max(np.percentile(d, 99.5), 1.0))
    with_text = compose_frames(exp, 0, side_by_side=True, labels=True)
    without = compose_frames(exp, 0, side_by_side=True, labels=False)
    p = panel_size(32)
    legend = slice(HEADER + p, HEADER + p + LEGEND)
    assert (with_text[0][legend] != without[0][legend]).any()  # the legend line is drawn


def test_mp4_has_the_loop(exp, tmp_path):
    out = save_mp4(exp, 0, tmp_path / "a.mp4", loops=2)
    frames = iio.imread(out, plugin="pyav") if _has_pyav() else _ffmpeg_frames(out)
    assert len(frames) == 2 * (2 * N_FRAMES - 2)
    assert frames[0].shape[0] % 2 == 0 and frames[0].shape[1] % 2 == 0


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _ffmpeg_frames(path):
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="FFMPEG") as r:
        return [f for f in r]


def test_curve_and_flow_are_pngs(exp, tmp_path):
    for fn, name in ((save_curve, "curve.png"), (save_flow, "flow.png")):
        out = fn(exp, 0, tmp_path / name)
        im = Image.open(out)
        assert im.format == "PNG" and im.size[0] > 100


def test_flow_finds_a_shift():
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    frames = torch.stack(
        [2000 * torch.exp(-((yy - 24) ** 2 + (xx - 20 - 2 * k) ** 2) / 40) - 1000 for k in range(3)]
    )[:, None]
    flow = sequence_flow(frames, method="tvl1")
    assert flow.shape == (2, 48, 48)
    assert flow[1, 20:28, 20:28].mean() > 1.5  # moves right by ~4 px in total
    assert abs(flow[0, 20:28, 20:28].mean()) < 1.0


def test_report_embeds_assets_and_index_links(exp, tmp_path):
    gif = save_gif(exp, 0, tmp_path / "latentshift.gif")
    heat = save_overlay(exp.images[0, 0], exp.heatmap("max")[0], tmp_path / "map-max.png")
    record = exp.summary(0) | {"image": "a<b>.png", "n_evaluations": 3}
    report = write_report(record, {"gif": gif, "map-max": heat}, tmp_path / "report.html")
    text = report.read_text()
    assert 'id="asset-gif" alt="gif" src="data:image/gif;base64,' in text
    assert 'id="asset-map-max" alt="map-max" src="data:image/png;base64,' in text
    assert "a&lt;b&gt;.png" in text and "a<b>.png" not in text
    # The legend says what the change panel's colours and the prediction bar mean.
    assert "blue" in text and "orange" in text and "probability for the" in text
    index = write_index(
        [
            {
                "image": "a.png",
                "target": "blob",
                "prediction": 0.9,
                "status": "done",
                "report": "a-0123/blob/report.html",
            },
            {"image": "x.png", "status": "done", "report": str(report)},  # absolute: no link
            {"image": "y.png", "status": "done", "report": "javascript:alert(1)/r.html"},
            {"image": "bad.png", "status": "failed", "reason": "not an image"},
        ],
        tmp_path / "index.html",
    )
    html = index.read_text()
    assert re.findall(r'href="([^"]*)"', html) == ["./a-0123/blob/report.html"]
    assert "not an image" in html and "0.900" in html and "javascript" not in html


def test_gif_caption_fits_long_target_names(exp):
    # "Non-COVID pneumonia" used to be cut to "Non-C…"; now the whole name is drawn in the
    # header right of the widest frame label, the font shrunk if needed.
    import dataclasses

    from PIL import ImageDraw

    from gifsplanation.render.gif import _fit_caption

    name = "Non-COVID pneumonia"
    long = dataclasses.replace(exp, target_names=[name] * len(exp.target_names))
    arrays = compose_frames(long, 0, side_by_side=True, labels=True)
    p = panel_size(32)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    for a in arrays:
        assert a.shape == (HEADER + p + LEGEND + SCRUBBER, 3 * p + BAR_WIDTH)
        # The caption sits over the change panel and the bar.
        cols = np.flatnonzero(a[:HEADER, 2 * p :].max(axis=0) > 0)
        assert cols.size and cols.max() - cols.min() > 80  # more than a 6-letter stub

    text, font = _fit_caption(measure, name, 400)
    assert text == name
    text, font = _fit_caption(measure, name, 40)
    assert text.endswith("…") and measure.textlength(text, font=font) <= 40


def test_an_end_frame_short_of_its_goal_says_so_in_the_gif(tiny):
    """A GIF is often seen without its report: the end frame of a side that stopped short
    of its goal carries the goal in its header; reached sides do not."""
    from gifsplanation import LatentShift
    from gifsplanation.render.gif import frame_labels
    from gifsplanation.testing import BlobData

    clf, ae, _ = tiny
    x, _, _ = BlobData(seed=3).batch(1, positive=True)
    short = LatentShift(clf, ae, n_frames=5, max_lambda=1e-3).explain(x, target="blob")
    labels = frame_labels(short, 0)
    assert labels[0].endswith(f"goal {float(short.goals[0, 0]):.2f} not reached")
    assert labels[-1].endswith(f"goal {float(short.goals[0, 1]):.2f} not reached")
    assert "goal" not in "".join(labels[1:-1])
    reached = LatentShift(clf, ae, n_frames=5).explain(x, target="blob")
    assert reached.reached("lower") == [True]
    assert not any("goal" in t for t in frame_labels(reached, 0)[:1])
