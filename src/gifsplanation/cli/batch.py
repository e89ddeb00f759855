"""`gifsplanation batch`: explain a whole dataset across processes (see register)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
