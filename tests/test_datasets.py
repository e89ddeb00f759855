"""MaskedCXRDataset: sources, deterministic stratified splits, the XRV convention, masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gifsplanation.datasets import COVID_QU_EX_TARGETS, MaskedCXRDataset
from gifsplanation.pixels import uint8_to_model
from gifsplanation.testing import write_dataset


@pytest.fixture()
def csv_path(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", n_per_label=10)


def test_csv_and_folder_give_the_same_items(csv_path: Path) -> None:
    a = MaskedCXRDataset(csv_path, size=32, split="all")
    b = MaskedCXRDataset(csv_path.parent, size=32, split="all")  # folder holding one CSV
    csv_path.unlink()
    c = MaskedCXRDataset(csv_path.parent, size=32, split="all")  # label folders
    assert len(a) == len(b) == len(c) == 20
    assert [r.image for r in a.records] == [r.image for r in c.records]
    assert a.labels == c.labels


def test_covid_qu_ex_labels_map_to_targets(csv_path: Path) -> None:
    ds = MaskedCXRDataset(csv_path, size=32, split="all")
    assert ds.labels == COVID_QU_EX_TARGETS
    item = next(ds[i] for i in range(len(ds)) if ds[i]["label"] == "Normal")
    assert item["target"] == COVID_QU_EX_TARGETS.index("Normal")


def test_split_is_deterministic_disjoint_and_stratified(csv_path: Path) -> None:
    tr = MaskedCXRDataset(csv_path, size=32, split="train", seed=3)
    va = MaskedCXRDataset(csv_path, size=32, split="val", seed=3)
    va2 = MaskedCXRDataset(csv_path, size=32, split="val", seed=3)
    other = MaskedCXRDataset(csv_path, size=32, split="val", seed=4)
    assert [r.image for r in va.records] == [r.image for r in va2.records]
    assert not {r.image for r in tr.records} & {r.image for r in va.records}
    assert len(tr) + len(va) == 20
    assert sorted(va.targets) == [0, 0, 2, 2]  # 20% of each label
    assert {r.image for r in other.records} != {r.image for r in va.records}


def test_image_convention_and_mask_alignment(csv_path: Path) -> None:
    ds = MaskedCXRDataset(csv_path, size=48, split="all")
    item = ds[0]
    assert item["label"] == "COVID-19"
    img, mask = item["image"], item["mask"]
    assert img.shape == (1, 48, 48) and img.dtype == torch.float32
    assert -1024 <= float(img.min()) and float(img.max()) <= 1024
    assert mask is not None and mask.dtype == torch.bool and mask.shape == (48, 48)
    # the bright square (250/255 -> ~985) sits exactly under the mask, after crop + resize
    inside = img[0][mask].mean()
    outside = img[0][~mask].mean()
    assert inside > 800 and outside < 0
    normal = next(ds[i] for i in range(len(ds)) if ds[i]["label"] == "Normal")
    assert normal["mask"] is not None and not normal["mask"].any()


def test_cached_matches_getitem(csv_path: Path) -> None:
    ds = MaskedCXRDataset(csv_path, size=32, split="val")
    images, targets = ds.cached()
    assert images.dtype == torch.uint8 and images.shape == (len(ds), 1, 32, 32)
    assert targets.tolist() == ds.targets
    diff = (uint8_to_model(images[1]) - ds[1]["image"]).abs().max()
    assert float(diff) <= 2048 / 255  # one 8-bit step


def test_errors_name_the_problem(tmp_path: Path, csv_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MaskedCXRDataset(tmp_path / "nowhere")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,y\na.png,1\n")
    with pytest.raises(ValueError, match="needs columns 'image' and 'label'"):
        MaskedCXRDataset(bad)
    with pytest.raises(ValueError, match="not among labels"):
        MaskedCXRDataset(csv_path, labels=["COVID-19"])
    with pytest.raises(ValueError, match="split must be"):
        MaskedCXRDataset(csv_path, split="test")  # type: ignore[arg-type]


def test_real_data_split_sizes(shared_data: Path) -> None:
    ds = MaskedCXRDataset(shared_data / "covid-qu-ex" / "train.csv", split="val")
    assert len(ds) == 745
    counts = np.bincount(ds.targets)
    assert counts.tolist() == [373, 186, 186]
    item = ds[0]
    assert item["mask"] is not None and item["mask"].any() == (item["label"] == "COVID-19")
