"""The Latent Shift loop as an H.264 MP4 (imageio with the ffmpeg binary of imageio-ffmpeg).

Same frames and loop as the GIF; an MP4 is smaller and plays in slides and browsers
that throttle GIFs. The frame size is padded to even numbers, which yuv420p needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._core.explanation import Explanation
from ._common import atomic_path
from .gif import compose_rgb, loop_order


def save_mp4(
    exp: Explanation,
    index: int,
    path: str | os.PathLike[str],
    *,
    side_by_side: bool = True,
    duration_ms: int = 100,
    loops: int = 3,
    quality: float = 8.0,
) -> Path:
    """Write the λ loop of image ``index`` as an MP4 video.

    Args:
        exp: an :class:`~gifsplanation.Explanation`.
        index: which image of the batch.
        path: the ``.mp4`` file to write (atomically).
        side_by_side: show ``input | frame | prediction bar`` (default) or the frame alone.
        duration_ms: display time of each frame in milliseconds (default 100).
        loops: how many times the loop is repeated in the video (videos do not loop by
            themselves in every player; default 3).
        quality: imageio-ffmpeg quality, 0–10 (default 8).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        RuntimeError: when imageio-ffmpeg (and its bundled ffmpeg) is not installed.
    """
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (checks that the ffmpeg binary is available)
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise RuntimeError(
            f"MP4 output needs imageio-ffmpeg: pip install imageio-ffmpeg ({e})"
        ) from e
    if duration_ms <= 0:
        raise ValueError(f"duration_ms must be positive, got {duration_ms}")
    arrays = compose_rgb(exp, index, side_by_side=side_by_side)
    order = loop_order(len(arrays)) * max(loops, 1)
    h, w = arrays[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=1000.0 / duration_ms,
            codec="libx264",
            quality=quality,
            pixelformat="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        try:
            for k in order:
                frame = np.zeros((ph, pw, 3), dtype=np.uint8)
                frame[:h, :w] = arrays[k]
                writer.append_data(frame)
        finally:
            writer.close()
    return Path(path)
