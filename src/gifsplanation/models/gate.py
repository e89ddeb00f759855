"""The out-of-distribution gate's models: a small "frontal chest X-ray or not" detector,
its training and calibration, and reconstruction-error thresholds for autoencoders.

A classifier answers for any image, so :class:`~gifsplanation.OODGate` refuses inputs that
are not frontal chest X-rays in the models' convention. Reconstruction error alone catches
textured images but passes smooth photos and transformed radiographs, so the gate also
uses :class:`GateNet`: a CNN of about 100k parameters that reads the image average-pooled
to 64×64 and returns p(not a frontal CXR). :func:`train_gate` fits it on the training
split of a CXR dataset (positives, strongly augmented so other hospitals' radiographs
still pass) against transformed radiographs (inverted, rotated, upside down), procedural
images (noise of every colour, gradients, shapes, stripes, text pages, blobs, textures)
and the few real photos that ship with matplotlib and scikit-learn. scikit-image's photos
are deliberately left out: they are the held-out test (``benchmarks/ood_gate.py``).

Thresholds come from training data only: the detector's is the 99.5th percentile of its
scores on a part of the training split it was not fitted on (never below 0.5), and an
autoencoder's is the 99.5th percentile of its mean |D(E(x)) − x| on the training split
(:func:`calibrate_autoencoder`, stored as ``"ood"`` in the autoencoder's sidecar).
:func:`gate_for_autoencoder` assembles the gate the registry attaches to an autoencoder.

Command line::

    python -m gifsplanation.models.gate train --data DATA.csv --out cxr-gate.pt
    python -m gifsplanation.models.gate calibrate-ae cxr-ae-7x7 --data DATA.csv --write
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._core.ood import OODGate
from ..datasets import uint8_to_model
from ..files import write_json, write_torch
from .checkpoint import sha256_file, sidecar_path

log = logging.getLogger(__name__)

FORMAT = "gifsplanation-gate/1"
DETECTOR_FILE = "cxr-gate.pt"
#: The detector threshold never goes below this (the network's balanced decision point).
MIN_DETECTOR_THRESHOLD = 0.5
#: Share of training CXRs the thresholds may refuse.
CALIBRATION_QUANTILE = 0.995
#: The reconstruction-error threshold is this multiple of its training quantile. The
#: detector does the fine work; reconstruction error is a backstop for grossly unfamiliar
#: images (noise, textures: 2-4x the CXR level). At 1x it refused 97% of CLAHE-processed
#: and 73% of unsharp-masked validation CXRs (common hospital post-processing); at 1.75x,
#: about 1% of CLAHE and none of the others (benchmarks/ood_gate.py).
RECON_MARGIN = 1.75
_CONFIG_KEYS = {"size": (8, 512), "hidden": (1, 4096)}


def weights_dir() -> Path:
    """The package's weights folder (where ``cxr-gate.pt`` ships)."""
    return Path(__file__).resolve().parents[1] / "weights"


# -- the detector ----------------------------------------------------------------------------


class GateNet(nn.Module):
    """p(not a frontal chest X-ray) for ``(B, C, H, W)`` images in [−1024, 1024].

    Any size is accepted: channels are averaged and the image is average-pooled to
    ``size``×``size`` first. Then ``len(channels)`` stages of 3×3 convolution, batch norm,
    ReLU and 2×2 max pooling, and a small fully connected head on the flattened map (it
    keeps the layout: a chest upside down differs from one upright only in where things
    are).

    Args:
        size: side the input is pooled to (default 64).
        channels: widths of the convolution stages (default 8, 24, 48, 96).
        hidden: width of the hidden layer of the head (default 32).

    Example:
        >>> net = GateNet().eval()
        >>> net(torch.zeros(2, 1, 224, 224)).shape
        torch.Size([2])
    """

    def __init__(
        self, size: int = 64, channels: Sequence[int] = (8, 24, 48, 96), hidden: int = 32
    ) -> None:
        super().__init__()
        if size % (2 ** len(channels)):
            raise ValueError(f"size {size} must be divisible by 2**{len(channels)}")
        self.config = {"size": int(size), "channels": [int(c) for c in channels], "hidden": hidden}
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = size // 2 ** len(channels)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(c_in * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logit of p(not a frontal CXR), shaped ``(B,)``."""
        x = x.float()
        if x.shape[1] != 1:
            x = x.mean(1, keepdim=True)
        size = self.config["size"]
        x = F.adaptive_avg_pool2d(x, (size, size)) / 1024.0
        return self.head(self.features(x))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """p(not a frontal CXR) for each image, shaped ``(B,)``."""
        return torch.sigmoid(self.logits(x))


