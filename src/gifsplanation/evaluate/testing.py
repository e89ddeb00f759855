"""A tiny masked dataset on disk for tests and examples of the experiments.

Writes :class:`gifsplanation.testing.BlobData` images and blob masks as 8-bit PNGs in the
layout :class:`gifsplanation.datasets.MaskedCXRDataset` reads (``<label>/images/*.png``
and ``<label>/infection_masks/*.png``), labels ``blob`` (positives with masks) and
``none`` (negatives, empty masks). Synthetic: no real image is involved.

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


def write_blob_dataset(root: str | Path, n_per_label: int = 6, seed: int = 7) -> Path:
    """Write ``n_per_label`` blob and no-blob images with masks under ``root``; return it."""
    root = Path(root)
    data = BlobData(seed=seed)
    for label, positive in (("blob", True), ("none", False)):
        x, _, masks = data.batch(n_per_label, positive=positive)
        img_dir, mask_dir = root / label / "images", root / label / "infection_masks"
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        pixels = ((x[:, 0].numpy() + 1024) / 2048 * 255).round().clip(0, 255).astype(np.uint8)
        for i in range(n_per_label):
            Image.fromarray(pixels[i]).save(img_dir / f"{label}_{i}.png")
            Image.fromarray(masks[i].numpy().astype(np.uint8) * 255).save(
                mask_dir / f"{label}_{i}.png"
            )
    return root
