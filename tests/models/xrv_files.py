"""Helpers for the TorchXRayVision tests: weight files in XRV's formats written locally
(random weights, XRV's own architectures), malicious pickles, and a tiny VQGAN."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import torch

from gifsplanation.models import xrv as xrv_loader

xrv = xrv_loader.import_xrv()


class ShellPayload:
    """Unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class PythonPayload:
    """Unpickling it runs Python code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class HiddenPayload(torch.nn.Module):
    """A genuine-looking module (a conv layer) whose extra attribute runs a command."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        self.extra = ShellPayload(marker)


PAYLOADS = {"shell": ShellPayload, "python": PythonPayload, "hidden": HiddenPayload}


def write_malicious(path: Path, marker: Path, payload: str = "shell", legacy: bool = False):
    """Write a pickle under ``path`` whose loading with plain ``torch.load`` creates
    ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(PAYLOADS[payload](marker), path, _use_new_zipfile_serialization=not legacy)
    return path


TINY_VQGAN_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 4
    n_embed: 16
    ddconfig:
      double_z: false
      z_channels: 4
      resolution: {resolution}
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult:
{ch_mult}
      num_res_blocks: 1
      attn_resolutions:
      - 16
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: false
        disc_in_channels: 3
"""


def vqgan_names(weights: str) -> tuple[str, str]:
    """(checkpoint, config) file names XRV uses for VQGAN ``weights``."""
    ckpt = xrv_loader.weights_filename("vqgan", weights)
    return ckpt, Path(ckpt).with_suffix(".yaml").name


def write_tiny_vqgan_config(
    folder: Path, weights: str, resolution: int = 64, levels: int = 3
) -> Path:
    """The tiny config (a 32-channel VQGAN, ``levels`` resolutions) under XRV's name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / vqgan_names(weights)[1]
    ch_mult = "\n".join(["      - 1"] * levels)
    path.write_text(TINY_VQGAN_YAML.format(resolution=resolution, ch_mult=ch_mult))
    return path


def write_tiny_vqgan(
    folder: Path, weights: str = "cxr2-vqgan-768-sd", resolution: int = 64, levels: int = 3
):
    """A tiny VQGAN saved as a Lightning checkpoint (its state dict with training-only
    ``loss.*`` entries, counters, and a callback object of a class that is not installed)
    plus its config, under XRV's file names. Returns ``(checkpoint, config)``."""
    config = write_tiny_vqgan_config(folder, weights, resolution, levels)
    params = xrv_loader.vqgan_config(config)
    torch.manual_seed(0)
    model = xrv.baseline_models.ieee8023.VQModel(
        ddconfig=params["ddconfig"], n_embed=params["n_embed"], embed_dim=params["embed_dim"]
    )
    # A pytorch_lightning class, importable only while saving (as in a real checkpoint,
    # the class is not installed where the checkpoint is read).
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.mc"]
    saved = {n: sys.modules.get(n) for n in names}
    module = types.ModuleType(names[-1])
    callback_cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    module.ModelCheckpoint = callback_cls
    for n in names:
        sys.modules[n] = module if n == names[-1] else types.ModuleType(n)
    try:
        callback = callback_cls()
        callback.best_model_score = torch.tensor(0.25)
        state = dict(model.state_dict())
        state["loss.discriminator.main.0.weight"] = torch.zeros(2, 3, 4, 4)
        ckpt = {
            "epoch": 3,
            "global_step": 1200,
            "pytorch-lightning_version": "1.0.8",
            "callbacks": {callback_cls: {"best_model_score": torch.tensor(0.25)}},
            "checkpoint_callback": callback,
            "state_dict": state,
        }
        path = folder / vqgan_names(weights)[0]
        torch.save(ckpt, path)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return path, config


def write_xrv_densenet(folder: Path, weights: str, legacy: bool = False, seed: int = 0) -> Path:
    """A randomly initialised XRV DenseNet saved as XRV saves its weights: a pickled whole
    module (``legacy``: in torch's pre-1.6 format, like XRV's release files)."""
    torch.manual_seed(seed)
    n = len(xrv.models.model_urls[weights]["labels"])
    model = xrv.models.DenseNet(weights=None, num_classes=n)
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = folder / xrv_loader.weights_filename("densenet", weights)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model, path, _use_new_zipfile_serialization=not legacy)
    return path
