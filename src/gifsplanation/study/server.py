"""The reader study's web server: a FastAPI app over one study folder.

Readers open a private link ``/r/<token>``: a list page with their progress, then one case
per page (``/r/<token>/case/<round>/<position>``) showing the image, the target, the model's
``p(target) = N%`` and the visuals of the method scheduled for that round. The pages are
plain HTML/JS (``web/``) talking to a small JSON API that needs the reader's token on every
request (``Authorization: Bearer <token>``; image URLs carry it in their path). A reader
only ever sees their own schedule and answers, never ground truth, false-positive status or
other readers. Admin endpoints take the study's admin token. Files are served only if a
case lists them, they resolve inside the study's ``assets/`` folder and they belong to the
reader's open round (the image and the visuals of the method scheduled in that round).

Hostile readers are expected: before anything reads a request body, :class:`RequestGuard`
checks the token (401/404) and the body size (413 on ``Content-Length`` or while streaming
a chunked body), so a large upload costs neither memory nor time. Assets are sent with no
file-time headers (no ``Last-Modified``; the ``ETag`` is a hash of the content), so the
order in which the study was built cannot be read off the responses. Admin links are built
from a configured base URL, never from the request's ``Host`` header.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool

from .design import LIKERT_ANCHORS, METHOD_VISUALS, METHODS, QUESTIONS, Slot
from .export import EXPORT_FIELDS, HISTORY_FIELDS, answer_table, csv_text
from .store import DEFAULT_BASE_URL, Reader, StudyError, StudyStore, check_base_url

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
MAX_BODY_BYTES = 16 * 1024
"""Largest request body accepted (an answer is ~80 bytes); larger ones get 413 unread."""
READER_TOKEN_REQUIRED = "missing or unknown reader token; open your private link again"
ADMIN_TOKEN_REQUIRED = "admin token required"
UNKNOWN_LINK = "unknown link; ask the study's organiser for yours"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


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
        raise HTTPException(401, READER_TOKEN_REQUIRED, headers={"WWW-Authenticate": "Bearer"})
    return reader


def require_admin(request: Request, authorization: str | None = Header(default=None)) -> None:
    """Refuse (401) requests that do not carry the study's admin token."""
    if not _store(request).is_admin(_bearer(authorization)):
        raise HTTPException(401, ADMIN_TOKEN_REQUIRED, headers={"WWW-Authenticate": "Bearer"})


class RequestGuard:
    """ASGI middleware that refuses a request before anything reads its body.

    In order: the token (``/api/admin/...``: the admin token, other ``/api/...``: a
    reader's bearer token, ``/r/<token>/...``: a reader's link; 401/404 otherwise), then the
    body size: a ``Content-Length`` above ``max_body`` is refused at once (the token's
    401/404, else 413) without reading any of it, and a body without one (chunked) is read
    only up to ``max_body`` bytes, then refused. Those refusals close the connection, so
    the rest of a large body is never read. An accepted body is handed on to the app.

    Args:
        app: the ASGI app to protect.
        store: the study's store (for token checks).
        max_body: the largest body accepted, in bytes.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], store: StudyStore, max_body: int):
        self.app, self.store, self.max_body = app, store, int(max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        has_body = "transfer-encoding" in headers or (length is not None and length != "0")
        refusal = await run_in_threadpool(self.token_refusal, scope["path"], headers)
        if not has_body:
            if refusal is not None:
                await self.respond(send, *refusal)
            else:
                await self.app(scope, receive, send)
            return
        if length is not None and not length.isdigit():
            await self.respond(send, 400, "invalid Content-Length", close=True)
            return
        if length is not None and int(length) > self.max_body:
            # refused unread; closing the connection drops the rest of the body
            await self.respond(send, *(refusal or self.too_large()), close=True)
            return
        # a body within the limit (or chunked) is read up to the limit, even when refused:
        # closing on a small unread body could cost the client its response
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self.respond(send, *(refusal or self.too_large()), close=True)
                return
            if not message.get("more_body", False):
                break
        if refusal is not None:
            await self.respond(send, *refusal)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def too_large(self) -> tuple[int, str]:
        return 413, f"request body too large: the limit is {self.max_body} bytes"

    def token_refusal(self, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """``(status, message)`` if the request's token does not open ``path``, else None."""
        token = _bearer(headers.get("authorization"))
        if path.startswith("/api/admin/"):
            return None if self.store.is_admin(token) else (401, ADMIN_TOKEN_REQUIRED)
        if path.startswith("/api/"):
            known = self.store.reader_by_token(token) is not None
            return None if known else (401, READER_TOKEN_REQUIRED)
        if path.startswith("/r/"):
            known = self.store.reader_by_token(path.split("/")[2]) is not None
            return None if known else (404, UNKNOWN_LINK)
        return None

    @staticmethod
    async def respond(send: Send, status: int, detail: str, close: bool = False) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if close:  # the unread rest of the body is dropped with the connection
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


ReaderDep = Annotated[Reader, Depends(current_reader)]


