"""TorchXRayVision's masked datasets wired through the adapter, on small fake folders (as
torchxrayvision's own tests do): only the files present are used, and masks line up."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gifsplanation.evaluate import XRVMaskedDataset, select_items, xrv_dataset

xrv = pytest.importorskip("torchxrayvision")


def _bbox_rows(n: int) -> pd.DataFrame:
    path = xrv.datasets.datapath + "/BBox_List_2017.csv.gz"
    with gzip.open(path) as f:
        return pd.read_csv(f).iloc[:n]


def test_nih_boxes_fake_folder(tmp_path):
    rows = _bbox_rows(3)
    for name in rows["Image Index"].unique():
        Image.fromarray(np.full((256, 256), 100, np.uint8)).save(tmp_path / name)
    ds = XRVMaskedDataset(xrv_dataset("nih", tmp_path), size=64)
    assert len(ds) >= len(rows["Image Index"].unique())
    with_masks = [i for i in range(len(ds)) if ds[i]["mask"] is not None]
    assert with_masks
    s = ds[with_masks[0]]
    assert s["image"].shape == (1, 64, 64) and s["mask"].shape == (64, 64)
    assert float(s["image"].min()) >= -1024 and float(s["image"].max()) <= 1024
    assert s["label"] in ds.labels and ds.labels[s["target"]] == s["label"]
    # The box (on the 1024² grid) is where the mask is: its centre is inside.
    box = rows[(rows["Image Index"] == s["path"])]
    box = box[box["Finding Label"].replace("Infiltrate", "Infiltration") == s["label"]].iloc[0]
    x, y, w, h = (float(v) for v in box.iloc[2:6])
    cx, cy = int((x + w / 2) / 1024 * 64), int((y + h / 2) / 1024 * 64)
    assert bool(s["mask"][cy, cx])
    assert int(s["mask"].sum()) == pytest.approx(w * h / 1024**2 * 64**2, rel=0.3)
    items = select_items(ds, ds.labels, limit=2, seed=0)
    assert items and all(ds[i.index]["mask"] is not None for i in items)


def test_adapter_refuses_datasets_without_masks(tmp_path):
    rows = _bbox_rows(1)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / rows["Image Index"].iloc[0])
    plain = xrv.datasets.NIH_Dataset(str(tmp_path), views=["*"], unique_patients=False)
    with pytest.raises(ValueError, match="pathology_masks=True"):
        XRVMaskedDataset(plain)


def test_unknown_xrv_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="nih"):
        xrv_dataset("chexpert", tmp_path)


def test_rsna_boxes_fake_folder(tmp_path):
    labels = pd.read_csv(xrv.datasets.datapath + "/kaggle_stage_2_train_labels.csv.zip")
    boxed = labels[labels["Target"] == 1]
    pid = boxed["patientId"].iloc[0]
    Image.fromarray(np.full((128, 128), 90, np.uint8)).convert("RGB").save(tmp_path / f"{pid}.jpg")
    ds = XRVMaskedDataset(xrv_dataset("rsna", tmp_path), size=32)
    assert len(ds) == 2  # one image, both RSNA labels ("Lung Opacity", "Pneumonia")
    s = ds[0]
    assert s["path"] == pid and s["image"].shape == (1, 32, 32)
    # The mask is the union of every box of this patient.
    boxes = boxed[boxed["patientId"] == pid]
    area = float((boxes["width"] * boxes["height"]).sum()) / 1024**2 * 32**2
    assert int(s["mask"].sum()) == pytest.approx(area, rel=0.35)
