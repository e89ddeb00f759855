"""SQLite storage of a reader study: cases, readers, their schedules and every answer.

A study is a folder holding ``study.sqlite`` (this module) and ``assets/`` (the images
readers see). The database runs in WAL mode with ``synchronous=FULL`` so an answer that was
acknowledged survives a crash of the server; every call opens its own short connection,
which makes the store safe to share between the web server's worker threads and a command
run at the same time (``study add-reader`` while ``study serve`` is up). Answers are unique
on (reader, case, round, question): resubmitting replaces the value, and ``answer_history``
keeps every submission. Ground truth lives here but is never part of a reader's view.

Rounds are strict: round 2 opens for a reader (``rounds_opened``) at their first round-2
request once round 1 is complete, and from then on their round-1 answers are final. The
database and its WAL/SHM files hold tokens and ground truth, so they are created with mode
0600 (owner only); an older, wider database is narrowed when it is opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .design import LIKERT, METHODS, QUESTIONS, ROUNDS, Slot, make_schedule

DB_NAME = "study.sqlite"
ASSETS_DIR = "assets"
SCHEMA_VERSION = "2"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
"""The base URL of reader and admin links when neither an option nor the study sets one."""
PRIVATE_MODE = 0o600
"""Mode of the database (and, through SQLite, of its WAL and SHM files)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    label TEXT NOT NULL,
    truth INTEGER NOT NULL CHECK (truth IN (0, 1)),
    prediction REAL NOT NULL CHECK (prediction >= 0 AND prediction <= 1),
    assets TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS readers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    reader_id INTEGER NOT NULL REFERENCES readers(id),
    round INTEGER NOT NULL CHECK (round IN (1, 2)),
    position INTEGER NOT NULL CHECK (position >= 0),
    case_id INTEGER NOT NULL REFERENCES cases(id),
    method TEXT NOT NULL CHECK (method IN ('A', 'B')),
    PRIMARY KEY (reader_id, round, position),
    UNIQUE (reader_id, round, case_id),
    UNIQUE (reader_id, case_id, method)
);
CREATE TABLE IF NOT EXISTS answers (
    reader_id INTEGER NOT NULL,
    case_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    question TEXT NOT NULL CHECK (question IN ('confidence', 'feature')),
    value INTEGER NOT NULL CHECK (value BETWEEN 1 AND 5),
    method TEXT NOT NULL CHECK (method IN ('A', 'B')),
    first_answered_at TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (reader_id, case_id, round, question),
    FOREIGN KEY (reader_id, round, case_id)
        REFERENCES assignments(reader_id, round, case_id)
);
CREATE TABLE IF NOT EXISTS answer_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reader_id INTEGER NOT NULL,
    case_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    question TEXT NOT NULL,
    value INTEGER NOT NULL,
    method TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    client TEXT
);
"""

_ROUNDS_OPENED = """
CREATE TABLE IF NOT EXISTS rounds_opened (
    reader_id INTEGER NOT NULL REFERENCES readers(id),
    round INTEGER NOT NULL CHECK (round IN (1, 2)),
    opened_at TEXT NOT NULL,
    PRIMARY KEY (reader_id, round)
);
"""
_SCHEMA += _ROUNDS_OPENED

# schema 1 had no rounds_opened: a reader who already answered in round 2 had opened it
_MIGRATE_1_TO_2 = (
    _ROUNDS_OPENED
    + """
INSERT OR IGNORE INTO rounds_opened(reader_id, round, opened_at)
    SELECT reader_id, 2, MIN(answered_at) FROM answer_history WHERE round = 2
    GROUP BY reader_id;
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""
)


class StudyError(Exception):
    """Base class of the store's refusals; ``status`` is the HTTP status the server uses."""

    status = 400


class NotFoundError(StudyError):
    """An unknown case, slot or reader."""

    status = 404


class ConflictError(StudyError):
    """A request that is valid but not now (e.g. round 2 before round 1 is finished)."""

    status = 409


class ClosedError(ConflictError):
    """A request about a round whose answers are final (the reader started the next one)."""


