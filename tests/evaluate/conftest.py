"""A tiny generated dataset on disk (blob images + masks as PNGs) for the experiments."""

from __future__ import annotations

from pathlib import Path

import pytest

from gifsplanation.evaluate.testing import write_blob_dataset


@pytest.fixture(scope="session")
def blob_folder(tmp_path_factory) -> Path:
    return write_blob_dataset(tmp_path_factory.mktemp("blobs"))


@pytest.fixture()
def blob_dataset(blob_folder):
    from gifsplanation.datasets import MaskedCXRDataset

    return MaskedCXRDataset(blob_folder, size=32, split="all")
