"""The model catalogue: every named model (our bundled CXR models and the TorchXRayVision
zoo), what it computes and where its files go, without importing torch or
torchxrayvision, so that ``gifsplanation models`` starts quickly.

:mod:`.registry` loads the models (``get_classifier``, ``get_autoencoder``) and re-exports
these names. XRV entries take their outputs and descriptions from :mod:`.xrv_zoo`; an XRV
DenseNet entry keeps only its named outputs (see :class:`ModelEntry`).

Example:
    >>> entry = get_entry("xrv-densenet121-rsna")
    >>> entry.targets, entry.xrv_outputs
    (['Pneumonia', 'Lung Opacity'], (8, 16))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import xrv_zoo

#: Where the bundled models' files are (inside the package).
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
        return xrv_zoo.expected_path(str(self.xrv_kind), str(self.xrv_weights), cache_dir)

    def files(self, cache_dir: str | Path | None = None) -> list[tuple[Path, str | None]]:
        """Every file the entry needs, as ``(where it must be, download URL or None)``: the
        weights, then the config for the VQGAN."""
        if self.source == "bundled":
            return [(self.weights_location(), None)]
        return list(xrv_zoo.expected_files(str(self.xrv_kind), str(self.xrv_weights), cache_dir))

    def available(self, cache_dir: str | Path | None = None) -> bool:
        """Whether the weights file (and config) is present (no download attempted)."""
        return all(path.is_file() for path, _ in self.files(cache_dir))


def _xrv_densenet(w: str) -> ModelEntry:
    name = f"densenet121-res224-{w}"
    labels = xrv_zoo.zoo_model("densenet", name).labels
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
    info = xrv_zoo.zoo_model("vqgan", f"cxr2-vqgan-768-{w}")
    return ModelEntry(
        name=f"xrv-vqgan-768-{w}",
        kind="autoencoder",
        source="torchxrayvision",
        description="TorchXRayVision CXR VQGAN, 768x768; " + " ".join(info.description.split()),
        input=XRV_INPUT + "; resized to 768 inside",
        output="reconstruction in [-1024, 1024], resized from 768 to the input size (224)",
        xrv_kind="vqgan",
        xrv_weights=f"cxr2-vqgan-768-{w}",
    )


BUNDLED_INPUT = "1x224x224, [-1024, 1024] (TorchXRayVision convention)"
SIGMOID_OUTPUT = (
    "probability (independent temperature-calibrated sigmoids, one per finding; "
    "operating points stored in the model)"
)
SOFTMAX_OUTPUT = "probability (temperature-calibrated softmax over 3 exclusive targets)"
AE_OUTPUT = "reconstruction in [-1024, 1024]"


def _bundled(
    name: str,
    kind: Literal["classifier", "autoencoder"],
    description: str,
    output: str,
    targets: list[str] | None = None,
) -> ModelEntry:
    """A model shipped in ``gifsplanation/weights`` as ``NAME.pt``."""
    return ModelEntry(
        name=name,
        kind=kind,
        source="bundled",
        description=description,
        input=BUNDLED_INPUT,
        output=output,
        targets=targets,
        bundled_file=f"{name}.pt",
    )


@functools.cache
def _entries() -> dict[str, ModelEntry]:
    entries = [
        _bundled(
            "cxr-classifier",
            "classifier",
            "small ResNet trained on COVID-QU-Ex originals only, adversarially (robust: its "
            "counterfactuals darken the lungs; docs/model-card.md)",
            SIGMOID_OUTPUT,
            list(CLASSIFIER_TARGETS),
        ),
        _bundled(
            "cxr-classifier-accurate",
            "classifier",
            "as cxr-classifier without adversarial training: higher AUC, but its "
            "counterfactuals hardly change the image (docs/model-card.md)",
            SIGMOID_OUTPUT,
            list(CLASSIFIER_TARGETS),
        ),
        _bundled(
            "cxr-classifier-recon-softmax",
            "classifier",
            "the 0.1 classifier, kept to reproduce its numbers: softmax, trained on "
            "originals and cxr-ae reconstructions",
            SOFTMAX_OUTPUT,
            list(COVID_TARGETS),
        ),
        _bundled(
            "cxr-extent",
            "classifier",
            "regressor of infection extent (share of the lung the infection mask covers), "
            "for counterfactual alignment",
            "a share in [0, 1] (sigmoid regression head; not a probability)",
            ["OpacityExtent"],
        ),
        _bundled(
            "cxr-shortcut-marker",
            "classifier",
            "DEMONSTRATION ONLY: a COVID-19 classifier trained with a fabricated corner "
            "marker on most positives (a planted shortcut; docs/alignment.md)",
            SOFTMAX_OUTPUT,
            list(COVID_TARGETS),
        ),
        _bundled(
            "cxr-ae-14x14",
            "autoencoder",
            "ResNet-style AE, latent 16x14x14, trained on COVID-QU-Ex",
            AE_OUTPUT,
        ),
        _bundled(
            "cxr-ae-7x7",
            "autoencoder",
            "ResNet-style AE, latent 64x7x7, trained on COVID-QU-Ex",
            AE_OUTPUT,
        ),
        _bundled(
            "cxr-ae-sharp",
            "autoencoder",
            "sharper AE (SSIM and edge loss terms), latent 32x14x14; lower IoU than cxr-ae "
            "(docs/model-card.md)",
            AE_OUTPUT,
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
    entries += [
        ModelEntry(
            name="xrv-jfhealthcare",
            kind="classifier",
            source="torchxrayvision",
            description="JF Healthcare DenseNet-121 (CheXpert), via TorchXRayVision",
            input=XRV_INPUT + "; resized to 512 and rescaled to [-2, 2] inside",
            output="probability (sigmoid)",
            targets=list(xrv_zoo.zoo_model("jf", "").labels),
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
