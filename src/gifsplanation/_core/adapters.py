"""Uniform views of the two models Latent Shift needs.

Users bring a classifier (any ``nn.Module``) and an autoencoder (anything with ``encode``
and ``decode``). This module wraps both so the engine sees one convention: the classifier
returns *probabilities* for named targets (a logit model is passed through a sigmoid once,
a probability model never is), and the autoencoder maps images to latents and back,
whatever its ``decode`` signature. It also validates inputs, naming the problem and the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

OutputKind = Literal["probability", "logit"]
_OUTPUT_KINDS = ("probability", "logit")


def infer_output_kind(model: nn.Module) -> OutputKind | None:
    """Say whether ``model`` returns probabilities or logits, when the model itself tells.

    Rules, in order: an ``output_kind`` attribute (our convention, set by every model this
    package builds); TorchXRayVision's conventions (``op_threshs`` set means sigmoid plus
    calibration, ``apply_sigmoid`` true means sigmoid); otherwise ``None`` (unknown).

    Example:
        >>> import torchxrayvision as xrv
        >>> infer_output_kind(xrv.models.DenseNet(weights=None))
        'logit'
    """
    kind = getattr(model, "output_kind", None)
    if kind is not None:
        if kind not in _OUTPUT_KINDS:
            raise ValueError(
                f"{type(model).__name__}.output_kind is {kind!r}; expected one of {_OUTPUT_KINDS}"
            )
        return kind
    if getattr(model, "op_threshs", None) is not None:
        return "probability"
    if hasattr(model, "apply_sigmoid"):
        return "probability" if model.apply_sigmoid else "logit"
    return None


def model_targets(model: nn.Module) -> list[str] | None:
    """The output names of ``model`` (``targets``, else XRV's ``pathologies``), or ``None``."""
    for attr in ("targets", "pathologies"):
        names = getattr(model, attr, None)
        if names is not None:
            return [str(n) for n in names]
    return None


def resolve_target(target: int | str, targets: Sequence[str] | None, n_outputs: int | None) -> int:
    """Turn a target into an output index; the one rule used everywhere.

    A ``str`` is an output name (case-insensitive) or, when no name matches, a string of
    digits giving an index (as typed on a command line); an ``int`` is an index. Indices
    run from 0 to ``n_outputs − 1`` (negative indices are refused: they silently mean
    "from the end" in Python, which is never what a user of a CXR model means). Raises a
    ``ValueError`` that lists the valid choices.

    Example:
        >>> resolve_target("covid-19", ["COVID-19", "Normal"], 2), resolve_target("1", None, 2)
        (0, 1)
    """
    if isinstance(target, bool):
        raise TypeError(f"target must be an int index or a str name, not {target!r}")
    if isinstance(target, str):
        text = target.strip()
        lowered = [t.lower() for t in targets or []]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if not text.isdigit():
            if not targets:
                raise ValueError(
                    f"target {target!r} given by name, but the classifier has no target names; "
                    "pass an index, or targets=[...] to LatentShift"
                )
            valid = ", ".join(repr(t) for t in targets if t)
            raise ValueError(f"unknown target {target!r}; valid targets: {valid}")
        target = int(text)
    if isinstance(target, int):
        if target < 0 or (n_outputs is not None and target >= n_outputs):
            names = f" ({', '.join(repr(t) for t in targets)})" if targets else ""
            span = f"0..{n_outputs - 1}" if n_outputs else "0 or more"
            raise ValueError(
                f"target index {target} is out of range: use {span}"
                + (f"; the classifier has {n_outputs} outputs{names}" if n_outputs else "")
            )
        return target
    raise TypeError(f"target must be an int index or a str name, not {type(target).__name__}")


class Classifier:
    """A classifier seen as ``images -> probabilities (B, n_targets)``.

    Args:
        model: any ``nn.Module`` mapping ``(B, C, H, W)`` images to ``(B, n_outputs)``.
        output: ``"probability"`` or ``"logit"``; ``None`` (default) asks the model
            (:func:`infer_output_kind`) and raises if it cannot tell.
        targets: output names; default the model's ``targets``/``pathologies``.
    """

    def __init__(
        self,
        model: nn.Module,
        output: OutputKind | None = None,
        targets: Sequence[str] | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"classifier must be a callable nn.Module, got {type(model).__name__}")
        kind = output if output is not None else infer_output_kind(model)
        if kind is None:
            raise ValueError(
                f"cannot tell whether {type(model).__name__} returns probabilities or logits; "
                "pass output='probability' or output='logit' (a sigmoid is applied to logits "
                "only, never on top of probabilities)"
            )
        if kind not in _OUTPUT_KINDS:
            raise ValueError(f"output must be one of {_OUTPUT_KINDS}, got {kind!r}")
        self.model = model
        self.output_kind: OutputKind = kind
        self.targets = list(targets) if targets is not None else model_targets(model)
        # Declared input channels, if the model says; TorchXRayVision's JF model takes one
        # channel although its first convolution has three, so a conv is only a hint.
        self.in_channels: int | None = getattr(model, "in_channels", None)
        self.conv_channels = _first_conv_channels(model)

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """The model's own output, ``(B, n_outputs)`` (logits or probabilities)."""
        out = self.model(images)
        return out[:, None] if out.ndim == 1 else out

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.raw(images)
        return torch.sigmoid(out) if self.output_kind == "logit" else out

    def target_index(self, target: int | str, n_outputs: int | None = None) -> int:
        """The output index of ``target`` (:func:`resolve_target`)."""
        n = n_outputs if n_outputs is not None else (len(self.targets) if self.targets else None)
        return resolve_target(target, self.targets, n)


class Autoencoder:
    """An autoencoder seen as ``encode(images) -> z`` and ``decode(z, size) -> images``.

    Accepts any object with ``encode`` and ``decode`` methods. If ``decode`` takes an
    ``image_size`` argument (TorchXRayVision's ``ResNetAE``), the output size is passed so
    batched decoding works; a ``dict`` returned by ``decode`` is read at its ``"out"`` key.
    """

    def __init__(self, model: Any) -> None:
        missing = [m for m in ("encode", "decode") if not callable(getattr(model, m, None))]
        if missing:
            raise TypeError(
                f"autoencoder {type(model).__name__} has no {' or '.join(missing)} method; "
                "an autoencoder must provide encode(images) -> z and decode(z) -> images"
            )
        self.model = model
        try:
            params = inspect.signature(model.decode).parameters
        except (TypeError, ValueError):
            params = {}
        self._decode_takes_size = "image_size" in params

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        z = self.model.encode(images)
        if isinstance(z, dict):
            z = z["z"]
        return z

    def decode(self, z: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
        if self._decode_takes_size:
            out = self.model.decode(z, image_size=list(image_size))
        else:
            out = self.model.decode(z)
        if isinstance(out, dict):
            out = out["out"]
        if tuple(out.shape[-2:]) != tuple(image_size):
            out = nn.functional.interpolate(
                out, size=tuple(image_size), mode="bilinear", align_corners=False
            )
        return out


def _first_conv_channels(model: Any) -> int | None:
    """Input channels of the first convolution in ``model`` (``None`` if there is none)."""
    if isinstance(model, nn.Module):
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                return m.in_channels
    return None


def model_device(model: Any) -> torch.device | None:
    """The device of the first parameter of ``model`` (or of its ``.model``), if any."""
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if isinstance(module, nn.Module):
        for p in module.parameters():
            return p.device
    return None


def check_images(x: Any, channels: int | None = None) -> torch.Tensor:
    """Validate a batch of images; return it as a float tensor of shape ``(B, C, H, W)``.

    A single ``(C, H, W)`` image is given a batch axis. Raises ``TypeError`` for
    non-tensors and ``ValueError`` for a wrong shape, a wrong channel count, an empty batch
    or NaN/inf pixels.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}; "
            "load files with gifsplanation.io.load_image"
        )
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"images have {x.shape[1]} channel(s) but the models expect {channels}; "
            "chest X-rays are single-channel: convert RGB to grayscale first"
        )
    if not x.is_floating_point():
        x = x.float()
    bad = ~torch.isfinite(x)
    if bad.any():
        which = sorted({int(i) for i in bad.flatten(1).any(1).nonzero().flatten()})
        raise ValueError(f"images {which} of the batch contain NaN or inf pixels")
    return x
