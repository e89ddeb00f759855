"""Test helpers: tiny models trained in seconds, images and datasets on disk, small studies.

Random-weight models are poor test subjects (their gradients are ~0), so this module
provides a small convolutional autoencoder and a classifier trained on a synthetic task
whose answer is known: an image is positive when it contains a bright blob, and the blob's
disc is the ground-truth mask. Images are 1×32×32 in TorchXRayVision's [−1024, 1024]
convention. The seed-0 models ship as weights (``weights/tiny-blob.pt``, 70 KB, written by
``python -m gifsplanation.testing``), so tests load them instead of training; other seeds
are trained on first use (a few seconds). ``tiny_models()`` caches per process.

On disk: :func:`write_png` (one image as an 8-bit PNG), :func:`write_blob_dataset` (blob
images with masks, for the experiments), :func:`write_dataset` (a labelled dataset with
masks and a CSV index, for training). Reader studies: :func:`make_study` (generated
assets, never real data), :func:`write_cases_csv`, :func:`fake_render_case_assets`, and
live servers (:class:`ThreadServer`, :class:`ProcessServer`). Everything here is
synthetic: no real image is involved.

Example:
    >>> from gifsplanation.testing import tiny_models
    >>> clf, ae, data = tiny_models()
    >>> x, y, mask = data.batch(4)
    >>> clf(x).shape, ae.decode(ae.encode(x)).shape
    (torch.Size([4, 1]), torch.Size([4, 1, 32, 32]))
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from .pixels import to_uint8

if TYPE_CHECKING:
    from .study.store import StudyStore

SIZE = 32


@dataclass
class BlobData:
    """Generator of synthetic CXR-like images with an optional bright blob."""

    size: int = SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def batch(
        self, n: int, positive: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` images ``(n,1,S,S)``, labels ``(n,)`` and blob masks ``(n,S,S)`` (bool).

        ``positive=None`` draws labels at random; ``True``/``False`` forces them.
        """
        g, s = self.generator, self.size
        noise = torch.randn(n, 1, s // 4, s // 4, generator=g)
        background = F.interpolate(noise, size=(s, s), mode="bilinear", align_corners=False)
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        vignette = -((yy - s / 2) ** 2 + (xx - s / 2) ** 2) / (s / 2) ** 2
        images = 250 * background + 300 * vignette - 200
        if positive is None:
            labels = torch.rand(n, generator=g) < 0.5
        else:
            labels = torch.full((n,), positive)
        centers = torch.randint(8, s - 8, (n, 2), generator=g)
        d2 = (yy[None] - centers[:, 0, None, None]) ** 2 + (
            xx[None] - centers[:, 1, None, None]
        ) ** 2
        bump = torch.exp(-d2 / (2 * 2.5**2))
        masks = (bump > 0.3) & labels[:, None, None]
        images = images + 900 * bump[:, None] * labels[:, None, None, None]
        return images.clamp(-1024, 1024), labels.float(), masks

    def positive(self, n: int) -> torch.Tensor:
        """``n`` positive images only."""
        return self.batch(n, positive=True)[0]


class TinyAutoencoder(nn.Module):
    """A 2-level convolutional autoencoder with a spatial latent (8×8×8 at 32²)."""

    def __init__(self, width: int = 16, latent: int = 8) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(width, latent, 3, 2, 1),
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(latent, width, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x / 1024)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z) * 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class TinyClassifier(nn.Module):
    """A small CNN returning the probability that a blob is present."""

    output_kind = "probability"
    targets = ["blob"]

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 5, 1, 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def train_tiny_autoencoder(data: BlobData, steps: int = 400, seed: int = 0) -> TinyAutoencoder:
    torch.manual_seed(seed)
    ae = TinyAutoencoder()
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    for _ in range(steps):
        x, _, _ = data.batch(32)
        loss = F.mse_loss(ae(x) / 1024, x / 1024)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ae.eval()


