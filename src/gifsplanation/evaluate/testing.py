"""A tiny masked dataset on disk for tests and examples of the experiments.

Writes :class:`gifsplanation.testing.BlobData` images and blob masks as 8-bit PNGs in the
layout :class:`gifsplanation.datasets.MaskedCXRDataset` reads (``<label>/images/*.png``
and ``<label>/infection_masks/*.png``), labels ``blob`` (positives with masks) and
``none`` (negatives, empty masks); with ``lung_masks=True`` also ``<label>/lung_masks/``:
two "lung" rectangles joined with the blob's disc grown by 4 px, so the blob always lies
inside the lungs and its surroundings are partly outside them. Synthetic: no real image is
involved.

Example:
    >>> import tempfile
    >>> from gifsplanation.datasets import MaskedCXRDataset
    >>> root = write_blob_dataset(tempfile.mkdtemp(), n_per_label=2)
    >>> len(MaskedCXRDataset(root, size=32, split="all"))
    4
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..testing import BlobData


def write_blob_dataset(
    root: str | Path, n_per_label: int = 6, seed: int = 7, lung_masks: bool = False
) -> Path:
    """Write ``n_per_label`` blob and no-blob images with masks under ``root``; return it.

    ``lung_masks=True`` adds a lung mask per image (see the module docstring)."""
    root = Path(root)
    data = BlobData(seed=seed)
    for label, positive in (("blob", True), ("none", False)):
        x, _, masks = data.batch(n_per_label, positive=positive)
        img_dir, mask_dir = root / label / "images", root / label / "infection_masks"
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        pixels = ((x[:, 0].numpy() + 1024) / 2048 * 255).round().clip(0, 255).astype(np.uint8)
        for i in range(n_per_label):
            name = f"{label}_{i}.png"
            mask = masks[i].numpy()
            Image.fromarray(pixels[i]).save(img_dir / name)
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / name)
            if lung_masks:
                lung_dir = root / label / "lung_masks"
                lung_dir.mkdir(exist_ok=True)
                lungs = _lungs(mask)
                Image.fromarray(lungs.astype(np.uint8) * 255).save(lung_dir / name)
    return root


def _lungs(blob: np.ndarray) -> np.ndarray:
    """Two upright rectangles (the "lungs") joined with the blob grown by 4 px."""
    from scipy import ndimage

    h, w = blob.shape
    lungs = np.zeros((h, w), dtype=bool)
    lungs[h // 4 : h - h // 4, w // 8 : w // 2 - w // 16] = True
    lungs[h // 4 : h - h // 4, w // 2 + w // 16 : w - w // 8] = True
    if blob.any():
        lungs |= ndimage.binary_dilation(blob, iterations=4)
    return lungs
