"""Chest X-ray images with labels and (optional) infection masks, in the model convention.

:class:`MaskedCXRDataset` reads a CSV (``image,label[,infection_mask][,lung_mask]``, paths
relative to the CSV's folder) or a folder whose sub-folders are the labels, splits it into
train/val deterministically (seeded, stratified by label) and returns each image as
TorchXRayVision expects it: one channel, float in [-1024, 1024], centre-cropped to a square
and resized to ``size`` (the same arithmetic as ``xrv.datasets.normalize(img, 255)``,
``XRayCenterCrop`` and ``XRayResizer``, done here without importing torchxrayvision, whose
import silences warnings process-wide). Masks are cropped the same way and resized with
nearest neighbour. :meth:`MaskedCXRDataset.cached` decodes the whole split once into a
``uint8`` tensor, which makes CPU training fast.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np
import skimage.transform
import torch
from PIL import Image

from .pixels import to_uint8, uint8_to_model

log = logging.getLogger(__name__)

Split = Literal["train", "val", "all"]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Label values of the COVID-QU-Ex folders, mapped to the bundled models' target names.
COVID_QU_EX_LABELS: dict[str, str] = {
    "covid19": "COVID-19",
    "non_covid": "Non-COVID pneumonia",
    "normal": "Normal",
}
#: Target names of the bundled models, in output order.
COVID_QU_EX_TARGETS: list[str] = list(COVID_QU_EX_LABELS.values())


class Sample(TypedDict):
    """One item of :class:`MaskedCXRDataset`."""

    image: torch.Tensor
    label: str
    target: int
    mask: torch.Tensor | None
    path: str


@dataclass(frozen=True)
class Record:
    """One row of the index: absolute paths and the label as written in the source."""

    image: Path
    label: str
    infection_mask: Path | None = None
    lung_mask: Path | None = None


def center_crop(img: np.ndarray) -> np.ndarray:
    """Crop the long side of a 2-D array to a centred square (as ``XRayCenterCrop``)."""
    y, x = img.shape[-2:]
    s = min(y, x)
    sx, sy = x // 2 - s // 2, y // 2 - s // 2
    return img[..., sy : sy + s, sx : sx + s]


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D float image to ``size`` x ``size`` (as ``XRayResizer``, skimage engine)."""
    if img.shape == (size, size):
        return img.astype(np.float32)
    return skimage.transform.resize(
        img, (size, size), mode="constant", preserve_range=True, anti_aliasing=True
    ).astype(np.float32)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D boolean mask with nearest neighbour."""
    if mask.shape == (size, size):
        return mask.astype(bool)
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((size, size), Image.Resampling.NEAREST)) > 127


def read_gray(path: Path) -> np.ndarray:
    """Read an image file as a 2-D 8-bit array (RGB averaged to gray)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "I;16", "I"):
                im = im.convert("L")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} listed in the dataset does not exist") from None
    if arr.dtype != np.uint8:  # 16-bit PNG: rescale to 8 bits for one convention
        arr = (arr.astype(np.float64) / max(float(arr.max()), 1.0) * 255).astype(np.uint8)
    return arr


def load_index(source: str | Path) -> list[Record]:
    """Read a CSV or a labelled folder into a list of :class:`Record` (sorted, stable).

    Args:
        source: a CSV with columns ``image,label`` and optional ``infection_mask`` and
            ``lung_mask`` (paths relative to the CSV's folder; empty cells mean no mask),
            or a folder holding exactly one such CSV, or a folder whose sub-folders are
            labels. Inside a label folder, images are
            read from ``images/`` when it exists (masks from ``infection_masks/`` and
            ``lung_masks/`` with the same file name), else from the folder itself.

    Returns:
        The records, sorted by image path.
    """
    source = Path(source)
    if source.is_file():
        return _index_csv(source)
    if source.is_dir():
        csvs = sorted(source.glob("*.csv"))
        if len(csvs) == 1:  # a dataset folder shipped with its index (e.g. COVID-QU-Ex)
            return _index_csv(csvs[0])
        return _index_folder(source)
    raise FileNotFoundError(
        f"dataset {source} does not exist; pass a CSV (image,label,infection_mask columns) "
        "or a folder whose sub-folders are the labels"
    )


def _index_csv(path: Path) -> list[Record]:
    root = path.parent
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if not {"image", "label"} <= cols:
            raise ValueError(
                f"{path} needs columns 'image' and 'label' (optional 'infection_mask', "
                f"'lung_mask'); it has {sorted(cols)}"
            )
        records = []
        for row in reader:

            def opt(key: str, row: dict = row) -> Path | None:
                v = (row.get(key) or "").strip()
                return root / v if v else None

            records.append(
                Record(
                    image=root / row["image"].strip(),
                    label=row["label"].strip(),
                    infection_mask=opt("infection_mask"),
                    lung_mask=opt("lung_mask"),
                )
            )
    if not records:
        raise ValueError(f"{path} lists no images")
    return sorted(records, key=lambda r: str(r.image))


