"""Our checkpoints: a crafted config is bounded before anything is allocated, weights must
fit the config, errors are one line naming the file, and the training state ``last.pt``
loads like ``best.pt``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from gifsplanation.models import CXRAutoencoder, CXRClassifier, get_autoencoder, get_classifier
from gifsplanation.models.checkpoint import (
    MAX_PARAMETERS,
    build_model,
    check_config,
    count_parameters,
    model_payload,
    read_checkpoint,
)
from gifsplanation.models.training import TrainConfig, train


def _crafted(tmp_path: Path, arch: str = "CXRClassifier", **change) -> Path:
    model = CXRClassifier(targets=["a", "b"], channels=(4, 8))
    payload = model_payload(model)
    payload["architecture"] = arch
    payload["config"].update(change.pop("config", {}))
    payload.update(change)
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "config, message",
    [
        ({"channels": [100000, 100000, 100000, 100000]}, r"channels\[0\] = 100000 is outside"),
        ({"channels": [8192] * 16, "blocks": 16}, r"M parameters, above the limit of 200 M"),
        ({"blocks": 10**9}, r"blocks = 1000000000 is outside"),
        ({"blocks": "1"}, r"blocks must be an integer"),
        ({"channels": []}, r"channels must be a list of 1 to 16"),
        ({"targets": ["x"] * 5000}, r"targets .*too large"),
        ({"temperature": float("nan")}, r"temperature = nan is not finite"),
        ({"evil": 1}, r"'evil' is not an argument of CXRClassifier"),
        ({"head": "softmax-ish"}, r"does not build a CXRClassifier"),
    ],
)
def test_crafted_config_is_refused_before_allocation(
    config: dict, message: str, tmp_path: Path
) -> None:
    path = _crafted(tmp_path, config=config)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as err:
        get_classifier(path)
    assert time.perf_counter() - start < 10  # nothing of that size was built
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_parameter_count_is_computed_without_allocating() -> None:
    n = count_parameters("CXRAutoencoder", {"channels": [8192] * 16, "blocks": 16})
    assert n > 100 * MAX_PARAMETERS  # counted on the meta device: no memory for it
    small = CXRAutoencoder(channels=(4, 8), latent_channels=2)
    assert count_parameters("CXRAutoencoder", small.config) == sum(
        p.numel() for p in small.parameters()
    )
    assert check_config("CXRAutoencoder", small.config) == small.config


def test_weights_must_fit_the_config(tmp_path: Path) -> None:
    bigger = CXRClassifier(targets=["a", "b"], channels=(4, 16)).state_dict()
    path = _crafted(tmp_path, state_dict=bigger)  # config says channels (4, 8)
    with pytest.raises(ValueError, match=r"do not fit its CXRClassifier config: .*wrong shape"):
        get_classifier(path)
    path = _crafted(tmp_path, state_dict={"fc.weight": torch.zeros(2, 8)})
    with pytest.raises(ValueError, match=r"missing"):
        get_classifier(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architecture": "os.system"}, r"architecture 'os.system' is not one of"),
        ({"config": [1, 2]}, r"config is not a dict"),
        ({"state_dict": {"fc.weight": [1.0]}}, r"state_dict is not a dict of named tensors"),
        ({"extras": {"z": "not a tensor"}}, r"extras is not a dict of named tensors"),
    ],
)
def test_damaged_checkpoint_structure(change: dict, message: str, tmp_path: Path) -> None:
    model = CXRClassifier(targets=["a", "b"], channels=(4, 8))
    payload = {**model_payload(model), **change}
    path = tmp_path / "damaged.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=message) as err:
        get_classifier(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_build_model_checks_a_dict_too() -> None:
    ckpt = model_payload(CXRAutoencoder(channels=(4, 8), latent_channels=2))
    ckpt["config"]["channels"] = [4, 100000]
    with pytest.raises(ValueError, match="refused: config channels"):
        build_model(ckpt)


def _cfg(kind: str, data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        kind=kind,  # type: ignore[arg-type]
        data=str(data),
        out=str(out),
        epochs=1,
        batch_size=4,
        size=32,
        channels=[4, 8],
        latent_channels=2,
        seed=0,
        max_steps=1,
    )


@pytest.mark.parametrize("kind", ["classifier", "autoencoder"])
def test_training_state_last_pt_loads_like_best_pt(
    kind: str, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / kind
    train(_cfg(kind, tiny_dataset, out))
    get = get_classifier if kind == "classifier" else get_autoencoder
    last, best = get(out / "last.pt"), get(out / "best.pt")
    assert type(last) is type(best) and last.name == "last"
    assert last.checkpoint_meta["training_state"]["epoch"] == 1
    x = torch.randn(2, 1, 32, 32) * 300
    with torch.no_grad():
        torch.testing.assert_close(last(x), best(x))  # one epoch: the same weights
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["architecture"] in ("CXRClassifier", "CXRAutoencoder")
    assert "optimizer" not in ckpt and "train_config" not in ckpt
    other = get_autoencoder if kind == "classifier" else get_classifier
    with pytest.raises(ValueError, match="holds a"):
        other(out / "last.pt")
