"""Helpers shared by the renderers: atomic file writes and image conversions.

Every renderer writes through :func:`atomic_path` (a temporary file in the target's folder,
then ``os.replace``), so an interrupted run never leaves a half-written file under its
final name, and converts [−1024, 1024] images to 8-bit grayscale with :func:`to_uint8`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

_UMASK = os.umask(0)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it to ``path`` atomically.

    The temporary file keeps ``path``'s suffix (writers such as ffmpeg pick the format
    from it). On an exception the temporary file is removed and ``path`` is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("hi")
        >>> out.read_text()
        'hi'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path`` as a :class:`Path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def to_numpy_2d(image: ArrayLike) -> np.ndarray:
    """A float64 ``(H, W)`` array from a tensor or array shaped (H,W), (1,H,W) or (1,1,H,W)."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.asarray(arr, dtype=np.float64)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a single-channel 2D image, got shape {tuple(arr.shape)}")
    return arr


def to_uint8(image: ArrayLike, lo: float = -1024.0, hi: float = 1024.0) -> np.ndarray:
    """Map an image in [lo, hi] (TorchXRayVision's [−1024, 1024] by default) to uint8."""
    arr = to_numpy_2d(image)
    scaled = (arr - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def upscale_factor(size: int, minimum: int = 128) -> int:
    """The integer factor that brings a ``size``-pixel image to at least ``minimum`` pixels."""
    return max(1, -(-minimum // max(size, 1)))
