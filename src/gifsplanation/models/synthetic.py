"""A tiny synthetic labelled dataset on disk, for tests and examples of training.

:func:`write_dataset` writes PNG images in the COVID-QU-Ex layout (label folders with
``images/`` and ``infection_masks/``) plus a CSV index. Positive images carry a bright
square exactly where their infection mask is, so mask alignment can be checked and a
classifier can learn the task in a few steps. No real image is involved.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_dataset(
    root: str | Path,
    n_per_label: int = 6,
    height: int = 40,
    width: int = 36,
    labels: tuple[str, ...] = ("covid19", "normal"),
    seed: int = 0,
) -> Path:
    """Write ``root/<label>/{images,infection_masks}/*.png`` and ``root/data.csv``.

    Args:
        root: output folder (created).
        n_per_label: images per label.
        height: image height in pixels.
        width: image width in pixels (differs from ``height`` to exercise the centre crop).
        labels: label folder names; the first is the positive one (bright square + mask),
            the others have empty masks.
        seed: random seed.

    Returns:
        The CSV path (columns ``image,label,infection_mask``, relative paths).

    Example:
        >>> import tempfile
        >>> csv_path = write_dataset(tempfile.mkdtemp(), n_per_label=2)
        >>> csv_path.name
        'data.csv'
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    side = max(4, min(height, width) // 4)
    for li, label in enumerate(labels):
        for k in range(n_per_label):
            img = (rng.random((height, width)) * 60 + 40).astype(np.uint8)
            mask = np.zeros((height, width), np.uint8)
            if li == 0:
                y = int(rng.integers(2, height - side - 2))
                x = int(rng.integers(2, width - side - 2))
                img[y : y + side, x : x + side] = 250
                mask[y : y + side, x : x + side] = 255
            for sub, arr in (("images", img), ("infection_masks", mask)):
                (root / label / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / label / sub / f"{label}_{k}.png")
            rows.append(
                {
                    "image": f"{label}/images/{label}_{k}.png",
                    "label": label,
                    "infection_mask": f"{label}/infection_masks/{label}_{k}.png",
                }
            )
    path = root / "data.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label", "infection_mask"])
        writer.writeheader()
        writer.writerows(rows)
    return path
