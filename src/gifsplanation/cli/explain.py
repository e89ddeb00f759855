"""`gifsplanation` commands: explain (files → GIFs, maps, reports) and demo (fully offline).

``explain`` expands its IMAGE arguments (files, folders, globs, CSV files with an ``image``
column), loads the models by registry name or checkpoint path, and runs
:func:`gifsplanation.pipeline.explain_many`. ``demo`` explains the bundled example image
with the bundled models. Problems are reported as one line on stderr, without a
traceback: exit code 2 for a wrong command line, 1 for a failure while running (including
any image that could not be explained; the others are still written).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from .._core.heatmaps import HEATMAPS
from .._core.search import STRATEGIES

log = logging.getLogger("gifsplanation")

_DEVICES = ("cpu", "cuda")


def _load_models(classifier: str | None, autoencoder: str | None, device: str) -> tuple[Any, Any]:
    """Resolve the models by registry name or checkpoint path (tests replace this)."""
    from .. import models as registry

    return (
        registry.get_classifier(classifier, device=device),
        registry.get_autoencoder(autoencoder, device=device),
    )


def _demo_image() -> Any:
    """The bundled example image (tests replace this)."""
    from ..models import demo_image

    return demo_image()


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _warnings_as_log() -> Iterator[None]:
    """Show the loader's warnings (colour → gray) as one log line each, in order."""
    from ..io import ColorImageWarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        log.warning("%s", message)

    with warnings.catch_warnings():
        # TorchXRayVision ignores all warnings process-wide; ours must still show.
        warnings.simplefilter("always", ColorImageWarning)
        warnings.showwarning = show
        yield


def _setup_logging() -> None:
    if not any(getattr(h, "_gifsplanation_cli", False) for h in log.handlers):
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True),
            show_time=False,
            show_path=False,
            markup=False,
            rich_tracebacks=False,
        )
        handler._gifsplanation_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


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


def search_settings(
    lower_change: float,
    upper_change: float,
    threshold_mode: str,
    max_lambda: float,
    max_image_change: float,
) -> dict[str, object]:
    """The λ-search options of ``explain`` and ``batch`` as SearchConfig overrides."""
    _check_choice(threshold_mode, ("relative", "absolute"), "--threshold-mode")
    return {
        "lower_change": lower_change,
        "upper_change": upper_change or None,
        "threshold_mode": threshold_mode,
        "max_lambda": max_lambda,
        "max_image_change": max_image_change or None,
    }


