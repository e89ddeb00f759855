"""One registry of named models: our bundled CXR models and the TorchXRayVision zoo.

``get_classifier(name_or_path)`` and ``get_autoencoder(name_or_path)`` return ready models
(eval mode, on ``device``) carrying provenance attributes: ``name``, ``input_size``,
``weights_path``, ``weights_sha256`` and, for classifiers, ``targets`` and
``output_kind``. A name is looked up in the catalogue (:mod:`.catalog`: :class:`ModelEntry`,
:func:`list_models`, :func:`get_entry`, torch-free, re-exported here); anything else is
read as a path to one of our checkpoints (or to an XRV weights file, recognised by its
file name). The bundled models ship inside the package and load offline; XRV entries need
their weights file in XRV's cache (or ``weights=PATH``) and say so in one clear error
otherwise. XRV weights are read by :mod:`.xrv` without unpickling code; XRV DenseNets keep
only their named outputs (see :class:`ModelEntry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from . import xrv as xrv_loader
from .catalog import (
    CHOSEN_AE,
    CLASSIFIER_TARGETS,
    COVID_TARGETS,
    DEFAULT_AUTOENCODER,
    DEFAULT_CLASSIFIER,
    WEIGHTS_DIR,
    XRV_DENSENET_WEIGHTS,
    XRV_INPUT,
    ModelEntry,
    UnknownModelError,
    get_entry,
    list_models,
)
from .checkpoint import build_model, read_checkpoint, sha256_file

__all__ = [  # the catalogue's names are re-exported: they were defined here
    "CHOSEN_AE",
    "CLASSIFIER_TARGETS",
    "COVID_TARGETS",
    "DEFAULT_AUTOENCODER",
    "DEFAULT_CLASSIFIER",
    "WEIGHTS_DIR",
    "XRV_DENSENET_WEIGHTS",
    "XRV_INPUT",
    "ModelEntry",
    "UnknownModelError",
    "get_autoencoder",
    "get_classifier",
    "get_entry",
    "list_models",
]


def get_classifier(
    name_or_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> nn.Module:
    """A classifier by registry name or checkpoint path, ready for Latent Shift.

    Args:
        name_or_path: a name from :func:`list_models` (default ``"cxr-classifier"``), a
            path to a checkpoint written by ``gifsplanation train classifier``, or a path
            to a TorchXRayVision weights file (recognised by XRV's file name).
        device: torch device (default ``"cpu"``).
        weights: a local weights file for the named entry (XRV format for XRV entries, our
            checkpoint for bundled ones); overrides the cache and the bundled file.
        cache_dir: XRV weights folder (default ``~/.torchxrayvision/models_data``).
        download: let TorchXRayVision download missing weights (default ``True``).

    Returns:
        The model in eval mode with ``name``, ``targets``, ``output_kind``,
        ``input_size``, ``weights_path`` and ``weights_sha256`` attributes.

    Raises:
        UnknownModelError: unknown name (a ``KeyError``; the message lists the valid ones).
        WeightsUnavailableError: named weights missing and not downloadable.

    Example:
        >>> clf = get_classifier()  # doctest: +SKIP
        >>> clf.targets, clf.output_kind  # doctest: +SKIP
        (['COVID-19', 'Non-COVID pneumonia', 'Normal'], 'probability')
    """
    return _get("classifier", name_or_path, device, weights, cache_dir, download)


def get_autoencoder(
    name_or_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> nn.Module:
    """An autoencoder by registry name or checkpoint path (``encode``/``decode``).

    Args:
        name_or_path: a name from :func:`list_models` (default ``"cxr-ae"``) or a path to a
            checkpoint written by ``gifsplanation train autoencoder`` (or an XRV AE file).
        device: torch device (default ``"cpu"``).
        weights: a local weights file for the named entry.
        cache_dir: XRV weights folder (default ``~/.torchxrayvision/models_data``).
        download: let TorchXRayVision download missing weights (default ``True``).

    Returns:
        The autoencoder in eval mode with ``name``, ``input_size``, ``weights_path``,
        ``weights_sha256`` and ``ood_gate`` (the out-of-distribution gate
        :class:`~gifsplanation.LatentShift` applies: the bundled frontal-CXR detector, plus
        this autoencoder's reconstruction-error threshold when its sidecar has one).

    Example:
        >>> ae = get_autoencoder()  # doctest: +SKIP
        >>> ae.decode(ae.encode(demo_image())).shape  # doctest: +SKIP
        torch.Size([1, 1, 224, 224])
    """
    from .gate import gate_for_autoencoder

    model = _get("autoencoder", name_or_path, device, weights, cache_dir, download)
    # The out-of-distribution gate LatentShift applies by default (see models/gate.py).
    model.ood_gate = gate_for_autoencoder(model)
    return model


def _get(
    kind: Literal["classifier", "autoencoder"],
    name_or_path: str | Path | None,
    device: str | torch.device,
    weights: str | Path | None,
    cache_dir: str | Path | None,
    download: bool,
) -> nn.Module:
    if name_or_path is None:
        name_or_path = DEFAULT_CLASSIFIER if kind == "classifier" else DEFAULT_AUTOENCODER
    key = str(name_or_path)
    if key in {e.name for e in list_models()}:
        entry = get_entry(key, kind)
        return _load_entry(entry, device, weights, cache_dir, download)
    path = Path(key).expanduser()
    if path.is_file():
        for entry in list_models(kind):  # an XRV weights file under its own name
            if entry.source != "torchxrayvision":
                continue
            names = [p.name for p, _ in entry.files()]
            if path.name in names:  # the weights, or the VQGAN's config next to them
                return _load_entry(entry, device, path.with_name(names[0]), cache_dir, download)
        return _load_checkpoint(path, kind, device, name=path.stem)
    if any(sep in key for sep in ("/", "\\")) or path.suffix:
        raise FileNotFoundError(f"{kind} checkpoint {path} does not exist")
    get_entry(key, kind)  # raises KeyError listing the names
    raise AssertionError("unreachable")


def _load_checkpoint(
    path: Path, kind: str, device: str | torch.device, name: str, **extra: Any
) -> nn.Module:
    ckpt = read_checkpoint(path)
    model = build_model(ckpt, device, source=path)
    arch_kind = "autoencoder" if hasattr(model, "encode") else "classifier"
    if arch_kind != kind:
        raise ValueError(f"{path} holds a {arch_kind} ({ckpt['architecture']}), not a {kind}")
    _tag(model, name=name, path=path, sha=sha256_file(path))
    model.checkpoint_meta = ckpt.get("meta", {})
    model.checkpoint_extras = {k: v.float() for k, v in ckpt.get("extras", {}).items()}
    return model


def _load_entry(
    entry: ModelEntry,
    device: str | torch.device,
    weights: str | Path | None,
    cache_dir: str | Path | None,
    download: bool,
) -> nn.Module:
    if entry.source == "bundled":
        path = Path(weights) if weights is not None else entry.weights_location()
        if not path.is_file():
            raise xrv_loader.WeightsUnavailableError(
                f"bundled weights for {entry.name!r} are missing at {path}: the package was "
                "installed without its weights; reinstall gifsplanation, or train them with "
                "scripts/train-bundled-models.sh, or pass a checkpoint path"
            )
        return _load_checkpoint(path, entry.kind, device, name=entry.name)
    model, path = xrv_loader.build(
        entry.name, str(entry.xrv_kind), str(entry.xrv_weights), weights, cache_dir, download
    )
    model = model.to(device).eval()
    _tag(model, name=entry.name, path=path, sha=sha256_file(path))
    if entry.xrv_kind == "vqgan":
        model.config_sha256 = sha256_file(str(model.config_path))
    if entry.kind == "classifier":
        model.output_kind = "probability"
        if entry.xrv_kind == "jf":
            model.apply_sigmoid = True
    return model


def _tag(model: nn.Module, name: str, path: Path, sha: str) -> None:
    model.name = name
    model.weights_path = str(path)
    model.weights_sha256 = sha
    if not hasattr(model, "input_size") or not isinstance(model.input_size, int):
        model.input_size = 224
