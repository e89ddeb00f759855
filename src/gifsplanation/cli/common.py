"""What every command shares: options declared once, model loading, logging, errors.

One error rule for every command: a wrong command line (bad option value, unknown
target, no input files, an unusable ``--out``) prints one line and exits 2; a failure
while running (models that cannot be loaded, an image that could not be explained or was
refused) prints one line per problem and exits 1; Ctrl-C says what finished and exits 130.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from .._core.search import SearchConfig

#: The engine's image-change stop (``SearchConfig.max_image_change``), as the CLI default.
DEFAULT_MAX_IMAGE_CHANGE: float = SearchConfig.max_image_change or 0.0

log = logging.getLogger(__name__)
PACKAGE_LOGGER = "gifsplanation"
"""The logger :func:`setup_logging` configures: every module logs under it (``__name__``)."""

MAPS = ("max", "mean", "minmax", "interval", "endpoint")
STRATEGIES = ("fast", "paper")
MODES = ("residual", "reconstruction")
DEVICES = ("cpu", "cuda")
THRESHOLD_MODES = ("relative", "absolute")

# -- options shared by explain, batch and demo (declared once) -------------------------
ImagesArg = Annotated[
    list[str],
    typer.Argument(
        help="Image files (PNG, JPG, DICOM), folders, glob patterns, or CSV files with an "
        "'image' column.",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        "-t",
        help="Target to explain, by name or output index (repeatable); default: the most "
        "confident one per image.",
    ),
]
ClassifierOpt = Annotated[
    str | None,
    typer.Option(help="Classifier: registry name or checkpoint path (default: bundled)."),
]
AutoencoderOpt = Annotated[
    str | None,
    typer.Option(help="Autoencoder: registry name or checkpoint path (default: bundled)."),
]
FramesOpt = Annotated[int, typer.Option(min=3, help="Frames in the λ sweep.")]
MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", help=f"Map method(s): {', '.join(MAPS)} (repeatable)."),
]
ModeOpt = Annotated[
    str,
    typer.Option(
        help="Frames: residual (the input plus the decoded change; sharp, λ=0 is the input) "
        "or reconstruction (the paper's decoded frames)."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu or cuda.")]
BatchSizeOpt = Annotated[int, typer.Option(min=1, help="Images per decoder+classifier call.")]
ImagesPerCallOpt = Annotated[
    int, typer.Option(min=1, help="Images explained together per engine call.")
]
StrategyOpt = Annotated[str, typer.Option(help="λ search: fast or paper.")]
ForceOpt = Annotated[
    bool,
    typer.Option(help="Replace finished outputs, or outputs of other settings, in --out."),
]
SeedOpt = Annotated[int, typer.Option(help="Random seed (recorded).")]
Mp4Opt = Annotated[bool, typer.Option(help="Write latentshift.mp4.")]
FlowOpt = Annotated[bool, typer.Option(help="Write flow.png (optical flow).")]
VoiLutOpt = Annotated[bool, typer.Option(help="Apply DICOM VOI LUT / windowing.")]
SideBySideOpt = Annotated[
    bool,
    typer.Option(
        "--side-by-side/--frame-only",
        help="GIF/MP4 show input | frame | change | prediction bar, or the frame alone.",
    ),
]
DurationOpt = Annotated[int, typer.Option(min=10, help="GIF/MP4 frame duration in milliseconds.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar.")]
AllowOodOpt = Annotated[
    bool,
    typer.Option(
        "--allow-ood",
        help="Explain images that do not look like a frontal chest X-ray anyway (the "
        "warning is kept in the JSON and report); by default they are refused.",
    ),
]
LowerChange = Annotated[
    float,
    typer.Option(help="How far the prediction must fall (λ < 0): fraction or absolute."),
]
UpperChange = Annotated[
    float, typer.Option(help="How far it must rise (λ > 0); 0 disables the positive side.")
]
ThresholdModeOpt = Annotated[
    str, typer.Option(help="relative (the paper's text) or absolute (its code).")
]
MaxLambda = Annotated[float, typer.Option(help="Cap on |λ| (the paper used 1000).")]
MaxImageChange = Annotated[
    float,
    typer.Option(
        help="Stop when mean |x_λ − x_0| exceeds this share of the dynamic range; 0 disables."
    ),
]
LambdaRangeOpt = Annotated[
    str | None,
    typer.Option(
        help="A fixed λ range LO,HI (LO <= 0 <= HI): no search (the reference code's fix_range)."
    ),
]


def load_models(
    classifier: str | None, autoencoder: str | None, device: str, need_autoencoder: bool = True
) -> tuple[Any, Any]:
    """Resolve the models by registry name or checkpoint path (tests replace this); the
    autoencoder is ``None`` unless ``need_autoencoder``."""
    from .. import models as registry

    return (
        registry.get_classifier(classifier, device=device),
        registry.get_autoencoder(autoencoder, device=device) if need_autoencoder else None,
    )


def demo_image() -> Any:
    """The bundled example image (tests replace this)."""
    from ..models import demo_image as bundled

    return bundled()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on one line (stderr) and return the exit to raise."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(code)


def check_choice(value: str, choices: tuple[str, ...], option: str) -> None:
    """Exit 2 with one line unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise fail(f"{option} {value!r} is not one of: {', '.join(choices)}", code=2)