def _index_folder(root: Path) -> list[Record]:
    records = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        img_dir = label_dir / "images" if (label_dir / "images").is_dir() else label_dir
        for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            inf = label_dir / "infection_masks" / img.name
            lung = label_dir / "lung_masks" / img.name
            records.append(
                Record(
                    image=img,
                    label=label_dir.name,
                    infection_mask=inf if inf.is_file() else None,
                    lung_mask=lung if lung.is_file() else None,
                )
            )
    if not records:
        raise ValueError(
            f"no images found under {root}; expected sub-folders named by label containing "
            f"images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return records


def split_indices(labels: Sequence[str], split: Split, seed: int, val_fraction: float) -> list[int]:
    """Deterministic stratified split: per label, a seeded permutation; the first
    ``round(n * val_fraction)`` items (at least one when a label has two or more) go to val."""
    if split == "all":
        return list(range(len(labels)))
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(set(labels)):
        idx = np.array([i for i, lab in enumerate(labels) if lab == label])
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        part = idx[:n_val] if split == "val" else idx[n_val:]
        chosen.extend(int(i) for i in part)
    return sorted(chosen)


class MaskedCXRDataset(torch.utils.data.Dataset):
    """Labelled chest X-rays with optional infection masks, split train/val deterministically.

    Args:
        csv_or_root: a CSV (``image,label[,infection_mask][,lung_mask]``) or a folder whose
            sub-folders are labels (see :func:`load_index`).
        size: output side in pixels (default 224).
        labels: target names in output order. Default: the COVID-QU-Ex targets
            (``["COVID-19", "Non-COVID pneumonia", "Normal"]``) when every label is one of
            ``covid19``/``non_covid``/``normal`` (or already a target name), else the sorted
            distinct labels.
        split: ``"train"``, ``"val"`` or ``"all"`` (default ``"val"``).
        seed: seed of the split (default 0); the same seed always gives the same split.
        val_fraction: share of each label held out for validation (default 0.2).

    Example:
        >>> csv = "../shared/data/covid-qu-ex/train.csv"
        >>> ds = MaskedCXRDataset(csv, split="val")  # doctest: +SKIP
        >>> s = ds[0]; s["image"].shape, s["label"], s["target"]  # doctest: +SKIP
        (torch.Size([1, 224, 224]), 'COVID-19', 0)
    """

    def __init__(
        self,
        csv_or_root: str | Path,
        size: int = 224,
        labels: Sequence[str] | None = None,
        split: Split = "val",
        seed: int = 0,
        val_fraction: float = 0.2,
    ) -> None:
        self.source = Path(csv_or_root)
        self.size = int(size)
        self.split = split
        self.seed = seed
        all_records = load_index(self.source)
        raw = [r.label for r in all_records]
        names = [COVID_QU_EX_LABELS.get(lab, lab) for lab in raw]
        if labels is None:
            if set(names) <= set(COVID_QU_EX_TARGETS):
                labels = COVID_QU_EX_TARGETS
            else:
                labels = sorted(set(names))
        self.labels: list[str] = list(labels)
        unknown = sorted(set(names) - set(self.labels))
        if unknown:
            raise ValueError(
                f"labels {unknown} in {self.source} are not among labels={self.labels}; "
                "pass labels=[...] listing every label"
            )
        keep = split_indices(names, split, seed, val_fraction)
        self.records = [all_records[i] for i in keep]
        self._names = [names[i] for i in keep]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def targets(self) -> list[int]:
        """The target index of every item, in order."""
        return [self.labels.index(n) for n in self._names]

    def load_uint8(self, i: int) -> np.ndarray:
        """Item ``i``'s image cropped and resized, as ``uint8`` (``size`` x ``size``)."""
        img = uint8_to_model(center_crop(read_gray(self.records[i].image)))
        return to_uint8(resize_image(img, self.size))

    def load_mask(
        self, i: int, kind: Literal["infection", "lung"] = "infection"
    ) -> np.ndarray | None:
        """Item ``i``'s mask (bool, ``size`` x ``size``), or ``None`` when it has none."""
        path = self.records[i].infection_mask if kind == "infection" else self.records[i].lung_mask
        if path is None:
            return None
        return resize_mask(center_crop(read_gray(path) > 127), self.size)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        i %= len(self)
        rec = self.records[i]
        img = uint8_to_model(center_crop(read_gray(rec.image)))
        img = resize_image(img, self.size)
        mask = self.load_mask(i)
        return {
            "image": torch.from_numpy(img)[None],
            "label": self._names[i],
            "target": self.labels.index(self._names[i]),
            "mask": torch.from_numpy(mask) if mask is not None else None,
            "path": str(rec.image),
        }

    def cached(self, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every item once: ``(images uint8 (N,1,size,size), targets int64 (N,))``.

        Convert a batch back with :func:`~gifsplanation.pixels.uint8_to_model`.
        Quantisation to 8 bits costs at most 4 units of the [-1024, 1024] range (the
        sources are 8-bit anyway).
        """
        from .runs.progress import progress_bar

        out = torch.empty((len(self), 1, self.size, self.size), dtype=torch.uint8)
        with progress_bar(progress, transient=True) as bar:
            task = bar.add_task(f"decoding {len(self)} images", total=len(self))
            for i in range(len(self)):
                out[i, 0] = torch.from_numpy(self.load_uint8(i))
                bar.advance(task)
        return out, torch.tensor(self.targets, dtype=torch.long)


def cached_masks(
    dataset: MaskedCXRDataset, size: int = 28, kind: Literal["infection", "lung"] = "infection"
) -> torch.Tensor:
    """Every item's mask as the share of each cell it covers, ``uint8`` ``(N, 1, size,
    size)`` (255 = fully covered); an item without a mask counts as empty."""
    out = torch.zeros((len(dataset), 1, size, size), dtype=torch.uint8)
    for i in range(len(dataset)):
        m = dataset.load_mask(i, kind)
        if m is None or not m.any():
            continue
        t = torch.from_numpy(m.astype(np.float32))[None, None]
        share = torch.nn.functional.adaptive_avg_pool2d(t, size)[0, 0]
        out[i, 0] = (share * 255).round().to(torch.uint8)
    return out
