"""The renderers' fast paths: one flow between the end frames, the MP4 encoded once and
looped by stream copy, the curve and flow figures reused per thread."""

from __future__ import annotations

import dataclasses
import threading

import imageio.v2 as imageio
import numpy as np
import pytest
import skimage.registration
import torch
from PIL import Image

from gifsplanation import LatentShift
from gifsplanation.render import compose_rgb, loop_order, save_curve, save_flow, save_mp4
from gifsplanation.render.curve import warm_up
from gifsplanation.render.flow import sequence_flow

N_FRAMES = 6


@pytest.fixture(scope="module")
def exp(tiny):
    clf, ae, data = tiny
    return LatentShift(clf, ae, n_frames=N_FRAMES).explain(data.positive(2), target="blob")


def moving_blob(n: int, step: float = 2.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    blobs = [
        2000 * torch.exp(-((yy - 24) ** 2 + (xx - 20 - step * k) ** 2) / 40) - 1000
        for k in range(n)
    ]
    return torch.stack(blobs)[:, None]


@pytest.mark.parametrize("pairs", ["ends", "consecutive"])
def test_both_flows_find_the_shift(pairs):
    flow = sequence_flow(moving_blob(3), pairs=pairs)
    assert flow.shape == (2, 48, 48)
    assert flow[1, 20:28, 20:28].mean() > 1.5  # moves right by ~4 px in total
    assert abs(flow[0, 20:28, 20:28].mean()) < 1.0


def test_the_end_to_end_flow_costs_one_estimate(monkeypatch):
    calls = []
    real = skimage.registration.optical_flow_tvl1

    def counting(a, b, **kwargs):
        calls.append(a.shape)
        return real(a, b, **kwargs)

    monkeypatch.setattr(skimage.registration, "optical_flow_tvl1", counting)
    sequence_flow(moving_blob(6), pairs="ends")
    assert len(calls) == 1
    sequence_flow(moving_blob(6), pairs="consecutive")
    assert len(calls) == 1 + 5
    with pytest.raises(ValueError, match="unknown flow pairs"):
        sequence_flow(moving_blob(3), pairs="all")


@pytest.mark.parametrize("loops", [1, 3])
def test_mp4_is_the_loop_repeated_and_leaves_no_temporary_file(exp, tmp_path, loops):
    out = save_mp4(exp, 1, tmp_path / "a.mp4", loops=loops)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
    with imageio.get_reader(out, format="FFMPEG") as reader:
        frames = [f for f in reader]
    n = len(loop_order(N_FRAMES))
    assert len(frames) == loops * n
    composed = compose_rgb(exp, 1)
    h, w = composed[0].shape[:2]
    for k in (0, n - 1):  # each repetition shows the same frames, close to the composition
        first, again = frames[k][:h, :w].astype(float), frames[(loops - 1) * n + k][:h, :w]
        assert np.abs(first - again).mean() < 1.0
        grey = lambda a: a.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
        assert np.abs(grey(first) - grey(composed[loop_order(N_FRAMES)[k]])).mean() < 2.0


def test_mp4_refuses_bad_settings(exp, tmp_path):
    with pytest.raises(ValueError, match="quality"):
        save_mp4(exp, 0, tmp_path / "a.mp4", quality=0)
    with pytest.raises(ValueError, match="duration_ms"):
        save_mp4(exp, 0, tmp_path / "a.mp4", duration_ms=0)
    assert not list(tmp_path.iterdir())


def test_curve_and_flow_figures_are_reused_and_cleared(exp, tmp_path, figures):
    warm_up()
    figures.clear()  # count from here: the warm-up renders once too
    saved = figures
    a = dataclasses.replace(exp, target_names=["first", "first"])
    b = dataclasses.replace(exp, target_names=["second", "second"])
    save_curve(a, 0, tmp_path / "a.png")
    n_lines = len(saved[0].axes[0].lines)
    save_curve(b, 1, tmp_path / "b.png")
    save_flow(exp, 0, tmp_path / "fa.png")
    save_flow(exp, 1, tmp_path / "fb.png")
    assert saved[0] is saved[1] and saved[2] is saved[3]
    (ax,) = saved[1].axes
    assert "second" in ax.title.get_text() and "first" not in ax.title.get_text()
    assert len(ax.lines) == n_lines  # cleared, not drawn over
    for name in ("a.png", "b.png", "fa.png", "fb.png"):
        assert Image.open(tmp_path / name).format == "PNG"


def test_curves_from_several_threads_do_not_mix(exp, tmp_path):
    names = [f"target {k}" for k in range(4)]
    seen: dict[str, str] = {}

    def draw(k: int) -> None:
        named = dataclasses.replace(exp, target_names=[names[k], names[k]])
        for _ in range(3):
            save_curve(named, k % 2, tmp_path / f"{k}.png")
        from gifsplanation.render import _common

        seen[names[k]] = _common._figures.cache["curve", 100][1].title.get_text()

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in names:
        assert name in seen[name]
    for k in range(4):
        assert Image.open(tmp_path / f"{k}.png").size == (640, 400)
