"""`gifsplanation evaluate iou|randomization|robustness|ae-impact|counterfactuals`: the
paper's experiments on any classifier/autoencoder and any dataset with masks (see
:mod:`gifsplanation.evaluate`). Each writes CSV, a markdown table, a PNG plot and a
manifest into ``--out`` and resumes from its cache when re-run with the same arguments."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

evaluate_app = typer.Typer(
    help="Run the paper's experiments (IoU, randomisation, robustness, AE impact, "
    "counterfactual quality) on a dataset with masks.",
    no_args_is_help=True,
)

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="CSV (image,label,infection_mask) or labelled folder, read with "
        "gifsplanation.datasets.MaskedCXRDataset.",
    ),
]
SplitOpt = Annotated[str, typer.Option(help="Split of --data: train, val or all.")]
SplitSeedOpt = Annotated[int, typer.Option(help="Seed of the train/val split of --data.")]
XrvOpt = Annotated[
    str | None,
    typer.Option("--xrv-dataset", help="Use a TorchXRayVision dataset instead: nih, rsna, siim."),
]
XrvImgOpt = Annotated[Path | None, typer.Option("--xrv-imgpath", help="Its image folder.")]
XrvCsvOpt = Annotated[
    Path | None, typer.Option("--xrv-csvpath", help="Its labels CSV (default: bundled).")
]
SizeOpt = Annotated[int, typer.Option(help="Image side in pixels (the models' input size).")]
ClfOpt = Annotated[
    str | None,
    typer.Option("--classifier", help="Classifier name or checkpoint (default bundled)."),
]
AeOpt = Annotated[
    str | None,
    typer.Option("--autoencoder", help="Autoencoder name or checkpoint (default bundled)."),
]
MethodsOpt = Annotated[
    str | None,
    typer.Option(help="Comma-separated methods (default: the paper's set + random)."),
]
LimitOpt = Annotated[int, typer.Option(help="Images per target (0 = all).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the image draw and random choices.")]
TargetOpt = Annotated[
    list[str] | None, typer.Option("--target", help="Only this target (repeatable).")
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")]
IgStepsOpt = Annotated[int, typer.Option(help="Integrated gradients: path steps.")]
LsStrategyOpt = Annotated[str, typer.Option(help="Latent Shift search: fast or paper.")]
LsFramesOpt = Annotated[int, typer.Option(help="Latent Shift sweep frames.")]
IdIterOpt = Annotated[int, typer.Option(help="Iterative delete: rounds.")]
ThreadsOpt = Annotated[int, typer.Option(help="Torch CPU threads (0 = default).")]
DeviceOpt = Annotated[str, typer.Option(help="Torch device.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")]


def _load_models(classifier: str | None, autoencoder: str | None, device: str, need_ae: bool):
    """The classifier and (when needed) autoencoder from the models registry."""
    from ..models import get_autoencoder, get_classifier

    clf = get_classifier(classifier, device=device)
    ae = get_autoencoder(autoencoder, device=device) if need_ae else None
    return clf, ae


def _dataset(data, split, split_seed, xrv, xrv_imgpath, xrv_csvpath, size):
    if (data is None) == (xrv is None):
        raise typer.BadParameter("pass exactly one of --data PATH or --xrv-dataset NAME")
    if data is not None:
        from ..datasets import MaskedCXRDataset

        return MaskedCXRDataset(data, size=size, split=split, seed=split_seed)
    from ..evaluate.data import XRVMaskedDataset, xrv_dataset

    if xrv_imgpath is None:
        raise typer.BadParameter("--xrv-dataset needs --xrv-imgpath (the image folder)")
    return XRVMaskedDataset(xrv_dataset(xrv, xrv_imgpath, xrv_csvpath), size=size)


def _common(experiment: str, ctx_args: dict[str, Any], need_ae: bool, methods_needed: bool):
    """Build the :class:`~gifsplanation.evaluate.Setup` from a command's options
    (``ctx_args``, its ``locals()``); ``methods_needed=False`` for commands without
    ``--methods``."""
    import torch
    from rich.logging import RichHandler

    from ..evaluate import Setup
    from ..methods import DEFAULT_METHODS, METHODS

    handler = RichHandler(show_path=False)
    # The engine warns per image when a λ search stops short; the experiments record every
    # stop reason in their CSVs, so those lines would only flood the terminal here.
    handler.addFilter(lambda r: not r.getMessage().startswith("image "))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    a = ctx_args
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    methods: list[str] = []
    if methods_needed:
        methods = [m.strip() for m in a["methods"].split(",")] if a["methods"] else DEFAULT_METHODS
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise typer.BadParameter(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    need_ae = need_ae or any(m.startswith("latentshift") for m in methods)
    ds = _dataset(
        a["data"],
        a["split"],
        a["split_seed"],
        a["xrv_dataset"],
        a["xrv_imgpath"],
        a["xrv_csvpath"],
        a["size"],
    )
    clf, ae = _load_models(a["classifier"], a["autoencoder"], a["device"], need_ae)
    # Commands without an option (ae-impact has no --ls-*) never use the method it sets.
    ls_opts = {"strategy": a.get("ls_strategy"), "n_frames": a.get("ls_frames")}
    options: dict[str, dict[str, Any]] = {
        "integrated": {"n_steps": a.get("ig_steps")},
        "iterativedelete": {"n_iter": a.get("id_iter")},
        "random": {"seed": a["seed"]},
        **{m: dict(ls_opts) for m in methods if m.startswith("latentshift")},
    }
    options = {k: v for k, v in options.items() if k in methods}
    if experiment == "counterfactuals":
        options["latentshift-max"] = dict(ls_opts)
    out = a["out"] or Path("results") / experiment
    recorded = {k: (str(v) if isinstance(v, Path) else v) for k, v in a.items()}
    return Setup(
        classifier=clf,
        autoencoder=ae,
        dataset=ds,
        out=out,
        methods=methods,
        method_options=options,
        limit=a["limit"] or None,
        seed=a["seed"],
        targets=a["target"] or None,
        progress=a["progress"],
        args={"cli": recorded},
    )


def _finish(result: dict[str, Any]) -> None:
    from rich.console import Console

    out = Path(result["out"])
    console = Console()
    console.print((out / "table.md").read_text())
    console.print(f"wrote {out}/ (per_item.csv, summary.csv, table.md, *.png, manifest.json)")


def _guard(fn, *args, **kwargs):
    from rich.console import Console

    from ..models import UnknownModelError, WeightsUnavailableError

    try:
        return fn(*args, **kwargs)
    except (FileNotFoundError, ValueError, UnknownModelError, WeightsUnavailableError) as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def iou(
    data: DataOpt = None,
    split: SplitOpt = "val",
    split_seed: SplitSeedOpt = 0,
    xrv_dataset: XrvOpt = None,
    xrv_imgpath: XrvImgOpt = None,
    xrv_csvpath: XrvCsvOpt = None,
    size: SizeOpt = 224,
    classifier: ClfOpt = None,
    autoencoder: AeOpt = None,
    methods: MethodsOpt = None,
    limit: LimitOpt = 40,
    seed: SeedOpt = 0,
    target: TargetOpt = None,
    out: OutOpt = None,
    ig_steps: IgStepsOpt = 50,
    ls_strategy: LsStrategyOpt = "fast",
    ls_frames: LsFramesOpt = 10,
    id_iter: IdIterOpt = 10,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
) -> None:
    """Table 1: IoU (top-p), pointing game and relevance mass per method and target."""
    from ..evaluate import run_iou

    setup = _guard(_common, "iou", locals(), False, True)
    _finish(_guard(run_iou, setup))


def randomization(
    data: DataOpt = None,
    split: SplitOpt = "val",
    split_seed: SplitSeedOpt = 0,
    xrv_dataset: XrvOpt = None,
    xrv_imgpath: XrvImgOpt = None,
    xrv_csvpath: XrvCsvOpt = None,
    size: SizeOpt = 224,
    classifier: ClfOpt = None,
    autoencoder: AeOpt = None,
    methods: MethodsOpt = None,
    limit: LimitOpt = 10,
    seed: SeedOpt = 0,
    target: TargetOpt = None,
    out: OutOpt = None,
    ig_steps: IgStepsOpt = 50,
    ls_strategy: LsStrategyOpt = "fast",
    ls_frames: LsFramesOpt = 10,
    id_iter: IdIterOpt = 10,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
    steps: Annotated[int, typer.Option(help="Cascade steps (0 = one per layer).")] = 6,
) -> None:
    """Fig. 5: re-initialise layers from the top; Spearman ρ of maps with the original."""
    from ..evaluate import run_randomization

    setup = _guard(_common, "randomization", locals(), False, True)
    _finish(_guard(run_randomization, setup, n_steps=steps or None))


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{name} {text!r}: expected numbers like 0,1,2") from None


def robustness(
    data: DataOpt = None,
    split: SplitOpt = "val",
    split_seed: SplitSeedOpt = 0,
    xrv_dataset: XrvOpt = None,
    xrv_imgpath: XrvImgOpt = None,
    xrv_csvpath: XrvCsvOpt = None,
    size: SizeOpt = 224,
    classifier: ClfOpt = None,
    autoencoder: AeOpt = None,
    methods: MethodsOpt = None,
    limit: LimitOpt = 10,
    seed: SeedOpt = 0,
    target: TargetOpt = None,
    out: OutOpt = None,
    ig_steps: IgStepsOpt = 50,
    ls_strategy: LsStrategyOpt = "fast",
    ls_frames: LsFramesOpt = 10,
    id_iter: IdIterOpt = 10,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
    noise_levels: Annotated[str, typer.Option(help="Noise levels k (x + U[0,1)·100·k).")] = (
        "0,1,2,3,4"
    ),
    blur_sigmas: Annotated[str, typer.Option(help="Gaussian blur σ in pixels.")] = "0,10,20,30,40",
) -> None:
    """Fig. G.1: IoU and map similarity under uniform noise and Gaussian blur."""
    from ..evaluate import run_robustness

    setup = _guard(_common, "robustness", locals(), False, True)
    _finish(
        _guard(
            run_robustness,
            setup,
            noise_levels=_floats(noise_levels, "--noise-levels"),
            blur_sigmas=_floats(blur_sigmas, "--blur-sigmas"),
        )
    )


def ae_impact(
    data: DataOpt = None,
    split: SplitOpt = "val",
    split_seed: SplitSeedOpt = 0,
    xrv_dataset: XrvOpt = None,
    xrv_imgpath: XrvImgOpt = None,
    xrv_csvpath: XrvCsvOpt = None,
    size: SizeOpt = 224,
    classifier: ClfOpt = None,
    autoencoder: AeOpt = None,
    limit: LimitOpt = 80,
    seed: SeedOpt = 0,
    target: TargetOpt = None,
    out: OutOpt = None,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
) -> None:
    """Table K.1: mean f(x) vs f(D(E(x))) for positives and negatives, with AUCs."""
    from ..evaluate import run_ae_impact

    setup = _guard(_common, "ae-impact", locals(), True, False)
    _finish(_guard(run_ae_impact, setup))


def counterfactuals(
    data: DataOpt = None,
    split: SplitOpt = "val",
    split_seed: SplitSeedOpt = 0,
    xrv_dataset: XrvOpt = None,
    xrv_imgpath: XrvImgOpt = None,
    xrv_csvpath: XrvCsvOpt = None,
    size: SizeOpt = 224,
    classifier: ClfOpt = None,
    autoencoder: AeOpt = None,
    limit: LimitOpt = 40,
    seed: SeedOpt = 0,
    target: TargetOpt = None,
    out: OutOpt = None,
    ls_strategy: LsStrategyOpt = "fast",
    ls_frames: LsFramesOpt = 10,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
) -> None:
    """Counterfactual quality: validity, Δp, proximity and realism per target."""
    from ..evaluate import run_counterfactuals

    setup = _guard(_common, "counterfactuals", locals(), True, False)
    _finish(_guard(run_counterfactuals, setup))


for _fn, _name in (
    (iou, "iou"),
    (randomization, "randomization"),
    (robustness, "robustness"),
    (ae_impact, "ae-impact"),
    (counterfactuals, "counterfactuals"),
):
    evaluate_app.command(_name)(_fn)


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command group to ``app``."""
    app.add_typer(evaluate_app, name="evaluate")
