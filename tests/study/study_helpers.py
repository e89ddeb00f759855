"""Helpers for the reader study tests: small studies with generated assets (tiny PNGs and a
GIF, never real data) and live servers (in a thread, or as a real `study serve` process)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from gifsplanation.study.server import create_app
from gifsplanation.study.store import StudyStore

TARGETS = ("COVID-19", "Normal")


def make_assets(folder: Path, seed: int) -> dict[str, str]:
    """Write one case's assets (a gray image, three maps, a Latent Shift map, a 4-frame GIF)
    and return kind → name relative to the assets folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rel = folder.name
    files = {}
    gray = (rng.random((32, 32)) * 255).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(folder / "image.png")
    files["image"] = f"{rel}/image.png"
    for kind in ("grad", "guided", "integrated", "latentshift"):
        rgb = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb, mode="RGB").save(folder / f"{kind}.png")
        files[kind] = f"{rel}/{kind}.png"
    frames = [Image.fromarray(np.full((32, 64), 40 * k, np.uint8), mode="L") for k in range(4)]
    frames[0].save(
        folder / "latentshift.gif", save_all=True, append_images=frames[1:], duration=80, loop=0
    )
    files["gif"] = f"{rel}/latentshift.gif"
    return files


def make_study(root: Path, n_per_cell: int = 2, admin_token: str | None = None) -> StudyStore:
    """A study with ``n_per_cell`` cases per (target, TP/FP) cell, generated assets."""
    store = StudyStore.init(root, admin_token=admin_token)
    k = 0
    for target in TARGETS:
        for truth in (True, False):
            for _ in range(n_per_cell):
                public_id = f"case{k:03d}"
                files = make_assets(store.assets_dir / public_id, seed=k)
                label = target if truth else ("Normal" if target != "Normal" else "COVID-19")
                store.add_case(
                    f"/data/img{k}.png",
                    target,
                    label,
                    truth,
                    0.61 + 0.01 * k,
                    files,
                    public_id=public_id,
                )
                k += 1
    return store


def fake_render_case_assets(clock: list[float], step_seconds: float = 14.0):
    """A stand-in for ``build.render_case_assets`` that writes generated assets at once and
    dates them like a real build (``step_seconds`` of rendering per case, from ``clock[0]``),
    so file times follow the build order as they do on a real machine."""

    def render(image, target, classifier, autoencoder, out_dir, **_: object):
        out = Path(out_dir)
        files = make_assets(out, seed=len(clock))
        clock.append(clock[-1] + step_seconds)
        for rel in files.values():
            os.utime(out.parent / rel, (clock[-1], clock[-1]))
        return 0.9, {kind: rel.split("/", 1)[1] for kind, rel in files.items()}

    return render


class TargetsOnly:
    """A classifier stand-in for ``create_study`` with a fake renderer (only ``targets``)."""

    targets = TARGETS


def write_cases_csv(path: Path, n_per_group: int = 12) -> Path:
    """A CASES.csv as `study select` used to write it: every true positive first, then
    every false positive (half COVID-19, half Normal targets)."""
    rows = ["image,target,label"]
    for truth in (1, 0):
        for i in range(n_per_group):
            rows.append(f"img_{truth}_{i}.png,{TARGETS[i % 2]},{truth}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """uvicorn serving ``create_app(study_dir)`` (or ``app``) in a background thread."""

    def __init__(self, study_dir: Path, app=None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app if app is not None else create_app(study_dir),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn thread exited before it started")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ProcessServer:
    """``python -m gifsplanation study serve`` as a real process (can be killed)."""

    def __init__(self, study_dir: Path, port: int, log: Path) -> None:
        self.study_dir, self.port, self.log = study_dir, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 300.0) -> None:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gifsplanation", "study", "serve", str(self.study_dir),
                 "--port", str(self.port)],
                stdout=logf, stderr=subprocess.STDOUT, env=os.environ.copy(),
            )  # fmt: skip
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/", timeout=2).status_code == 404:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"server did not come up in {ready_timeout}s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: a crash, not a clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
