"""The web API: tokens on every request, readers see only their own data and never ground
truth, only Likert 1–5 on existing cases is stored, files only from the assets folder."""

from __future__ import annotations

import json
import warnings

import pytest

from gifsplanation.study.server import create_app
from gifsplanation.study.store import StudyStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx2
    from fastapi.testclient import TestClient


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def setup(study: StudyStore):
    ann = study.add_reader("ann", seed=1)
    bob = study.add_reader("bob", seed=2)
    client = TestClient(create_app(study.root))
    return study, client, ann, bob


def _answers(study: StudyStore) -> int:
    with study.connect() as con:
        return con.execute("SELECT COUNT(*) FROM answer_history").fetchone()[0]


def test_every_request_needs_a_token(setup) -> None:
    study, client, ann, _ = setup
    for path in ("/api/reader", "/api/reader/case/1/0", "/api/reader/answers"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=_auth("not-a-token")).status_code == 401
        assert client.get(path, headers=_auth(ann.token)).status_code == 200
    body = {"case": "case000", "round": 1, "question": "feature", "value": 3}
    assert client.put("/api/reader/answers", json=body).status_code == 401
    for path in ("/r/not-a-token", "/r/not-a-token/case/1/0", "/r/not-a-token/static/reader.js",
                 "/r/not-a-token/assets/case000/image.png"):  # fmt: skip
        assert client.get(path).status_code == 404
    assert client.get(f"/r/{ann.token}").status_code == 200
    assert client.get("/").status_code == 404
    assert _answers(study) == 0


def test_admin_endpoints_need_the_admin_token(setup) -> None:
    study, client, ann, _ = setup
    for headers in ({}, _auth(ann.token), _auth("x")):
        assert client.get("/api/admin/readers", headers=headers).status_code == 401
        assert client.get("/api/admin/export.csv", headers=headers).status_code == 401
        assert (
            client.post("/api/admin/readers", json={"name": "eve"}, headers=headers).status_code
            == 401
        )
    admin = _auth(study.admin_token)
    readers = client.get("/api/admin/readers", headers=admin).json()
    assert [r["name"] for r in readers] == ["ann", "bob"]
    made = client.post("/api/admin/readers", json={"name": "cy", "seed": 3}, headers=admin)
    assert made.status_code == 201 and "/r/" in made.json()["link"]
    assert client.post("/api/admin/readers", json={"name": "cy"}, headers=admin).status_code == 409
    assert client.get("/api/admin/export.csv", headers=admin).text.startswith("reader,case_id")


@pytest.mark.parametrize(
    "body",
    [
        {"round": 1, "question": "feature", "value": 0},
        {"round": 1, "question": "feature", "value": 6},
        {"round": 1, "question": "feature", "value": -1},
        {"round": 1, "question": "feature", "value": 3.5},
        {"round": 1, "question": "feature", "value": 3.0},
        {"round": 1, "question": "feature", "value": "3"},
        {"round": 1, "question": "feature", "value": True},
        {"round": 1, "question": "feature", "value": None},
        {"round": 1, "question": "feature"},
        {"round": 1, "question": "colour", "value": 3},
        {"round": 3, "question": "feature", "value": 3},
        {"round": True, "question": "feature", "value": 3},
        {"round": 1, "question": "feature", "value": 3, "method": "B"},
    ],
)
def test_only_likert_values_are_accepted(setup, body) -> None:
    study, client, ann, _ = setup
    case = study.cases()[0].public_id
    res = client.put("/api/reader/answers", json={"case": case, **body}, headers=_auth(ann.token))
    assert res.status_code == 422
    assert "invalid request" in res.json()["detail"]
    assert _answers(study) == 0


def test_unknown_case_malformed_json_and_locked_round(setup) -> None:
    study, client, ann, _ = setup
    h = _auth(ann.token)
    res = client.put(
        "/api/reader/answers",
        json={"case": "nope", "round": 1, "question": "feature", "value": 3},
        headers=h,
    )
    assert res.status_code == 404 and "no case" in res.json()["detail"]
    res = client.put("/api/reader/answers", content=b"{not json", headers=h)
    assert res.status_code == 422
    case = study.cases()[0].public_id
    res = client.put(
        "/api/reader/answers",
        json={"case": case, "round": 2, "question": "feature", "value": 3},
        headers=h,
    )
    assert res.status_code == 409 and "round 2" in res.json()["detail"]
    assert client.get("/api/reader/case/2/0", headers=h).status_code == 409
    assert client.get("/api/reader/case/1/99", headers=h).status_code == 404
    assert _answers(study) == 0


