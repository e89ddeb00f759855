"""Provenance: which input, models, settings and software made an output folder.

An explanation belongs to exactly one input. Each input is identified by the SHA-256 of
its content (:func:`content_sha256`); its output folder is its name plus a short hash of
that content (:func:`folder_name`), so two files called ``x.png`` in different folders,
or two names that slug to the same text, never share a folder, whatever the input order.
A run is identified by :func:`run_key` (the output settings and the models' identities).
:func:`inspect_folder` tells whether an output folder is finished for this input and
these settings, made from another input or with other settings, left half-written by an
interrupted run of ours, or holds files we did not write.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import __version__

VERSION_PACKAGES = (
    "torch",
    "torchvision",
    "torchxrayvision",
    "numpy",
    "pillow",
    "pydicom",
    "scikit-image",
    "imageio",
    "imageio-ffmpeg",
    "matplotlib",
)
RECORD = "explanation.json"
"""Written last into an output folder: its presence (for the same input and settings)
marks the folder as finished."""
PARTIAL = ".gifsplanation-partial"
"""Written first into an output folder and removed last: an interrupted run left it."""


def package_versions(packages: Sequence[str] = VERSION_PACKAGES) -> dict[str, str | None]:
    """Versions of Python, gifsplanation and ``packages`` (default: the libraries the
    explanations depend on, :data:`VERSION_PACKAGES`); ``None`` for one not installed.

    Example:
        >>> sorted(package_versions(("numpy",)))
        ['gifsplanation', 'numpy', 'python']
    """
    out: dict[str, str | None] = {"python": platform.python_version(), "gifsplanation": __version__}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def model_identity(model: Any, hash_parameters: bool = False) -> dict[str, Any]:
    """Name, class and weight hash of a model, for provenance.

    Args:
        model: the model (registry models carry ``name`` and ``weights_sha256``).
        hash_parameters: for a model without ``weights_sha256``, record a hash of its
            parameters instead (``"params:..."``), so that two such models never share an
            identity (the experiments' caches are keyed by it).

    Example:
        >>> from torch import nn
        >>> model_identity(nn.Identity())["class"]
        'torch.nn.modules.linear.Identity'
        >>> model_identity(nn.Linear(2, 1), hash_parameters=True)["weights_sha256"][:7]
        'params:'
    """
    cls = type(model)
    sha = getattr(model, "weights_sha256", None)
    if sha is None and hash_parameters:
        sha = _parameter_digest(model)
    return {
        "name": getattr(model, "name", None) or cls.__name__,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "weights_sha256": sha,
    }


def _parameter_digest(model: Any) -> str | None:
    state_dict = getattr(model, "state_dict", None)
    if not callable(state_dict):
        return None
    h = hashlib.sha256()
    for k, v in sorted(state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return "params:" + h.hexdigest()[:16]


def run_key(settings: dict[str, Any], classifier: Any, autoencoder: Any) -> str:
    """A short hash of the output settings and the models: equal keys, equal outputs."""
    relevant = {
        **settings,
        # In-memory models without a weights hash are told apart by their parameters, so
        # a run with other weights never takes another run's folders as finished.
        "classifier": model_identity(classifier, hash_parameters=True),
        "autoencoder": model_identity(autoencoder, hash_parameters=True),
    }
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def content_sha256(source: str | os.PathLike[str] | torch.Tensor) -> str:
    """SHA-256 of a file's bytes, or of a tensor's shape and float32 values.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    if isinstance(source, torch.Tensor):
        t = source.detach().float().cpu().contiguous()
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
        return h.hexdigest()
    with open(source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def slug(text: str) -> str:
    """A folder-safe version of ``text``: letters (any script), digits, ``.``, ``-``, ``_``.

    Example:
        >>> slug("Non-COVID pneumonia"), slug("胸部 X線"), slug("../..")
        ('Non-COVID_pneumonia', '胸部_X線', 'x')
    """
    s = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", text)).strip("._-")
    return s[:80] or "x"


def folder_name(name: str, sha256: str | None) -> str:
    """An input's output folder: its slugged name plus 10 hex digits of its content hash.

    Example:
        >>> folder_name("x.png", "ab" * 32)
        'x.png-ababababab'
    """
    return f"{slug(name)}-{sha256[:10]}" if sha256 else slug(name)


class FolderState(enum.Enum):
    """What an output folder holds, for one input and one run key."""

    ABSENT = "absent"
    """No folder, or an empty one: free to write."""
    FINISHED = "finished"
    """Finished for this input and these settings: skip it."""
    PARTIAL = "partial"
    """Ours, unfinished (an interrupted run) for this input and settings: redo it."""
    OTHER_SETTINGS = "other_settings"
    """Ours, for this input, made with other settings or models."""
    OTHER_INPUT = "other_input"
    """Ours, made from a different input."""
    FOREIGN = "foreign"
    """Holds files gifsplanation did not write."""


def inspect_folder(
    folder: Path, key: str, input_sha256: str | None
) -> tuple[FolderState, dict[str, Any] | None]:
    """The :class:`FolderState` of ``folder`` and its finished record (if any)."""
    if not folder.is_dir():
        return FolderState.ABSENT, None
    record = _read_json(folder / RECORD)
    marker = _read_json(folder / PARTIAL)
    owner = record or marker
    if owner is None:
        visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
        return (FolderState.FOREIGN if visible else FolderState.ABSENT), None
    if input_sha256 is not None and owner.get("input_sha256") != input_sha256:
        return FolderState.OTHER_INPUT, None
    if owner.get("run_key") != key:
        return FolderState.OTHER_SETTINGS, None
    if record is None or marker is not None:
        return FolderState.PARTIAL, None
    outputs = record.get("outputs", {})
    if not all((folder / name).is_file() for name in outputs.values()):
        return FolderState.PARTIAL, None
    return FolderState.FINISHED, record


def conflict_message(folder: Path, state: FolderState) -> str:
    """One line saying why ``folder`` cannot be written, and the fix."""
    why = {
        FolderState.OTHER_INPUT: "holds the explanation of a different image",
        FolderState.OTHER_SETTINGS: "holds an explanation made with other settings or models",
        FolderState.FOREIGN: "holds files gifsplanation did not write",
    }[state]
    fix = (
        "move them away or choose another --out"
        if state is FolderState.FOREIGN
        else "pass --force to replace it, or choose another --out"
    )
    return f"{folder} {why}; {fix}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
