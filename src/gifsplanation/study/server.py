"""The reader study's web server: a FastAPI app over one study folder.

Readers open a private link ``/r/<token>``: a list page with their progress, then one case
per page (``/r/<token>/case/<round>/<position>``) showing the image, the target, the model's
``p(target) = N%`` and the visuals of the method scheduled for that round. The pages are
plain HTML/JS (``web/``) talking to a small JSON API that needs the reader's token on every
request (``Authorization: Bearer <token>``; image URLs carry it in their path). A reader
only ever sees their own schedule and answers, never ground truth, false-positive status or
other readers. Admin endpoints take the study's admin token. Files are served only if a
case lists them and they resolve inside the study's ``assets/`` folder.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from .design import LIKERT_ANCHORS, METHOD_VISUALS, METHODS, QUESTIONS, Slot
from .export import EXPORT_FIELDS, HISTORY_FIELDS, answer_table
from .store import Reader, StudyError, StudyStore

WEB_DIR = Path(__file__).with_name("web")
STATIC_FILES = {
    "reader.js": "text/javascript",
    "reader.css": "text/css",
    "icon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


class AnswerIn(BaseModel):
    """One answer as a reader submits it (the method is looked up, never taken from here)."""

    model_config = ConfigDict(extra="forbid")

    case: str = Field(min_length=1, max_length=64, description="the case's public id")
    round: Annotated[StrictInt, Field(ge=1, le=2, description="1 or 2")]
    question: Literal["confidence", "feature"]
    value: Annotated[StrictInt, Field(ge=1, le=5, description="Likert 1–5")]


class ReaderIn(BaseModel):
    """An admin request to add a reader."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    seed: StrictInt | None = None


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _store(request: Request) -> StudyStore:
    return request.app.state.store


def current_reader(request: Request, authorization: str | None = Header(default=None)) -> Reader:
    """The reader whose token the ``Authorization: Bearer`` header carries (401 otherwise)."""
    reader = _store(request).reader_by_token(_bearer(authorization))
    if reader is None:
        raise HTTPException(
            401,
            "missing or unknown reader token; open your private link again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return reader


def require_admin(request: Request, authorization: str | None = Header(default=None)) -> None:
    """Refuse (401) requests that do not carry the study's admin token."""
    if not _store(request).is_admin(_bearer(authorization)):
        raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})


ReaderDep = Annotated[Reader, Depends(current_reader)]