def check_base_url(url: str) -> str:
    """Validate the base URL of reader/admin links and return it without a trailing ``/``.

    Raises:
        ValueError: not an ``http(s)://host[:port][/path]`` URL (no query or fragment).

    Example:
        >>> check_base_url("https://study.example.org/cxr/")
        'https://study.example.org/cxr'
    """
    text = str(url).strip()
    parts = urlsplit(text)
    extras = parts.query or parts.fragment or parts.username or parts.password
    if parts.scheme not in ("http", "https") or not parts.hostname or extras:
        raise ValueError(
            f"base URL {url!r} is not of the form http(s)://HOST[:PORT][/PATH] "
            "(e.g. https://study.example.org or http://10.0.0.5:8000)"
        )
    try:
        parts.port  # noqa: B018 — raises for a malformed port
    except ValueError as err:
        raise ValueError(f"base URL {url!r} has an invalid port") from err
    return text.rstrip("/")


def _private(path: Path) -> None:
    """Narrow an existing file to owner-only access (best effort: not our file, no change)."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & 0o700)


def now() -> str:
    """The current UTC time as ISO 8601 with milliseconds (sortable as text)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Reader:
    """A reader: name, private token and schedule seed."""

    id: int
    name: str
    token: str
    seed: int


@dataclass(frozen=True)
class Case:
    """A case as stored (includes ground truth: never send it to readers)."""

    id: int
    public_id: str
    source: str
    target: str
    label: str
    truth: bool
    prediction: float
    assets: dict[str, str]


def _case(row: sqlite3.Row) -> Case:
    return Case(
        id=row["id"],
        public_id=row["public_id"],
        source=row["source"],
        target=row["target"],
        label=row["label"],
        truth=bool(row["truth"]),
        prediction=float(row["prediction"]),
        assets=json.loads(row["assets"]),
    )


