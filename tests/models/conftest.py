"""Fixtures for the models tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from gifsplanation.models.synthetic import write_dataset


@pytest.fixture()
def tiny_dataset(tmp_path: Path) -> Path:
    """CSV of a 12-image two-label synthetic dataset with masks (40x36 PNGs)."""
    return write_dataset(tmp_path / "data")
