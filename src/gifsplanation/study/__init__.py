"""Reader study: run the paper's radiologist study (§4.6) with your own readers.

``study create`` turns a CASES.csv into a study folder (assets + SQLite database),
``add-reader`` gives each reader a private link, ``serve`` runs the web app, ``export``
and ``analyze`` produce the answers and the paper's statistics. Submodules: ``design``
(questions, methods, schedules), ``store`` (SQLite), ``server`` (FastAPI app), ``export``,
``analysis``, ``selection`` (picking cases like the paper) and ``build`` (making a study).

Example:
    >>> from gifsplanation.study import StudyStore, create_app
"""

from .design import METHODS, QUESTIONS, make_schedule
from .export import export_answers
from .server import create_app
from .store import StudyStore

__all__ = ["METHODS", "QUESTIONS", "StudyStore", "create_app", "export_answers", "make_schedule"]
