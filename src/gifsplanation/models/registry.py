"""One registry of named models: our bundled CXR models and the TorchXRayVision zoo.

``get_classifier(name_or_path)`` and ``get_autoencoder(name_or_path)`` return ready models
(eval mode, on ``device``) carrying provenance attributes: ``name``, ``input_size``,
``weights_path``, ``weights_sha256`` and, for classifiers, ``targets`` and
``output_kind``. A name is looked up in :data:`ENTRIES`; anything else is read as a path
to one of our checkpoints (or to an XRV weights file, recognised by its file name). The
bundled models ship inside the package and load offline; XRV entries need their weights
file in XRV's cache (or ``weights=PATH``) and say so in one clear error otherwise. XRV
weights are read by :mod:`.xrv` without unpickling code; XRV DenseNets keep only their
named outputs (see :class:`ModelEntry`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from . import xrv as xrv_loader
from .checkpoint import build_model, read_checkpoint, sha256_file

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
XRV_INPUT = "1x224x224, [-1024, 1024] (TorchXRayVision)"

DEFAULT_CLASSIFIER = "cxr-classifier"
DEFAULT_AUTOENCODER = "cxr-ae"
#: The bottleneck chosen for the bundled ``cxr-ae`` (see docs/model-card.md).
CHOSEN_AE = "cxr-ae-7x7"

XRV_DENSENET_WEIGHTS = ("all", "nih", "pc", "chex", "rsna", "mimic_nb", "mimic_ch")
COVID_TARGETS = ["COVID-19", "Non-COVID pneumonia", "Normal"]
#: Outputs of the default classifier: COVID-19 (yes/no), any pneumonia (COVID-19 or not),
#: non-COVID pneumonia (yes/no), each an independent sigmoid.
CLASSIFIER_TARGETS = ["COVID-19", "Pneumonia", "Non-COVID pneumonia"]


class UnknownModelError(KeyError, ValueError):
    """A model name that is not in the registry (nor an existing path)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelEntry:
    """A named model the registry can build.

    Attributes:
        name: registry name (``cxr-classifier``, ``xrv-densenet121-all``, ...).
        kind: ``"classifier"`` or ``"autoencoder"``.
        source: ``"bundled"`` (ships with the package) or ``"torchxrayvision"``.
        description: one line for humans.
        input: input convention.
        output: output semantics (probability/logit, how computed).
        targets: output names of a classifier (``None`` for autoencoders): output ``i`` of
            the loaded model is ``targets[i]``, and no name is empty. XRV's DenseNets
            have 18 outputs, one per pathology of XRV's default list, and leave those a
            model was not trained for unnamed (``""``); the registry's model keeps only the
            named outputs (the matching rows of the last layer and of the calibration
            thresholds), so its outputs are XRV's outputs ``xrv_outputs``.
        xrv_kind: ``"densenet"``, ``"resnetae"``, ``"jf"`` or ``"vqgan"`` for XRV entries.
        xrv_weights: XRV's own weights name.
        xrv_outputs: XRV DenseNets: for each target, its index among XRV's 18 outputs.
        bundled_file: file name under ``gifsplanation/weights`` for bundled entries.
    """

    name: str
    kind: Literal["classifier", "autoencoder"]
    source: Literal["bundled", "torchxrayvision"]
    description: str
    input: str
    output: str
    targets: list[str] | None = None
    xrv_kind: str | None = None
    xrv_weights: str | None = None
    bundled_file: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    xrv_outputs: tuple[int, ...] | None = None

    def weights_location(self, cache_dir: str | Path | None = None) -> Path:
        """Where this entry's weights file is expected on this machine."""
        if self.source == "bundled":
            return WEIGHTS_DIR / str(self.bundled_file)
        return xrv_loader.expected_path(str(self.xrv_kind), str(self.xrv_weights), cache_dir)

    def files(self, cache_dir: str | Path | None = None) -> list[tuple[Path, str | None]]:
        """Every file the entry needs, as ``(where it must be, download URL or None)``: the
        weights, then the config for the VQGAN."""
        if self.source == "bundled":
            return [(self.weights_location(), None)]
        return list(xrv_loader.expected_files(str(self.xrv_kind), str(self.xrv_weights), cache_dir))

    def available(self, cache_dir: str | Path | None = None) -> bool:
        """Whether the weights file (and config) is present (no download attempted)."""
        return all(path.is_file() for path, _ in self.files(cache_dir))


