"""TorchXRayVision models built with torchxrayvision's own constructors, offline-friendly.

XRV constructors download their weights into ``~/.torchxrayvision/models_data/`` (or a
``cache_dir``) on first use. This module finds out beforehand which file a model needs and
where, builds the model from a local file when one is given (by pointing the constructor at
a temporary cache folder holding a link to it), keeps XRV's process-wide
``warnings.filterwarnings("ignore")`` and download prints out of the caller's process, and
turns a failed or forbidden download into one :class:`WeightsUnavailableError` that says
which file to put where.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

log = logging.getLogger(__name__)

JF_URL = (
    "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
    "baseline_models_jfhealthcare-DenseNet121_pre_train.pth"
)


class WeightsUnavailableError(RuntimeError):
    """Named weights are neither on this machine nor downloadable; the message says which
    file to put where."""


def import_xrv() -> types.ModuleType:
    """Import torchxrayvision without letting it silence warnings for the whole process."""
    with warnings.catch_warnings():
        import torchxrayvision as xrv  # noqa: PLC0415
        import torchxrayvision.baseline_models.jfhealthcare  # noqa: F401, PLC0415
    return xrv


def default_cache_dir() -> Path:
    """XRV's weights folder (``~/.torchxrayvision/models_data``)."""
    return Path(os.path.expanduser(os.path.join("~", ".torchxrayvision", "models_data")))


def weights_url(kind: str, weights: str) -> str:
    """Download URL of XRV weights ``weights`` for ``kind`` in densenet|resnetae|jf."""
    xrv = import_xrv()
    if kind == "densenet":
        return xrv.models.model_urls[weights]["weights_url"]
    if kind == "resnetae":
        return xrv.autoencoders.model_urls[weights]["weights_url"]
    if kind == "jf":
        return JF_URL
    raise ValueError(f"unknown XRV model kind {kind!r}")


def weights_filename(kind: str, weights: str) -> str:
    """The file name XRV stores weights ``weights`` under."""
    return os.path.basename(weights_url(kind, weights))


def expected_path(kind: str, weights: str, cache_dir: str | Path | None = None) -> Path:
    """Where XRV looks for the weights file (JF ignores ``cache_dir``: always ``~``)."""
    folder = Path(cache_dir).expanduser() if cache_dir and kind != "jf" else default_cache_dir()
    return folder / weights_filename(kind, weights)


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Capture XRV's prints and keep its warning filters local."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        yield buf
    if buf.getvalue().strip():
        log.debug("torchxrayvision: %s", buf.getvalue().strip())


@contextlib.contextmanager
def _local_weights(kind: str, weights: str, path: Path) -> Iterator[Path]:
    """A temporary cache folder where ``path`` appears under the name XRV expects.

    For JF Healthcare, whose constructor only looks in ``~/.torchxrayvision``, ``HOME`` points
    at the temporary folder for the duration of the call.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    with tempfile.TemporaryDirectory(prefix="gifsplanation-xrv-") as tmp:
        folder = Path(tmp) / ".torchxrayvision" / "models_data" if kind == "jf" else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / weights_filename(kind, weights)
        try:
            link.symlink_to(path)
        except OSError:  # no symlinks (some filesystems): copy
            import shutil

            shutil.copyfile(path, link)
        if kind == "jf":
            old = os.environ.get("HOME")
            os.environ["HOME"] = tmp
            try:
                yield folder
            finally:
                if old is None:
                    os.environ.pop("HOME", None)
                else:
                    os.environ["HOME"] = old
        else:
            yield folder


def _unavailable(name: str, kind: str, weights: str, cache_dir: Any, why: str) -> None:
    target = expected_path(kind, weights, cache_dir)
    role = "autoencoder" if kind == "resnetae" else "classifier"
    raise WeightsUnavailableError(
        f"weights for {name!r} are not on this machine and {why}. Download "
        f"{weights_url(kind, weights)} and save it as {target}; or pass a local copy: on the "
        f"command line as --{role} PATH (keep the file name {target.name}), in Python as "
        f"get_{role}({name!r}, weights=PATH)"
    ) from None


def build(
    name: str,
    kind: str,
    weights: str,
    weights_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> tuple[nn.Module, Path]:
    """Build an XRV model with its own constructor; returns ``(model, weights file)``.

    Args:
        name: registry name (for messages).
        kind: ``"densenet"``, ``"resnetae"`` or ``"jf"``.
        weights: XRV's weights name (``"densenet121-res224-all"``, ``"101-elastic"``, ``""``).
        weights_path: a local weights file in XRV's format (overrides the cache).
        cache_dir: XRV cache folder (default ``~/.torchxrayvision/models_data``).
        download: let XRV download missing weights (default ``True``).

    Raises:
        WeightsUnavailableError: the weights are missing and cannot be downloaded.
    """
    xrv = import_xrv()
    if weights_path is not None:
        with _local_weights(kind, weights, Path(weights_path)) as folder:
            model = _construct(xrv, kind, weights, folder)
        return model, Path(weights_path).expanduser().resolve()
    target = expected_path(kind, weights, cache_dir)
    if not target.is_file() and not download:
        _unavailable(name, kind, weights, cache_dir, "downloading is off")
    try:
        model = _construct(xrv, kind, weights, cache_dir)
    except Exception as e:  # requests' ConnectionError, HTTPError, timeouts, OSError …
        if target.is_file():
            raise
        _unavailable(
            name, kind, weights, cache_dir, f"could not be downloaded ({type(e).__name__})"
        )
    return model, target


def _construct(xrv: types.ModuleType, kind: str, weights: str, cache_dir: Any) -> nn.Module:
    with _quiet():
        if kind == "densenet":
            return xrv.models.DenseNet(
                weights=weights, cache_dir=str(cache_dir) if cache_dir else None
            )
        if kind == "resnetae":
            return xrv.autoencoders.ResNetAE(
                weights=weights, cache_dir=str(cache_dir) if cache_dir else None
            )
        if kind == "jf":
            # The JF backbone first fetches torchvision's ImageNet DenseNet-121, which its own
            # weights then overwrite entirely: skip that download (load_state_dict is strict=False).
            backbone = xrv.baseline_models.jfhealthcare.model.backbone.densenet
            saved = backbone.model_zoo
            backbone.model_zoo = types.SimpleNamespace(load_url=lambda *a, **k: {})
            try:
                return xrv.baseline_models.jfhealthcare.DenseNet()
            finally:
                backbone.model_zoo = saved
    raise ValueError(f"unknown XRV model kind {kind!r}")
