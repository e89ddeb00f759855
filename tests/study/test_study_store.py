"""The SQLite store: one answer per key, history of every change, refusals store nothing."""

from __future__ import annotations

import sqlite3

import pytest

from gifsplanation.study.export import EXPORT_FIELDS, answer_table, export_answers
from gifsplanation.study.store import ConflictError, NotFoundError, StudyError, StudyStore


def _count(store: StudyStore, table: str) -> int:
    with store.connect() as con:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_database_is_in_wal_mode(study: StudyStore) -> None:
    with study.connect() as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_resubmitting_replaces_and_history_keeps_every_change(study: StudyStore) -> None:
    reader = study.add_reader("ann", seed=1)
    first = study.schedule(reader.id)[0]
    public = {c.id: c.public_id for c in study.cases()}[first.case_id]
    a = study.save_answer(reader.id, public, 1, "confidence", 2)
    b = study.save_answer(reader.id, public, 1, "confidence", 5)
    assert (a["revisions"], b["revisions"]) == (0, 1)
    assert b["method"] == first.method
    assert b["first_answered_at"] == a["first_answered_at"] <= b["answered_at"]
    rows = answer_table(study)
    assert [(r["question"], r["value"]) for r in rows] == [("confidence", 5)]
    history = answer_table(study, history=True)
    assert [r["value"] for r in history] == [2, 5]


@pytest.mark.parametrize(
    ("question", "value", "round_"),
    [("confidence", 0, 1), ("confidence", 6, 1), ("confidence", True, 1),
     ("confidence", 2.0, 1), ("confidence", "3", 1), ("colour", 3, 1), ("feature", 3, 3)],
)  # fmt: skip
def test_invalid_answers_store_nothing(study: StudyStore, question, value, round_) -> None:
    reader = study.add_reader("ann", seed=1)
    case = study.cases()[0].public_id
    with pytest.raises(StudyError):
        study.save_answer(reader.id, case, round_, question, value)
    assert _count(study, "answers") == _count(study, "answer_history") == 0


def test_unknown_case_and_locked_round_two(study: StudyStore) -> None:
    reader = study.add_reader("ann", seed=1)
    with pytest.raises(NotFoundError, match="no case"):
        study.save_answer(reader.id, "nope", 1, "feature", 3)
    with pytest.raises(ConflictError, match="round 2 opens"):
        study.save_answer(reader.id, study.cases()[0].public_id, 2, "feature", 3)
    assert _count(study, "answers") == 0


def test_database_constraints_back_the_checks(study: StudyStore) -> None:
    reader = study.add_reader("ann", seed=1)
    case_id = study.cases()[0].id
    with pytest.raises(sqlite3.IntegrityError), study.connect(write=True) as con:
        con.execute(
            "INSERT INTO answers VALUES (?, ?, 1, 'feature', 9, 'A', 'x', 'x', 0)",
            (reader.id, case_id),
        )
    with pytest.raises(sqlite3.IntegrityError), study.connect(write=True) as con:
        con.execute(  # no assignment for this reader
            "INSERT INTO answers VALUES (999, ?, 1, 'feature', 3, 'A', 'x', 'x', 0)", (case_id,)
        )


def test_readers_cases_and_init_refusals(study: StudyStore, tmp_path) -> None:
    study.add_reader("ann")
    with pytest.raises(ConflictError, match="already exists"):
        study.add_reader("ann")
    with pytest.raises(ConflictError, match="after readers"):
        study.add_case("x.png", "Normal", "1", True, 0.9, {})
    with pytest.raises(FileExistsError):
        StudyStore.init(study.root)
    with pytest.raises(FileNotFoundError, match="study create"):
        StudyStore(tmp_path / "nowhere")
    with pytest.raises(NotFoundError):
        study.asset_path("../study.sqlite")
    with pytest.raises(ValueError, match="prediction"):
        StudyStore.init(tmp_path / "other").add_case("x.png", "t", "1", True, 1.5, {})


def test_export_writes_every_answer(study: StudyStore, tmp_path) -> None:
    reader = study.add_reader("ann", seed=2)
    public = {c.id: c.public_id for c in study.cases()}
    for slot in study.schedule(reader.id):
        if slot.round == 1:
            for q, v in (("confidence", 4), ("feature", 2)):
                study.save_answer(reader.id, public[slot.case_id], 1, q, v)
    path = export_answers(study.root, tmp_path / "answers.csv")
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(EXPORT_FIELDS)
    assert len(lines) == 1 + 2 * len(public)