def _xrv_densenet(w: str) -> ModelEntry:
    xrv = xrv_loader.import_xrv()
    name = f"densenet121-res224-{w}"
    labels = list(xrv.models.model_urls[name]["labels"])
    keep = tuple(i for i, label in enumerate(labels) if label)
    unused = f"; XRV's {len(labels) - len(keep)} unnamed outputs dropped" if len(keep) < 18 else ""
    return ModelEntry(
        name=f"xrv-densenet121-{w}",
        kind="classifier",
        source="torchxrayvision",
        description=f"TorchXRayVision DenseNet-121 ({name})",
        input=XRV_INPUT,
        output="probability (sigmoid + XRV calibration: 0.5 = operating point)" + unused,
        targets=[labels[i] for i in keep],
        xrv_kind="densenet",
        xrv_weights=name,
        xrv_outputs=keep,
    )


def _xrv_vqgan(w: str) -> ModelEntry:
    xrv = xrv_loader.import_xrv()
    info = xrv.baseline_models.ieee8023.model_urls[f"cxr2-vqgan-768-{w}"]
    return ModelEntry(
        name=f"xrv-vqgan-768-{w}",
        kind="autoencoder",
        source="torchxrayvision",
        description="TorchXRayVision CXR VQGAN, 768x768; " + " ".join(info["description"].split()),
        input=XRV_INPUT + "; resized to 768 inside",
        output="reconstruction in [-1024, 1024], resized from 768 to the input size (224)",
        xrv_kind="vqgan",
        xrv_weights=f"cxr2-vqgan-768-{w}",
    )


