"""Export a study's answers as CSV: one row per (reader, case, round, question), with the
case's target, ground truth, prediction, the method shown and the answer's timestamps; or,
with ``history=True``, one row per submission (every change a reader made).

Files are written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .store import StudyStore, case_group

EXPORT_FIELDS = (
    "reader",
    "case_id",
    "target",
    "label",
    "truth",
    "group",
    "prediction",
    "round",
    "method",
    "question",
    "value",
    "first_answered_at",
    "answered_at",
    "revisions",
    "source",
)
"""Columns of the answers export (``group`` is TP/FP from the ground truth)."""

HISTORY_FIELDS = (
    "submission",
    "reader",
    "case_id",
    "target",
    "label",
    "truth",
    "group",
    "prediction",
    "round",
    "method",
    "question",
    "value",
    "answered_at",
    "client",
    "source",
)
"""Columns of the history export (every submission, oldest first)."""


def write_csv(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], fields: Sequence[str]
) -> Path:
    """Write ``rows`` (dicts) to ``path`` as CSV with these columns, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def answer_table(store: StudyStore, history: bool = False) -> list[dict[str, Any]]:
    """The rows of the export (see :data:`EXPORT_FIELDS` / :data:`HISTORY_FIELDS`)."""
    rows = store.answer_rows(history=history)
    for row in rows:
        row["truth"] = int(row["truth"])
        row["group"] = case_group(bool(row["truth"]))
    return rows


def export_answers(
    study_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    history: bool = False,
) -> Path:
    """Write every answer of the study to a CSV file.

    Args:
        study_dir: the study folder.
        out: the CSV path; default ``STUDY_DIR/answers.csv`` (``answer_history.csv`` with
            ``history=True``).
        history: export every submission instead of the current answers.

    Returns:
        The path written.

    Example:
        >>> path = export_answers("my-study")  # doctest: +SKIP
    """
    store = StudyStore(study_dir)
    default = "answer_history.csv" if history else "answers.csv"
    out = Path(out) if out is not None else store.root / default
    return write_csv(
        out, answer_table(store, history), HISTORY_FIELDS if history else EXPORT_FIELDS
    )


__all__ = ["EXPORT_FIELDS", "HISTORY_FIELDS", "answer_table", "export_answers", "write_csv"]
