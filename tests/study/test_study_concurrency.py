"""No answer is lost: 24 readers submit concurrently against a real `study serve` process
that is killed (SIGKILL) and later stopped cleanly mid-study; every acknowledged answer
must be in the export, with the value acknowledged last."""

from __future__ import annotations

import csv
import io
import threading
import time

import httpx
import pytest

from gifsplanation.study.export import export_answers
from gifsplanation.testing import free_port, make_study

N_READERS = 24
GIVE_UP_S = 900  # a safety net against hanging, not a timing assertion


class ReaderBot(threading.Thread):
    """A reader answering every case of both rounds, revising some answers, and retrying
    each submission until the server acknowledges it."""

    def __init__(self, url: str, token: str, index: int, tally) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.index, self.tally = url, token, index, tally
        self.acked: dict[tuple[str, int, str], int] = {}
        self.submissions = 0
        self.server_errors: list[str] = []
        self.client_errors: list[str] = []
        self.transport_errors = 0

    def request(self, client: httpx.Client, method: str, path: str, **kw) -> httpx.Response:
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline:
            try:
                res = client.request(method, path, **kw)
            except httpx.TransportError:
                self.transport_errors += 1
                time.sleep(0.2)
                continue
            if res.status_code >= 500:
                self.server_errors.append(f"{res.status_code} {res.text[:200]}")
                time.sleep(0.2)
                continue
            return res
        raise TimeoutError(f"reader {self.index}: no answer from the server")

    def answer(self, client, case: str, rnd: int, question: str, value: int) -> None:
        body = {"case": case, "round": rnd, "question": question, "value": value}
        res = self.request(client, "PUT", "/api/reader/answers", json=body)
        if res.status_code != 200:
            self.client_errors.append(f"{res.status_code} {res.text[:200]}")
            return
        self.acked[(case, rnd, question)] = value
        self.submissions += 1
        self.tally()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            info = self.request(client, "GET", "/api/reader").json()
            for rnd in info["rounds"]:
                for slot in rnd["slots"]:
                    for qi, question in enumerate(("confidence", "feature")):
                        value = (self.index + slot["position"] + qi) % 5 + 1
                        self.answer(client, slot["case"], rnd["round"], question, value)
                    if slot["position"] % 3 == 0:  # the reader changes their mind
                        value = self.acked[(slot["case"], rnd["round"], "confidence")] % 5 + 1
                        self.answer(client, slot["case"], rnd["round"], "confidence", value)


@pytest.mark.slow
def test_concurrent_readers_and_restarts_lose_nothing(tmp_path, process_server_factory) -> None:
    store = make_study(tmp_path / "study", n_per_cell=2)
    readers = [store.add_reader(f"reader{i:02d}", seed=i) for i in range(N_READERS)]
    n_cases = len(store.cases())
    expected_answers = N_READERS * n_cases * 2 * 2
    server = process_server_factory(store.root, free_port())
    server.start()

    lock = threading.Lock()
    count = [0]
    third, two_thirds = threading.Event(), threading.Event()

    def tally() -> None:
        with lock:
            count[0] += 1
            if count[0] >= expected_answers // 3:
                third.set()
            if count[0] >= 2 * expected_answers // 3:
                two_thirds.set()

    bots = [ReaderBot(server.url, r.token, i, tally) for i, r in enumerate(readers)]
    for bot in bots:
        bot.start()
    assert third.wait(GIVE_UP_S)
    server.kill()  # crash mid-study
    at_kill = count[0]
    server.start()
    assert two_thirds.wait(GIVE_UP_S)
    server.stop()  # clean stop mid-study (SIGTERM)
    server.start()
    for bot in bots:
        bot.join(GIVE_UP_S)
        assert not bot.is_alive()

    assert at_kill < expected_answers  # the crash happened while readers were answering
    assert [e for b in bots for e in b.client_errors] == []
    assert [e for b in bots for e in b.server_errors] == []
    acked = {(b.index, *key): v for b in bots for key, v in b.acked.items()}
    assert len(acked) == expected_answers
    submissions = sum(b.submissions for b in bots)
    assert submissions > expected_answers  # revisions happened too

    # the running server's admin export and the offline export both hold every answer
    res = httpx.get(
        server.url + "/api/admin/export.csv",
        params={"history": False},
        headers={"Authorization": f"Bearer {store.admin_token}"},
        timeout=60,
    )
    assert res.status_code == 200
    served = list(csv.DictReader(io.StringIO(res.text)))
    with open(export_answers(store.root)) as f:
        exported = list(csv.DictReader(f))
    index = {r.name: i for i, r in enumerate(readers)}
    for rows in (served, exported):
        got = {
            (index[r["reader"]], r["case_id"], int(r["round"]), r["question"]): int(r["value"])
            for r in rows
        }
        assert len(rows) == expected_answers
        assert got == acked
        assert all(r["answered_at"] and r["first_answered_at"] for r in rows)
    # every acknowledged submission is in the history (a request cut by the crash may
    # have been committed and then sent again, so the history can hold more)
    history = store.answer_rows(history=True)
    assert len(history) >= submissions
    # each reader saw each case once per method
    for row in exported:
        assert row["method"] in ("A", "B")
    methods = {}
    for row in exported:
        methods.setdefault((row["reader"], row["case_id"]), set()).add(row["method"])
    assert all(m == {"A", "B"} for m in methods.values())