@functools.cache
def _entries() -> dict[str, ModelEntry]:
    bundled_in = "1x224x224, [-1024, 1024] (TorchXRayVision convention)"
    entries = [
        ModelEntry(
            name="cxr-classifier",
            kind="classifier",
            source="bundled",
            description="small ResNet trained on COVID-QU-Ex originals only, "
            "adversarially (robust: its counterfactuals darken the lungs; docs/model-card.md)",
            input=bundled_in,
            output="probability (independent temperature-calibrated sigmoids, one per "
            "finding; operating points stored in the model)",
            targets=list(CLASSIFIER_TARGETS),
            bundled_file="cxr-classifier.pt",
        ),
        ModelEntry(
            name="cxr-classifier-accurate",
            kind="classifier",
            source="bundled",
            description="as cxr-classifier without adversarial training: higher AUC, "
            "but its counterfactuals hardly change the image (docs/model-card.md)",
            input=bundled_in,
            output="probability (independent temperature-calibrated sigmoids, one per "
            "finding; operating points stored in the model)",
            targets=list(CLASSIFIER_TARGETS),
            bundled_file="cxr-classifier-accurate.pt",
        ),
        ModelEntry(
            name="cxr-classifier-recon-softmax",
            kind="classifier",
            source="bundled",
            description="the 0.1 classifier, kept to reproduce its numbers: softmax, "
            "trained on originals and cxr-ae reconstructions",
            input=bundled_in,
            output="probability (temperature-calibrated softmax over 3 exclusive targets)",
            targets=list(COVID_TARGETS),
            bundled_file="cxr-classifier-recon-softmax.pt",
        ),
        ModelEntry(
            name="cxr-extent",
            kind="classifier",
            source="bundled",
            description="regressor of infection extent (share of the lung the infection "
            "mask covers), for counterfactual alignment",
            input=bundled_in,
            output="a share in [0, 1] (sigmoid regression head; not a probability)",
            targets=["OpacityExtent"],
            bundled_file="cxr-extent.pt",
        ),
        ModelEntry(
            name="cxr-shortcut-marker",
            kind="classifier",
            source="bundled",
            description="DEMONSTRATION ONLY: a COVID-19 classifier trained with a fabricated "
            "corner marker on most positives (a planted shortcut; docs/alignment.md)",
            input=bundled_in,
            output="probability (temperature-calibrated softmax over 3 exclusive targets)",
            targets=list(COVID_TARGETS),
            bundled_file="cxr-shortcut-marker.pt",
        ),
        ModelEntry(
            name="cxr-ae-14x14",
            kind="autoencoder",
            source="bundled",
            description="ResNet-style AE, latent 16x14x14, trained on COVID-QU-Ex",
            input=bundled_in,
            output="reconstruction in [-1024, 1024]",
            bundled_file="cxr-ae-14x14.pt",
        ),
        ModelEntry(
            name="cxr-ae-7x7",
            kind="autoencoder",
            source="bundled",
            description="ResNet-style AE, latent 64x7x7, trained on COVID-QU-Ex",
            input=bundled_in,
            output="reconstruction in [-1024, 1024]",
            bundled_file="cxr-ae-7x7.pt",
        ),
        ModelEntry(
            name="cxr-ae-sharp",
            kind="autoencoder",
            source="bundled",
            description="sharper AE (SSIM and edge loss terms), latent 32x14x14; "
            "lower IoU than cxr-ae (docs/model-card.md)",
            input=bundled_in,
            output="reconstruction in [-1024, 1024]",
            bundled_file="cxr-ae-sharp.pt",
        ),
    ]
    chosen = next(e for e in entries if e.name == CHOSEN_AE)
    entries.insert(
        1,
        ModelEntry(
            **{
                **chosen.__dict__,
                "name": "cxr-ae",
                "description": f"the default autoencoder (= {CHOSEN_AE})",
            }
        ),
    )
    entries += [_xrv_densenet(w) for w in XRV_DENSENET_WEIGHTS]
    xrv = xrv_loader.import_xrv()
    entries += [
        ModelEntry(
            name="xrv-jfhealthcare",
            kind="classifier",
            source="torchxrayvision",
            description="JF Healthcare DenseNet-121 (CheXpert), via TorchXRayVision",
            input=XRV_INPUT + "; resized to 512 and rescaled to [-2, 2] inside",
            output="probability (sigmoid)",
            targets=list(xrv.baseline_models.jfhealthcare.DenseNet.targets),
            xrv_kind="jf",
            xrv_weights="",
        ),
        ModelEntry(
            name="xrv-resnetae-101-elastic",
            kind="autoencoder",
            source="torchxrayvision",
            description="TorchXRayVision ResNet-101 autoencoder (latent 512x3x3)",
            input=XRV_INPUT + "; 224 only",
            output="reconstruction in [-1024, 1024]",
            xrv_kind="resnetae",
            xrv_weights="101-elastic",
        ),
    ]
    entries += [_xrv_vqgan(w) for w in ("sd", "msdd")]
    return {e.name: e for e in entries}


def list_models(kind: Literal["classifier", "autoencoder"] | None = None) -> list[ModelEntry]:
    """Every registered model (of one ``kind`` when given), in display order.

    Example:
        >>> [e.name for e in list_models("autoencoder")][:2]
        ['cxr-ae', 'cxr-ae-14x14']
    """
    return [e for e in _entries().values() if kind is None or e.kind == kind]


def get_entry(name: str, kind: Literal["classifier", "autoencoder"] | None = None) -> ModelEntry:
    """The entry called ``name``; an :class:`UnknownModelError` (a ``KeyError``) listing the
    valid names otherwise."""
    entries = _entries()
    e = entries.get(name)
    if e is None or (kind is not None and e.kind != kind):
        valid = ", ".join(x.name for x in list_models(kind))
        what = kind or "model"
        raise UnknownModelError(
            f"unknown {what} {name!r}; choose one of: {valid}, or a checkpoint path"
        )
    return e


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
    if key in _entries():
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
