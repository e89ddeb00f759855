"""Fixtures for the reader study tests (helpers live in :mod:`gifsplanation.testing`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gifsplanation.study.store import StudyStore
from gifsplanation.testing import ProcessServer, make_study


@pytest.fixture()
def study(tmp_path: Path) -> StudyStore:
    """A study with 8 cases (2 targets × TP/FP × 2) and no readers yet."""
    return make_study(tmp_path / "study")


@pytest.fixture()
def process_server_factory(tmp_path: Path) -> Iterator:
    servers: list[ProcessServer] = []

    def make(study_dir: Path, port: int) -> ProcessServer:
        server = ProcessServer(study_dir, port, tmp_path / "server.log")
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