def train_tiny_classifier(data: BlobData, steps: int = 250, seed: int = 0) -> TinyClassifier:
    torch.manual_seed(seed)
    clf = TinyClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y, _ = data.batch(32)
        # Label smoothing keeps the outputs off saturation, where gradients vanish.
        loss = F.binary_cross_entropy_with_logits(clf.logits(x)[:, 0], 0.05 + 0.9 * y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


TINY_WEIGHTS = Path(__file__).parent / "weights" / "tiny-blob.pt"
"""The shipped seed-0 tiny models (state dicts; loaded with ``weights_only=True``)."""


def train_tiny_models(seed: int = 0) -> tuple[TinyClassifier, TinyAutoencoder]:
    """Train the tiny classifier and autoencoder for ``seed`` (a few seconds on a CPU)."""
    with torch.random.fork_rng():
        train = BlobData(seed=seed + 1000)
        ae = train_tiny_autoencoder(train, seed=seed)
        clf = train_tiny_classifier(train, seed=seed)
    return clf, ae


def save_tiny_weights(path: Path = TINY_WEIGHTS) -> Path:
    """Train the seed-0 tiny models and store their state dicts at ``path``."""
    clf, ae = train_tiny_models(0)
    torch.save({"classifier": clf.state_dict(), "autoencoder": ae.state_dict()}, path)
    return path


@functools.lru_cache(maxsize=4)
def tiny_models(seed: int = 0) -> tuple[TinyClassifier, TinyAutoencoder, BlobData]:
    """Return ``(classifier, autoencoder, data)``, cached per process and seed.

    Seed 0 loads the shipped weights (no training); other seeds train. ``data`` is a
    fresh :class:`BlobData` with a different seed from the training data.
    """
    if seed == 0 and TINY_WEIGHTS.is_file():
        state = torch.load(TINY_WEIGHTS, map_location="cpu", weights_only=True)
        clf, ae = TinyClassifier(), TinyAutoencoder()
        clf.load_state_dict(state["classifier"])
        ae.load_state_dict(state["autoencoder"])
        clf.eval(), ae.eval()
    else:
        clf, ae = train_tiny_models(seed)
    for p in (*ae.parameters(), *clf.parameters()):
        p.requires_grad_(False)
    return clf, ae, BlobData(seed=seed)


# -- images and datasets on disk ----------------------------------------------------------


def write_png(image: Any, path: str | os.PathLike[str], repeat: tuple[int, int] = (1, 1)) -> Path:
    """Write a [−1024, 1024] image as an 8-bit grayscale PNG and return its path.

    Args:
        image: a tensor or array whose last two axes are (H, W) (leading axes of size 1).
        path: the file to write (its folder is created).
        repeat: each pixel repeated (rows, columns) times, for a file larger than the model
            input (loading then crops and resizes it).

    Example:
        >>> import tempfile, pathlib
        >>> png = write_png(BlobData().positive(1), pathlib.Path(tempfile.mkdtemp()) / "a.png")
        >>> Image.open(png).size
        (32, 32)
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    grey = to_uint8(arr.reshape(arr.shape[-2:]))
    if repeat != (1, 1):
        grey = np.kron(grey, np.ones(repeat, np.uint8))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey).save(path)
    return path


def write_blob_dataset(
    root: str | Path, n_per_label: int = 6, seed: int = 7, lung_masks: bool = False
) -> Path:
    """Write ``n_per_label`` blob and no-blob images with masks under ``root``; return it.

    The layout :class:`gifsplanation.datasets.MaskedCXRDataset` reads
    (``<label>/images/*.png`` and ``<label>/infection_masks/*.png``), labels ``blob``
    (positives, the blob's disc as mask) and ``none`` (negatives, empty masks). With
    ``lung_masks=True`` also ``<label>/lung_masks/``: two "lung" rectangles joined with the
    blob's disc grown by 4 px, so the blob always lies inside the lungs and its
    surroundings are partly outside them.

    Example:
        >>> import tempfile
        >>> from gifsplanation.datasets import MaskedCXRDataset
        >>> root = write_blob_dataset(tempfile.mkdtemp(), n_per_label=2)
        >>> len(MaskedCXRDataset(root, size=32, split="all"))
        4
    """
    root = Path(root)
    data = BlobData(seed=seed)
    for label, positive in (("blob", True), ("none", False)):
        x, _, masks = data.batch(n_per_label, positive=positive)
        img_dir, mask_dir = root / label / "images", root / label / "infection_masks"
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        pixels = to_uint8(x[:, 0].numpy())
        for i in range(n_per_label):
            name = f"{label}_{i}.png"
            mask = masks[i].numpy()
            Image.fromarray(pixels[i]).save(img_dir / name)
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / name)
            if lung_masks:
                lung_dir = root / label / "lung_masks"
                lung_dir.mkdir(exist_ok=True)
                lungs = _lungs(mask)
                Image.fromarray(lungs.astype(np.uint8) * 255).save(lung_dir / name)
    return root


def _lungs(blob: np.ndarray) -> np.ndarray:
    """Two upright rectangles (the "lungs") joined with the blob grown by 4 px."""
    from scipy import ndimage

    h, w = blob.shape
    lungs = np.zeros((h, w), dtype=bool)
    lungs[h // 4 : h - h // 4, w // 8 : w // 2 - w // 16] = True
    lungs[h // 4 : h - h // 4, w // 2 + w // 16 : w - w // 8] = True
    if blob.any():
        lungs |= ndimage.binary_dilation(blob, iterations=4)
    return lungs


def write_dataset(
    root: str | Path,
    n_per_label: int = 6,
    height: int = 40,
    width: int = 36,
    labels: tuple[str, ...] = ("covid19", "normal"),
    seed: int = 0,
) -> Path:
    """Write ``root/<label>/{images,infection_masks}/*.png`` and ``root/data.csv``.

    Args:
        root: output folder (created).
        n_per_label: images per label.
        height: image height in pixels.
        width: image width in pixels (differs from ``height`` to exercise the centre crop).
        labels: label folder names; the first is the positive one (bright square + mask),
            the others have empty masks.
        seed: random seed.

    Returns:
        The CSV path (columns ``image,label,infection_mask``, relative paths).

    Example:
        >>> import tempfile
        >>> csv_path = write_dataset(tempfile.mkdtemp(), n_per_label=2)
        >>> csv_path.name
        'data.csv'
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    side = max(4, min(height, width) // 4)
    for li, label in enumerate(labels):
        for k in range(n_per_label):
            img = (rng.random((height, width)) * 60 + 40).astype(np.uint8)
            mask = np.zeros((height, width), np.uint8)
            if li == 0:
                y = int(rng.integers(2, height - side - 2))
                x = int(rng.integers(2, width - side - 2))
                img[y : y + side, x : x + side] = 250
                mask[y : y + side, x : x + side] = 255
            for sub, arr in (("images", img), ("infection_masks", mask)):
                (root / label / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / label / sub / f"{label}_{k}.png")
            rows.append(
                {
                    "image": f"{label}/images/{label}_{k}.png",
                    "label": label,
                    "infection_mask": f"{label}/infection_masks/{label}_{k}.png",
                }
            )
    path = root / "data.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label", "infection_mask"])
        writer.writeheader()
        writer.writerows(rows)
    return path


# -- reader studies ------------------------------------------------------------------------

STUDY_TARGETS = ("COVID-19", "Normal")


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
    from .study.store import StudyStore

    store = StudyStore.init(root, admin_token=admin_token)
    k = 0
    for target in STUDY_TARGETS:
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

    targets = STUDY_TARGETS


def write_cases_csv(path: Path, n_per_group: int = 12) -> Path:
    """A CASES.csv as `study select` used to write it: every true positive first, then
    every false positive (half COVID-19, half Normal targets)."""
    rows = ["image,target,label"]
    for truth in (1, 0):
        for i in range(n_per_group):
            rows.append(f"img_{truth}_{i}.png,{STUDY_TARGETS[i % 2]},{truth}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """uvicorn serving ``create_app(study_dir)`` (or ``app``) in a background thread."""

    def __init__(self, study_dir: Path, app=None) -> None:
        import uvicorn

        from .study.server import create_app

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
        import httpx  # a test dependency

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


if __name__ == "__main__":  # python -m gifsplanation.testing: regenerate the shipped weights
    print(save_tiny_weights())
