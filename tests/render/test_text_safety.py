"""Target names are user data: the curve draws them literally, never as mathtext or LaTeX."""

from __future__ import annotations

import dataclasses

import pytest
from matplotlib.text import Text
from PIL import Image

from gifsplanation import LatentShift
from gifsplanation.render.curve import save_curve

NAMES = [
    "$x_1^2$ \\frac weird",  # valid mathtext: would silently render as a formula
    "$\\frac$ broken $x_$",  # invalid mathtext: Matplotlib raised ValueError
    "$\\alpha$ opacity",
    "cost $5 a_b^c \\ d",
]


@pytest.fixture(scope="module")
def exp(tiny):
    clf, ae, data = tiny
    return LatentShift(clf, ae, n_frames=5).explain(data.positive(1), target=0)


@pytest.mark.parametrize("name", NAMES)
def test_curve_draws_the_target_name_literally(exp, name, tmp_path, figures):
    named = dataclasses.replace(exp, target_names=[name])
    out = save_curve(named, 0, tmp_path / "curve.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (640, 400)

    (fig,) = figures
    (ax,) = fig.axes
    with_name = [t for t in fig.findobj(Text) if name in t.get_text()]
    assert {ax.title, ax.yaxis.label} <= set(with_name)
    drawn = [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_legend().get_texts()]
    for t in drawn:
        assert t.get_parse_math() is False and t.get_usetex() is False, t.get_text()

    # Rendered, the title is exactly as wide as the same string with every $ escaped
    # (which Matplotlib draws as plain text), so no part of it became a formula.
    renderer = fig.canvas.get_renderer()
    escaped = Text(
        text=ax.title.get_text().replace("$", "\\$"),
        fontproperties=ax.title.get_fontproperties(),
        figure=fig,
    )
    width = ax.title.get_window_extent(renderer).width
    assert width == pytest.approx(escaped.get_window_extent(renderer).width, abs=0.5)
