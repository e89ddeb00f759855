"""Fixtures of the renderer tests."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure


@pytest.fixture()
def figures(monkeypatch) -> list[Figure]:
    """Every Matplotlib figure saved during the test, in order."""
    saved: list[Figure] = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN202
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved
