"""Dataset runs across processes: shards, torchrun (gloo, 2 processes) against one process,
a killed rank restarted, and an interrupted in-process run resumed."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gifsplanation.distributed import explain_dataset, launch, shard
from gifsplanation.runs import ExplainOptions, outputs
from gifsplanation.testing import BlobData, free_port, write_png

# Runs `gifsplanation` with the shipped tiny models in place of the registry;
# GIFSPLANATION_TEST_KILL="RANK:N" makes process RANK kill itself (SIGKILL) when it is
# about to write its N-th explanation.json.
LAUNCHER = """
import os, signal, sys
from pathlib import Path
from gifsplanation.cli import app, common
from gifsplanation.runs import outputs
from gifsplanation.testing import tiny_models

clf, ae, _ = tiny_models()
clf.input_size, clf.name = 32, "tiny-blob-classifier"
common.load_models = lambda c, a, device, need_ae=True: (clf.to(device), ae.to(device))

kill = os.environ.get("GIFSPLANATION_TEST_KILL")
if kill and os.environ.get("RANK", "0") == kill.split(":")[0]:
    write_text, seen = outputs.write_text, []

    def dying_write_text(path, text):
        if Path(path).name == "explanation.json":
            seen.append(path)
            if len(seen) == int(kill.split(":")[1]):
                os.kill(os.getpid(), signal.SIGKILL)
        return write_text(path, text)

    outputs.write_text = dying_write_text
app(prog_name="gifsplanation")
"""

N_IMAGES = 7


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7, 16])
@pytest.mark.parametrize("block", [1, 2, 3, 8])
def test_shards_cover_every_position_once(world_size, block):
    for n in [0, 1, 2, 5, 7, 8, 31, 64, 100]:
        parts = [shard(n, r, world_size, block=block) for r in range(world_size)]
        flat = sorted(p for part in parts for p in part)
        assert flat == list(range(n)), (n, world_size, block)
        sizes = [len(part) for part in parts]
        assert max(sizes) - min(sizes) <= block
        for part in parts:
            assert part == sorted(part)
            # Whole batches: a process's batches are those of a single process.
            for k in range(0, len(part), block):
                batch = part[k : k + block]
                assert batch == list(range(batch[0], batch[0] + len(batch)))
                assert batch[0] % block == 0


def test_shard_rejects_bad_arguments():
    for args in [(5, 0, 0), (5, 2, 2), (5, -1, 2), (-1, 0, 1)]:
        with pytest.raises(ValueError):
            shard(*args)
    with pytest.raises(ValueError, match="block"):
        shard(5, 0, 1, block=0)


def test_launch_without_torchrun_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with launch("cpu") as info:
        assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
        assert not info.distributed


@pytest.fixture(scope="module")
def dataset(tiny, tmp_path_factory):
    """A folder of generated PNGs (one corrupt) and the launcher."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "launcher.py").write_text(LAUNCHER)
    images = root / "images"
    x, _, _ = BlobData(seed=5).batch(N_IMAGES)
    for k in range(N_IMAGES):
        write_png(x[k], images / f"cxr{k:02d}.png", repeat=(2, 2))
    (images / "cxr03b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")  # fails alone
    return root


def _run(dataset: Path, out: Path, nproc: int, env: dict[str, str] | None = None):
    args = [
        "batch",
        str(dataset / "images"),
        "--out",
        str(out),
        "--frames",
        "4",
        "--images-per-call",
        "2",
        "--workers",
        "1",
        "--no-mp4",
        "--no-flow",
        "--no-progress",
    ]
    launcher = str(dataset / "launcher.py")
    if nproc == 1:
        cmd = [sys.executable, launcher, *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            launcher,
            *args,
        ]
    full_env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # what torchrun gives each process: same kernels, same bits
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        full_env.pop(var, None)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=900)


def _comparable(record: dict) -> dict:
    record = copy.deepcopy(record)
    for key in ("timings", "created", "output_dir"):
        record.pop(key)
    record["engine_call"].pop("seconds")
    record["arguments"].pop("out")
    return record


def _folders(out: Path) -> dict[str, Path]:
    return {
        str(p.parent.relative_to(out)): p.parent for p in sorted(out.glob("*/*/explanation.json"))
    }


@pytest.mark.slow
def test_torchrun_two_processes_write_what_one_process_writes(dataset, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _run(dataset, one, 1)
    assert r1.returncode == 1, r1.stderr  # the corrupt file fails; the others are written
    r2 = _run(dataset, two, 2)
    assert r2.returncode != 0, r2.stderr
    assert "7 explained, 0 already finished (skipped), 0 refused" in r2.stdout
    assert "1 failed on 2 processes" in r2.stdout

    a, b = _folders(one), _folders(two)
    assert len(a) == N_IMAGES and sorted(a) == sorted(b)
    for rel, folder in a.items():
        ra = json.loads((folder / "explanation.json").read_text())
        rb = json.loads((b[rel] / "explanation.json").read_text())
        assert _comparable(ra) == _comparable(rb), rel
        for f in sorted(folder.iterdir()):
            if f.suffix in (".gif", ".png", ".npy"):
                assert f.read_bytes() == (b[rel] / f.name).read_bytes(), f"{rel}/{f.name}"

    ma = json.loads((one / "manifest.json").read_text())
    mb = json.loads((two / "manifest.json").read_text())
    assert (ma["world_size"], mb["world_size"]) == (1, 2)
    assert ma["counts"] == mb["counts"] == {"done": 7, "skipped": 0, "refused": 0, "failed": 1}

    def strip(entries):
        return [{k: v for k, v in e.items() if k not in ("dir", "report")} for e in entries]

    assert strip(ma["entries"]) == strip(mb["entries"])
    assert [e["name"] for e in mb["entries"]] == sorted(e["name"] for e in mb["entries"])
    failed = [e for e in mb["entries"] if e["status"] == "failed"]
    assert [Path(e["image"]).name for e in failed] == ["cxr03b.png"]
    assert "cxr03b.png" in failed[0]["reason"]
    # One manifest per process, which together hold the merged one.
    ranks = [json.loads(p.read_text()) for p in sorted((two / "ranks").glob("*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert sorted(e["name"] for r in ranks for e in r["entries"]) == sorted(
        e["name"] for e in mb["entries"]
    )
    index = (two / "index.html").read_text()
    assert all(f"cxr{k:02d}" in index for k in range(N_IMAGES)) and "cxr03b.png" in index


@pytest.mark.slow
def test_a_killed_rank_restarted_finishes_only_what_is_missing(dataset, tmp_path):
    out = tmp_path / "out"
    crashed = _run(dataset, out, 2, env={"GIFSPLANATION_TEST_KILL": "1:2"})
    # torchrun fails (1) naming the killed rank as the first failure, not some other crash
    assert crashed.returncode == 1, crashed.stderr
    root_cause = crashed.stderr.split("Root Cause (first observed failure):")[-1]
    assert re.search(r"rank\s*:\s*1\b", root_cause), crashed.stderr
    assert "Signal 9 (SIGKILL) received by PID" in root_cause, crashed.stderr
    assert not (out / "manifest.json").exists()
    finished = {
        rel: (f / "explanation.json").stat().st_mtime_ns for rel, f in _folders(out).items()
    }
    assert 1 <= len(finished) < N_IMAGES
    # The killed folder has outputs but no explanation.json: it is unfinished, not corrupt.
    started = {str(p.relative_to(out)) for p in out.glob("*/*") if p.is_dir()}
    assert started - set(finished)

    again = _run(dataset, out, 2)
    assert again.returncode == 1, again.stderr  # only the corrupt file fails
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {
        "done": N_IMAGES - len(finished),
        "skipped": len(finished),
        "refused": 0,
        "failed": 1,
    }
    skipped = {e["dir"] for e in manifest["entries"] if e["status"] == "skipped"}
    assert skipped == set(finished)
    for rel, mtime in finished.items():  # not rewritten
        assert (out / rel / "explanation.json").stat().st_mtime_ns == mtime
    assert len(_folders(out)) == N_IMAGES


def test_interrupted_run_resumes_without_recomputing(tiny32, dataset, tmp_path, monkeypatch):
    clf, ae = tiny32
    files = sorted((dataset / "images").glob("*.png"))
    options = ExplainOptions(n_frames=4, mp4=False, flow=False, images_per_call=2)
    out = tmp_path / "out"

    write_text, written = outputs.write_text, []

    def interrupted(path, text):
        if Path(path).name == "explanation.json":
            if len(written) == 3:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the fourth image
            written.append(Path(path))
        return write_text(path, text)

    monkeypatch.setattr(outputs, "write_text", interrupted)
    stopped = explain_dataset(files, clf, ae, None, out, options, workers=1)
    assert stopped.interrupted and stopped.count("done") == 3
    assert json.loads((out / "manifest.json").read_text())["interrupted"] is True
    monkeypatch.setattr(outputs, "write_text", write_text)
    assert len(_folders(out)) == 3
    before = {p: p.stat().st_mtime_ns for p in written}

    result = explain_dataset(files, clf, ae, None, out, options, workers=1)
    assert result.counts == {"done": N_IMAGES - 3, "skipped": 3, "refused": 0, "failed": 1}
    assert {
        out / e["dir"] / "explanation.json" for e in result.entries if e["status"] == "skipped"
    } == set(before)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert [Path(e["image"]).name for e in result.failures] == ["cxr03b.png"]

    third = explain_dataset(files, clf, ae, None, out, options, workers=0)
    assert third.counts == {"done": 0, "skipped": N_IMAGES, "refused": 0, "failed": 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == third.counts and manifest["world_size"] == 1


def test_loader_workers_fork_before_any_rendering_thread(tiny32, dataset, tmp_path, monkeypatch):
    """A rerun records its finished images (which starts the rendering threads) only after
    the loader has forked its workers: a fork while a thread imports deadlocks the worker."""
    import threading

    from gifsplanation import distributed

    clf, ae = tiny32
    files = sorted((dataset / "images").glob("*.png"))
    options = ExplainOptions(n_frames=4, mp4=False, flow=False, images_per_call=2)
    explain_dataset(files[:3], clf, ae, None, tmp_path / "out", options, workers=1)

    seen: list[list[str]] = []

    class SpyLoader(distributed.DataLoader):
        def __iter__(self):
            seen.append([t.name for t in threading.enumerate()])
            return super().__iter__()

    monkeypatch.setattr(distributed, "DataLoader", SpyLoader)
    again = explain_dataset(files, clf, ae, None, tmp_path / "out", options, workers=1)
    assert again.count("skipped") == 3 and seen
    assert not [n for n in seen[0] if n.startswith("gifsplanation-render")], seen[0]
