"""Checkpoint files: one self-describing format for training state and shipped weights.

A checkpoint is a ``torch.save`` of a plain dict (so it loads with ``weights_only=True``,
never unpickling code): ``format``, ``architecture`` (a class name from
:data:`~gifsplanation.models.architectures.ARCHITECTURES`), ``config`` (the constructor
arguments), ``state_dict`` (fp32 while training, fp16 when exported), ``extras`` (tensors
such as the autoencoder's class-mean latents) and ``meta`` (JSON-ready provenance). Writes
are atomic (:mod:`gifsplanation.files`); a JSON sidecar next to an exported file
records the command, data, metrics and the file's SHA-256.

Reading is bounded: a checkpoint's ``config`` is checked (known constructor arguments,
types, sizes) and its parameter count computed on the meta device before anything is
allocated; above :data:`MAX_PARAMETERS` it is refused, and the state dict must match the
architecture key by key and shape by shape. The training state ``last.pt`` (written by
``gifsplanation train``) is read through the model checkpoint it holds.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import atomic_path, write_json, write_torch
from .architectures import ARCHITECTURES

FORMAT = "gifsplanation-checkpoint/1"
#: Largest model a checkpoint may ask for (parameters, counted before allocating: 200 M
#: parameters are 800 MB in fp32; the bundled models have about 1 M).
MAX_PARAMETERS = 200_000_000
#: Bounds of the config fields of our architectures: (lowest, highest) for integers,
#: (most items, lowest, highest) for lists of integers.
CONFIG_BOUNDS: dict[str, tuple[int, ...]] = {
    "channels": (16, 1, 8192),
    "latent_channels": (1, 8192),
    "blocks": (0, 16),
    "pool": (1, 64),
    "input_size": (8, 4096),
}
_MAX_ITEMS = 1024  # any other list or dict in a config
_MAX_TEXT = 1024  # characters of a string in a config
_MAX_INT = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    write_torch(path, model_payload(model, half=True, extras=extras, meta=meta))
    sidecar = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "architecture": type(model).__name__,
        "config": dict(model.config),  # type: ignore[attr-defined]
        **(meta or {}),
    }
    write_json(sidecar_path(path), sidecar)
    return sidecar


def install_weights(src: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy exported weights ``src`` (and its sidecar) to ``dest``, naming ``dest`` in the
    sidecar and checking the SHA-256 on the way.

    Returns:
        The sidecar written next to ``dest``.
    """
    import shutil

    src, dest = Path(src), Path(dest)
    side = json.loads(sidecar_path(src).read_text())
    if sha256_file(src) != side["sha256"]:
        raise ValueError(f"{src} does not match the SHA-256 in {sidecar_path(src)}")
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    side["file"] = dest.name
    side["run_name"] = side.get("name")
    side["name"] = dest.stem
    write_json(sidecar_path(dest), side)
    return side


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a weights file: ``name.pt`` -> ``name.json``."""
    path = Path(path)
    return path.with_suffix(".json")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``), checking its format.

    Accepts a model checkpoint (``best.pt``, an exported ``model.pt``) and the training
    state ``last.pt`` (its ``model`` entry; ``meta`` then records ``"training_state"``
    with the epoch).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a gifsplanation checkpoint (one line, naming it).
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
    if (
        isinstance(ckpt, dict)
        and "train_config" in ckpt
        and isinstance(ckpt.get("model"), dict)
        and ckpt["model"].get("format") == FORMAT
    ):  # last.pt: the training state around a model checkpoint
        epoch = ckpt.get("epoch")
        ckpt = dict(ckpt["model"])
        meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
        ckpt["meta"] = {**meta, "training_state": {"epoch": epoch}}
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gifsplanation checkpoint (format {FORMAT!r} expected)")
    problem = _structure_problem(ckpt)
    if problem:
        raise ValueError(f"{path} is a damaged gifsplanation checkpoint: {problem}")
    return ckpt


def _structure_problem(ckpt: Mapping[str, Any]) -> str | None:
    if ckpt.get("architecture") not in ARCHITECTURES:
        return f"architecture {ckpt.get('architecture')!r} is not one of {sorted(ARCHITECTURES)}"
    if not isinstance(ckpt.get("config"), dict):
        return "config is not a dict"
    for key in ("state_dict", "extras"):
        d = ckpt.get(key, {})
        if not isinstance(d, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items()
        ):
            return f"{key} is not a dict of named tensors"
    if not isinstance(ckpt.get("meta", {}), dict):
        return "meta is not a dict"
    return None


def check_config(architecture: str, config: Any) -> dict[str, Any]:
    """Check a checkpoint's constructor arguments before anything is built.

    Every key must be an argument of the architecture's constructor; values must be plain
    data (numbers, strings, lists, dicts) of bounded size, the sizes in
    :data:`CONFIG_BOUNDS` within bounds, and the model it describes at most
    :data:`MAX_PARAMETERS` parameters (counted on the meta device: nothing allocated).

    Returns:
        The config, as a dict.

    Raises:
        ValueError: one line saying which field is wrong, or how large the model would be.

    Example:
        >>> check_config("CXRAutoencoder", {"channels": [100000, 100000]})
        Traceback (most recent call last):
        ...
        ValueError: config channels[0] = 100000 is outside [1, 8192]
    """
    cls = ARCHITECTURES.get(architecture)
    if cls is None:
        raise ValueError(f"architecture {architecture!r} is not one of {sorted(ARCHITECTURES)}")
    if not isinstance(config, dict):
        raise ValueError(f"config is a {type(config).__name__}, not a dict")
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in config.items():
        if not isinstance(key, str) or (key not in params and not takes_any) or key == "self":
            raise ValueError(f"config field {key!r} is not an argument of {architecture}")
        bounds = CONFIG_BOUNDS.get(key)
        if bounds is not None and len(bounds) == 3:
            most, lo, hi = bounds
            if not isinstance(value, list | tuple) or not 1 <= len(value) <= most:
                raise ValueError(f"config {key} must be a list of 1 to {most} integers")
            for i, v in enumerate(value):
                _check_int(f"{key}[{i}]", v, lo, hi)
        elif bounds is not None:
            _check_int(key, value, *bounds)
        else:
            _check_plain(key, value, depth=0)
    n = count_parameters(architecture, config)
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"config asks for a {architecture} of {n / 1e6:.0f} M parameters, above the "
            f"limit of {MAX_PARAMETERS / 1e6:.0f} M"
        )
    return dict(config)


def _check_int(key: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"config {key} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"config {key} = {v} is outside [{lo}, {hi}]")


def _check_plain(key: str, v: Any, depth: int) -> None:
    if v is None or isinstance(v, bool):
        return
    if isinstance(v, int):
        if abs(v) > _MAX_INT:
            raise ValueError(f"config {key} = {v} is implausibly large")
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"config {key} = {v} is not finite")
    elif isinstance(v, str):
        if len(v) > _MAX_TEXT:
            raise ValueError(f"config {key} is a string of {len(v)} characters")
    elif isinstance(v, list | tuple | dict):
        if depth >= 3 or len(v) > _MAX_ITEMS:
            raise ValueError(f"config {key} is too large or too deeply nested")
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, item in items:
            _check_plain(f"{key}[{k!r}]", item, depth + 1)
    else:
        raise ValueError(f"config {key} is a {type(v).__name__}, not plain data")


def count_parameters(architecture: str, config: Mapping[str, Any]) -> int:
    """Parameters of the model a config describes, counted on the meta device (no memory
    is allocated for them)."""
    try:
        with torch.device("meta"):
            model = ARCHITECTURES[architecture](**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config does not build a {architecture}: {e}") from None
    return sum(p.numel() for p in model.parameters())


def state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]
) -> str | None:
    """How ``got`` fails to fit a model whose state dict is ``expected`` (names and shapes;
    ``expected`` may live on the meta device), in one line; ``None`` when it fits."""
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    shapes = [
        f"{k} is {tuple(got[k].shape)}, not {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and tuple(got[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - 2} more)" if len(items) > 2 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:2])}{more}")
    return "; ".join(parts) or None


def build_model(
    ckpt: dict[str, Any], device: str | torch.device = "cpu", source: str | Path | None = None
) -> nn.Module:
    """Rebuild the model of a checkpoint dict in fp32 eval mode on ``device``.

    The config is checked (:func:`check_config`) and the state dict compared with the
    architecture on the meta device before the model is allocated.

    Args:
        ckpt: a dict from :func:`read_checkpoint`.
        device: torch device (default ``"cpu"``).
        source: the file it came from, named in errors.

    Raises:
        ValueError: one line naming ``source`` and the problem.
    """
    where = str(source) if source is not None else "checkpoint"
    problem = _structure_problem(ckpt)
    if problem:
        raise ValueError(f"{where}: {problem}")
    arch = ckpt["architecture"]
    try:
        config = check_config(arch, ckpt["config"])
    except ValueError as e:
        raise ValueError(f"{where}: refused: {e}") from None
    with torch.device("meta"):
        expected = ARCHITECTURES[arch](**config).state_dict()
    problem = state_dict_mismatch(expected, ckpt["state_dict"])
    if problem:
        raise ValueError(f"{where}: its weights do not fit its {arch} config: {problem}")
    model = ARCHITECTURES[arch](**config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    return model.to(device).eval()
