"""`gifsplanation train autoencoder|classifier`: train the bundled kinds of model on a
folder or CSV of chest X-rays (see :mod:`gifsplanation.models.training`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import common

train_app = typer.Typer(
    help="Train an autoencoder or a classifier on a folder or CSV of chest X-rays.",
    no_args_is_help=True,
)

DataArg = Annotated[
    Path,
    typer.Argument(
        help="CSV with image,label[,infection_mask] columns (paths relative to the CSV), "
        "or a folder whose sub-folders are the labels."
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, run.json).")]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the training split.")]
BatchOpt = Annotated[int, typer.Option(help="Images per step.")]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine schedule).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the split, init, order, augmentation.")]
SizeOpt = Annotated[int, typer.Option(help="Input side in pixels (224 = XRV convention).")]
ValOpt = Annotated[float, typer.Option(help="Share of each label held out for validation.")]
ChannelsOpt = Annotated[str, typer.Option(help="Comma-separated stage widths, e.g. 16,32,64,128.")]
BlocksOpt = Annotated[int, typer.Option(help="Residual blocks per stage.")]
AugOpt = Annotated[bool, typer.Option("--augment/--no-augment", help="Augmentation.")]
AugStrengthOpt = Annotated[
    str, typer.Option(help="light, or strong (blur/sharpen, gamma, noise, larger affine).")
]
ThreadsOpt = Annotated[int, typer.Option(help="Torch CPU threads (0 = default).")]
TimeOpt = Annotated[
    float, typer.Option(help="Stop before an epoch that would cross this many minutes (0 = off).")
]
StepsOpt = Annotated[int, typer.Option(help="Stop after this many steps in total (0 = off).")]
ValLimitOpt = Annotated[
    int, typer.Option(help="Validate each epoch on the first N val images (0 = all).")
]
CacheOpt = Annotated[
    Path | None, typer.Option(help="Folder to cache the decoded dataset in (default: memory).")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")]
DeviceOpt = Annotated[str, typer.Option(help="Torch device.")]


HEADS = ("softmax", "sigmoid", "regression")


def _channels(text: str) -> list[int]:
    try:
        values = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise common.fail(f"--channels {text!r}: expected integers like 16,32,64", code=2) from None
    if not values or min(values) < 1:
        raise common.fail(f"--channels {text!r}: expected positive integers", code=2)
    return values


def _run(kind: str, args: dict[str, Any]) -> None:
    """Train a ``kind`` model from the command's options ``args`` (its ``locals()``)."""
    from rich.console import Console

    from ..models.training import TrainConfig, train

    args = dict(args)
    resume = args.pop("resume")
    cache_dir = args.pop("cache_dir")
    if "recon_ae" in args:
        args["recon_autoencoders"] = list(args.pop("recon_ae") or [])
    if "output" in args:
        args["outputs"] = list(args.pop("output") or [])
    cfg = TrainConfig(
        kind=kind,
        data=str(args.pop("data")),
        out=str(args.pop("out")),
        channels=_channels(args.pop("channels")),
        time_limit_min=args.pop("time_limit"),
        cache_dir=str(cache_dir) if cache_dir else None,
        **args,
    )
    common.setup_logging()
    try:
        record = train(cfg, resume=resume)
    except (FileNotFoundError, ValueError) as e:  # the data, --out or --resume do not fit
        raise common.fail(str(e), code=2) from None
    Console().print(
        f"done: {record['export']['file']} in {cfg.out} (sha256 {record['export']['sha256'][:12]}…)"
    )


def autoencoder(
    data: DataArg,
    out: OutOpt = Path("runs/autoencoder"),
    epochs: EpochsOpt = 10,
    batch_size: BatchOpt = 32,
    lr: LrOpt = 2e-3,
    seed: SeedOpt = 0,
    size: SizeOpt = 224,
    val_fraction: ValOpt = 0.2,
    channels: ChannelsOpt = "16,32,64,128",
    latent_channels: Annotated[int, typer.Option(help="Bottleneck channels.")] = 16,
    final_upsample: Annotated[
        str, typer.Option(help="Decoder's last upsampling: transposed or resize.")
    ] = "transposed",
    ssim_weight: Annotated[float, typer.Option(help="Loss weight of 1 − SSIM.")] = 0.0,
    gradient_weight: Annotated[float, typer.Option(help="Loss weight of |∇r − ∇x|.")] = 0.0,
    blocks: BlocksOpt = 1,
    augment: AugOpt = True,
    threads: ThreadsOpt = 0,
    time_limit: TimeOpt = 0.0,
    max_steps: StepsOpt = 0,
    val_limit: ValLimitOpt = 0,
    cache_dir: CacheOpt = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a ResNet-style convolutional autoencoder (elastic L1+L2 loss).

    The latent side is size / 2^len(channels): 4 widths give 14x14 at 224, 5 give 7x7.
    """
    _run("autoencoder", locals())


def classifier(
    data: DataArg,
    out: OutOpt = Path("runs/classifier"),
    epochs: EpochsOpt = 20,
    batch_size: BatchOpt = 32,
    lr: LrOpt = 2e-3,
    seed: SeedOpt = 0,
    size: SizeOpt = 224,
    val_fraction: ValOpt = 0.2,
    channels: ChannelsOpt = "16,32,64,128",
    blocks: BlocksOpt = 1,
    recon_ae: Annotated[
        list[str] | None,
        typer.Option(
            help="Autoencoder (name or path) whose reconstructions replace --recon-prob of "
            "the training images; repeatable."
        ),
    ] = None,
    recon_prob: Annotated[float, typer.Option(help="Share of images replaced.")] = 0.5,
    head: Annotated[
        str,
        typer.Option(
            help="softmax (exclusive targets), sigmoid (multi-label) or regression "
            "(quantities in [0, 1] read from the masks)."
        ),
    ] = "softmax",
    output: Annotated[
        list[str] | None,
        typer.Option(
            help="Sigmoid head: an output NAME=LABEL[|LABEL...], positive for those labels "
            "(repeatable; default one output per label). Regression head: NAME=QUANTITY, "
            "QUANTITY infection_extent (share of the lung mask the infection mask covers) "
            "or infection_area (share of the image)."
        ),
    ] = None,
    augment: AugOpt = True,
    augment_strength: AugStrengthOpt = "light",
    mask_weight: Annotated[
        float,
        typer.Option(help="Weight of an auxiliary loss predicting the infection mask (0 = off)."),
    ] = 0.0,
    pool: Annotated[
        int, typer.Option(min=1, help="Average-pool the input by this factor first (2: 112 px).")
    ] = 2,
    adv_eps: Annotated[
        float,
        typer.Option(
            help="Adversarial training: L∞ radius in pixel units (32 = 4 grey levels); 0 = off."
        ),
    ] = 0.0,
    adv_steps: Annotated[int, typer.Option(min=1, help="PGD steps per batch.")] = 3,
    threads: ThreadsOpt = 0,
    time_limit: TimeOpt = 0.0,
    max_steps: StepsOpt = 0,
    val_limit: ValLimitOpt = 0,
    cache_dir: CacheOpt = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a small ResNet-style classifier returning calibrated probabilities."""
    common.check_choice(head, HEADS, "--head")
    _run("classifier", locals())


train_app.command("autoencoder")(autoencoder)
train_app.command("classifier")(classifier)


def register(app: typer.Typer) -> None:
    """Add the ``train`` command group to ``app``."""
    app.add_typer(train_app, name="train")