class StudyStore:
    """The database of one study folder.

    Args:
        study_dir: the study folder (must already hold ``study.sqlite``; make one with
            :meth:`StudyStore.init`).

    Example:
        >>> import tempfile
        >>> store = StudyStore.init(tempfile.mkdtemp())
        >>> cid = store.add_case("x.png", "COVID-19", "1", True, 0.9, {})
        >>> reader = store.add_reader("ann", seed=1)
        >>> len(store.schedule(reader.id))
        2
    """

    def __init__(self, study_dir: str | os.PathLike[str]) -> None:
        self.root = Path(study_dir)
        self.path = self.root / DB_NAME
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no study database at {self.path}; create the study first with "
                "`gifsplanation study create CASES.csv --out STUDY_DIR`"
            )
        self.assets_dir = (self.root / ASSETS_DIR).resolve()
        for suffix in ("", "-wal", "-shm", "-journal"):
            _private(self.root / (DB_NAME + suffix))
        if self.meta().get("schema_version") == "1":
            with self.connect(write=True) as con:
                for statement in _MIGRATE_1_TO_2.split(";"):
                    if statement.strip():
                        con.execute(statement)

    @classmethod
    def init(cls, study_dir: str | os.PathLike[str], admin_token: str | None = None) -> StudyStore:
        """Create an empty study in ``study_dir`` (made if missing) and return its store.

        Args:
            study_dir: the folder; refused if it already holds a study.
            admin_token: the admin token; a fresh random one by default.

        Returns:
            The store. ``store.admin_token`` holds the token for admin requests.
        """
        root = Path(study_dir)
        if (root / DB_NAME).exists():
            raise FileExistsError(
                f"{root / DB_NAME} already exists; choose another --out folder or delete it"
            )
        (root / ASSETS_DIR).mkdir(parents=True, exist_ok=True)
        tmp = root / (DB_NAME + ".tmp")
        try:  # created here, owner-only; SQLite gives its WAL/SHM files the same mode
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
        except FileExistsError:
            raise FileExistsError(
                f"{tmp} already exists (left by an interrupted run?); delete it and retry"
            ) from None
        try:
            os.chmod(tmp, PRIVATE_MODE)  # whatever the umask
            con = sqlite3.connect(tmp)
            try:
                con.executescript(_SCHEMA)
                con.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("schema_version", SCHEMA_VERSION),
                        ("admin_token", admin_token or secrets.token_urlsafe(24)),
                        ("created_at", now()),
                    ],
                )
                con.commit()
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
            os.replace(tmp, root / DB_NAME)
        except BaseException:
            tmp.unlink(missing_ok=True)  # ours: made above with O_EXCL
            raise
        return cls(root)

    # -- connections ---------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A short-lived connection; ``write=True`` wraps the block in one IMMEDIATE
        transaction (committed on success, rolled back on any error)."""
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=60000")
            if write:
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            else:
                yield con
        finally:
            con.close()

    # -- meta ----------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        """All metadata (schema version, admin token, creation time, model names...)."""
        with self.connect() as con:
            return {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}

    def set_meta(self, values: Mapping[str, Any]) -> None:
        """Store metadata values (converted to text; dicts and lists as JSON)."""
        rows = [
            (k, v if isinstance(v, str) else json.dumps(v, sort_keys=True))
            for k, v in values.items()
        ]
        with self.connect(write=True) as con:
            con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)

    @property
    def admin_token(self) -> str:
        """The token that admin requests must carry."""
        return self.meta()["admin_token"]

    def is_admin(self, token: str | None) -> bool:
        """Whether ``token`` is the admin token (constant-time comparison)."""
        return bool(token) and secrets.compare_digest(str(token), self.admin_token)

    @property
    def base_url(self) -> str | None:
        """The base URL of links stored with the study (``study config --base-url``)."""
        return self.meta().get("base_url") or None

    def set_base_url(self, url: str) -> str:
        """Store the base URL of reader/admin links (validated; see :func:`check_base_url`)."""
        url = check_base_url(url)
        self.set_meta({"base_url": url})
        return url

    # -- cases ---------------------------------------------------------------------------

    def add_case(
        self,
        source: str,
        target: str,
        label: str,
        truth: bool,
        prediction: float,
        assets: Mapping[str, str],
        public_id: str | None = None,
    ) -> str:
        """Add a case; refused once readers exist (their schedules cover all cases).

        Args:
            source: where the image came from (kept for the admin's export only).
            target: the target (class name) the model's prediction is about.
            label: the ground-truth label as given in CASES.csv.
            truth: whether the target is present according to the ground truth.
            prediction: the model's probability for the target, in [0, 1].
            assets: asset kind (``image``, ``grad``, ``guided``, ``integrated``,
                ``latentshift``, ``gif``) → path relative to the assets folder.
            public_id: the opaque id readers see; random by default.

        Returns:
            The case's public id.
        """
        if not 0.0 <= float(prediction) <= 1.0:
            raise ValueError(f"case {source!r}: prediction {prediction} is not in [0, 1]")
        for kind, rel in assets.items():
            self.asset_path(rel)  # refuses paths outside the assets folder
            if not isinstance(kind, str):
                raise ValueError(f"case {source!r}: asset kind {kind!r} is not a string")
        public_id = public_id or secrets.token_hex(4)
        with self.connect(write=True) as con:
            if con.execute("SELECT COUNT(*) FROM readers").fetchone()[0]:
                raise ConflictError(
                    "cannot add cases after readers were added (their schedules cover the "
                    "cases that existed then); create a new study instead"
                )
            con.execute(
                "INSERT INTO cases(public_id, source, target, label, truth, prediction, assets,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    public_id,
                    str(source),
                    str(target),
                    str(label),
                    int(bool(truth)),
                    float(prediction),
                    json.dumps(dict(assets), sort_keys=True),
                    now(),
                ),
            )
        return public_id

    def cases(self) -> list[Case]:
        """Every case, in insertion order."""
        with self.connect() as con:
            return [_case(r) for r in con.execute("SELECT * FROM cases ORDER BY id")]

    def case_by_public_id(self, public_id: str) -> Case:
        """The case with this public id; :class:`NotFoundError` if there is none."""
        with self.connect() as con:
            row = con.execute("SELECT * FROM cases WHERE public_id = ?", (public_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no case {public_id!r} in this study")
        return _case(row)

    def asset_path(self, relative: str) -> Path:
        """The file an asset name refers to, refusing anything outside the assets folder.

        Raises:
            NotFoundError: for absolute paths, ``..`` escapes, symlinks leaving the folder,
                or files that do not exist (when checked by the server).
        """
        rel = str(relative)
        if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
            raise NotFoundError(f"asset {relative!r} is not a file in the study's assets")
        path = (self.assets_dir / rel).resolve()
        if not path.is_relative_to(self.assets_dir) or path == self.assets_dir:
            raise NotFoundError(f"asset {relative!r} is not a file in the study's assets")
        return path

    # -- readers -------------------------------------------------------------------------

    def add_reader(self, name: str, seed: int | None = None) -> Reader:
        """Add a reader and record their two-round schedule.

        Args:
            name: a unique display name (e.g. ``"reader1"``).
            seed: schedule seed; random by default (it is stored either way).

        Returns:
            The reader, with the private token of their link.
        """
        name = str(name).strip()
        if not name:
            raise ValueError("reader name is empty; give a name such as 'reader1'")
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        token = secrets.token_urlsafe(18)
        with self.connect(write=True) as con:
            if con.execute("SELECT 1 FROM readers WHERE name = ?", (name,)).fetchone():
                raise ConflictError(f"a reader named {name!r} already exists; pick another name")
            cases = [
                (r["id"], r["target"], bool(r["truth"]))
                for r in con.execute("SELECT id, target, truth FROM cases ORDER BY id")
            ]
            if not cases:
                raise ConflictError("the study has no cases yet; run `study create` first")
            cur = con.execute(
                "INSERT INTO readers(name, token, seed, created_at) VALUES (?, ?, ?, ?)",
                (name, token, seed, now()),
            )
            reader_id = int(cur.lastrowid)
            con.executemany(
                "INSERT INTO assignments(reader_id, round, position, case_id, method)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (reader_id, s.round, s.position, s.case_id, s.method)
                    for s in make_schedule(cases, seed)
                ],
            )
        return Reader(reader_id, name, token, seed)

    def readers(self) -> list[Reader]:
        """Every reader, in the order they were added."""
        with self.connect() as con:
            rows = con.execute("SELECT id, name, token, seed FROM readers ORDER BY id").fetchall()
        return [Reader(r["id"], r["name"], r["token"], r["seed"]) for r in rows]

    def reader_by_token(self, token: str | None) -> Reader | None:
        """The reader whose token this is, or ``None``."""
        if not token:
            return None
        with self.connect() as con:
            row = con.execute(
                "SELECT id, name, token, seed FROM readers WHERE token = ?", (str(token),)
            ).fetchone()
        if row is None or not secrets.compare_digest(row["token"], str(token)):
            return None
        return Reader(row["id"], row["name"], row["token"], row["seed"])

    def schedule(self, reader_id: int) -> list[Slot]:
        """The reader's slots ordered by round then position."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT round, position, case_id, method FROM assignments WHERE reader_id = ?"
                " ORDER BY round, position",
                (reader_id,),
            ).fetchall()
        return [Slot(r["round"], r["position"], r["case_id"], r["method"]) for r in rows]

    def reader_answers(self, reader_id: int) -> dict[tuple[int, int], dict[str, int]]:
        """The reader's current answers: ``(round, case_id) → {question: value}``."""
        out: dict[tuple[int, int], dict[str, int]] = {}
        with self.connect() as con:
            for r in con.execute(
                "SELECT round, case_id, question, value FROM answers WHERE reader_id = ?",
                (reader_id,),
            ):
                out.setdefault((r["round"], r["case_id"]), {})[r["question"]] = r["value"]
        return out

    def rounds_opened(self, reader_id: int) -> dict[int, str]:
        """Rounds the reader has opened beyond round 1: ``round → opened_at``."""
        with self.connect() as con:
            return _rounds_opened(con, reader_id)

    def open_round(self, reader_id: int) -> int:
        """The reader's open round: 2 once they started round 2, else 1. Answers of earlier
        rounds are final, and only the open round's cases and visuals are shown."""
        return max(self.rounds_opened(reader_id), default=1)

    def start_round(self, reader_id: int, round: int) -> str:
        """Open ``round`` for the reader (idempotent) and return when it was opened.

        Round 2 opens only when every round-1 case has both answers; from then on the
        reader's round-1 answers are final.

        Raises:
            ConflictError: round 1 is not finished.
            StudyError: a round that does not exist.
        """
        if isinstance(round, bool) or round not in ROUNDS:
            raise StudyError(f"round {round!r} does not exist; use 1 or 2")
        if round == 1:
            return ""
        with self.connect(write=True) as con:
            return _open_round_2(con, reader_id)

    def progress(self, reader_id: int) -> dict[int, tuple[int, int]]:
        """Per round: (cases fully answered, cases in the round)."""
        answers = self.reader_answers(reader_id)
        out: dict[int, tuple[int, int]] = {}
        for slot in self.schedule(reader_id):
            done, total = out.get(slot.round, (0, 0))
            full = len(answers.get((slot.round, slot.case_id), {})) == len(QUESTIONS)
            out[slot.round] = (done + int(full), total + 1)
        return out

    # -- answers -------------------------------------------------------------------------

    def save_answer(
        self,
        reader_id: int,
        case_public_id: str,
        round: int,
        question: str,
        value: int,
        client: str | None = None,
    ) -> dict[str, Any]:
        """Record one answer (replacing an earlier one) and append it to the history.

        The method is taken from the reader's schedule, never from the request. Round 2
        answers are refused until every round-1 case has both answers; the first one opens
        round 2 (as viewing a round-2 case does), which makes the round-1 answers final.

        Args:
            reader_id: the reader (already authenticated by the caller).
            case_public_id: the case's public id.
            round: 1 or 2.
            question: a key of :data:`QUESTIONS`.
            value: an integer 1–5 (bools and other types are refused).
            client: optional free text kept in the history (e.g. the user agent).

        Returns:
            The stored answer as a dict (case, round, question, value, method, timestamps,
            revisions).

        Raises:
            StudyError: invalid question/value/round (nothing is stored).
            NotFoundError: the case does not exist or is not in this reader's round.
            ConflictError: round 2 before round 1 is finished.
            ClosedError: a round-1 answer after the reader opened round 2.
        """
        if question not in QUESTIONS:
            raise StudyError(f"question {question!r} is unknown; use one of {', '.join(QUESTIONS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value not in LIKERT:
            raise StudyError(f"answer {value!r} is not a Likert value; use an integer 1–5")
        if isinstance(round, bool) or round not in ROUNDS:
            raise StudyError(f"round {round!r} does not exist; use 1 or 2")
        stamp = now()
        with self.connect(write=True) as con:
            case = con.execute(
                "SELECT id FROM cases WHERE public_id = ?", (str(case_public_id),)
            ).fetchone()
            if case is None:
                raise NotFoundError(f"no case {case_public_id!r} in this study")
            slot = con.execute(
                "SELECT method FROM assignments WHERE reader_id = ? AND round = ? AND case_id = ?",
                (reader_id, round, case["id"]),
            ).fetchone()
            if slot is None:
                raise NotFoundError(f"case {case_public_id!r} is not in your round {round}")
            opened = _rounds_opened(con, reader_id)
            current = max(opened, default=1)
            if round < current:
                raise ClosedError(
                    f"your round {round} answers are final: you started round {current} "
                    f"(at {opened[current]}), so they can no longer be changed"
                )
            if round > current:
                _open_round_2(con, reader_id)  # refused while round 1 is unfinished
            key = (reader_id, case["id"], round, question)
            con.execute(
                "INSERT INTO answers(reader_id, case_id, round, question, value, method,"
                " first_answered_at, answered_at, revisions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)"
                " ON CONFLICT(reader_id, case_id, round, question) DO UPDATE SET"
                " value = excluded.value, answered_at = excluded.answered_at,"
                " revisions = answers.revisions + 1",
                (*key, value, slot["method"], stamp, stamp),
            )
            con.execute(
                "INSERT INTO answer_history(reader_id, case_id, round, question, value, method,"
                " answered_at, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, value, slot["method"], stamp, client),
            )
            row = con.execute(
                "SELECT first_answered_at, answered_at, revisions FROM answers WHERE"
                " reader_id = ? AND case_id = ? AND round = ? AND question = ?",
                key,
            ).fetchone()
        return {
            "case": str(case_public_id),
            "round": round,
            "question": question,
            "value": value,
            "method": slot["method"],
            "first_answered_at": row["first_answered_at"],
            "answered_at": row["answered_at"],
            "revisions": row["revisions"],
        }

    def answer_rows(self, history: bool = False) -> list[dict[str, Any]]:
        """Every current answer (or every submission, with ``history=True``) joined with its
        reader and case, including ground truth — for the admin's export and analysis."""
        if history:
            sql = (
                "SELECT h.id AS submission, r.name AS reader, c.public_id AS case_id,"
                " c.target, c.label, c.truth, c.prediction, h.round, h.method, h.question,"
                " h.value, h.answered_at, h.client, c.source FROM answer_history h"
                " JOIN readers r ON r.id = h.reader_id JOIN cases c ON c.id = h.case_id"
                " ORDER BY h.id"
            )
        else:
            sql = (
                "SELECT r.name AS reader, c.public_id AS case_id, c.target, c.label, c.truth,"
                " c.prediction, a.round, a.method, a.question, a.value, a.first_answered_at,"
                " a.answered_at, a.revisions, c.source FROM answers a"
                " JOIN readers r ON r.id = a.reader_id JOIN cases c ON c.id = a.case_id"
                " ORDER BY r.id, a.round, c.id, a.question"
            )
        with self.connect() as con:
            return [dict(r) for r in con.execute(sql)]


def _rounds_opened(con: sqlite3.Connection, reader_id: int) -> dict[int, str]:
    rows = con.execute(
        "SELECT round, opened_at FROM rounds_opened WHERE reader_id = ?", (reader_id,)
    ).fetchall()
    return {int(r["round"]): r["opened_at"] for r in rows}


def _open_round_2(con: sqlite3.Connection, reader_id: int) -> str:
    """Open round 2 inside the caller's write transaction (refused if round 1 is open)."""
    row = con.execute(
        "SELECT opened_at FROM rounds_opened WHERE reader_id = ? AND round = 2", (reader_id,)
    ).fetchone()
    if row is not None:
        return row["opened_at"]
    missing = con.execute(
        "SELECT COUNT(*) FROM assignments a WHERE a.reader_id = ? AND a.round = 1"
        " AND (SELECT COUNT(*) FROM answers b WHERE b.reader_id = a.reader_id"
        " AND b.round = 1 AND b.case_id = a.case_id) < ?",
        (reader_id, len(QUESTIONS)),
    ).fetchone()[0]
    if missing:
        raise ConflictError(f"round 2 opens when round 1 is finished ({missing} case(s) left)")
    stamp = now()
    con.execute(
        "INSERT INTO rounds_opened(reader_id, round, opened_at) VALUES (?, 2, ?)",
        (reader_id, stamp),
    )
    return stamp


def case_group(truth: bool) -> str:
    """``"TP"`` or ``"FP"`` for a predicted-positive case with this ground truth."""
    return "TP" if truth else "FP"


def reader_link(base_url: str, reader: Reader) -> str:
    """The private link of a reader on a server reachable at ``base_url``."""
    return f"{base_url.rstrip('/')}/r/{reader.token}"


__all__ = [
    "ASSETS_DIR",
    "DB_NAME",
    "DEFAULT_BASE_URL",
    "METHODS",
    "PRIVATE_MODE",
    "Case",
    "ClosedError",
    "ConflictError",
    "NotFoundError",
    "Reader",
    "StudyError",
    "StudyStore",
    "case_group",
    "check_base_url",
    "reader_link",
]
