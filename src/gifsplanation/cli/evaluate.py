"""`gifsplanation evaluate iou|randomization|robustness|ae-impact|counterfactuals`: the
paper's experiments on any classifier/autoencoder and any dataset with masks (see
:mod:`gifsplanation.evaluate`). Each writes CSV, a markdown table, a PNG plot and a
manifest into ``--out`` and resumes from its cache when re-run with the same arguments.

The Latent Shift engine options (``--mode``, ``--strategy``, ``--frames``, ``--batch-size``,
``--lower-change``, ``--upper-change``, ``--threshold-mode``, ``--max-lambda``,
``--max-image-change``, ``--lambda-range``, ``--ood``) are declared once, in
:data:`ENGINE_PARAMETERS`, and added to every command that builds an engine by
:func:`engine_command`; :func:`engine_options` turns their values into the
:class:`~gifsplanation.evaluate.engine.EngineOptions` the experiments use and record."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..evaluate.engine import EngineOptions, parse_lambda_range
from . import common

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
IdIterOpt = Annotated[int, typer.Option(help="Iterative delete: rounds.")]
ThreadsOpt = Annotated[int, typer.Option(help="Torch CPU threads (0 = default).")]
DeviceOpt = Annotated[str, typer.Option(help="Torch device.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")]


_ENGINE_PANEL = "Latent Shift engine"
_DEFAULTS = EngineOptions()


def _engine_parameter(name: str, kind: Any, default: Any, *decls: str, **option: Any):
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[kind, typer.Option(*decls, rich_help_panel=_ENGINE_PANEL, **option)],
    )


#: The engine options of every ``evaluate`` command that builds a ``LatentShift``,
#: declared once (defaults from :class:`EngineOptions`); see :func:`engine_command`.
ENGINE_PARAMETERS: tuple[inspect.Parameter, ...] = (
    _engine_parameter(
        "mode",
        str,
        _DEFAULTS.mode,
        "--mode",
        help="Frames: residual (x + D(z₀+λdz) − D(z₀); λ = 0 is the input), reconstruction "
        "(the paper's D(z₀+λdz)) or both (each on the same images, compared with paired "
        "Wilcoxon tests).",
    ),
    _engine_parameter(
        "strategy",
        str,
        _DEFAULTS.strategy,
        "--strategy",
        "--ls-strategy",
        help="λ search: fast or paper.",
    ),
    _engine_parameter(
        "frames",
        int,
        _DEFAULTS.n_frames,
        "--frames",
        "--ls-frames",
        min=3,
        help="Frames in the λ sweep (λ = 0 included).",
    ),
    _engine_parameter(
        "batch_size",
        int,
        _DEFAULTS.batch_size,
        "--batch-size",
        min=1,
        help="Images per decoder+classifier call.",
    ),
    _engine_parameter(
        "lower_change",
        float,
        _DEFAULTS.lower_change,
        "--lower-change",
        help="How far the prediction must fall (λ < 0): fraction or absolute.",
    ),
    _engine_parameter(
        "upper_change",
        float,
        _DEFAULTS.upper_change,
        "--upper-change",
        help="How far it must rise (λ > 0); 0 disables the positive side.",
    ),
    _engine_parameter(
        "threshold_mode",
        str,
        _DEFAULTS.threshold_mode,
        "--threshold-mode",
        help="relative (the paper's text) or absolute (its code).",
    ),
    _engine_parameter(
        "max_lambda",
        float,
        _DEFAULTS.max_lambda,
        "--max-lambda",
        help="Cap on |λ| (the paper's code used 1000).",
    ),
    _engine_parameter(
        "max_image_change",
        float,
        _DEFAULTS.max_image_change,
        "--max-image-change",
        help="Stop when mean |x_λ − x_0| exceeds this share of the dynamic range; 0 disables.",
    ),
    _engine_parameter(
        "lambda_range",
        str | None,
        None,
        "--lambda-range",
        metavar="LO,HI",
        help="A fixed λ range (LO <= 0 <= HI), no search; both sides then stop with "
        "fixed_range, so no counterfactual counts as valid.",
    ),
    _engine_parameter(
        "ood",
        str,
        _DEFAULTS.ood,
        "--ood",
        help="Inputs the OOD gate flags: warn (explain, record the verdict; default here so "
        "a refusal never becomes a scored all-zero map), refuse, or off.",
    ),
)


def engine_options(
    *,
    mode: str,
    strategy: str,
    frames: int,
    batch_size: int,
    lower_change: float,
    upper_change: float,
    threshold_mode: str,
    max_lambda: float,
    max_image_change: float,
    lambda_range: str | None,
    ood: str,
) -> EngineOptions:
    """The :class:`EngineOptions` of the command-line values (0 disables
    ``--upper-change`` and ``--max-image-change``); a bad value is a usage error."""
    try:
        return EngineOptions(
            mode=mode,
            strategy=strategy,
            n_frames=frames,
            batch_size=batch_size,
            lower_change=lower_change,
            upper_change=upper_change or None,
            threshold_mode=threshold_mode,
            max_lambda=max_lambda,
            max_image_change=max_image_change or None,
            lambda_range=parse_lambda_range(lambda_range),
            ood=ood,
        )
    except ValueError as e:
        raise common.fail(str(e), code=2) from None


def engine_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add :data:`ENGINE_PARAMETERS` to command ``fn``, which then receives them as one
    ``engine: EngineOptions`` keyword argument."""
    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "engine"]
    names = [p.name for p in ENGINE_PARAMETERS]
    clash = {p.name for p in own} & set(names)
    if clash:
        raise TypeError(f"{fn.__name__} already has parameters {sorted(clash)}")

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        values = {n: kwargs.pop(n) for n in names}
        return fn(**kwargs, engine=engine_options(**values))

    full = sig.replace(parameters=[*own, *ENGINE_PARAMETERS])
    command.__signature__ = full  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in full.parameters.values()}
    return command


