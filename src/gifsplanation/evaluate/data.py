"""Where evaluation images come from: datasets with masks, seen as one kind of sample.

Every experiment reads items shaped like :class:`gifsplanation.datasets.MaskedCXRDataset`
samples: ``{"image": (1, S, S) float in [−1024, 1024], "label": str, "target": int,
"mask": (S, S) bool | None, "path": str}``. :class:`XRVMaskedDataset` adapts
TorchXRayVision's datasets with pathology masks (NIH boxes, RSNA boxes, SIIM RLE) to that
shape — one item per (image, pathology), with two of their traps handled: NIH keeps only
125 of its 880 box images unless built with ``unique_patients=False`` and ``views=["*"]``
(:func:`xrv_dataset` does), and SIIM keeps only the last RLE row of an image with several
regions (the adapter draws the union of all rows). :func:`select_items` picks the items an
experiment needs (per classifier target, with or without masks) deterministically.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..datasets import center_crop, resize_image, resize_mask

log = logging.getLogger(__name__)

XRV_DATASETS = ("nih", "rsna", "siim")


class MaskedDataset(Protocol):
    """What experiments need from a dataset: ``len``, items, and cheap per-item labels."""

    labels: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @property
    def targets(self) -> list[int]: ...


@dataclass(frozen=True)
class Item:
    """One selected evaluation item: dataset index, the classifier output it is scored
    against, and whether the image is a positive for that output."""

    index: int
    target: int
    target_name: str
    positive: bool
    key: str


def select_items(
    dataset: MaskedDataset,
    classifier_targets: Sequence[str],
    *,
    limit: int | None,
    seed: int = 0,
    positives: bool = True,
    need_mask: bool = True,
    targets: Sequence[str] | None = None,
) -> list[Item]:
    """Pick up to ``limit`` items per classifier target, in a seeded random order.

    Args:
        dataset: a :class:`MaskedCXRDataset` or :class:`XRVMaskedDataset`.
        classifier_targets: the classifier's output names; dataset labels are matched to
            them case-insensitively (labels the classifier lacks are skipped).
        limit: items per target (``None`` = all).
        seed: order of the draw.
        positives: ``True`` for images labelled with the target, ``False`` for the others.
        need_mask: keep only items with a non-empty mask (checked by loading the mask,
            only for candidates actually drawn).
        targets: restrict to these target names (default: every target the data has).

    Returns:
        The items, grouped by target in classifier order.
    """
    labels = [dataset.labels[t] for t in dataset.targets]
    wanted = [t.lower() for t in targets] if targets else None
    rng = np.random.default_rng(seed)
    out: list[Item] = []
    for ti, tname in enumerate(classifier_targets):
        if wanted is not None and tname.lower() not in wanted:
            continue
        is_pos = np.array([lab.lower() == tname.lower() for lab in labels])
        if not is_pos.any():
            continue
        cand = np.flatnonzero(is_pos if positives else ~is_pos)
        cand = cand[rng.permutation(len(cand))]
        chosen = 0
        for i in cand:
            if limit is not None and chosen >= limit:
                break
            if need_mask and not _has_mask(dataset, int(i)):
                continue
            key = f"{int(i):06d}-{tname}"
            out.append(Item(int(i), ti, tname, positives, key))
            chosen += 1
        if need_mask and chosen == 0:
            log.warning(
                "no %s item with a non-empty mask for target %r",
                "positive" if positives else "negative",
                tname,
            )
    return out


def _has_mask(dataset: Any, i: int) -> bool:
    fast = getattr(dataset, "load_mask", None)
    mask = fast(i) if callable(fast) else dataset[i]["mask"]
    if mask is None:
        return False
    return bool(np.asarray(mask).any())


def load_item(dataset: MaskedDataset, item: Item) -> tuple[torch.Tensor, np.ndarray | None]:
    """``(image (1, 1, S, S), mask (S, S) bool or None)`` of an item."""
    s = dataset[item.index]
    mask = s["mask"]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
    return s["image"][None].float(), mask


def load_lung_mask(dataset: Any, index: int) -> np.ndarray | None:
    """The lung mask (bool ``(S, S)``) of dataset item ``index``, or ``None`` when the
    dataset has none for it (only :class:`~gifsplanation.datasets.MaskedCXRDataset` with a
    ``lung_mask`` column or ``lung_masks/`` folder, such as COVID-QU-Ex, has them)."""
    load = getattr(dataset, "load_mask", None)
    if not callable(load):
        return None
    try:
        params = inspect.signature(load).parameters
    except (TypeError, ValueError):
        return None
    if "kind" not in params:
        return None
    mask = load(index, "lung")
    return None if mask is None else np.asarray(mask, dtype=bool)


class XRVMaskedDataset:
    """A TorchXRayVision dataset with ``pathology_masks=True``, as masked samples.

    One item per (image, pathology) the image is labelled with; its mask is the
    pathology's mask (``None`` when the dataset has none for it). Images are centre-cropped
    and resized to ``size`` like :class:`~gifsplanation.datasets.MaskedCXRDataset`.

    Args:
        dataset: e.g. ``xrv.datasets.NIH_Dataset(imgpath, pathology_masks=True,
            unique_patients=False, views=["*"])`` (see :func:`xrv_dataset`).
        size: output side (default 224).
        only_with_masks: keep only rows the dataset says have masks (``has_masks``), and
            whose image file exists (default ``True``; lets a partial local copy work).

    Example:
        >>> ds = XRVMaskedDataset(xrv_dataset("nih", "/data/NIH/images"))  # doctest: +SKIP
        >>> ds[0]["label"], ds[0]["mask"].shape  # doctest: +SKIP
        ('Atelectasis', torch.Size([224, 224]))
    """

    def __init__(self, dataset: Any, size: int = 224, only_with_masks: bool = True) -> None:
        if not getattr(dataset, "pathology_masks", False):
            raise ValueError(
                f"{type(dataset).__name__} was built without masks; pass pathology_masks=True"
            )
        self.dataset = dataset
        self.size = int(size)
        self.labels: list[str] = [str(p) for p in dataset.pathologies]
        rows = np.arange(len(dataset))
        csv = dataset.csv
        if only_with_masks and "has_masks" in csv:
            rows = rows[np.asarray(csv["has_masks"], dtype=bool)]
        if only_with_masks:
            rows = np.array([r for r in rows if self._file_exists(int(r))], dtype=int)
        lab = np.asarray(dataset.labels)
        self.pairs: list[tuple[int, int]] = [
            (int(r), int(p)) for r in rows for p in range(len(self.labels)) if lab[r, p] == 1
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def targets(self) -> list[int]:
        return [p for _, p in self.pairs]

    def _image_id(self, row: int) -> str:
        csv = self.dataset.csv
        for col in ("Image Index", "patientId", "ImageId"):
            if col in csv:
                return str(csv[col].iloc[row])
        raise ValueError(f"cannot find the image id column of {type(self.dataset).__name__}")

    def _file_exists(self, row: int) -> bool:
        ds, imgid = self.dataset, self._image_id(row)
        name = type(ds).__name__
        if name.startswith("SIIM"):
            return imgid + ".dcm" in ds.file_map
        if name.startswith("RSNA"):
            return os.path.isfile(os.path.join(ds.imgpath, imgid + ds.extension))
        return os.path.isfile(os.path.join(ds.imgpath, imgid))

    def _siim_union_mask(self, imgid: str, shape: tuple[int, int]) -> np.ndarray:
        """The union of every RLE row of ``imgid`` (xrv keeps only the last one), drawn
        on the 1024² grid the RLEs refer to, then resized to ``shape`` (nearest)."""
        csv = self.dataset.csv
        rles = csv.loc[csv["ImageId"] == imgid, " EncodedPixels"]
        base = 1024
        flat = np.zeros(base * base, dtype=bool)
        for rle in rles:
            if str(rle).strip() == "-1":
                continue
            nums = np.asarray([int(v) for v in str(rle).split()])
            pos = 0
            for start, length in zip(nums[0::2], nums[1::2], strict=True):
                pos += start
                flat[pos : pos + length] = True
                pos += length
        mask = flat.reshape(base, base).T  # the Kaggle RLE runs down columns
        if mask.shape != tuple(shape):
            mask = resize_mask(mask, shape[0]) if shape[0] == shape[1] else mask
        return mask

    def load_mask(self, i: int) -> np.ndarray | None:
        return self._load(i)[1]

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        row, p = self.pairs[i]
        sample = self.dataset[row]
        img = np.asarray(sample["img"], dtype=np.float32)[0]
        masks = sample.get("pathology_masks", {})
        mask = masks.get(p)
        if type(self.dataset).__name__.startswith("SIIM") and mask is not None:
            mask = self._siim_union_mask(self._image_id(row), img.shape)
        if mask is not None:
            mask = np.asarray(mask).reshape(img.shape) > 0
            mask = resize_mask(center_crop(mask), self.size)
        img = resize_image(center_crop(img), self.size)
        return img, mask

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        i %= len(self)
        img, mask = self._load(i)
        row, p = self.pairs[i]
        return {
            "image": torch.from_numpy(img)[None],
            "label": self.labels[p],
            "target": p,
            "mask": torch.from_numpy(mask) if mask is not None else None,
            "path": self._image_id(row),
        }


def xrv_dataset(name: str, imgpath: str | Path, csvpath: str | Path | None = None) -> Any:
    """Build TorchXRayVision's ``nih``, ``rsna`` or ``siim`` dataset with masks, with the
    arguments that keep every masked image (NIH: ``unique_patients=False, views=["*"]``).

    Args:
        name: ``"nih"``, ``"rsna"`` or ``"siim"``.
        imgpath: the folder of images (RSNA: JPGs named ``<patientId>.jpg``; SIIM: DICOMs).
        csvpath: the labels CSV, default the one bundled with torchxrayvision.
    """
    import torchxrayvision as xrv  # imported late: it silences warnings process-wide

    kw: dict[str, Any] = {"imgpath": str(imgpath), "pathology_masks": True}
    if csvpath is not None:
        kw["csvpath"] = str(csvpath)
    if name == "nih":
        return xrv.datasets.NIH_Dataset(**kw, unique_patients=False, views=["*"])
    if name == "rsna":
        return xrv.datasets.RSNA_Pneumonia_Dataset(**kw, views=["*"])
    if name == "siim":
        return xrv.datasets.SIIM_Pneumothorax_Dataset(**kw, unique_patients=False)
    raise ValueError(f"unknown torchxrayvision dataset {name!r}; choose one of {XRV_DATASETS}")