def n_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def load_detector(path: str | Path | None = None) -> GateNet:
    """The detector stored at ``path`` (default: the bundled ``cxr-gate.pt``), fp32, eval.

    The file is read with ``torch.load(weights_only=True)`` (no code is unpickled), its
    configuration is bounded and its weights must match the architecture key by key.

    Returns:
        A :class:`GateNet` with ``threshold`` (from the sidecar when it matches the file,
        else from the checkpoint), ``weights_path``, ``weights_sha256`` and ``meta``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a gate checkpoint, or a damaged one.
    """
    path = Path(path) if path is not None else weights_dir() / DETECTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"detector weights {path} do not exist; train them with scripts/train-gate.sh"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a gate checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gate checkpoint (format {FORMAT!r} expected)")
    config = _check_config(path, ckpt.get("config"))
    model = GateNet(**config)
    state = ckpt.get("state_dict")
    expected = model.state_dict()
    if (
        not isinstance(state, dict)
        or set(state) != set(expected)
        or any(
            not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape
            for k, v in expected.items()
        )
    ):
        raise ValueError(f"{path} is a damaged gate checkpoint: weights do not match {config}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.eval()
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    sha = sha256_file(path)
    model.weights_path = str(path)
    model.weights_sha256 = sha
    model.meta = meta
    model.threshold = _stored_threshold(path, sha, meta)
    return model


def _check_config(path: Path, config: Any) -> dict[str, Any]:
    if not isinstance(config, dict) or set(config) != {"size", "channels", "hidden"}:
        raise ValueError(f"{path}: gate config must have size, channels and hidden: {config!r}")
    for key, (lo, hi) in _CONFIG_KEYS.items():
        v = config[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{path}: gate config {key}={v!r} is not an integer in [{lo}, {hi}]")
    ch = config["channels"]
    if (
        not isinstance(ch, list)
        or not 1 <= len(ch) <= 6
        or not all(isinstance(c, int) and 1 <= c <= 1024 for c in ch)
    ):
        raise ValueError(f"{path}: gate config channels={ch!r} is not 1-6 widths in [1, 1024]")
    return dict(config)


def _stored_threshold(path: Path, sha: str, meta: dict[str, Any]) -> float:
    side = sidecar_path(path)
    if side.is_file():
        try:
            record = json.loads(side.read_text())
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable sidecar %s (%s)", side, e)
            record = None
        if isinstance(record, dict) and record.get("sha256") not in (None, sha):
            log.warning("ignoring %s: it describes another file (SHA-256 differs)", side)
        elif isinstance(record, dict) and _is_number(record.get("detector_threshold")):
            return float(record["detector_threshold"])
    if _is_number(meta.get("detector_threshold")):
        return float(meta["detector_threshold"])
    log.warning("%s stores no detector threshold; using %s", path, MIN_DETECTOR_THRESHOLD)
    return MIN_DETECTOR_THRESHOLD


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# -- gates -----------------------------------------------------------------------------------


def bundled_gate(
    recon_threshold: float | None = None, *, path: str | Path | None = None
) -> OODGate:
    """The shipped detector with its calibrated threshold, plus a reconstruction-error
    threshold when given.

    Args:
        recon_threshold: refuse when mean |D(E(x)) − x| exceeds this (``None``: detector
            only). Use the threshold calibrated for *the* autoencoder the gate will see
            (:func:`gate_for_autoencoder` does that).
        path: another detector file (default: the bundled ``cxr-gate.pt``).

    Example:
        >>> gate = bundled_gate()  # doctest: +SKIP
        >>> gate.assess(image, None).flagged  # doctest: +SKIP
        [False]
    """
    detector = load_detector(path)
    return OODGate(
        detector=detector,
        detector_threshold=detector.threshold,
        recon_threshold=recon_threshold,
    )


def autoencoder_ood_record(model: Any) -> dict[str, Any] | None:
    """The ``"ood"`` calibration record of an autoencoder: from its checkpoint ``meta``,
    else from the JSON sidecar next to its weights (when the sidecar's SHA-256 matches)."""
    meta = getattr(model, "checkpoint_meta", None)
    if isinstance(meta, dict) and _valid_ood(meta.get("ood")):
        return dict(meta["ood"])
    weights = getattr(model, "weights_path", None)
    if not weights:
        return None
    side = sidecar_path(weights)
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not _valid_ood(record.get("ood")):
        return None
    sha = getattr(model, "weights_sha256", None)
    if sha is not None and record.get("sha256") not in (None, sha):
        log.warning("ignoring the OOD threshold in %s: it describes another file", side)
        return None
    return dict(record["ood"])


def _valid_ood(v: Any) -> bool:
    return isinstance(v, dict) and _is_number(v.get("recon_threshold"))


def gate_for_autoencoder(model: Any) -> OODGate:
    """The gate for ``model``: the bundled detector, plus the autoencoder's own calibrated
    reconstruction-error threshold when its checkpoint or sidecar has an ``"ood"`` record
    (the bundled ``cxr-ae-*`` do; other autoencoders get the detector alone)."""
    record = autoencoder_ood_record(model)
    return bundled_gate(None if record is None else float(record["recon_threshold"]))


# -- reconstruction error --------------------------------------------------------------------


@torch.no_grad()
def reconstruction_errors(
    autoencoder: Any, images: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """Mean |D(E(x)) − x| per image (float64, ``(N,)``), as the gate computes it.

    Args:
        autoencoder: anything with ``encode``/``decode``.
        images: ``uint8`` images (cached dataset, converted with
            :func:`~gifsplanation.datasets.uint8_to_model`) or float images in [−1024, 1024],
            ``(N, 1, H, W)``.
        batch_size: images per forward pass.
    """
    if isinstance(autoencoder, nn.Module):
        autoencoder.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        x = uint8_to_model(x) if x.dtype == torch.uint8 else x.float()
        r = autoencoder.decode(autoencoder.encode(x))
        out.append((r - x).abs().flatten(1).mean(1).double().cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


def recon_threshold(
    autoencoder: Any, images: torch.Tensor, quantile: float = CALIBRATION_QUANTILE
) -> float:
    """The reconstruction-error threshold of ``autoencoder``: the ``quantile`` of mean
    |D(E(x)) − x| over ``images`` (the training split), rounded *up* to an observed error,
    so at most a share ``1 − quantile`` of them exceed it.

    Example:
        >>> class Shrink:
        ...     def encode(self, x): return x
        ...     def decode(self, z): return 0.9 * z
        >>> x = torch.linspace(0, 1000, 11).reshape(11, 1, 1, 1)
        >>> recon_threshold(Shrink(), x, quantile=0.9)
        90.0
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    err = reconstruction_errors(autoencoder, images)
    if err.numel() == 0:
        raise ValueError("no images to calibrate on")
    return float(torch.quantile(err, quantile, interpolation="higher"))


def training_images(
    data: str | Path, split: str = "train", cache_dir: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 images (N, 1, 224, 224), label indices)`` of a split of ``data``, split as
    the bundled models were (seed 0, 20% validation)."""
    from .training import TrainConfig, load_split

    cfg = TrainConfig(
        "autoencoder", str(data), "unused", cache_dir=None if cache_dir is None else str(cache_dir)
    )
    _, images, labels = load_split(cfg, split)  # type: ignore[arg-type]
    return images, labels


def calibrate_autoencoder(
    name_or_path: str | Path,
    data: str | Path,
    *,
    quantile: float = CALIBRATION_QUANTILE,
    margin: float = RECON_MARGIN,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Calibrate an autoencoder's reconstruction-error threshold on the training split.

    Args:
        name_or_path: registry name or checkpoint path of the autoencoder.
        data: the dataset it was trained on (CSV or folder); the training split is used.
        quantile: share of training images that must pass (default 0.995).
        margin: the threshold is ``margin`` × that quantile (default :data:`RECON_MARGIN`).
        cache_dir: decoded-dataset cache (as for training).

    Returns:
        ``{"recon_threshold", "quantile", "quantile_value", "margin", "n"}`` — the record
        stored as ``"ood"`` in the autoencoder's sidecar.
    """
    from .registry import get_autoencoder

    ae = get_autoencoder(str(name_or_path))
    images, _ = training_images(data, "train", cache_dir)
    value = recon_threshold(ae, images, quantile)
    return {
        "recon_threshold": round(value * margin, 3),
        "quantile": quantile,
        "quantile_value": round(value, 3),
        "margin": margin,
        "n": int(images.shape[0]),
    }


def write_ood_record(sidecar: str | Path, record: dict[str, Any]) -> None:
    """Set the ``"ood"`` key of a weights sidecar (every other key left as it is)."""
    sidecar = Path(sidecar)
    side = json.loads(sidecar.read_text())
    side["ood"] = record
    write_json(sidecar, side)


# -- training data: positives and their augmentation -----------------------------------------
# Everything below works on "u-space" images: float in [0, 1], (B, 1, S, S).


def _rand(n: int, g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _loguniform(n: int, g: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    return torch.exp(_rand(n, g, math.log(lo), math.log(hi)))


def _chance(n: int, g: torch.Generator, p: float) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def _view(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def resample(
    src: torch.Tensor,
    size: int,
    angle: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    flip: torch.Tensor,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample a rotated, scaled, shifted (and mirrored) ``size``² window of ``src``.

    The window is ``fx``×``fy`` times the shorter side of ``src`` (above 1: zoomed out),
    centred at ``(cx, cy)`` in normalised coordinates, rotated by ``angle`` radians.
    Outside the source is ``fill`` (per image) or, when ``fill`` is ``None``, reflected.
    """
    b, _, h, w = src.shape
    m = min(h, w)
    sx, sy = fx * m / w, fy * m / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    fl = torch.where(flip, -1.0, 1.0)
    theta = torch.stack(
        [
            torch.stack([sx * cos * fl, -sx * sin, cx], 1),
            torch.stack([sy * sin * fl, sy * cos, cy], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    if fill is None:
        return F.grid_sample(src, grid, padding_mode="reflection", align_corners=False)
    f = _view(fill)
    return F.grid_sample(src - f, grid, padding_mode="zeros", align_corners=False) + f


def _gaussian_blur(u: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=u.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(u, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def _glyph_bank(seed: int, scale: float = 1.0) -> list[torch.Tensor]:
    """Masks of radiograph markers and annotations ("L", "R", "AP", "PORTABLE", dates...),
    sized for a 224² image times ``scale``."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    words = "L R L R LT RT AP PA PORTABLE SUPINE ERECT UPRIGHT CHEST LEFT RIGHT 1 2 ICU".split() + [
        "AP SUPINE",
        "PA ERECT",
    ]
    bank = []
    for i in range(160):
        if i % 4 == 3:
            text = "".join(rng.choice(list("0123456789/:.- "), size=rng.integers(4, 16)))
        else:
            text = str(rng.choice(words))
        size = int(rng.integers(8, 34))
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = font.getbbox(text)
        pad = int(rng.integers(1, 5))
        im = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
        draw = ImageDraw.Draw(im)
        draw.text((pad - left, pad - top), text, fill=255, font=font)
        if rng.random() < 0.25:  # a marker in a box
            draw.rectangle([0, 0, im.width - 1, im.height - 1], outline=255, width=1)
        if scale != 1.0:
            im = im.resize(
                (max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                Image.BILINEAR,
            )
        bank.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0))
    return bank


def _stamp_glyphs(
    u: torch.Tensor, idx: torch.Tensor, bank: list[torch.Tensor], g: torch.Generator
) -> None:
    s = u.shape[-1]
    for i in idx.tolist():
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            m = bank[int(torch.randint(len(bank), (1,), generator=g))]
            h, w = min(m.shape[0], s), min(m.shape[1], s)
            y = int(torch.randint(s - h + 1, (1,), generator=g))
            x = int(torch.randint(s - w + 1, (1,), generator=g))
            v = float(_rand(1, g, 0.75, 1.0)) if bool(_chance(1, g, 0.8)) else float(_rand(1, g))
            patch = u[i, 0, y : y + h, x : x + w]
            mm = m[:h, :w]
            u[i, 0, y : y + h, x : x + w] = patch * (1 - mm) + v * mm


def augment(u: torch.Tensor, g: torch.Generator, glyphs: list[torch.Tensor]) -> torch.Tensor:
    """The strong augmentation that lets other hospitals' radiographs pass: zoom in and out
    (black or white borders), aspect, shift, rotation ±10°, mirror, gamma and window,
    histogram equalisation, blur or sharpening, lower resolution, noise, markers and text,
    collimation, 8-bit quantisation. Applied alike to positives and negatives, so none of
    it tells them apart."""
    b, _, s, _ = u.shape
    zoom = _loguniform(b, g, 0.7, 1.3)
    aspect = _loguniform(b, g, 0.9, 1.1)
    fill = torch.where(_chance(b, g, 0.8), 0.0, _rand(b, g, 0.5, 1.0))
    u = resample(
        u,
        s,
        angle=_rand(b, g, -1, 1) * math.radians(10),
        fx=aspect / zoom,
        fy=1 / (aspect * zoom),
        cx=_rand(b, g, -0.1, 0.1),
        cy=_rand(b, g, -0.1, 0.1),
        flip=_chance(b, g, 0.5),
        fill=fill,
    )
    # tone: gamma, then a window (contrast/brightness), sometimes equalised
    u = u.clamp(0, 1) ** _view(_loguniform(b, g, 0.5, 2.0))
    lo, hi = _view(_rand(b, g, -0.15, 0.15)), _view(_rand(b, g, 0.8, 1.15))
    u = ((u - lo) / (hi - lo)).clamp(0, 1)
    for i in torch.nonzero(_chance(b, g, 0.08)).flatten().tolist():
        flat = u[i].flatten()
        rank = torch.empty_like(flat)
        rank[flat.argsort()] = torch.linspace(0, 1, flat.numel())
        u[i] = rank.view_as(u[i])
    # sharpness: blur, unsharp masking (common in processed radiographs), lower resolution
    for i in torch.nonzero(_chance(b, g, 0.5)).flatten().tolist():
        r = float(torch.rand(1, generator=g))
        if r < 0.45:
            u[i : i + 1] = _gaussian_blur(u[i : i + 1], float(_rand(1, g, 0.5, 2.5)))
        elif r < 0.8:
            blur = _gaussian_blur(u[i : i + 1], float(_rand(1, g, 1.0, 5.0)))
            u[i : i + 1] = u[i : i + 1] + float(_rand(1, g, 0.3, 1.5)) * (u[i : i + 1] - blur)
        else:
            low = int(_rand(1, g, 48, 160))
            small = F.interpolate(u[i : i + 1], size=(low, low), mode="area")
            u[i : i + 1] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    noisy = _chance(b, g, 0.4)
    u = u + _view(noisy * _loguniform(b, g, 0.002, 0.04)) * torch.randn(u.shape, generator=g)
    u = u.clamp(0, 1)
    _stamp_glyphs(u, torch.nonzero(_chance(b, g, 0.4)).flatten(), glyphs, g)
    # collimation / shutters: outside a rectangle is black (shuttered) or bright (unexposed)
    col = torch.nonzero(_chance(b, g, 0.3)).flatten().tolist()
    if col:
        yy = torch.arange(s).view(1, s, 1)
        xx = torch.arange(s).view(1, 1, s)
        for i in col:
            m = (_rand(4, g, 0.0, 0.2) * s).long()
            inside = (yy >= m[0]) & (yy < s - m[1]) & (xx >= m[2]) & (xx < s - m[3])
            v = 0.0 if bool(_chance(1, g, 0.6)) else float(_rand(1, g, 0.6, 1.0))
            u[i] = torch.where(inside, u[i], torch.full_like(u[i], v))
    quant = _chance(b, g, 0.5)
    u = torch.where(_view(quant), torch.round(u * 255) / 255, u)
    return u


# -- training data: negatives ----------------------------------------------------------------


def _coords(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1
    return t.view(1, 1, s, 1).expand(1, 1, s, s), t.view(1, 1, 1, s).expand(1, 1, s, s)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def _tone(u: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random intensity range and gamma for a [0, 1] pattern."""
    b = u.shape[0]
    lo = _view(_rand(b, g, 0.0, 0.6))
    hi = lo + _view(_rand(b, g, 0.05, 1.0)) * (1 - lo)
    return lo + (hi - lo) * u.clamp(0, 1) ** _view(_loguniform(b, g, 0.4, 2.5))


def gen_power_noise(
    n: int, s: int, g: torch.Generator, beta: tuple[float, float] = (0.0, 4.0)
) -> torch.Tensor:
    """Noise with power spectrum 1/f^β (β = 0 white, 1 pink, 2 brown, higher smoother)."""
    fy = torch.fft.fftfreq(s).view(s, 1)
    fx = torch.fft.rfftfreq(s).view(1, -1)
    f = torch.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    b = _rand(n, g, *beta).view(n, 1, 1, 1)
    amp = f.view(1, 1, *f.shape) ** (-b / 2)
    spec = torch.complex(torch.randn(amp.shape, generator=g), torch.randn(amp.shape, generator=g))
    spec = spec * amp
    spec[..., 0, 0] = 0
    x = torch.fft.irfft2(spec, s=(s, s))
    return _tone(_normalise(x), g)


def gen_white_noise(n: int, s: int, g: torch.Generator) -> torch.Tensor:
    """Uniform or Gaussian pixel noise, sometimes in blocks."""
    out = torch.empty(n, 1, s, s)
    for i in range(n):
        k = int(torch.randint(1, 9, (1,), generator=g)) if bool(_chance(1, g, 0.3)) else 1
        m = -(-s // k)
        if bool(_chance(1, g, 0.5)):
            x = torch.rand(1, 1, m, m, generator=g)
        else:
            x = (torch.randn(1, 1, m, m, generator=g) * 0.2 + 0.5).clamp(0, 1)
        out[i] = F.interpolate(x, scale_factor=k, mode="nearest")[..., :s, :s]
    return _tone(out, g)


def gen_gradient(n: int, s: int, g: torch.Generator) -> torch.Tensor:
    """Linear, radial and bilinear gradients."""
    yy, xx = _coords(s)
    out = torch.empty(n, 1, s, s)
    for i in range(n):
        r = float(torch.rand(1, generator=g))
        if r < 0.4:
            a = float(_rand(1, g, 0, 2 * math.pi))
            x = math.cos(a) * xx + math.sin(a) * yy
        elif r < 0.75:
            c = _rand(2, g, -1.2, 1.2)
            x = torch.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2)
        else:
            v = torch.rand(1, 1, 2, 2, generator=g)
            x = F.interpolate(v, size=(s, s), mode="bilinear", align_corners=True)
        out[i] = _normalise(x.reshape(1, 1, s, s))[0]
    return _tone(out, g)


def gen_shapes(n: int, s: int, g: torch.Generator) -> torch.Tensor:
    """Filled rectangles, ellipses and triangles on a background."""
    yy, xx = _coords(s)
    out = _rand(n, g).view(n, 1, 1, 1).expand(n, 1, s, s).clone()
    for _ in range(12):
        use = _view(_chance(n, g, 0.6))
        kind = torch.randint(3, (n,), generator=g).view(n, 1, 1, 1)
        c = _rand(2 * n, g, -1, 1).view(2, n, 1, 1, 1)
        r = _loguniform(2 * n, g, 0.03, 0.7).view(2, n, 1, 1, 1)
        a = _rand(n, g, 0, math.pi).view(n, 1, 1, 1)
        dx, dy = xx - c[0], yy - c[1]
        u = torch.cos(a) * dx + torch.sin(a) * dy
        v = -torch.sin(a) * dx + torch.cos(a) * dy
        rect = (u.abs() < r[0]) & (v.abs() < r[1])
        ell = (u / r[0]) ** 2 + (v / r[1]) ** 2 < 1
        tri = (v > -r[1]) & (v < r[1] - 2 * r[1] * u.abs() / r[0])
        mask = torch.where(kind == 0, rect, torch.where(kind == 1, ell, tri)) & use
        out = torch.where(mask, _rand(n, g).view(n, 1, 1, 1), out)
    for i in torch.nonzero(_chance(n, g, 0.3)).flatten().tolist():
        out[i : i + 1] = _gaussian_blur(out[i : i + 1], float(_rand(1, g, 0.7, 4.0)))
    return _tone(out, g)


def gen_stripes(n: int, s: int, g: torch.Generator) -> torch.Tensor:
    """Sinusoidal or square stripes and (rotated) checkerboards."""
    yy, xx = _coords(s)
    a = _rand(n, g, 0, math.pi).view(n, 1, 1, 1)
    f = _loguniform(n, g, 1.0, 40.0).view(n, 1, 1, 1) * math.pi
    ph = _rand(n, g, 0, 2 * math.pi).view(n, 1, 1, 1)
    u = torch.cos(a) * xx + torch.sin(a) * yy
    v = -torch.sin(a) * xx + torch.cos(a) * yy
    w1, w2 = torch.sin(f * u + ph), torch.sin(f * v)
    kind = torch.randint(3, (n,), generator=g).view(n, 1, 1, 1)
    x = torch.where(kind == 0, w1, torch.where(kind == 1, torch.sign(w1), torch.sign(w1 * w2)))
    return _tone((x + 1) / 2, g)


def gen_blobs(n: int, s: int, g: torch.Generator) -> torch.Tensor:
    """Sums of Gaussian blobs of random size, sign and weight."""
    yy, xx = _coords(s)
    out = torch.zeros(n, 1, s, s)
    for _ in range(10):
        c = _rand(2 * n, g, -1, 1).view(2, n, 1, 1, 1)
        r = _loguniform(n, g, 0.03, 0.6).view(n, 1, 1, 1)
        w = _rand(n, g, -1, 1).view(n, 1, 1, 1)
        out = out + w * torch.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * r**2))
    return _tone(_normalise(out), g)


def gen_texture(n: int, s: int, g: torch.Generator) -> torch.Tensor:
    """Band-pass and oriented filtered noise, sometimes folded (abs) or thresholded."""
    fy = torch.fft.fftfreq(s).view(s, 1)
    fx = torch.fft.rfftfreq(s).view(1, -1)
    f = torch.sqrt(fx**2 + fy**2).view(1, 1, s, -1)
    ang = torch.atan2(fy, fx).view(1, 1, s, -1)
    f0 = _loguniform(n, g, 0.01, 0.35).view(n, 1, 1, 1)
    bw = _rand(n, g, 0.15, 0.6).view(n, 1, 1, 1)
    band = torch.exp(-0.5 * (torch.log(f.clamp_min(1e-4) / f0) / bw) ** 2)
    a0 = _rand(n, g, 0, math.pi).view(n, 1, 1, 1)
    conc = torch.where(_view(_chance(n, g, 0.5)), 0.0, _rand(n, g, 1, 8).view(n, 1, 1, 1))
    orient = torch.exp(conc * (torch.cos(2 * (ang - a0)) - 1))
    noise = torch.complex(
        torch.randn(band.expand(n, 1, s, -1).shape, generator=g),
        torch.randn(band.expand(n, 1, s, -1).shape, generator=g),
    )
    x = _normalise(torch.fft.irfft2(noise * band * orient, s=(s, s)))
    kind = torch.randint(3, (n,), generator=g).view(n, 1, 1, 1)
    x = torch.where(kind == 1, (2 * x - 1).abs(), x)
    x = torch.where(kind == 2, torch.sigmoid((x - 0.5) * 20), x)
    return _tone(x, g)


def gen_constant(n: int, s: int, g: torch.Generator) -> torch.Tensor:
    """Uniform images (sometimes with faint noise)."""
    x = _rand(n, g).view(n, 1, 1, 1).expand(n, 1, s, s)
    return (x + _view(_rand(n, g, 0, 0.01)) * torch.randn(n, 1, s, s, generator=g)).clamp(0, 1)


def text_pages(n: int, s: int, seed: int) -> torch.Tensor:
    """Pages of random text (documents, reports, screenshots of letters)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz" * 3 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:-()")
    out = torch.empty(n, 1, s, s)
    for i in range(n):
        big = int(s * rng.uniform(1.0, 2.0))
        bg, fg = (int(rng.integers(170, 256)), int(rng.integers(0, 90)))
        if rng.random() < 0.3:
            bg, fg = fg, bg
        im = Image.new("L", (big, big), bg)
        draw = ImageDraw.Draw(im)
        size = int(rng.integers(7, 22))
        font = ImageFont.load_default(size=size)
        y = int(rng.integers(0, 20))
        margin = int(rng.integers(2, 30))
        while y < big:
            x = margin
            if rng.random() < 0.1:
                y += size
                continue
            while x < big - margin:
                word = "".join(rng.choice(letters, size=rng.integers(1, 11)))
                draw.text((x, y), word, fill=fg, font=font)
                x += int(font.getlength(word + " "))
            y += int(size * rng.uniform(1.1, 1.8))
        a = np.asarray(im.resize((s, s), Image.BILINEAR), dtype=np.float32) / 255.0
        out[i, 0] = torch.from_numpy(a)
    return out


GENERATORS: dict[str, Callable[[int, int, torch.Generator], torch.Tensor]] = {
    "white_noise": gen_white_noise,
    "colored_noise": gen_power_noise,
    "gradient": gen_gradient,
    "shapes": gen_shapes,
    "stripes": gen_stripes,
    "blobs": gen_blobs,
    "texture": gen_texture,
    "constant": gen_constant,
}
"""Procedural negative families (text pages come from a pre-rendered bank)."""


def photo_bank() -> dict[str, torch.Tensor]:
    """The real photos and images that ship with matplotlib and scikit-learn (never
    scikit-image's: those are the held-out test), as ``(3, H, W)`` floats in [0, 1]."""
    import gzip

    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    def rgb(a: np.ndarray) -> torch.Tensor:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        a = a[..., :3]
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
        t = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-8)
        side = max(t.shape[1:])
        if side > 512:  # photos are sampled at ≤ 224: 512 keeps every crop sharp enough
            t = F.interpolate(t[None], scale_factor=512 / side, mode="area")[0]
        return t

    bank = {}
    for name, img in zip(("china", "flower"), load_sample_images().images, strict=True):
        bank[f"sklearn/{name}"] = rgb(img)
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        with Image.open(cbook.get_sample_data(name, asfileobj=False)) as im:
            bank[f"matplotlib/{name}"] = rgb(np.asarray(im.convert("RGB")))
    with cbook.get_sample_data("jacksboro_fault_dem.npz") as d:
        bank["matplotlib/jacksboro_fault_dem"] = rgb(d["elevation"])
    with cbook.get_sample_data("topobathy.npz") as d:
        bank["matplotlib/topobathy"] = rgb(d["topo"])
    with cbook.get_sample_data("s1045.ima.gz") as fh:  # an MRI slice of a head
        raw = fh.read()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        mri = np.frombuffer(raw, np.uint16).reshape(256, 256)
        bank["matplotlib/s1045_mri"] = rgb(np.minimum(mri, np.percentile(mri, 99.5)))
    bank["matplotlib/bivariate_normal"] = rgb(
        cbook.get_sample_data("axes_grid/bivariate_normal.npy")
    )
    return bank


def sample_photos(
    n: int, s: int, g: torch.Generator, photos: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Random gray crops of ``photos``: random channel weights, crop 15-100% of the area,
    any quarter turn plus ±15°, mirror, sometimes inverted."""
    out = torch.empty(n, 1, s, s)
    for i in range(n):
        p = photos[int(torch.randint(len(photos), (1,), generator=g))]
        w = -torch.log(torch.rand(3, generator=g).clamp_min(1e-6))
        if bool(_chance(1, g, 0.3)):
            w = torch.tensor([0.299, 0.587, 0.114])
        gray = (p * (w / w.sum()).view(3, 1, 1)).sum(0, keepdim=True)[None]
        f = float(_rand(1, g, 0.15, 1.0)) ** 0.5
        asp = float(_loguniform(1, g, 0.8, 1.25))
        fx, fy = f * asp**0.5, f / asp**0.5
        h, w_ = gray.shape[-2:]
        m = min(h, w_)
        mx, my = max(0.0, 1 - fx * m / w_), max(0.0, 1 - fy * m / h)
        quarter = int(torch.randint(4, (1,), generator=g))
        ang = quarter * math.pi / 2 + float(_rand(1, g, -1, 1)) * math.radians(15)
        out[i] = resample(
            gray,
            s,
            angle=torch.tensor([ang]),
            fx=torch.tensor([fx]),
            fy=torch.tensor([fy]),
            cx=_rand(1, g, -mx, mx),
            cy=_rand(1, g, -my, my),
            flip=_chance(1, g, 0.5),
        )[0]
    out = torch.where(_view(_chance(n, g, 0.25)), 1 - out, out)
    return out.clamp(0, 1) ** _view(_loguniform(n, g, 0.6, 1.7))


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "inverted": lambda u: 1 - u,
    "rotated_90": lambda u: torch.rot90(u, 1, dims=(2, 3)),
    "rotated_270": lambda u: torch.rot90(u, 3, dims=(2, 3)),
    "rotated_180": lambda u: torch.rot90(u, 2, dims=(2, 3)),
    "upside_down": lambda u: u.flip(2),
}
"""Transformed radiographs that are *not* frontal CXRs in the models' convention (a
mirrored one is: chest X-rays are sometimes displayed mirrored, and it stays positive)."""


class GateData:
    """Seeded batches for the detector: half augmented CXRs (label 0), half negatives
    (label 1: transformed CXRs, procedural images, text pages, photos).

    Args:
        cxrs: ``uint8`` radiographs ``(N, 1, S, S)`` (the training split).
        seed: seeds every random choice.
        photos: photo bank (default :func:`photo_bank`).
        mix: shares of the negatives ``(transformed, procedural, text, photos)``.
        size: side of the images made (default 128: the detector pools to 64 anyway, and
            augmenting at 224 would cost 4 times as much); radiographs are area-resized.
    """

    def __init__(
        self,
        cxrs: torch.Tensor,
        seed: int = 0,
        photos: dict[str, torch.Tensor] | None = None,
        mix: tuple[float, float, float, float] = (0.35, 0.35, 0.08, 0.22),
        size: int = 128,
    ) -> None:
        if cxrs.shape[-1] != size or cxrs.shape[-2] != size:
            small = [
                F.interpolate(cxrs[i : i + 256].float(), size=(size, size), mode="area")
                for i in range(0, cxrs.shape[0], 256)
            ]
            cxrs = torch.cat(small).round().clamp(0, 255).to(torch.uint8)
        self.cxrs = cxrs
        self.size = size
        self.g = torch.Generator().manual_seed(seed)
        self.glyphs = _glyph_bank(seed, scale=size / 224)
        self.pages = text_pages(192, self.size, seed + 1)
        self.photos = list((photos if photos is not None else photo_bank()).values())
        self.mix = mix

    def _cxr(self, n: int) -> torch.Tensor:
        idx = torch.randint(self.cxrs.shape[0], (n,), generator=self.g)
        return self.cxrs[idx].float() / 255.0

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """``(images in [−1024, 1024], labels 1 = not a CXR, family of each image)``."""
        g, s = self.g, self.size
        n_pos = n // 2
        kinds = torch.multinomial(torch.tensor(self.mix), n - n_pos, True, generator=g)
        n_tr, n_proc, n_text, n_photo = (int((kinds == k).sum()) for k in range(4))
        parts, fams = [augment(self._cxr(n_pos), g, self.glyphs)], ["cxr"] * n_pos
        if n_tr:
            u = augment(self._cxr(n_tr), g, self.glyphs)
            names = list(TRANSFORMS)
            which = torch.randint(len(names), (n_tr,), generator=g).tolist()
            u = torch.cat([TRANSFORMS[names[k]](u[i : i + 1]) for i, k in enumerate(which)])
            parts.append(u)
            fams += [names[k] for k in which]
        if n_proc:
            names = list(GENERATORS)
            which = torch.randint(len(names), (n_proc,), generator=g)
            for k in which.unique().tolist():
                m = int((which == k).sum())
                u = GENERATORS[names[k]](m, s, g)
                # a third of the procedural images are a blend with another family
                blend = _chance(m, g, 0.33)
                if blend.any():
                    other = GENERATORS[names[int(torch.randint(len(names), (1,), generator=g))]]
                    w = _view(_rand(m, g, 0.2, 0.8))
                    u = torch.where(_view(blend), w * u + (1 - w) * other(m, s, g), u)
                parts.append(augment(u, g, self.glyphs))
                fams += [names[k]] * m
        if n_text:
            idx = torch.randint(self.pages.shape[0], (n_text,), generator=g)
            parts.append(augment(_tone(self.pages[idx], g), g, self.glyphs))
            fams += ["text"] * n_text
        if n_photo:
            parts.append(augment(sample_photos(n_photo, s, g, self.photos), g, self.glyphs))
            fams += ["photo"] * n_photo
        u = torch.cat(parts)
        y = torch.tensor([0.0 if f == "cxr" else 1.0 for f in fams])
        return u * 2048 - 1024, y, fams


# -- training --------------------------------------------------------------------------------


@torch.no_grad()
def detector_scores(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """p(not a frontal CXR) for ``uint8`` or float ([−1024, 1024]) images, ``(N,)``."""
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        x = uint8_to_model(x) if x.dtype == torch.uint8 else x.float()
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def detector_threshold(scores: torch.Tensor, quantile: float = CALIBRATION_QUANTILE) -> float:
    """The threshold refusing at most a share ``1 − quantile`` of CXRs with these scores,
    never below :data:`MIN_DETECTOR_THRESHOLD`."""
    q = float(torch.quantile(scores.double(), quantile, interpolation="higher"))
    return max(q, MIN_DETECTOR_THRESHOLD)


def train_gate(
    data: str | Path,
    out: str | Path,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    calib_fraction: float = 0.15,
    seed: int = 0,
    threads: int = 1,
    cache_dir: str | Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train the detector on the training split of ``data`` and write it (fp16) to ``out``
    with a JSON sidecar holding the calibrated threshold.

    Args:
        data: the CXR dataset (CSV or folder) the bundled models were trained on; only its
            training split (seed 0, 20% validation) is read.
        out: weights file to write (``.pt``); the sidecar is ``out`` with ``.json``.
        steps: optimiser steps (AdamW, one-cycle cosine schedule).
        batch_size: images per step, half CXRs and half negatives.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        calib_fraction: share of the training split kept out of fitting to calibrate the
            threshold (99.5th percentile of its scores, at least 0.5).
        seed: seeds the calibration split, the initialisation and every batch.
        threads: torch CPU threads.
        cache_dir: decoded-dataset cache (as for training the other models).
        command: the command line recorded in the sidecar.

    Returns:
        The sidecar dict.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    start = time.perf_counter()
    images, _ = training_images(data, "train", cache_dir)
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    n_cal = int(round(calib_fraction * images.shape[0]))
    fit, cal = images[perm[n_cal:]], images[perm[:n_cal]]
    photos = photo_bank()
    stream = GateData(fit, seed=seed, photos=photos)
    model = GateNet()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    log.info(
        "training the gate: %d parameters, %d fit + %d calibration CXRs, %d photos, %d steps",
        n_parameters(model),
        fit.shape[0],
        cal.shape[0],
        len(photos),
        steps,
    )
    running = 0.0
    for step in range(1, steps + 1):
        model.train()
        x, y, _ = stream.batch(batch_size)
        loss = F.binary_cross_entropy_with_logits(model.logits(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 100 == 0 or step == steps:
            log.info(
                "step %d/%d  loss %.4f  %.0f s", step, steps, running, time.perf_counter() - start
            )
    model.eval()

    cal_scores = detector_scores(model, cal)
    fit_scores = detector_scores(model, fit)
    threshold = detector_threshold(cal_scores)
    all_scores = torch.cat([fit_scores, cal_scores])
    # a fresh, differently seeded stream: how the training families score after training
    check = GateData(cal, seed=seed + 1000, photos=photos)
    fam_scores: dict[str, list[float]] = {}
    for _ in range(8):
        x, _, fams = check.batch(128)
        for f, p in zip(fams, detector_scores(model, x).tolist(), strict=True):
            fam_scores.setdefault(f, []).append(p)
    families = {
        f: {"n": len(v), "refused": float(np.mean(np.asarray(v) > threshold))}
        for f, v in sorted(fam_scores.items())
    }
    meta = {
        "name": Path(out).stem,
        "kind": "ood-detector",
        "output": "p(not a frontal chest X-ray) for (B, 1, H, W) images in [-1024, 1024]",
        "detector_threshold": threshold,
        "calibration": {
            "rule": f"max({CALIBRATION_QUANTILE} quantile of the scores of the calibration "
            f"CXRs (training split, not fitted on), {MIN_DETECTOR_THRESHOLD})",
            "quantile": CALIBRATION_QUANTILE,
            "quantile_score": float(
                torch.quantile(cal_scores.double(), CALIBRATION_QUANTILE, interpolation="higher")
            ),
            "n_calibration": int(cal.shape[0]),
            "refused_calibration": float((cal_scores > threshold).double().mean()),
            "refused_training_split": float((all_scores > threshold).double().mean()),
            "n_training_split": int(all_scores.numel()),
        },
        "training_families_check": families,
        "parameters": n_parameters(model),
        "command": command,
        "data": {
            "source": str(data),
            "split": "train (seed 0, val_fraction 0.2)",
            "n_fit": int(fit.shape[0]),
            "n_calibration": int(cal.shape[0]),
        },
        "negatives": {
            "transformed_cxrs": list(TRANSFORMS),
            "procedural": [*GENERATORS, "text"],
            "photos": sorted(photos),
            "mix": dict(
                zip(("transformed", "procedural", "text", "photos"), stream.mix, strict=True)
            ),
        },
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "threads": threads,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    return export_detector(model, out, meta)


def export_detector(model: GateNet, path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``model`` as fp16 weights to ``path`` (``meta`` inside) and its JSON sidecar."""
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "architecture": type(model).__name__,
        "config": dict(model.config),
        "state_dict": state,
        "meta": meta,
    }
    write_torch(path, payload)
    sidecar = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "architecture": type(model).__name__,
        "config": dict(model.config),
        **meta,
    }
    write_json(sidecar_path(path), sidecar)
    return sidecar


# -- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``train`` the detector, or ``calibrate-ae`` an autoencoder's reconstruction error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="python -m gifsplanation.models.gate", description=__doc__.split("\n\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the detector and calibrate its threshold")
    t.add_argument("--data", required=True, help="dataset CSV or folder (training split used)")
    t.add_argument("--out", required=True, help="weights file to write (.pt; sidecar .json)")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--cache-dir", default=None, help="decoded-dataset cache folder")
    c = sub.add_parser("calibrate-ae", help="reconstruction-error threshold of an autoencoder")
    c.add_argument("autoencoder", help="registry name or checkpoint path")
    c.add_argument("--data", required=True, help="dataset CSV or folder (training split used)")
    c.add_argument("--quantile", type=float, default=CALIBRATION_QUANTILE)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--cache-dir", default=None, help="decoded-dataset cache folder")
    c.add_argument(
        "--write", action="store_true", help="store the result as 'ood' in the weights' sidecar"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = "python -m gifsplanation.models.gate " + shlex.join(argv)
    if args.cmd == "train":
        side = train_gate(
            args.data,
            args.out,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            threads=args.threads,
            cache_dir=args.cache_dir,
            command=command,
        )
        print(json.dumps({k: side[k] for k in ("file", "sha256", "detector_threshold")}))  # noqa: T201
        return
    torch.set_num_threads(args.threads)
    record = calibrate_autoencoder(
        args.autoencoder, args.data, quantile=args.quantile, cache_dir=args.cache_dir
    )
    if args.write:
        from .registry import get_autoencoder

        ae = get_autoencoder(args.autoencoder)
        side = sidecar_path(ae.weights_path)
        if not side.is_file():
            raise SystemExit(f"{side} does not exist: nothing to write the threshold into")
        write_ood_record(
            side,
            {
                **record,
                "signal": "mean |D(E(x)) - x| per image, [-1024, 1024] units",
                "split": "train (seed 0, val_fraction 0.2)",
                "command": command,
            },
        )
        log.info("wrote 'ood' into %s", side)
    print(json.dumps(record))  # noqa: T201 - command-line output


if __name__ == "__main__":
    main()
