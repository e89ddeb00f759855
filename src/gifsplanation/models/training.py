"""Training of the bundled autoencoder and classifier: seeded, resumable, recorded.

:func:`train` reads a :class:`~gifsplanation.datasets.MaskedCXRDataset` (train and val
splits), decodes it once into a ``uint8`` tensor (optionally cached on disk outside the
repository), and runs AdamW with a cosine schedule and augmentation
(:mod:`~gifsplanation.models.augment`; light by default).
After every epoch it validates, writes ``last.pt`` (model, optimiser, scheduler, history:
``resume=True`` continues from it) and ``best.pt``, and updates ``run.json``, a JSON record
of the configuration, data, per-epoch metrics and timing. At the end it exports the best
model as fp16 weights (``model.pt``) with a JSON sidecar. The classifier's softmax is
calibrated by temperature scaling on the validation split (AUC does not change); the
autoencoder stores the mean latent of each training class (for the demo image). A
classifier with ``head="regression"`` learns quantities read from the masks instead of
labels (:data:`QUANTITIES`, e.g. the share of the lung the infection covers).
"""

from __future__ import annotations

import hashlib
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..datasets import MaskedCXRDataset, cached_masks
from ..files import write_json, write_torch
from ..pixels import to_uint8, uint8_to_model
from .architectures import CXRAutoencoder, CXRClassifier, n_parameters, sharp_loss
from .augment import augment_batch
from .checkpoint import build_model, export_model, model_payload, read_checkpoint
from .metrics import classifier_metrics, operating_points, realism, regression_metrics

log = logging.getLogger(__name__)