def _check_choice(value: str, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        raise _fail(f"{option} {value!r} is not one of: {', '.join(choices)}", code=2)


def _models_or_exit(classifier: str | None, autoencoder: str | None, device: str):
    try:
        return _load_models(classifier, autoencoder, device)
    except ImportError as e:
        raise _fail(f"the model registry is not available ({e})") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise _fail(f"cannot load the models: {e}") from None


def _check_device(device: str) -> None:
    _check_choice(device, _DEVICES, "--device")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise _fail("--device cuda: no CUDA device is available; use --device cpu", code=2)


def _report(result: Any, out: Path) -> None:
    from rich.console import Console

    console = Console(stderr=False, soft_wrap=True)
    counts = {s: result.count(s) for s in ("done", "skipped", "failed")}
    console.print(
        f"{counts['done']} explained, {counts['skipped']} already finished (skipped), "
        f"{counts['failed']} failed",
        markup=False,
    )
    for e in result.failures:
        console.print(f"  failed: {e['reason']}", markup=False)
    console.print(f"outputs: {out}", markup=False)
    if result.index is not None:
        console.print(f"index:   {result.index}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command()
    def explain(
        images: Annotated[
            list[str],
            typer.Argument(
                help="Image files (PNG, JPG, DICOM), folders, glob patterns, or CSV files "
                "with an 'image' column.",
                show_default=False,
            ),
        ],
        target: Annotated[
            list[str] | None,
            typer.Option(
                "--target",
                "-t",
                help="Target to explain (repeatable); default: the most confident one per image.",
            ),
        ] = None,
        classifier: Annotated[
            str | None,
            typer.Option(help="Classifier: registry name or checkpoint path (default: bundled)."),
        ] = None,
        autoencoder: Annotated[
            str | None,
            typer.Option(help="Autoencoder: registry name or checkpoint path (default: bundled)."),
        ] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
            "gifsplanation-out"
        ),
        frames: Annotated[int, typer.Option(min=3, help="Frames in the λ sweep.")] = 10,
        map_: Annotated[
            list[str] | None,
            typer.Option("--map", help=f"Map method(s): {', '.join(HEATMAPS)} (repeatable)."),
        ] = None,
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        batch_size: Annotated[
            int, typer.Option(min=1, help="Images per decoder+classifier call.")
        ] = 16,
        images_per_call: Annotated[
            int, typer.Option(min=1, help="Images explained together per engine call.")
        ] = 8,
        strategy: Annotated[str, typer.Option(help="λ search: fast or paper.")] = "fast",
        force: Annotated[bool, typer.Option(help="Recompute finished outputs.")] = False,
        seed: Annotated[int, typer.Option(help="Random seed (recorded).")] = 0,
        mp4: Annotated[bool, typer.Option(help="Write latentshift.mp4.")] = True,
        flow: Annotated[bool, typer.Option(help="Write flow.png (optical flow).")] = True,
        voi_lut: Annotated[bool, typer.Option(help="Apply DICOM VOI LUT / windowing.")] = False,
        side_by_side: Annotated[
            bool,
            typer.Option(
                "--side-by-side/--frame-only",
                help="GIF/MP4 show input | frame | prediction bar, or the frame alone.",
            ),
        ] = True,
        duration_ms: Annotated[
            int, typer.Option(min=10, help="GIF/MP4 frame duration in milliseconds.")
        ] = 100,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
        lower_change: LowerChange = 0.3,
        upper_change: UpperChange = 0.05,
        threshold_mode: ThresholdModeOpt = "relative",
        max_lambda: MaxLambda = 10000.0,
        max_image_change: MaxImageChange = 0.5,
    ) -> None:
        """Explain images with Latent Shift: GIF, MP4, maps, curve, flow and report per target."""
        from ..io import expand_inputs
        from ..pipeline import ExplainOptions, explain_many

        _setup_logging()
        maps = tuple(map_ or ["max"])
        for m in maps:
            _check_choice(m, tuple(HEATMAPS), "--map")
        _check_choice(strategy, STRATEGIES, "--strategy")
        search = search_settings(
            lower_change, upper_change, threshold_mode, max_lambda, max_image_change
        )
        _check_device(device)
        try:
            files = expand_inputs(images)
        except (ValueError, OSError) as e:
            raise _fail(str(e), code=2) from None
        if not files:
            raise _fail("no image files found in the given arguments", code=2)
        clf, ae = _models_or_exit(classifier, autoencoder, device)
        try:
            options = ExplainOptions(
                n_frames=frames,
                maps=maps,
                strategy=strategy,
                batch_size=batch_size,
                images_per_call=images_per_call,
                device=device,
                seed=seed,
                force=force,
                voi_lut=voi_lut,
                side_by_side=side_by_side,
                duration_ms=duration_ms,
                mp4=mp4,
                flow=flow,
                progress=progress,
                search=search,
            )
        except ValueError as e:
            raise _fail(str(e), code=2) from None
        command = {
            "command": "explain",
            "images": list(images),
            "classifier": classifier,
            "autoencoder": autoencoder,
            "out": str(out),
        }
        try:
            with _warnings_as_log():
                result = explain_many(files, clf, ae, target, out, options, arguments=command)
        except ValueError as e:
            raise _fail(str(e), code=2) from None
        except (OSError, RuntimeError) as e:
            raise _fail(str(e)) from None
        _report(result, out)
        if result.failures:
            raise typer.Exit(1)

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
            "gifsplanation-demo"
        ),
        frames: Annotated[int, typer.Option(min=3, help="Frames in the λ sweep.")] = 10,
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        force: Annotated[bool, typer.Option(help="Recompute finished outputs.")] = False,
    ) -> None:
        """Explain the built-in example image with the bundled models (fully offline)."""
        from ..pipeline import ExplainOptions, explain_many

        _setup_logging()
        _check_device(device)
        clf, ae = _models_or_exit(None, None, device)
        try:
            image = _demo_image()
        except (ImportError, OSError, RuntimeError, ValueError) as e:
            raise _fail(f"cannot build the demo image: {e}") from None
        options = ExplainOptions(n_frames=frames, device=device, force=force, progress=True)
        try:
            result = explain_many(
                [image],
                clf,
                ae,
                None,
                out,
                options,
                names=["demo"],
                arguments={"command": "demo", "out": str(out)},
            )
        except (OSError, RuntimeError, ValueError) as e:
            raise _fail(str(e)) from None
        if result.failures:
            raise _fail(result.failures[0]["reason"])
        entry = result.entries[0]
        folder = Path(entry["dir"])
        typer.echo(
            f"Explained the demo image for '{entry['target']}' "
            f"(prediction {entry['prediction']:.2f})."
        )
        typer.echo(f"  GIF:    {folder / 'latentshift.gif'}")
        typer.echo(f"  report: {folder / 'report.html'}  (open it in a browser)")
        typer.echo(f"  all outputs: {folder}")
