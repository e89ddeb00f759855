"""The TorchXRayVision zoo as data (``gifsplanation.models.xrv_zoo``, read by ``gifsplanation
models`` without importing torch) equals what the installed torchxrayvision reports, so it
cannot drift from it silently; and every XRV catalogue entry is in it."""

from __future__ import annotations

import inspect

import pytest

from gifsplanation.models import list_models, xrv_zoo
from gifsplanation.models import xrv as xrv_loader

xrv = xrv_loader.import_xrv()


def reported(kind: str, weights: str) -> xrv_zoo.ZooModel:
    """What the installed torchxrayvision says about one model, as a ``ZooModel``."""
    if kind == "densenet":
        info = xrv.models.model_urls[weights]
        return xrv_zoo.ZooModel(kind, weights, info["weights_url"], tuple(info["labels"]))
    if kind == "resnetae":
        return xrv_zoo.ZooModel(kind, weights, xrv.autoencoders.model_urls[weights]["weights_url"])
    if kind == "vqgan":
        info = xrv.baseline_models.ieee8023.model_urls[weights]
        return xrv_zoo.ZooModel(
            kind,
            weights,
            info["weights_url"],
            description=info["description"],
            config_url=info["config_url"],
        )
    jf = xrv.baseline_models.jfhealthcare.DenseNet  # its URL is a literal in its constructor
    url = xrv_zoo.JF_URL if f'"{xrv_zoo.JF_URL}"' in inspect.getsource(jf) else "not in XRV"
    return xrv_zoo.ZooModel(kind, weights, url, labels=tuple(jf.targets))


@pytest.mark.parametrize("key", list(xrv_zoo.ZOO), ids=lambda k: f"{k[0]}-{k[1] or 'jf'}")
def test_the_table_equals_what_torchxrayvision_reports(key: tuple[str, str]) -> None:
    assert xrv_zoo.ZOO[key] == reported(*key)


def test_every_xrv_entry_is_in_the_table() -> None:
    entries = [e for e in list_models() if e.source == "torchxrayvision"]
    assert {(str(e.xrv_kind), str(e.xrv_weights)) for e in entries} == set(xrv_zoo.ZOO)


def test_unknown_kinds_and_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown XRV model kind"):
        xrv_zoo.weights_url("nope", "")
    with pytest.raises(KeyError):
        xrv_zoo.weights_url("densenet", "densenet121-res224-nope")
    assert xrv_zoo.config_url("densenet", "densenet121-res224-all") is None
