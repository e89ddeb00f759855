"""The TorchXRayVision models we support, as data: their outputs, descriptions and URLs,
and where their files go on this machine. Imports neither torch nor torchxrayvision, so
``gifsplanation models`` lists them quickly.

:data:`ZOO` is a copy of what the installed torchxrayvision reports (``model_urls`` of
``xrv.models``, ``xrv.autoencoders`` and ``xrv.baseline_models.ieee8023``, and the JF
Healthcare model's ``targets``); ``tests/models/test_xrv_zoo.py`` checks that it still
equals it. :mod:`.xrv` builds the models.

Example:
    >>> zoo_model("densenet", "densenet121-res224-rsna").labels[8]
    'Pneumonia'
    >>> expected_path("resnetae", "101-elastic", "/tmp/xrv").name
    'nihpcrsnamimic_ch-resnet101-2-ae-test2-elastic-e250.pt'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KINDS = ("densenet", "resnetae", "jf", "vqgan")
"""XRV model kinds: the DenseNet-121 classifiers, the ResNet autoencoder, JF Healthcare's
classifier and the CXR VQGAN."""

_RELEASES = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
JF_URL = _RELEASES + "baseline_models_jfhealthcare-DenseNet121_pre_train.pth"


@dataclass(frozen=True)
class ZooModel:
    """One TorchXRayVision model as torchxrayvision describes it.

    Attributes:
        kind: one of :data:`KINDS`.
        weights: XRV's weights name (``"densenet121-res224-all"``, ``"101-elastic"``,
            ``""`` for JF Healthcare, ``"cxr2-vqgan-768-sd"``).
        weights_url: where XRV downloads the weights file from (its name is the file name
            in XRV's cache).
        labels: a classifier's outputs in XRV's order; ``""`` for an output the model was
            not trained for (XRV's DenseNets always have 18). Empty for autoencoders.
        description: XRV's description, verbatim (VQGANs only; empty otherwise).
        config_url: the config file that goes with the weights (VQGANs only).
    """

    kind: str
    weights: str
    weights_url: str
    labels: tuple[str, ...] = ()
    description: str = ""
    config_url: str | None = None


def _densenet(weights: str, file: str, labels: str) -> ZooModel:
    # labels: XRV's 18 outputs, "|"-separated, empty where XRV's list has ""
    return ZooModel(
        "densenet", f"densenet121-res224-{weights}", _RELEASES + file, tuple(labels.split("|"))
    )


_NIH = (
    "Atelectasis|Consolidation|Infiltration|Pneumothorax|Edema|Emphysema|Fibrosis|Effusion|"
    "Pneumonia|Pleural_Thickening|Cardiomegaly|Nodule|Mass|Hernia"
)
_CHEX = (
    "Atelectasis|Consolidation||Pneumothorax|Edema|||Effusion|Pneumonia||Cardiomegaly||||"
    "Lung Lesion|Fracture|Lung Opacity|Enlarged Cardiomediastinum"
)

ZOO: dict[tuple[str, str], ZooModel] = {
    (m.kind, m.weights): m
    for m in (
        _densenet(
            "all",
            "nih-pc-chex-mimic_ch-google-openi-kaggle-"
            "densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
            _NIH + "|Lung Lesion|Fracture|Lung Opacity|Enlarged Cardiomediastinum",
        ),
        _densenet(
            "nih", "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt", _NIH + "||||"
        ),
        _densenet(
            "pc",
            "pc-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
            _NIH + "||Fracture||",
        ),
        _densenet("chex", "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt", _CHEX),
        _densenet(
            "rsna",
            "kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
            "||||||||Pneumonia||||||||Lung Opacity|",
        ),
        _densenet(
            "mimic_nb", "mimic_nb-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt", _CHEX
        ),
        _densenet(
            "mimic_ch", "mimic_ch-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt", _CHEX
        ),
        ZooModel(
            "resnetae",
            "101-elastic",
            _RELEASES + "nihpcrsnamimic_ch-resnet101-2-ae-test2-elastic-e250.pt",
        ),
        ZooModel(
            "jf",
            "",
            JF_URL,
            labels=("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Effusion"),
        ),
        ZooModel(
            "vqgan",
            "cxr2-vqgan-768-sd",
            _RELEASES + "2023-07-04T06-25-02_cxr2_vqgan_768_sd.ckpt",
            description="Trained on  mimic_ch pc vin siim objectcxr chex at 768x768 "
            "resolution (306 MB).",
            config_url=_RELEASES + "2023-07-04T06-25-02_cxr2_vqgan_768_sd.yaml",
        ),
        ZooModel(
            "vqgan",
            "cxr2-vqgan-768-msdd",
            _RELEASES + "2023-07-29T17-34-14_cxr2_vqgan_768_msdd.ckpt",
            description="Trained on mimic_ch pc vin siim objectcxr chex at 768x768 "
            "resolution (1.23 GB).",
            config_url=_RELEASES + "2023-07-29T17-34-14_cxr2_vqgan_768_msdd.yaml",
        ),
    )
}
"""Every XRV model we support, by ``(kind, weights name)``."""


def check_kind(kind: str) -> None:
    """Raise a ``ValueError`` unless ``kind`` is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"unknown XRV model kind {kind!r}; expected one of {KINDS}")


def zoo_model(kind: str, weights: str) -> ZooModel:
    """The :data:`ZOO` entry of XRV weights ``weights`` for ``kind``.

    Raises:
        ValueError: ``kind`` is not one of :data:`KINDS`.
        KeyError: XRV weights we do not support.
    """
    check_kind(kind)
    model = ZOO.get((kind, weights))
    if model is None:
        raise KeyError(weights)
    return model


def default_cache_dir() -> Path:
    """XRV's weights folder (``~/.torchxrayvision/models_data``)."""
    return Path(os.path.expanduser(os.path.join("~", ".torchxrayvision", "models_data")))


def weights_url(kind: str, weights: str) -> str:
    """Download URL of XRV weights ``weights`` for ``kind`` in densenet|resnetae|jf|vqgan."""
    return zoo_model(kind, weights).weights_url


def config_url(kind: str, weights: str) -> str | None:
    """URL of the config file that goes with the weights (the VQGAN's ``.yaml``), if any."""
    if kind != "vqgan":
        return None
    return zoo_model(kind, weights).config_url


def weights_filename(kind: str, weights: str) -> str:
    """The file name XRV stores weights ``weights`` under."""
    return os.path.basename(weights_url(kind, weights))


def expected_path(kind: str, weights: str, cache_dir: str | Path | None = None) -> Path:
    """Where the weights file is looked for: ``cache_dir`` or XRV's folder."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return folder / weights_filename(kind, weights)


def expected_files(
    kind: str, weights: str, cache_dir: str | Path | None = None
) -> list[tuple[Path, str]]:
    """Every file the model needs, as ``(where it must be, URL)``: the weights, then the
    config for the VQGAN."""
    target = expected_path(kind, weights, cache_dir)
    files = [(target, weights_url(kind, weights))]
    cfg = config_url(kind, weights)
    if cfg is not None:
        files.append((target.with_name(os.path.basename(cfg)), cfg))
    return files


def config_path_for(kind: str, weights: str, weights_path: str | Path) -> Path | None:
    """The config file that goes with a local weights file: next to it, same stem, ``.yaml``
    (how XRV names its pair); ``None`` for models without a config."""
    if kind != "vqgan":
        return None
    return Path(weights_path).expanduser().with_suffix(".yaml")
