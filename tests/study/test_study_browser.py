"""A real reader in headless Chromium: keyboard and mouse, reload, close and reopen the link,
finish both rounds. Screenshots go to the ``artifacts`` folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gifsplanation.testing import ThreadServer, make_study

CHROMIUM = os.environ.get("GIFSPLANATION_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


def _require_chromium() -> None:
    """Skip without Chromium, unless GIFSPLANATION_REQUIRE_BROWSER=1 (CI): then fail."""
    if Path(CHROMIUM).is_file():
        return
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("GIFSPLANATION_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _answers(store) -> dict[tuple[str, int, str], int]:
    return {(r["case_id"], r["round"], r["question"]): r["value"] for r in store.answer_rows()}


def _wait_saved(page) -> None:
    page.wait_for_function(
        "() => document.getElementById('status').textContent === 'all answers saved'"
        " && !document.querySelector('#next').disabled"
    )


def _watch(page, errors: list[str]) -> None:
    """Collect console errors and failed requests (4xx/5xx) of a page."""
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)


def _current(page) -> dict:
    return page.evaluate(
        """() => ({
        url: location.pathname,
        method: document.getElementById('method').textContent,
        prediction: document.getElementById('prediction').textContent,
        target: document.getElementById('target').textContent,
        images: [...document.querySelectorAll('img')].map(i => [i.alt, i.naturalWidth]),
        chosen: [...document.querySelectorAll('.question')].map(q => {
            const b = q.querySelector('button.chosen'); return b ? Number(b.dataset.value) : null;
        }),
        text: document.body.innerText,
    })"""
    )


def test_reader_goes_through_both_rounds(tmp_path, artifacts) -> None:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    store = make_study(tmp_path / "study", n_per_cell=1)  # 4 cases, 8 slots
    reader = store.add_reader("ann", seed=4)
    schedule = store.schedule(reader.id)
    public = {c.id: c.public_id for c in store.cases()}
    shots = artifacts / "study"
    shots.mkdir(parents=True, exist_ok=True)

    with ThreadServer(store.root) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        link = f"{server.url}/r/{reader.token}"
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        console_errors: list[str] = []
        _watch(page, console_errors)
        page.goto(link)
        page.wait_for_selector("#continue")
        assert "0 / 4 cases answered" in page.inner_text("main")
        page.screenshot(path=str(shots / "01-list.png"))

        # case 1: keyboard only; Enter before answering is refused with a message
        page.keyboard.press("Enter")
        page.wait_for_selector("#prediction")
        assert page.url.endswith("/case/1/0")
        page.keyboard.press("Enter")
        assert "Answer both questions first" in page.inner_text("#message")
        page.keyboard.press("4")
        page.keyboard.press("2")
        _wait_saved(page)
        now = _current(page)
        assert now["chosen"] == [4, 2]
        slot = schedule[0]
        assert now["method"].startswith(f"Method {slot.method}")
        assert now["prediction"].startswith(f"p({now['target']}) = ")
        assert all(width > 0 for _, width in now["images"])  # every image and the GIF loaded
        assert len(now["images"]) == (4 if slot.method == "A" else 3)
        page.screenshot(path=str(shots / "02-case-keyboard.png"), full_page=True)
        page.keyboard.press("Enter")

        # case 2: mouse only
        page.wait_for_url("**/case/1/1")
        page.wait_for_selector("#prediction")
        page.click(".question[data-question='confidence'] button[data-value='5']")
        page.click(".question[data-question='feature'] button[data-value='1']")
        page.click(".question[data-question='feature'] button[data-value='3']")  # revise
        _wait_saved(page)
        assert _current(page)["chosen"] == [5, 3]
        page.screenshot(path=str(shots / "03-case-mouse.png"), full_page=True)
        page.click("#next")

        # case 3: one answer, reload, the answer is still there and the page resumes
        page.wait_for_url("**/case/1/2")
        page.wait_for_selector("#prediction")
        page.keyboard.press("3")
        page.wait_for_selector(".qstate.saved")
        page.reload()
        page.wait_for_selector("#prediction")
        assert _current(page)["chosen"] == [3, None]
        page.keyboard.press("1")  # the open question is active after the reload
        _wait_saved(page)
        assert _current(page)["chosen"] == [3, 1]
        page.keyboard.press("ArrowUp")
        page.keyboard.press("2")  # revise question 1 by keyboard
        _wait_saved(page)
        assert _current(page)["chosen"] == [2, 1]

        # close the browser context half-way; the private link resumes at case 4
        context.close()
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        _watch(page, console_errors)
        page.goto(link)
        page.wait_for_selector("#continue")
        assert "round 1, case 4" in page.inner_text("#continue")
        assert "3 / 4 cases answered" in page.inner_text("main")
        assert "opens when round 1 is finished" in page.inner_text("main")
        page.screenshot(path=str(shots / "04-resume.png"))
        page.keyboard.press("Enter")
        page.wait_for_url("**/case/1/3")
        page.wait_for_selector("#prediction")
        page.keyboard.press("5")
        page.keyboard.press("5")
        _wait_saved(page)
        page.keyboard.press("Enter")  # end of round 1: back to the list, round 2 open

        page.wait_for_selector("#continue")
        assert "round 2, case 1" in page.inner_text("#continue")
        assert "once you open round 2 they are final" in page.inner_text("#final-note")
        page.keyboard.press("Enter")
        for position in range(4):
            page.wait_for_url(f"**/case/2/{position}")
            page.wait_for_selector("#prediction")
            now = _current(page)
            slot = schedule[4 + position]
            assert now["method"].startswith(f"Method {slot.method}")
            if position == 0:
                page.screenshot(path=str(shots / "05-round2.png"), full_page=True)
            if position == 1:  # the network drops while answering: retried, not lost
                context.set_offline(True)
                page.keyboard.press(str(position + 1))
                page.keyboard.press("3")
                page.wait_for_selector(".qstate.error")
                assert "retrying" in page.inner_text(".qstate.error")
                page.keyboard.press("Enter")  # waits for the saves, then moves on by itself
                assert "Saving" in page.inner_text("#message")
                assert page.url.endswith("/case/2/1")
                page.screenshot(path=str(shots / "05b-offline.png"), full_page=True)
                context.set_offline(False)
            else:
                page.keyboard.press(str(position + 1))
                page.keyboard.press("3")
                _wait_saved(page)
                page.keyboard.press("Enter")
        page.wait_for_selector("h1")
        assert "All done" in page.inner_text("h1")
        assert "Round 1 (answers final)" in page.inner_text("section[data-round='1'] h2")
        assert page.locator("section[data-round='1'] a").count() == 0  # no way back in
        page.screenshot(path=str(shots / "06-done.png"))
        context.close()
        browser.close()
    # the only failures are the requests made while the browser was offline
    assert [e for e in console_errors if "ERR_INTERNET_DISCONNECTED" not in e] == []

    answers = _answers(store)
    assert len(answers) == 16
    first = [public[s.case_id] for s in schedule[:4]]
    assert answers[(first[0], 1, "confidence")] == 4 and answers[(first[0], 1, "feature")] == 2
    assert answers[(first[1], 1, "confidence")] == 5 and answers[(first[1], 1, "feature")] == 3
    assert answers[(first[2], 1, "confidence")] == 2 and answers[(first[2], 1, "feature")] == 1
    history = store.answer_rows(history=True)
    assert len(history) == 16 + 2  # two revisions kept in the history
    # the method recorded with each answer is the one the page showed
    rows = store.answer_rows()
    shown = {(public[s.case_id], s.round): s.method for s in schedule}
    assert all(r["method"] == shown[(r["case_id"], r["round"])] for r in rows)
    assert {r["method"] for r in rows if r["case_id"] == first[0]} == {"A", "B"}
    for name in ("01-list", "02-case-keyboard", "03-case-mouse", "04-resume", "05-round2"):
        assert (shots / f"{name}.png").stat().st_size > 1000