Kind = Literal["autoencoder", "classifier"]


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in ``run.json``).

    Args:
        kind: ``"autoencoder"`` or ``"classifier"``.
        data: CSV or label-folder dataset (see :class:`MaskedCXRDataset`).
        out: run folder (checkpoints, ``run.json``, ``model.pt``).
        epochs: passes over the training split.
        batch_size: images per step.
        lr: peak learning rate (AdamW, cosine decay to 5% with one warm-up epoch).
        weight_decay: AdamW weight decay.
        seed: seeds the split, the initialisation, the order and the augmentation.
        size: input side (224 for the XRV convention).
        val_fraction: share of each label held out.
        channels: stage widths of the network.
        latent_channels: autoencoder bottleneck channels.
        final_upsample: autoencoder decoder's last upsampling, ``"transposed"`` or
            ``"resize"`` (see :class:`CXRAutoencoder`).
        ssim_weight: autoencoder loss weight of (1 − SSIM) (0 = elastic loss only).
        gradient_weight: autoencoder loss weight of the image-gradient term (0 = off).
        blocks: residual blocks per stage.
        head: classifier output (``"softmax"``, ``"sigmoid"`` or ``"regression"``).
        outputs: sigmoid classifiers only: the outputs, each ``"NAME=LABEL[|LABEL...]"``
            (positive when the image's label is one of those); e.g.
            ``["COVID-19=COVID-19", "Pneumonia=COVID-19|Non-COVID pneumonia"]``. Empty
            (default): one output per dataset label. Regression head: each output is
            ``"NAME=QUANTITY"`` with a quantity of :data:`QUANTITIES` (e.g.
            ``"OpacityExtent=infection_extent"``), learnt with a binary cross-entropy
            against the continuous target in [0, 1].
        augment: apply augmentation.
        augment_strength: ``"light"`` (default) or ``"strong"`` (see :func:`augment_batch`).
        pool: classifier only: the input is average-pooled by this factor first (2: the
            network sees 112x112; 4: 56x56, where only large-scale patterns such as
            opacities remain, not fine texture).
        adv_eps: classifier only: adversarial training (PGD, L∞) with perturbations up to
            this many pixel units ([−1024, 1024]; 32 = 4 grey levels of 255); 0 = off. A
            classifier robust to tiny changes needs visible, image-like changes to change
            its mind, so its counterfactuals are visible (perceptually aligned gradients).
        adv_steps: PGD steps per batch.
        mask_weight: classifier only: weight of an auxiliary loss predicting the infection
            mask from the last feature map (0 = off; the classifier gets a mask head).
        recon_autoencoders: classifier only: autoencoders (registry names or checkpoint
            paths) whose reconstructions D(E(x)) replace a share ``recon_prob`` of the
            training images (same label), so the classifier reads a reconstruction as it
            reads the original (the autoencoder's effect on predictions, paper Table K.1).
        recon_prob: share of training images replaced by a reconstruction.
        threads: torch CPU threads (0 = torch's default).
        time_limit_min: stop after the epoch that would cross this wall time (0 = none).
        max_steps: stop after this many steps in total (0 = none; for tests).
        val_limit: validate each epoch on the first N validation images (0 = all); the final
            metrics always use the whole validation split.
        cache_dir: where to keep the decoded ``uint8`` dataset between runs (None = memory).
        device: torch device.
    """

    kind: Kind
    data: str
    out: str
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    size: int = 224
    val_fraction: float = 0.2
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    latent_channels: int = 16
    final_upsample: str = "transposed"
    ssim_weight: float = 0.0
    gradient_weight: float = 0.0
    blocks: int = 1
    head: Literal["softmax", "sigmoid", "regression"] = "softmax"
    outputs: list[str] = field(default_factory=list)
    augment: bool = True
    augment_strength: str = "light"
    mask_weight: float = 0.0
    adv_eps: float = 0.0
    adv_steps: int = 3
    pool: int = 2
    recon_autoencoders: list[str] = field(default_factory=list)
    recon_prob: float = 0.5
    threads: int = 0
    time_limit_min: float = 0.0
    max_steps: int = 0
    val_limit: int = 0
    cache_dir: str | None = None
    device: str = "cpu"


#: What a regression head can learn, read from each image's masks: the share of the lung
#: mask the infection mask covers, or the share of the whole image it covers.
QUANTITIES: dict[str, str] = {
    "infection_extent": "share of the lung mask covered by the infection mask",
    "infection_area": "share of the image covered by the infection mask",
}


def regression_outputs(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """Output names and quantities of a regression head (``cfg.outputs`` as NAME=QUANTITY).

    Example:
        >>> cfg = TrainConfig("classifier", "d.csv", "o", head="regression",
        ...                   outputs=["OpacityExtent=infection_extent"])
        >>> regression_outputs(cfg)
        (['OpacityExtent'], ['infection_extent'])
    """
    if not cfg.outputs:
        raise ValueError(
            "head='regression' needs outputs NAME=QUANTITY, QUANTITY one of "
            f"{', '.join(QUANTITIES)}"
        )
    names, quantities = [], []
    for spec in cfg.outputs:
        name, sep, quantity = (part.strip() for part in spec.partition("="))
        if not sep or not name or quantity not in QUANTITIES:
            raise ValueError(
                f"output {spec!r}: a regression output is NAME=QUANTITY with QUANTITY one of "
                f"{', '.join(QUANTITIES)}"
            )
        names.append(name)
        quantities.append(quantity)
    return names, quantities


def mask_quantities(dataset: MaskedCXRDataset, quantities: list[str]) -> torch.Tensor:
    """Per item, each quantity of :data:`QUANTITIES` read from its masks, ``(N, Q)`` float.

    An item without an infection mask (or with an empty one) has no infection (0);
    ``infection_extent`` needs every item's lung mask and raises naming the first missing.
    """
    out = torch.zeros(len(dataset), len(quantities))
    for i in range(len(dataset)):
        infection = dataset.load_mask(i, "infection")
        if infection is None or not infection.any():
            continue
        for k, q in enumerate(quantities):
            if q == "infection_area":
                out[i, k] = float(infection.mean())
                continue
            lung = dataset.load_mask(i, "lung")
            if lung is None or not lung.any():
                raise ValueError(
                    f"{dataset.records[i].image}: infection_extent needs a lung mask "
                    "(a lung_mask column, or a lung_masks/ folder next to images/)"
                )
            out[i, k] = float((infection & lung).sum() / lung.sum())
    return out


def regression_targets(cfg: TrainConfig, dataset: MaskedCXRDataset) -> torch.Tensor:
    """:func:`mask_quantities` of the regression outputs, cached when ``cfg.cache_dir`` is set."""
    _, quantities = regression_outputs(cfg)
    key = [str(Path(cfg.data).resolve()), str(cfg.size), *quantities]
    key += [f"{r.infection_mask}|{r.lung_mask}" for r in dataset.records]
    return disk_cached(
        cfg.cache_dir, "quantities", key, lambda: mask_quantities(dataset, quantities)
    )


def output_matrix(cfg: TrainConfig, labels: list[str]) -> tuple[list[str], torch.Tensor]:
    """Output names and the ``(n_labels, n_outputs)`` 0/1 matrix mapping a dataset label to
    the outputs it makes positive (the identity when ``cfg.outputs`` is empty).

    Example:
        >>> cfg = TrainConfig("classifier", "d.csv", "o", head="sigmoid",
        ...                   outputs=["A=a", "AB=a|b"])
        >>> names, m = output_matrix(cfg, ["a", "b", "c"])
        >>> names, m.tolist()
        (['A', 'AB'], [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    """
    if cfg.head == "regression":
        names = regression_outputs(cfg)[0]
        return names, torch.zeros(len(labels), len(names))
    if not cfg.outputs:
        return list(labels), torch.eye(len(labels))
    if cfg.head != "sigmoid":
        raise ValueError("outputs=NAME=LABEL|... needs head='sigmoid' (multi-label)")
    names, columns = [], []
    for spec in cfg.outputs:
        name, sep, rhs = spec.partition("=")
        parts = [p.strip() for p in rhs.split("|") if p.strip()]
        if not sep or not name.strip() or not parts:
            raise ValueError(f"output {spec!r}: expected NAME=LABEL[|LABEL...]")
        unknown = [p for p in parts if p not in labels]
        if unknown:
            raise ValueError(f"output {spec!r}: unknown label(s) {unknown}; labels: {labels}")
        names.append(name.strip())
        columns.append(torch.tensor([float(lab in parts) for lab in labels]))
    return names, torch.stack(columns, 1)


def load_split(
    cfg: TrainConfig, split: Literal["train", "val"]
) -> tuple[MaskedCXRDataset, torch.Tensor, torch.Tensor]:
    """The dataset split and its decoded ``(uint8 images, targets)``, cached when asked."""
    ds = MaskedCXRDataset(
        cfg.data, size=cfg.size, split=split, seed=cfg.seed, val_fraction=cfg.val_fraction
    )

    def decode() -> dict[str, torch.Tensor]:
        images, targets = ds.cached(progress=sys.stderr.isatty())
        return {"images": images, "targets": targets}

    key = [str(Path(cfg.data).resolve()), str(cfg.size), split, str(cfg.seed)]
    key += [str(cfg.val_fraction), *(str(r.image) for r in ds.records)]
    cached = disk_cached(cfg.cache_dir, f"cxr-{split}", key, decode)
    return ds, cached["images"], cached["targets"]


def load_masks(cfg: TrainConfig, dataset: MaskedCXRDataset, size: int = 28) -> torch.Tensor:
    """The infection masks of ``dataset`` as cell shares (:func:`cached_masks`), cached
    next to the decoded images when ``cfg.cache_dir`` is set."""
    key = [str(Path(cfg.data).resolve()), str(cfg.size), str(size)]
    key += [str(r.infection_mask) for r in dataset.records]
    return disk_cached(cfg.cache_dir, "masks", key, lambda: cached_masks(dataset, size))


def disk_cached(
    cache_dir: str | Path | None, prefix: str, key: list[str], compute: Callable[[], Any]
) -> Any:
    """``compute()``, kept in ``cache_dir`` as ``PREFIX-<16 hex of the key>.pt`` and read
    back by later calls with the same key (tensors only: loaded with ``weights_only``); a
    damaged file is rebuilt, never fatal. Without ``cache_dir``: ``compute()``."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256("|".join(key).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{prefix}-{digest}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt
            log.warning("rebuilding unreadable cache %s (%s)", path, type(e).__name__)
    value = compute()
    write_torch(path, value)
    return value


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 64, device: str = "cpu"
) -> torch.Tensor:
    """Outputs of ``model`` on cached ``uint8`` images, batched, in eval mode."""
    model.eval()
    outs = [
        model(uint8_to_model(images[i : i + batch_size]).to(device)).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(outs)


@torch.no_grad()
def fit_temperature(
    logits: torch.Tensor, targets: torch.Tensor, head: str, matrix: torch.Tensor | None = None
) -> float:
    """Temperature minimising the NLL of held-out logits (grid search on log scale).

    ``matrix`` maps label indices to multi-label outputs (sigmoid head); default one-hot.
    """
    if head == "sigmoid":
        y = matrix[targets] if matrix is not None else F.one_hot(targets, logits.shape[1]).float()
    best_t, best = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.25), np.log(4.0), 81)):
        z = logits / float(t)
        if head == "softmax":
            nll = float(F.cross_entropy(z, targets))
        else:
            nll = float(F.binary_cross_entropy_with_logits(z, y))
        if nll < best:
            best_t, best = float(t), nll
    return best_t


def build(cfg: TrainConfig, targets: list[str]) -> nn.Module:
    """The untrained network a config describes."""
    if cfg.kind == "autoencoder":
        return CXRAutoencoder(
            channels=cfg.channels,
            latent_channels=cfg.latent_channels,
            blocks=cfg.blocks,
            input_size=cfg.size,
            final_upsample=cfg.final_upsample,  # type: ignore[arg-type]
        )
    if cfg.kind == "classifier":
        return CXRClassifier(
            targets=targets,
            channels=cfg.channels,
            blocks=cfg.blocks,
            head=cfg.head,
            input_size=cfg.size,
            mask_head=cfg.mask_weight > 0,
            pool=cfg.pool,
        )
    raise ValueError(f"kind must be 'autoencoder' or 'classifier', got {cfg.kind!r}")


def adversarial(
    cfg: TrainConfig,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    matrix: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """``x`` moved by projected gradient ascent (``cfg.adv_steps`` steps, L∞ ball of radius
    ``cfg.adv_eps``, random start) to raise the target loss; the model's mode is kept."""
    eps, steps = cfg.adv_eps, max(cfg.adv_steps, 1)
    step = 2.5 * eps / steps
    delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(x)
    was_training = model.training
    model.eval()  # batch-norm statistics are not updated by the attack
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = model.logits((x + delta).clamp(-1024, 1024))  # type: ignore[operator]
        (g,) = torch.autograd.grad(_target_loss(cfg, logits, y, matrix), delta)
        delta = (delta.detach() + step * g.sign()).clamp(-eps, eps)
    model.train(was_training)
    return (x + delta).clamp(-1024, 1024).detach()


def _loss(
    cfg: TrainConfig,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    matrix: torch.Tensor,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    if cfg.kind == "autoencoder":
        return sharp_loss(model(x), x, cfg.ssim_weight, cfg.gradient_weight)
    aux = 0.0
    if masks is not None and cfg.mask_weight:
        logits, mask_logits = model.logits_and_mask(x)  # type: ignore[operator]
        mask_logits = F.interpolate(mask_logits, size=masks.shape[-2:], mode="bilinear")
        aux = cfg.mask_weight * F.binary_cross_entropy_with_logits(mask_logits, masks)
    else:
        logits = model.logits(x)  # type: ignore[operator]
    return aux + _target_loss(cfg, logits, y, matrix)


def _target_loss(
    cfg: TrainConfig, logits: torch.Tensor, y: torch.Tensor, matrix: torch.Tensor
) -> torch.Tensor:
    if cfg.head == "softmax":
        return F.cross_entropy(logits, y)
    if cfg.head == "regression":  # y: the continuous targets (B, n_outputs) in [0, 1]
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.binary_cross_entropy_with_logits(logits, matrix.to(y.device)[y])


@torch.no_grad()
def _validate(
    cfg: TrainConfig,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    names: list[str],
    matrix: torch.Tensor | None = None,
) -> dict[str, Any]:
    model.eval()
    if cfg.kind == "autoencoder":
        abs_err, sq_err, n = 0.0, 0.0, 0
        for i in range(0, len(images), 64):
            x = uint8_to_model(images[i : i + 64]).to(cfg.device)
            d = model(x) - x
            abs_err += float(d.abs().sum())
            sq_err += float((d * d).sum())
            n += d.numel()
        mae, mse = abs_err / n, sq_err / n
        return {"mae": mae, "loss": mae / 1024 + mse / 1024**2, **realism(model, images[:128])}
    probs = predict(model, images, device=cfg.device)
    if cfg.head == "regression":  # targets: the continuous quantities
        return regression_metrics(probs, targets, names)
    m = classifier_metrics(probs, targets, names, matrix)
    m["loss"] = m["nll"]
    return m


def _better(cfg: TrainConfig, new: dict, old: dict | None) -> bool:
    if old is None:
        return True
    if cfg.kind == "classifier" and cfg.head != "regression":  # AUC first, NLL breaks ties
        return (new["mean_auc"], -new["nll"]) > (old["mean_auc"], -old["nll"])
    return new["loss"] < old["loss"]


def train(cfg: TrainConfig, resume: bool = False, command: str | None = None) -> dict[str, Any]:
    """Train one model as ``cfg`` says; returns the run record (also in ``out/run.json``).

    Args:
        cfg: the run configuration.
        resume: continue from ``out/last.pt`` when it exists (the config must match).
        command: the command line to record (default ``sys.argv``).

    Returns:
        The run record: config, data sizes, history of per-epoch metrics, best and final
        metrics, and the exported weights' sidecar.

    Example:
        >>> cfg = TrainConfig("classifier", "train.csv", "runs/clf")  # doctest: +SKIP
        >>> train(cfg)["best"]["auc"]  # doctest: +SKIP
    """
    from ..runs.progress import progress_bar

    t_start = time.time()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    command = command or _command_line()

    train_ds, x_train, y_train = load_split(cfg, "train")
    recons = [reconstruct_uint8(name, x_train, cfg.device) for name in cfg.recon_autoencoders]
    m_train = load_masks(cfg, train_ds) if cfg.kind == "classifier" and cfg.mask_weight else None
    val_ds, x_val, y_val = load_split(cfg, "val")
    names = train_ds.labels
    log.info("data: %d train, %d val images, labels %s", len(x_train), len(x_val), names)
    out_names, matrix = output_matrix(cfg, names)
    multi = matrix if cfg.kind == "classifier" and cfg.head == "sigmoid" else None
    regress = cfg.kind == "classifier" and cfg.head == "regression"
    # what the loss and the metrics compare with: labels, or a regression's quantities
    t_train = regression_targets(cfg, train_ds) if regress else y_train
    t_val = regression_targets(cfg, val_ds) if regress else y_val

    torch.manual_seed(cfg.seed)
    model = build(cfg, out_names).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(x_train) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = min(steps_per_epoch, max(total // 10, 1))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, total - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch, step = 0, 0
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and last_path.is_file():
        try:
            state = torch.load(last_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(
                f"cannot resume {last_path}: unreadable ({type(e).__name__}); delete it "
                "to start over, or resume from a copy"
            ) from None
        saved = dict(state["train_config"])
        mismatch = {
            k: (saved.get(k), v)
            for k, v in asdict(cfg).items()
            if k
            in (
                "kind",
                "channels",
                "latent_channels",
                "final_upsample",
                "blocks",
                "head",
                "outputs",
                "mask_weight",
                "pool",
                "size",
                "seed",
            )
            and saved.get(k) != v
        }
        if mismatch:
            raise ValueError(
                f"cannot resume {last_path}: its configuration differs {mismatch} "
                "(saved, requested); use another --out folder or the saved settings"
            )
        model.load_state_dict(state["model"]["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, best = state["history"], state["best"]
        start_epoch, step = state["epoch"], state["step"]
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at epoch %d (step %d)", last_path, start_epoch, step)

    record: dict[str, Any] = {
        "kind": cfg.kind,
        "command": command,
        "config": asdict(cfg),
        "data": {
            "source": str(cfg.data),
            "labels": names,
            "outputs": out_names if cfg.kind == "classifier" else None,
            "n_train": len(x_train),
            "n_val": len(x_val),
            "train_counts": {n: int((y_train == i).sum()) for i, n in enumerate(names)},
            "val_counts": {n: int((y_val == i).sum()) for i, n in enumerate(names)},
            **(
                {"target_means": {"train": t_train.mean(0).tolist(), "val": t_val.mean(0).tolist()}}
                if regress
                else {}
            ),
        },
        "architecture": type(model).__name__,
        "model_config": dict(model.config),  # type: ignore[attr-defined]
        "parameters": n_parameters(model),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    gen = torch.Generator()
    stopped = None
    epoch_seconds: list[float] = [h["seconds"] for h in history]
    elapsed_before = sum(epoch_seconds)
    with progress_bar(sys.stderr.isatty(), info=True) as progress:
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.time_limit_min and epoch_seconds:
                used = time.time() - t_start + elapsed_before
                if used + float(np.mean(epoch_seconds)) > cfg.time_limit_min * 60:
                    stopped = (
                        f"time limit {cfg.time_limit_min} min reached before epoch {epoch + 1}"
                    )
                    break
            if cfg.max_steps and step >= cfg.max_steps:
                stopped = f"max_steps {cfg.max_steps} reached"
                break
            t0 = time.time()
            model.train()
            gen.manual_seed(cfg.seed * 1000 + epoch)
            order = torch.randperm(len(x_train), generator=gen)
            task = progress.add_task(
                f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, info=""
            )
            running = 0.0
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                x = uint8_to_model(x_train[idx])
                if recons and cfg.kind == "classifier":
                    swap = torch.rand(len(idx), generator=gen) < cfg.recon_prob
                    which = torch.randint(len(recons), (len(idx),), generator=gen)
                    for k, r in enumerate(recons):
                        sel = swap & (which == k)
                        if sel.any():
                            x[sel] = uint8_to_model(r[idx[sel]])
                m = m_train[idx].float() / 255 if m_train is not None else None
                if cfg.augment and m is not None:
                    x, m = augment_batch(x, gen, cfg.augment_strength, masks=m)
                elif cfg.augment:
                    x = augment_batch(x, gen, cfg.augment_strength)
                x, y = x.to(cfg.device), t_train[idx].to(cfg.device)
                if cfg.kind == "classifier" and cfg.adv_eps > 0:
                    x = adversarial(cfg, model, x, y, matrix, gen)
                loss = _loss(cfg, model, x, y, matrix, None if m is None else m.to(cfg.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                running += loss.item()
                progress.update(task, advance=1, info=f"loss {running / (s + 1):.4f}")
                if cfg.max_steps and step >= cfg.max_steps:
                    break
            n_val = cfg.val_limit or len(x_val)
            metrics = _validate(cfg, model, x_val[:n_val], t_val[:n_val], out_names, multi)
            seconds = time.time() - t0
            epoch_seconds.append(seconds)
            entry = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": running / (s + 1),
                "lr": opt.param_groups[0]["lr"],
                "seconds": seconds,
                "val": metrics,
            }
            history.append(entry)
            if _better(cfg, metrics, best):
                best = {"epoch": epoch + 1, **metrics}
                write_torch(best_path, model_payload(model, meta={"epoch": epoch + 1}))
            log.info(
                "epoch %d/%d: train loss %.4f, val %s (%.0f s)",
                epoch + 1,
                cfg.epochs,
                entry["train_loss"],
                _short(metrics),
                seconds,
            )
            write_torch(
                last_path,
                {
                    "train_config": asdict(cfg),
                    "model": model_payload(model),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "history": history,
                    "best": best,
                    "epoch": epoch + 1,
                    "step": step,
                    "torch_rng": torch.get_rng_state(),  # dropout masks continue on resume
                },
            )
            record.update(history=history, best=best, status="training")
            write_json(out / "run.json", record)

    record["stopped_early"] = stopped
    if not best_path.is_file():
        raise RuntimeError(f"no epoch completed in {out}; nothing to export")
    final = build_model(read_checkpoint(best_path), cfg.device)
    extras: dict[str, torch.Tensor] = {}
    if regress:  # no calibration: the outputs are quantities, not probabilities
        record["final_val"] = _validate(cfg, final, x_val, t_val, out_names)
    elif cfg.kind == "classifier":
        final_logits = _logits(final, x_val, cfg.device)
        before = classifier_metrics(_probs(final_logits, cfg.head), y_val, out_names, multi)
        t = fit_temperature(final_logits, y_val, cfg.head, multi)
        final.set_temperature(t)  # type: ignore[operator]
        probs = _probs(final_logits / t, cfg.head)
        after = classifier_metrics(probs, y_val, out_names, multi)
        record["calibration"] = {"temperature": t, "before": before, "after": after}
        if multi is not None:
            ops = operating_points(probs, multi[y_val])
            final.set_operating_points(ops)  # type: ignore[operator]
            record["operating_points"] = dict(zip(out_names, ops, strict=True))
        record["final_val"] = after
    else:
        record["final_val"] = _validate(cfg, final, x_val, y_val, names)
        extras = class_mean_latents(final, x_train, y_train, names, cfg.device)
    record["seconds"] = elapsed_before + time.time() - t_start
    meta = {
        "name": out.name,
        "kind": cfg.kind,
        "command": command,
        "data": record["data"],
        "best_epoch": best["epoch"] if best else None,
        "metrics_val": record["final_val"],
        "train_seconds": record["seconds"],
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
    }
    if cfg.kind == "autoencoder":
        meta["class_mean_latents"] = sorted(extras)
    record["export"] = export_model(final, out / "model.pt", extras=extras, meta=meta)
    record["status"] = "done"
    write_json(out / "run.json", record)
    log.info("wrote %s (%s)", out / "model.pt", _short(record["final_val"]))
    return record


@torch.no_grad()
def reconstruct_uint8(name_or_path: str, images: torch.Tensor, device: str) -> torch.Tensor:
    """``D(E(x))`` of cached ``uint8`` images by a registry autoencoder, back as ``uint8``."""
    from .registry import get_autoencoder

    ae = get_autoencoder(name_or_path, device)
    out = torch.empty_like(images)
    for i in range(0, len(images), 64):
        r = ae.decode(ae.encode(uint8_to_model(images[i : i + 64]).to(device))).cpu()
        out[i : i + 64] = to_uint8(r)
    log.info("reconstructed %d training images with %s", len(images), name_or_path)
    return out


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor, device: str) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [
            model.logits(uint8_to_model(images[i : i + 64]).to(device)).cpu()  # type: ignore[operator]
            for i in range(0, len(images), 64)
        ]
    )


def _probs(logits: torch.Tensor, head: str) -> torch.Tensor:
    return torch.softmax(logits, 1) if head == "softmax" else torch.sigmoid(logits)


@torch.no_grad()
def class_mean_latents(
    ae: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    names: list[str],
    device: str,
    per_class: int = 400,
) -> dict[str, torch.Tensor]:
    """Mean latent of each class's images (a seeded sample of ``per_class`` at most):
    ``{"mean_latent/<name>": (C,h,w)}``."""
    ae.eval()
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    # a seeded sample of at most `per_class` images per class keeps this cheap on a CPU
    keep = (
        torch.cat(
            [
                (targets == c).nonzero()[:, 0][
                    torch.randperm(
                        int((targets == c).sum()), generator=torch.Generator().manual_seed(0)
                    )
                ][:per_class]
                for c in targets.unique().tolist()
            ]
        )
        .sort()
        .values
    )
    images, targets = images[keep], targets[keep]
    for i in range(0, len(images), 64):
        z = ae.encode(uint8_to_model(images[i : i + 64]).to(device)).cpu()  # type: ignore[operator]
        for c in targets[i : i + 64].unique().tolist():
            sel = targets[i : i + 64] == c
            sums[c] = sums.get(c, 0) + z[sel].sum(0)
            counts[c] = counts.get(c, 0) + int(sel.sum())
    return {f"mean_latent/{names[c]}": sums[c] / counts[c] for c in sorted(sums)}


def _command_line() -> str:
    """``sys.argv`` as a shell command, with the entry point shown as ``gifsplanation``."""
    argv = list(sys.argv)
    if argv and (argv[0].endswith("__main__.py") or Path(argv[0]).name == "gifsplanation"):
        argv[0] = "gifsplanation"
    return " ".join(shlex.quote(a) for a in argv)


def _short(m: dict[str, Any]) -> str:
    if "regression" in m:
        return "; ".join(
            f"{k}: MAE {v['mean_abs_error']:.4f}, r {v['pearson']:.3f}"
            for k, v in m["regression"].items()
        )
    if "mae" in m:
        return f"MAE {m['mae']:.1f}, SSIM {m['ssim']:.3f}, edge ratio {m['edge_ratio']:.2f}"
    aucs = ", ".join(f"{k} {v:.3f}" for k, v in m["auc"].items())
    return f"AUC {aucs}; acc {m['accuracy']:.3f}; nll {m['nll']:.3f}"