def create_app(
    study_dir: str | os.PathLike[str],
    base_url: str | None = None,
    max_body: int = MAX_BODY_BYTES,
) -> FastAPI:
    """Build the web app of the study in ``study_dir``.

    Args:
        study_dir: a folder made by ``gifsplanation study create`` (holds ``study.sqlite``
            and ``assets/``).
        base_url: where readers reach the server (``https://host[:port][/path]``), used
            for the links the admin API returns. Default: the study's stored setting
            (``study config --base-url``), else :data:`DEFAULT_BASE_URL`. Never taken
            from the request's ``Host`` header.
        max_body: the largest request body accepted, in bytes (413 above it).

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
    fixed_base = check_base_url(base_url) if base_url is not None else None
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

    # outermost: token and size are checked before anything reads the body
    app.add_middleware(RequestGuard, store=store, max_body=max_body)

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
            raise HTTPException(404, UNKNOWN_LINK)
        return reader

    def links_base() -> str:
        return fixed_base or store.base_url or DEFAULT_BASE_URL

    # -- helpers -------------------------------------------------------------------------

    def slot_at(reader: Reader, round_: int, position: int) -> tuple[list[Slot], Slot]:
        slots = store.schedule(reader.id)
        for slot in slots:
            if slot.round == round_ and slot.position == position:
                return slots, slot
        raise HTTPException(404, f"no case at round {round_}, position {position} for you")

    def visible_assets(reader: Reader) -> tuple[int, set[str]]:
        """The reader's open round and the assets it shows: every case's image and the
        visuals of the method each case has in that round."""
        current = store.open_round(reader.id)
        cases = {c.id: c for c in store.cases()}
        visible: set[str] = set()
        for slot in store.schedule(reader.id):
            if slot.round == current:
                case = cases[slot.case_id]
                kinds = ("image", *(kind for kind, _ in METHOD_VISUALS[slot.method]))
                visible.update(case.assets[k] for k in kinds if k in case.assets)
        return current, visible

    def overview(reader: Reader) -> dict[str, Any]:
        current = store.open_round(reader.id)
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
        for number, info in rounds.items():
            if number < current:
                info["status"] = "final"  # answers can no longer change
            elif number == current:
                info["status"] = "open"
            else:  # "ready": opening it makes the earlier round final
                info["status"] = "ready" if round1["done"] == round1["total"] else "locked"
        return {
            "reader": reader.name,
            "questions": len(QUESTIONS),
            "rounds": [rounds[r] for r in sorted(rounds)],
            "round2_open": round1["done"] == round1["total"],
            "next": nxt,
            "finished": nxt is None and bool(slots),
        }

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
    def asset(token: str, name: str, request: Request) -> Response:
        reader = reader_from_path(token)
        current, visible = visible_assets(reader)
        if name not in visible:
            listed = {rel for case in store.cases() for rel in case.assets.values()}
            if name not in listed:
                raise HTTPException(404, f"no asset {name!r} in this study")
            raise HTTPException(403, f"{name!r} is not shown in your open round (round {current})")
        path = store.asset_path(name)
        if not path.is_file():
            raise HTTPException(404, f"asset {name!r} is missing from the study folder")
        data = path.read_bytes()
        # no Last-Modified, and an ETag from the content only: file times follow the order
        # in which the study was built and must not reach readers
        headers = {
            "Cache-Control": "private, max-age=3600",
            "ETag": f'"{hashlib.sha256(data).hexdigest()[:32]}"',
        }
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(data, media_type=media_type, headers=headers)

    # -- reader API ----------------------------------------------------------------------

    @app.get("/api/reader")
    def api_reader(reader: ReaderDep) -> dict[str, Any]:
        return overview(reader)

    @app.get("/api/reader/case/{round_}/{position}")
    def api_case(reader: ReaderDep, round_: int, position: int) -> dict[str, Any]:
        slots, slot = slot_at(reader, round_, position)
        current = store.open_round(reader.id)
        if slot.round < current:
            raise HTTPException(
                409,
                f"round {slot.round} is closed: your answers to it became final when you "
                f"started round {current}",
            )
        if slot.round > current:
            # viewing a round-2 case opens round 2 (refused, 409, while round 1 is
            # unfinished); from now on the round-1 answers are final
            store.start_round(reader.id, slot.round)
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
        given = store.reader_answers(reader.id)
        # in the reader's own (shuffled) order, never in the order the cases were stored
        return [
            {"case": public[slot.case_id], "round": slot.round, "answers": given[key]}
            for slot in store.schedule(reader.id)
            if (key := (slot.round, slot.case_id)) in given
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
    def admin_readers() -> list[dict[str, Any]]:
        base = links_base()
        return [
            {
                "name": r.name,
                "seed": r.seed,
                "link": f"{base}/r/{r.token}",
                "progress": {str(k): list(v) for k, v in store.progress(r.id).items()},
                "open_round": store.open_round(r.id),
            }
            for r in store.readers()
        ]

    @app.post("/api/admin/readers", dependencies=[Depends(require_admin)], status_code=201)
    def admin_add_reader(body: ReaderIn) -> dict[str, Any]:
        reader = store.add_reader(body.name, seed=body.seed)
        link = f"{links_base()}/r/{reader.token}"
        return {"name": reader.name, "seed": reader.seed, "link": link}

    @app.get("/api/admin/export.csv", dependencies=[Depends(require_admin)])
    def admin_export(history: bool = False) -> Response:
        fields = HISTORY_FIELDS if history else EXPORT_FIELDS
        text = csv_text(answer_table(store, history=history), fields)
        return Response(text, media_type="text/csv")

    return app


__all__ = ["MAX_BODY_BYTES", "AnswerIn", "RequestGuard", "create_app"]
