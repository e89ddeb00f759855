"""Renderers: turn an :class:`~gifsplanation.Explanation` into files people look at.

One module per output: a looping grayscale GIF (:func:`save_gif`, Pillow only), an MP4
(:func:`save_mp4`, imageio-ffmpeg), an attribution map beside and over the image with a
colour bar (:func:`save_overlay`, the one renderer of every map image; one scaling rule,
:func:`map_scale`), prediction vs λ (:func:`save_curve`), optical flow along the sequence
(:func:`save_flow`), and HTML pages (:func:`write_report`, :func:`write_index`). Every file
is written atomically (a temporary file in the same folder, then ``os.replace``).

Example:
    >>> import tempfile, pathlib
    >>> from gifsplanation import LatentShift
    >>> from gifsplanation.testing import tiny_models
    >>> from gifsplanation.render import save_gif, save_overlay
    >>> clf, ae, data = tiny_models()
    >>> exp = LatentShift(clf, ae).explain(data.positive(1), target="blob")
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> save_gif(exp, 0, out / "latentshift.gif").name
    'latentshift.gif'
    >>> save_overlay(exp.images[0, 0], exp.heatmap("max")[0], out / "map-max.png").name
    'map-max.png'
"""

from ._common import atomic_path, write_bytes, write_text
from .colorbar import MapScale, map_scale
from .curve import save_curve
from .flow import save_flow, sequence_flow
from .gif import PALETTE, change_scale, compose_frames, compose_rgb, loop_order, save_gif
from .mp4 import save_mp4
from .overlay import (
    MAP_UNITS,
    MapFigure,
    TopP,
    overlay_rgb,
    render_map,
    save_overlay,
    top_p_region,
    units_for,
)
from .report import INDEX_GENERATOR, write_index, write_report

__all__ = [
    "INDEX_GENERATOR",
    "MAP_UNITS",
    "PALETTE",
    "MapFigure",
    "MapScale",
    "TopP",
    "atomic_path",
    "change_scale",
    "compose_frames",
    "compose_rgb",
    "loop_order",
    "map_scale",
    "overlay_rgb",
    "render_map",
    "save_curve",
    "save_flow",
    "save_gif",
    "save_mp4",
    "save_overlay",
    "sequence_flow",
    "top_p_region",
    "units_for",
    "write_bytes",
    "write_index",
    "write_report",
    "write_text",
]
