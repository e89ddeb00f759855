"""Rendering overlaps the engine without changing what a run writes or records: same
entries in the same order, same files, errors still per image, interrupts still honoured."""

from __future__ import annotations

import functools
import json
import threading
import time

import pytest

from gifsplanation.runs import ExplainOptions, RenderPool, RunInterrupted, explain_many
from gifsplanation.runs import runner as runner_module
from gifsplanation.testing import BlobData, write_png

VOLATILE = {"created", "timings", "engine_call"}


def inputs(tmp_path):
    """Five blob images, an unreadable file, and one image given twice."""
    folder = tmp_path / "in"
    files = []
    for k in range(5):
        x, _, _ = BlobData(seed=11).batch(k + 1, positive=k % 2 == 0)
        files.append(write_png(x[k], folder / f"img{k}.png"))
    bad = folder / "broken.png"
    bad.write_bytes(b"not a png")
    return [*files[:3], bad, *files[3:], files[1]]


def run(tiny32, files, out, overlap, monkeypatch, **options):
    monkeypatch.setattr(
        runner_module.Runner,
        "__init__",
        functools.partialmethod(runner_module.Runner.__init__, overlap=overlap),
    )
    opts = ExplainOptions(n_frames=5, mp4=False, images_per_call=2, **options)
    result = explain_many(files, *tiny32, ["blob", 0], out, opts)
    monkeypatch.undo()
    return result


def stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


def test_overlap_writes_and_records_exactly_what_a_serial_run_does(tiny32, tmp_path, monkeypatch):
    files = inputs(tmp_path)
    serial = run(tiny32, files, tmp_path / "serial", False, monkeypatch)
    overlap = run(tiny32, files, tmp_path / "overlap", True, monkeypatch)
    assert [(e["image"], e["target"], e["status"]) for e in overlap.entries] == [
        (e["image"], e["target"], e["status"]) for e in serial.entries
    ]
    statuses = [e["status"] for e in overlap.entries]
    assert statuses.count("failed") == 1 and "skipped" in statuses  # the bad file; the repeat
    failed = next(e for e in overlap.entries if e["status"] == "failed")
    assert failed["reason"].startswith(str(files[3]))
    assert [stable(r) for r in overlap.records] == [stable(r) for r in serial.records]
    for e in serial.entries:
        if e["status"] != "done":
            continue
        a, b = tmp_path / "serial" / e["dir"], tmp_path / "overlap" / e["dir"]
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for name in ("latentshift.gif", "map-max.npy", "flow.png"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (e["dir"], name)
        record = json.loads((b / "explanation.json").read_text())
        assert stable(record) == stable(json.loads((a / "explanation.json").read_text()))


def test_a_render_failure_is_an_entry_naming_the_file(tiny32, tmp_path, monkeypatch):
    from gifsplanation.runs import outputs

    files = inputs(tmp_path)[:3]

    def broken(exp, index, path, **kwargs):
        if "img1" in str(path.parent.parent.name):
            raise OSError("disk full")
        return original(exp, index, path, **kwargs)

    original = outputs.save_curve
    monkeypatch.setattr(outputs, "save_curve", broken)
    opts = ExplainOptions(n_frames=5, mp4=False, flow=False, images_per_call=2)
    result = explain_many(files, *tiny32, ["blob"], tmp_path / "out", opts)
    assert [e["status"] for e in result.entries] == ["done", "failed", "done"]
    assert result.entries[1]["reason"].startswith(str(files[1]))
    assert "disk full" in result.entries[1]["reason"]


def test_an_interrupt_while_rendering_stops_the_run(tiny32, tmp_path, monkeypatch):
    from gifsplanation.runs import outputs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "save_curve", interrupted)
    files = inputs(tmp_path)[:3]
    opts = ExplainOptions(n_frames=5, mp4=False, flow=False, images_per_call=1)
    with pytest.raises(RunInterrupted) as stop:
        explain_many(files, *tiny32, ["blob"], tmp_path / "out", opts)
    assert all(e["status"] != "done" for e in stop.value.result.entries)
    assert not list((tmp_path / "out").glob("*/blob/explanation.json"))


def test_the_pool_commits_in_order_whatever_order_the_work_ends_in():
    pool = RenderPool(workers=3)
    done: list[int] = []
    for k in range(6):
        pool.submit(functools.partial(time.sleep, 0.05 * (6 - k)), lambda _, k=k: done.append(k))
    pool.wait(until=1)
    assert done[:1] == [0]
    pool.close()
    assert done == list(range(6))


def test_the_pool_hands_errors_back_and_drops_later_work():
    pool = RenderPool(workers=1)
    ran: list[int] = []
    started = threading.Event()

    def fail():
        started.set()
        raise KeyboardInterrupt

    pool.submit(lambda: ran.append(0), None)
    pool.submit(fail, None)
    pool.submit(lambda: ran.append(2), None)
    started.wait(5)
    with pytest.raises(KeyboardInterrupt):
        pool.close()
    assert ran == [0]
    pool.submit(lambda: ran.append(3), None)  # usable again afterwards
    pool.close()
    assert ran == [0, 3]


def test_cancel_drops_queued_work_but_finishes_the_running_task():
    pool = RenderPool(workers=1)
    started, gate = threading.Event(), threading.Event()
    ran: list[int] = []
    pool.submit(lambda: (started.set(), gate.wait(5), ran.append(0)), None)
    for k in range(1, 4):
        pool.submit(lambda k=k: ran.append(k), None)
    started.wait(5)
    threading.Timer(0.2, gate.set).start()
    pool.close(cancel=True)
    assert ran == [0]


def test_an_interrupt_seen_by_both_render_threads_is_one_clean_stop(tiny32, tmp_path, monkeypatch):
    """The second render thread stops on the interrupt after the run began cleaning up
    after the first: the run still ends in one RunInterrupted with its result."""
    from gifsplanation.runs import outputs

    second_started, cleaning_up = threading.Event(), threading.Event()
    calls = iter(range(100))

    def interrupted(*args, **kwargs):
        if next(calls) == 0:
            second_started.wait(10)
        else:
            second_started.set()
            cleaning_up.wait(10)
        raise KeyboardInterrupt

    original_flush = runner_module.Runner.flush

    def flush(self, cancel=False):
        if cancel:
            cleaning_up.set()
        return original_flush(self, cancel=cancel)

    monkeypatch.setattr(outputs, "save_curve", interrupted)
    monkeypatch.setattr(runner_module.Runner, "flush", flush)
    files = inputs(tmp_path)[:4]
    opts = ExplainOptions(n_frames=5, mp4=False, flow=False, images_per_call=1)
    with pytest.raises(RunInterrupted) as stop:
        explain_many(files, *tiny32, ["blob"], tmp_path / "out", opts)
    assert second_started.is_set() and cleaning_up.is_set()
    assert stop.value.result.interrupted
    assert not list((tmp_path / "out").glob("*/blob/explanation.json"))
