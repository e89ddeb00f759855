"""Export a study's answers as CSV: one row per (reader, case, round, question), with the
case's target, ground truth, prediction, the method shown and the answer's timestamps; or,
with ``history=True``, one row per submission (every change a reader made).

Files are written atomically (:mod:`gifsplanation.files`). Every CSV the study
writes goes through :func:`write_csv` or :func:`csv_text`, which protect text cells against
spreadsheet formula injection: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return (a reader's user agent, a name, a path) gets a leading ``'``, so
spreadsheet programs show it as text instead of running it (``=HYPERLINK(...)``).
:func:`unescape_cell` undoes it when such a file is read back (CASES.csv from
``study select``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_path
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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make spreadsheet programs read a cell as a formula."""


def safe_cell(value: Any) -> Any:
    """``value`` made safe for a CSV opened in a spreadsheet: text starting with one of
    :data:`FORMULA_STARTS` gets a leading ``'``; numbers and other text are unchanged.

    Example:
        >>> safe_cell("=1+1"), safe_cell("-0.5"), safe_cell(-0.5), safe_cell("a=b")
        ("'=1+1", "'-0.5", -0.5, 'a=b')
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """Undo :func:`safe_cell` for text read back from one of our CSV files.

    Example:
        >>> unescape_cell("'=x"), unescape_cell("'quoted'")
        ('=x', "'quoted'")
    """
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


def _write_rows(f: Any, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: safe_cell(v) for k, v in row.items()} for row in rows)


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """``rows`` as CSV text with these columns, formula cells neutralised (for downloads)."""
    buf = io.StringIO()
    _write_rows(buf, rows, fields)
    return buf.getvalue()


def write_csv(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], fields: Sequence[str]
) -> Path:
    """Write ``rows`` (dicts) to ``path`` as CSV with these columns, atomically, formula
    cells neutralised (see :func:`safe_cell`)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        _write_rows(f, rows, fields)
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


__all__ = [
    "EXPORT_FIELDS",
    "FORMULA_STARTS",
    "HISTORY_FIELDS",
    "answer_table",
    "csv_text",
    "export_answers",
    "safe_cell",
    "unescape_cell",
    "write_csv",
]
