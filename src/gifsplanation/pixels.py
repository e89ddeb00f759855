"""The model's pixel convention and its 8-bit form.

Models read one channel in TorchXRayVision's range [−1024, 1024]. Image files, the
training cache and the study's PNGs hold 8-bit grey levels. :func:`uint8_to_model` and
:func:`to_uint8` are the one pair of conversions between the two (any shape; NumPy arrays
stay arrays, tensors stay tensors). Both compute in the input's own floating-point type
(float32 for integers), so the same input always gives the same bits.

Example:
    >>> import numpy as np
    >>> uint8_to_model(np.array([0, 255], np.uint8)).tolist()
    [-1024.0, 1024.0]
    >>> to_uint8(np.array([-1024.0, 0.0, 1024.0])).tolist()
    [0, 128, 255]
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

LOW, HIGH = -1024.0, 1024.0
"""The model's pixel range (TorchXRayVision's convention)."""
GREY_PER_UNIT = 255.0 / (HIGH - LOW)
"""8-bit grey levels per unit of the model's range (for showing differences)."""

Pixels = TypeVar("Pixels", np.ndarray, torch.Tensor)


def uint8_to_model(pixels: Pixels, maxval: float = 255.0) -> Pixels:
    """Grey levels in [0, ``maxval``] (8-bit by default; 10- to 16-bit files pass their
    maximum) as float32 in [−1024, 1024], as ``xrv.datasets.normalize`` computes them.

    Example:
        >>> import torch
        >>> uint8_to_model(torch.tensor([0, 4095]), maxval=4095).tolist()
        [-1024.0, 1024.0]
    """
    if isinstance(pixels, torch.Tensor):
        return pixels.float() / maxval * (HIGH - LOW) + LOW
    return np.asarray(pixels).astype(np.float32) / maxval * (HIGH - LOW) + LOW


def to_uint8(image: Pixels) -> Pixels:
    """An image in [−1024, 1024] as 8-bit grey levels (rounded to nearest, half to even;
    values outside the range clipped).

    Example:
        >>> import torch
        >>> to_uint8(torch.tensor([-2000.0, 1.0, 5000.0])).tolist()
        [0, 128, 255]
    """
    if isinstance(image, torch.Tensor):
        x = image if image.is_floating_point() else image.float()
        return ((x - LOW) * GREY_PER_UNIT).round().clamp(0, 255).to(torch.uint8)
    arr = np.asarray(image)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return np.clip(np.rint((arr - LOW) * GREY_PER_UNIT), 0, 255).astype(np.uint8)