def _dataset(data, split, split_seed, xrv, xrv_imgpath, xrv_csvpath, size):
    if (data is None) == (xrv is None):
        raise common.fail("pass exactly one of --data PATH or --xrv-dataset NAME", code=2)
    if data is not None:
        from ..datasets import MaskedCXRDataset

        return MaskedCXRDataset(data, size=size, split=split, seed=split_seed)
    from ..evaluate.data import XRVMaskedDataset, xrv_dataset

    if xrv_imgpath is None:
        raise common.fail("--xrv-dataset needs --xrv-imgpath (the image folder)", code=2)
    return XRVMaskedDataset(xrv_dataset(xrv, xrv_imgpath, xrv_csvpath), size=size)


def _common(experiment: str, ctx_args: dict[str, Any], need_ae: bool, methods_needed: bool):
    """Build the :class:`~gifsplanation.evaluate.Setup` from a command's options
    (``ctx_args``, its ``locals()``); ``methods_needed=False`` for commands without
    ``--methods``."""
    import torch

    from ..evaluate import Setup
    from ..methods import DEFAULT_METHODS, METHODS

    common.setup_logging()
    a = ctx_args
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    methods: list[str] = []
    if methods_needed:
        methods = [m.strip() for m in a["methods"].split(",")] if a["methods"] else DEFAULT_METHODS
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise common.fail(
                f"unknown methods {unknown}; choose from {', '.join(METHODS)}", code=2
            )
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
    clf, ae = common.models_or_exit(
        a["classifier"], a["autoencoder"], a["device"], need_autoencoder=need_ae
    )
    # Commands without an option (ae-impact has no --ig-steps) never use the method it sets.
    # Latent Shift methods take every engine setting from ``engine`` (Setup fills them in).
    options: dict[str, dict[str, Any]] = {
        "integrated": {"n_steps": a.get("ig_steps")},
        "iterativedelete": {"n_iter": a.get("id_iter")},
        "random": {"seed": a["seed"]},
    }
    options = {k: v for k, v in options.items() if k in methods}
    out = a["out"] or Path("results") / experiment
    engine: EngineOptions | None = a.get("engine")
    recorded = {  # the command's options, not the functions it imported
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in a.items()
        if k != "engine" and not callable(v)
    }
    if engine is not None:  # the engine options as given (the manifest's "engine" has all)
        recorded.update(
            {
                "mode": engine.mode,
                "strategy": engine.strategy,
                "frames": engine.n_frames,
                "batch_size": engine.batch_size,
                "lower_change": engine.lower_change,
                "upper_change": engine.upper_change,
                "threshold_mode": engine.threshold_mode,
                "max_lambda": engine.max_lambda,
                "max_image_change": engine.max_image_change,
                "lambda_range": list(engine.lambda_range) if engine.lambda_range else None,
                "ood": engine.ood,
            }
        )
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
        engine=engine or EngineOptions(),
    )


def _finish(result: dict[str, Any]) -> None:
    from rich.console import Console

    out = Path(result["out"])
    console = Console()
    console.print((out / "table.md").read_text())
    console.print(f"wrote {out}/ (per_item.csv, summary.csv, table.md, *.png, manifest.json)")


def _guard(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a missing file or a value that does not fit the data (no
    image for a target, an ``--out`` holding other engine options) exits 2 with one line."""
    try:
        return fn(*args, **kwargs)
    except (FileNotFoundError, ValueError) as e:
        raise common.fail(str(e), code=2) from None


@engine_command
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
    id_iter: IdIterOpt = 10,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
    *,
    engine: EngineOptions,
) -> None:
    """Table 1: IoU (top-p), pointing game and relevance mass per method and target
    (--mode both: Latent Shift in both frame modes, compared with paired tests)."""
    from ..evaluate import run_iou

    setup = _guard(_common, "iou", locals(), False, True)
    _finish(_guard(run_iou, setup))


@engine_command
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
    id_iter: IdIterOpt = 10,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
    steps: Annotated[int, typer.Option(help="Cascade steps (0 = one per layer).")] = 6,
    *,
    engine: EngineOptions,
) -> None:
    """Fig. 5: re-initialise layers from the top; Spearman ρ of maps with the original."""
    from ..evaluate import run_randomization

    setup = _guard(_common, "randomization", locals(), False, True)
    _finish(_guard(run_randomization, setup, n_steps=steps or None))


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise common.fail(f"{name} {text!r}: expected numbers like 0,1,2", code=2) from None


@engine_command
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
    id_iter: IdIterOpt = 10,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
    noise_levels: Annotated[str, typer.Option(help="Noise levels k (x + U[0,1)·100·k).")] = (
        "0,1,2,3,4"
    ),
    blur_sigmas: Annotated[str, typer.Option(help="Gaussian blur σ in pixels.")] = "0,10,20,30,40",
    *,
    engine: EngineOptions,
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


@engine_command
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
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "cpu",
    progress: ProgressOpt = True,
    *,
    engine: EngineOptions,
) -> None:
    """Removal counterfactuals per mode and target: validity, Δp, proximity, SSIM, fine-edge
    ratio, AE effect, every output's change and grey-level change in lungs/infection/outside
    (--mode both: paired residual vs reconstruction tests)."""
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