def test_answer_is_saved_with_the_scheduled_method_and_replaced(setup) -> None:
    study, client, ann, bob = setup
    h = _auth(ann.token)
    view = client.get("/api/reader/case/1/0", headers=h).json()
    for value in (2, 4):
        res = client.put(
            "/api/reader/answers",
            json={"case": view["case"], "round": 1, "question": "confidence", "value": value},
            headers=h,
        )
        assert res.status_code == 200
        assert res.json()["method"] == view["method"]
    again = client.get("/api/reader/case/1/0", headers=h).json()
    assert again["answers"] == {"confidence": 4}
    # bob sees none of ann's answers
    assert client.get("/api/reader/answers", headers=_auth(bob.token)).json() == []
    # ... not even on the case ann answered, wherever it is in bob's round 1
    bob_views = [
        client.get(f"/api/reader/case/1/{k}", headers=_auth(bob.token)).json()
        for k in range(view["total"])
    ]
    (same,) = [v for v in bob_views if v["case"] == view["case"]]
    assert same["answers"] == {}
    rows = study.answer_rows(history=True)
    assert [(r["reader"], r["value"]) for r in rows] == [("ann", 2), ("ann", 4)]


def test_reader_views_never_reveal_ground_truth_or_other_readers(setup) -> None:
    study, client, ann, _ = setup
    h = _auth(ann.token)
    texts = [client.get("/api/reader", headers=h).text]
    n = len(study.cases())
    for pos in range(n):
        view = client.get(f"/api/reader/case/1/{pos}", headers=h)
        texts.append(view.text)
        v = view.json()
        assert v["prediction"].startswith(f"p({v['target']}) = ") and v["prediction"][-1] == "%"
        kinds = [x["kind"] for x in v["visuals"]]
        assert kinds == (["grad", "guided", "integrated"] if v["method"] == "A"
                         else ["latentshift", "gif"])  # fmt: skip
        assert v["method_label"].startswith(f"Method {v['method']}")
    blob = "\n".join(texts).replace(ann.token, "<token>")
    for secret in ('"truth"', '"label"', '"source"', "/data/img", "bob", "FP", "TP", "positive"):
        assert secret not in blob
    assert set(json.loads(texts[0])) == {
        "reader", "questions", "rounds", "round2_open", "next", "finished"
    }  # fmt: skip


def test_assets_only_from_the_study_asset_folder(setup, tmp_path) -> None:
    study, client, ann, _ = setup
    base = f"/r/{ann.token}/assets/"
    good = client.get(base + "case000/image.png")
    assert good.status_code == 200 and good.headers["content-type"] == "image/png"
    public = {c.id: c.public_id for c in study.cases()}
    shown_b = next(public[s.case_id] for s in study.schedule(ann.id) if s.method == "B")
    gif = client.get(base + f"{shown_b}/latentshift.gif")  # Method B in round 1: visible
    assert gif.headers["content-type"] == "image/gif"
    (study.root / "secret.txt").write_text("nope")
    (study.assets_dir / "unlisted.png").write_bytes(b"x")
    (study.assets_dir / "link.png").symlink_to(study.root / "secret.txt")
    for attack in (
        "../study.sqlite",
        "..%2Fstudy.sqlite",
        "%2e%2e/secret.txt",
        "case000/../../secret.txt",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "....//secret.txt",
        "case000/image.png%00.txt",
        "unlisted.png",
        "link.png",
        "",
    ):
        res = client.get(base + attack)
        assert res.status_code == 404, attack
        assert b"nope" not in res.content and b"SQLite" not in res.content
    assert client.get(f"/r/{ann.token}/static/../study.sqlite").status_code == 404
    assert client.get(f"/r/{ann.token}/static/reader.js").status_code == 200
    assert study.asset_path("case000/image.png").is_file()


def test_security_headers(setup) -> None:
    _, client, ann, _ = setup
    res = client.get(f"/r/{ann.token}")
    assert res.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in res.headers["content-security-policy"]
    assert client.get("/api/reader", headers=_auth(ann.token)).headers["cache-control"] == (
        "no-store"
    )
