"""Shared fixtures, one per idea: tiny trained models (and copies safe to modify), the
command line using them, synthetic datasets on disk, the shared real data (skipped when
absent), and a folder for test artefacts (screenshots, GIFs) that CI keeps. The helpers
behind them live in :mod:`gifsplanation.testing`."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from gifsplanation.testing import BlobData, tiny_models, write_blob_dataset, write_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GIFSPLANATION_SHARED_DATA", ROOT.parent / "shared" / "data"))
ARTIFACTS = Path(os.environ.get("GIFSPLANATION_TEST_ARTIFACTS", ROOT / "test-artifacts"))

torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def tiny():
    """(classifier, autoencoder, data): the shipped tiny models of the synthetic blob task."""
    return tiny_models()


@pytest.fixture()
def tiny32(tiny):
    """Copies of the tiny models that say they read 32×32 inputs (files are loaded at
    that size), named like registry models; safe to modify in a test."""
    clf, ae, _ = tiny
    clf, ae = copy.deepcopy(clf), copy.deepcopy(ae)
    clf.input_size = 32
    clf.name = "tiny-blob-classifier"
    return clf, ae


@pytest.fixture()
def tiny_cli(tiny, tiny32, monkeypatch):
    """Make every command use the tiny models (:func:`tiny32`) and a blob image as the
    demo; returns the list of (classifier, autoencoder, device) each model load asked for."""
    from gifsplanation.cli import common

    calls = []

    def fake_models(classifier, autoencoder, device, need_autoencoder=True):
        calls.append((classifier, autoencoder, device))
        clf, ae = tiny32
        return clf, ae if need_autoencoder else None

    demo = BlobData(seed=77).positive(1)  # like the real demo image: the same every time
    monkeypatch.setattr(common, "load_models", fake_models)
    monkeypatch.setattr(common, "demo_image", lambda: demo.clone())
    return calls


@pytest.fixture()
def blob_data() -> BlobData:
    """A fresh, seeded generator of blob images (independent of test order)."""
    return BlobData(seed=123)


@pytest.fixture(scope="session")
def blob_folders(tmp_path_factory):
    """``get(n_per_label=6, lung_masks=False)``: a folder of blob images with masks
    (:func:`~gifsplanation.testing.write_blob_dataset`), written once per session and
    argument set; read-only."""
    made: dict[tuple[int, bool], Path] = {}

    def get(n_per_label: int = 6, lung_masks: bool = False) -> Path:
        key = (n_per_label, lung_masks)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"blobs-{n_per_label}{'-lungs' if lung_masks else ''}")
            made[key] = write_blob_dataset(folder, n_per_label=n_per_label, lung_masks=lung_masks)
        return made[key]

    return get


@pytest.fixture()
def blob_dataset(blob_folders):
    """The 32-pixel :class:`~gifsplanation.datasets.MaskedCXRDataset` of ``blob_folders()``."""
    from gifsplanation.datasets import MaskedCXRDataset

    return MaskedCXRDataset(blob_folders(), size=32, split="all")


@pytest.fixture()
def tiny_dataset(tmp_path: Path) -> Path:
    """CSV of a 12-image two-label synthetic dataset with masks (40x36 PNGs;
    :func:`~gifsplanation.testing.write_dataset`)."""
    return write_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real chest X-rays); skips the test when it is absent."""
    if not (SHARED_DATA / "covid-qu-ex" / "train.csv").is_file():
        pytest.skip(f"real CXR data not found at {SHARED_DATA} (../shared/data is absent)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """A folder for test artefacts (screenshots, GIFs), kept after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_sessionstart(session):
    """In CI (GIFSPLANATION_REQUIRE_BROWSER=1) browser tests must run, not skip."""
    if (
        os.environ.get("GIFSPLANATION_REQUIRE_BROWSER") == "1"
        and not Path("/usr/bin/chromium").exists()
    ):
        raise pytest.UsageError(
            "GIFSPLANATION_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing: "
            "apt-get install chromium"
        )