def check_device(device: str) -> None:
    """Exit 2 for an unknown device or CUDA without a GPU."""
    check_choice(device, DEVICES, "--device")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise fail("--device cuda: no CUDA device is available; use --device cpu", code=2)


def models_or_exit(
    classifier: str | None, autoencoder: str | None, device: str, need_autoencoder: bool = True
) -> tuple[Any, Any]:
    """:func:`load_models`, or exit 1 with one line naming the problem."""
    try:
        return load_models(classifier, autoencoder, device, need_autoencoder)
    except ImportError as e:
        raise fail(f"the model registry is not available ({e})") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise fail(f"cannot load the models: {message}") from None


def setup_logging() -> None:
    """The one logging set-up of the command line: the package's loggers to stderr."""
    log = logging.getLogger(PACKAGE_LOGGER)
    if not any(getattr(h, "gifsplanation_cli", False) for h in log.handlers):
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True),
            show_time=False,
            show_path=False,
            markup=False,
            rich_tracebacks=False,
        )
        handler.gifsplanation_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@contextlib.contextmanager
def warnings_as_log() -> Iterator[None]:
    """Show the loader's warnings (colour → gray) as one log line each, in order."""
    from ..io import ColorImageWarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        log.warning("%s", message)

    with warnings.catch_warnings():
        # TorchXRayVision ignores all warnings process-wide; ours must still show.
        warnings.simplefilter("always", ColorImageWarning)
        warnings.showwarning = show
        yield


def parse_lambda_range(text: str | None) -> tuple[float, float] | None:
    """``"LO,HI"`` as a pair of floats; exit 2 with one line when malformed."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise fail(f"--lambda-range {text!r}: expected LO,HI such as -500,100", code=2) from None
    return lo, hi


def explain_options(
    *,
    frames: int,
    map_: list[str] | None,
    mode: str,
    strategy: str,
    lower_change: float,
    upper_change: float,
    threshold_mode: str,
    max_lambda: float,
    max_image_change: float,
    lambda_range: str | None,
    allow_ood: bool,
    **rest: Any,
) -> Any:
    """The :class:`~gifsplanation.runs.ExplainOptions` of the shared options (exit 2 with
    one line for a bad value). ``rest`` are other ExplainOptions fields, as named there."""
    from ..runs import ExplainOptions

    maps = tuple(map_ or ["max"])
    for m in maps:
        check_choice(m, MAPS, "--map")
    check_choice(strategy, STRATEGIES, "--strategy")
    check_choice(mode, MODES, "--mode")
    check_choice(threshold_mode, THRESHOLD_MODES, "--threshold-mode")
    search: dict[str, Any] = {
        "lower_change": lower_change,
        "upper_change": upper_change or None,
        "threshold_mode": threshold_mode,
        "max_lambda": max_lambda,
        "max_image_change": max_image_change or None,
    }
    fixed = parse_lambda_range(lambda_range)
    if fixed is not None:
        search["lambda_range"] = fixed
    try:
        return ExplainOptions(
            n_frames=frames,
            maps=maps,
            mode=mode,
            strategy=strategy,
            ood="warn" if allow_ood else "refuse",
            search=search,
            **rest,
        )
    except ValueError as e:
        raise fail(str(e), code=2) from None


def check_out(out: Path) -> None:
    """Exit 2 with one line unless ``out`` is a usable output folder (before any work)."""
    from ..runs import check_out_dir

    try:
        check_out_dir(out)
    except ValueError as e:
        raise fail(str(e), code=2) from None


def print_summary(result: Any, out: Path, processes: int = 1) -> None:
    """The run's last lines: counts, each problem (one line naming the file), where to look."""
    from rich.console import Console

    console = Console(stderr=False, soft_wrap=True)
    procs = f" on {processes} processes" if processes > 1 else ""
    console.print(
        f"{result.count('done')} explained, {result.count('skipped')} already finished "
        f"(skipped), {result.count('refused')} refused (not like a chest X-ray), "
        f"{result.count('failed')} failed{procs}",
        markup=False,
    )
    for e in result.failures:
        console.print(f"  {e['status']}: {e['reason']}", markup=False)
    absent = [e for e in result.entries if e.get("target_present") is False]
    if absent:
        console.print(
            f"  {len(absent)} explanation(s) of a target the classifier does not find in the "
            "image: their frames show what would add it (see each report)",
            markup=False,
        )
    console.print(f"outputs: {out}", markup=False)
    if result.index is not None:
        console.print(f"index:   {result.index}", markup=False)
    if result.interrupted:
        console.print(
            "interrupted: what is listed above is finished; run the same command again to "
            "finish the rest (finished folders are skipped)",
            markup=False,
        )
