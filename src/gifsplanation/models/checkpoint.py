"""Checkpoint files: one self-describing format for training state and shipped weights.

A checkpoint is a ``torch.save`` of a plain dict (so it loads with ``weights_only=True``,
never unpickling code): ``format``, ``architecture`` (a class name from
:data:`~gifsplanation.models.architectures.ARCHITECTURES`), ``config`` (the constructor
arguments), ``state_dict`` (fp32 while training, fp16 when exported), ``extras`` (tensors
such as the autoencoder's class-mean latents) and ``meta`` (JSON-ready provenance). Writes
are atomic (temporary file + ``os.replace``); a JSON sidecar next to an exported file
records the command, data, metrics and the file's SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .architectures import ARCHITECTURES

FORMAT = "gifsplanation-checkpoint/1"


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _atomic(path: str | Path) -> Iterator[str]:
    """A temporary file next to ``path`` (mode 0644) that replaces ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder."""
    with _atomic(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write UTF-8 ``text`` to ``path`` through a temporary file in the same folder."""
    with _atomic(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def atomic_write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file."""
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", path)


def model_payload(
    model: nn.Module,
    half: bool = False,
    extras: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of ``model`` (one of our architectures)."""
    arch = type(model).__name__
    if arch not in ARCHITECTURES:
        raise TypeError(f"{arch} is not one of {sorted(ARCHITECTURES)}; cannot checkpoint it")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        extras = {k: v.half() if v.is_floating_point() else v for k, v in (extras or {}).items()}
    return {
        "format": FORMAT,
        "architecture": arch,
        "config": dict(model.config),  # type: ignore[attr-defined]
        "state_dict": state,
        "extras": dict(extras or {}),
        "meta": dict(meta or {}),
    }


def export_model(
    model: nn.Module,
    path: str | Path,
    extras: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model`` as fp16 weights to ``path`` plus a JSON sidecar (``path`` + ``.json``).

    Returns:
        The sidecar dict (``meta`` plus ``file``, ``sha256``, ``bytes``, ``architecture``,
        ``config``).
    """
    path = Path(path)
    atomic_torch_save(model_payload(model, half=True, extras=extras, meta=meta), path)
    sidecar = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "architecture": type(model).__name__,
        "config": dict(model.config),  # type: ignore[attr-defined]
        **(meta or {}),
    }
    atomic_write_json(sidecar, sidecar_path(path))
    return sidecar


def install_weights(src: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy exported weights ``src`` (and its sidecar) to ``dest``, naming ``dest`` in the
    sidecar and checking the SHA-256 on the way.

    Returns:
        The sidecar written next to ``dest``.
    """
    import json
    import shutil

    src, dest = Path(src), Path(dest)
    side = json.loads(sidecar_path(src).read_text())
    if sha256_file(src) != side["sha256"]:
        raise ValueError(f"{src} does not match the SHA-256 in {sidecar_path(src)}")
    with _atomic(dest) as tmp:
        shutil.copyfile(src, tmp)
    side["file"] = dest.name
    side["run_name"] = side.get("name")
    side["name"] = dest.stem
    atomic_write_json(side, sidecar_path(dest))
    return side


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a weights file: ``name.pt`` -> ``name.json``."""
    path = Path(path)
    return path.with_suffix(".json")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``), checking its format.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a gifsplanation checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled modules (XRV weights) and corrupt files land here
        raise ValueError(
            f"{path} is not a gifsplanation checkpoint ({type(e).__name__}); for a "
            "TorchXRayVision weights file pass it with a registry name, e.g. "
            "get_classifier('xrv-densenet121-all', weights=PATH)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gifsplanation checkpoint (format {FORMAT!r} expected)")
    return ckpt


def build_model(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a checkpoint dict in fp32 eval mode on ``device``."""
    cls = ARCHITECTURES[ckpt["architecture"]]
    model = cls(**ckpt["config"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    return model.to(device).eval()