def create_app(study_dir: str | os.PathLike[str]) -> FastAPI:
    """Build the web app of the study in ``study_dir``.

    Args:
        study_dir: a folder made by ``gifsplanation study create`` (holds ``study.sqlite``
            and ``assets/``).

    Returns:
        A FastAPI app; serve it with uvicorn (``gifsplanation study serve``) or test it with
        ``fastapi.testclient.TestClient``.

    Example:
        >>> import tempfile
        >>> from fastapi.testclient import TestClient
        >>> folder = tempfile.mkdtemp()
        >>> _ = StudyStore.init(folder)
        >>> TestClient(create_app(folder)).get("/api/reader").status_code
        401
    """
    store = StudyStore(study_dir)
    app = FastAPI(
        title="gifsplanation reader study",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.store = store
    pages = {name: (WEB_DIR / name).read_text(encoding="utf-8") for name in ("reader.html",)}

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(StudyError)
    async def study_error(_: Request, exc: StudyError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        detail = "invalid request — " + "; ".join(problems)
        if any("value" in p for p in problems):
            detail += " (answers are integers 1–5)"
        return JSONResponse({"detail": detail}, status_code=422)

    def reader_from_path(token: str) -> Reader:
        reader = store.reader_by_token(token)
        if reader is None:
            raise HTTPException(404, "unknown link; ask the study's organiser for yours")
        return reader

    # -- helpers -------------------------------------------------------------------------

    def slot_at(reader: Reader, round_: int, position: int) -> tuple[list[Slot], Slot]:
        slots = store.schedule(reader.id)
        for slot in slots:
            if slot.round == round_ and slot.position == position:
                return slots, slot
        raise HTTPException(404, f"no case at round {round_}, position {position} for you")

    def overview(reader: Reader) -> dict[str, Any]:
        slots = store.schedule(reader.id)
        answers = store.reader_answers(reader.id)
        public = {c.id: c.public_id for c in store.cases()}
        rounds: dict[int, dict[str, Any]] = {}
        nxt = None
        for slot in slots:
            given = answers.get((slot.round, slot.case_id), {})
            done = len(given) == len(QUESTIONS)
            info = rounds.setdefault(slot.round, {"round": slot.round, "done": 0, "slots": []})
            info["done"] += int(done)
            info["slots"].append(
                {
                    "position": slot.position,
                    "number": slot.position + 1,
                    "case": public[slot.case_id],
                    "answered": len(given),
                }
            )
            if nxt is None and not done:
                nxt = {"round": slot.round, "position": slot.position}
        for info in rounds.values():
            info["total"] = len(info["slots"])
        round1 = rounds.get(1, {"done": 0, "total": 0})
        return {
            "reader": reader.name,
            "questions": len(QUESTIONS),
            "rounds": [rounds[r] for r in sorted(rounds)],
            "round2_open": round1["done"] == round1["total"],
            "next": nxt,
            "finished": nxt is None and bool(slots),
        }

    def round2_open(reader: Reader) -> bool:
        progress = store.progress(reader.id)
        done, total = progress.get(1, (0, 0))
        return done == total

    # -- pages ---------------------------------------------------------------------------

    def page(reader: Reader) -> HTMLResponse:
        html = pages["reader.html"].replace("{{BASE}}", f"/r/{reader.token}")
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/", response_class=HTMLResponse)
    def root() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>Reader study</title><p>This is a reader study server. "
            "Open the private link you were given.</p>",
            status_code=404,
        )

    @app.get("/r/{token}", response_class=HTMLResponse)
    def list_page(token: str) -> HTMLResponse:
        return page(reader_from_path(token))

    @app.get("/r/{token}/case/{round_}/{position}", response_class=HTMLResponse)
    def case_page(token: str, round_: int, position: int) -> HTMLResponse:
        return page(reader_from_path(token))

    @app.get("/r/{token}/static/{name}")
    def static(token: str, name: str) -> Response:
        reader_from_path(token)
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(
            (WEB_DIR / name).read_bytes(),
            media_type=STATIC_FILES[name],
            headers={"Cache-Control": "no-cache"},
        )

    @app.get("/r/{token}/assets/{name:path}")
    def asset(token: str, name: str) -> FileResponse:
        reader_from_path(token)
        listed = {rel for case in store.cases() for rel in case.assets.values()}
        if name not in listed:
            raise HTTPException(404, f"no asset {name!r} in this study")
        path = store.asset_path(name)
        if not path.is_file():
            raise HTTPException(404, f"asset {name!r} is missing from the study folder")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    # -- reader API ----------------------------------------------------------------------

    @app.get("/api/reader")
    def api_reader(reader: ReaderDep) -> dict[str, Any]:
        return overview(reader)

    @app.get("/api/reader/case/{round_}/{position}")
    def api_case(reader: ReaderDep, round_: int, position: int) -> dict[str, Any]:
        slots, slot = slot_at(reader, round_, position)
        if slot.round == 2 and not round2_open(reader):
            raise HTTPException(409, "round 2 opens when round 1 is finished")
        case = next(c for c in store.cases() if c.id == slot.case_id)
        given = store.reader_answers(reader.id).get((slot.round, slot.case_id), {})
        in_round = [s for s in slots if s.round == slot.round]
        base = f"/r/{reader.token}/assets/"
        visuals = [
            {"kind": kind, "caption": caption, "url": base + case.assets[kind]}
            for kind, caption in METHOD_VISUALS[slot.method]
            if kind in case.assets
        ]
        return {
            "round": slot.round,
            "position": slot.position,
            "number": slot.position + 1,
            "total": len(in_round),
            "case": case.public_id,
            "target": case.target,
            "prediction": f"p({case.target}) = {round(100 * case.prediction)}%",
            "method": slot.method,
            "method_label": METHODS[slot.method],
            "image": base + case.assets["image"] if "image" in case.assets else None,
            "visuals": visuals,
            "questions": [
                {"id": q, "text": text, "anchors": LIKERT_ANCHORS[q]}
                for q, text in QUESTIONS.items()
            ],
            "answers": given,
            "previous": (
                {"round": slot.round, "position": slot.position - 1} if slot.position else None
            ),
            "next": (
                {"round": slot.round, "position": slot.position + 1}
                if slot.position + 1 < len(in_round)
                else None
            ),
        }

    @app.get("/api/reader/answers")
    def api_answers(reader: ReaderDep) -> list[dict[str, Any]]:
        public = {c.id: c.public_id for c in store.cases()}
        return [
            {"case": public[case_id], "round": rnd, "answers": given}
            for (rnd, case_id), given in sorted(store.reader_answers(reader.id).items())
        ]

    @app.put("/api/reader/answers")
    def api_answer(reader: ReaderDep, answer: AnswerIn, request: Request) -> dict[str, Any]:
        return store.save_answer(
            reader.id,
            answer.case,
            answer.round,
            answer.question,
            answer.value,
            client=(request.headers.get("user-agent") or "")[:200] or None,
        )

    # -- admin API -----------------------------------------------------------------------

    @app.get("/api/admin/readers", dependencies=[Depends(require_admin)])
    def admin_readers(request: Request) -> list[dict[str, Any]]:
        base = str(request.base_url).rstrip("/")
        return [
            {
                "name": r.name,
                "seed": r.seed,
                "link": f"{base}/r/{r.token}",
                "progress": {str(k): list(v) for k, v in store.progress(r.id).items()},
            }
            for r in store.readers()
        ]

    @app.post("/api/admin/readers", dependencies=[Depends(require_admin)], status_code=201)
    def admin_add_reader(body: ReaderIn, request: Request) -> dict[str, Any]:
        reader = store.add_reader(body.name, seed=body.seed)
        base = str(request.base_url).rstrip("/")
        return {"name": reader.name, "seed": reader.seed, "link": f"{base}/r/{reader.token}"}

    @app.get("/api/admin/export.csv", dependencies=[Depends(require_admin)])
    def admin_export(history: bool = False) -> Response:
        buf = io.StringIO()
        fields = HISTORY_FIELDS if history else EXPORT_FIELDS
        writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(answer_table(store, history=history))
        return Response(buf.getvalue(), media_type="text/csv")

    return app


__all__ = ["AnswerIn", "create_app"]
