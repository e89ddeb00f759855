"""`gifsplanation explain` (files → GIFs, maps, reports) and `demo` (fully offline).

``explain`` expands its IMAGE arguments (files, folders, globs, CSV files with an ``image``
column), checks ``--out`` before loading anything, loads the models by registry name or
checkpoint path, and runs :func:`gifsplanation.runs.explain_many`. ``demo`` explains the
bundled example image with the bundled models. Errors follow :mod:`.common`'s rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import common
from .common import (
    AllowOodOpt,
    AutoencoderOpt,
    BatchSizeOpt,
    ClassifierOpt,
    DeviceOpt,
    DurationOpt,
    FlowOpt,
    ForceOpt,
    FramesOpt,
    ImagesArg,
    ImagesPerCallOpt,
    LambdaRangeOpt,
    LowerChange,
    MapOpt,
    MaxImageChange,
    MaxLambda,
    ModeOpt,
    Mp4Opt,
    ProgressOpt,
    SeedOpt,
    SideBySideOpt,
    StrategyOpt,
    TargetOpt,
    ThresholdModeOpt,
    UpperChange,
    VoiLutOpt,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command()
    def explain(
        images: ImagesArg,
        target: TargetOpt = None,
        classifier: ClassifierOpt = None,
        autoencoder: AutoencoderOpt = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
            "gifsplanation-out"
        ),
        mode: ModeOpt = "residual",
        frames: FramesOpt = 10,
        map_: MapOpt = None,
        device: DeviceOpt = "cpu",
        batch_size: BatchSizeOpt = 16,
        images_per_call: ImagesPerCallOpt = 8,
        strategy: StrategyOpt = "fast",
        force: ForceOpt = False,
        allow_ood: AllowOodOpt = False,
        seed: SeedOpt = 0,
        mp4: Mp4Opt = True,
        flow: FlowOpt = True,
        voi_lut: VoiLutOpt = False,
        side_by_side: SideBySideOpt = True,
        duration_ms: DurationOpt = 100,
        progress: ProgressOpt = True,
        lower_change: LowerChange = 0.3,
        upper_change: UpperChange = 0.05,
        threshold_mode: ThresholdModeOpt = "relative",
        max_lambda: MaxLambda = 10000.0,
        max_image_change: MaxImageChange = common.DEFAULT_MAX_IMAGE_CHANGE,
        lambda_range: LambdaRangeOpt = None,
    ) -> None:
        """Explain images with Latent Shift: GIF, MP4, maps, curve, flow and report per target."""
        from ..io import expand_inputs
        from ..runs import RunInterrupted, explain_many

        common.setup_logging()
        options = common.explain_options(
            frames=frames,
            map_=map_,
            mode=mode,
            strategy=strategy,
            lower_change=lower_change,
            upper_change=upper_change,
            threshold_mode=threshold_mode,
            max_lambda=max_lambda,
            max_image_change=max_image_change,
            lambda_range=lambda_range,
            allow_ood=allow_ood,
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
        )
        common.check_device(device)
        try:
            files = expand_inputs(images)
        except (ValueError, OSError) as e:
            raise common.fail(str(e), code=2) from None
        if not files:
            raise common.fail("no image files found in the given arguments", code=2)
        common.check_out(out)
        clf, ae = common.models_or_exit(classifier, autoencoder, device)
        command = {
            "command": "explain",
            "images": list(images),
            "classifier": classifier,
            "autoencoder": autoencoder,
            "out": str(out),
        }
        try:
            with common.warnings_as_log():
                result = explain_many(files, clf, ae, target, out, options, arguments=command)
        except RunInterrupted as stop:
            common.print_summary(stop.result, out)
            raise typer.Exit(130) from None
        except ValueError as e:
            raise common.fail(str(e), code=2) from None
        except (OSError, RuntimeError) as e:
            raise common.fail(str(e)) from None
        common.print_summary(result, out)
        if result.failures:
            raise typer.Exit(1)

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
            "gifsplanation-demo"
        ),
        target: Annotated[
            list[str] | None,
            typer.Option(
                "--target",
                "-t",
                help="Target(s) to explain (repeatable); default: COVID-19, the finding the "
                "demo image was made to show (else the most confident output).",
            ),
        ] = None,
        mode: ModeOpt = "residual",
        frames: FramesOpt = 10,
        device: DeviceOpt = "cpu",
        force: ForceOpt = False,
    ) -> None:
        """Explain the built-in example image with the bundled models (fully offline)."""
        from ..models.demo import DEMO_TARGET
        from ..runs import ExplainOptions, explain_many

        common.setup_logging()
        common.check_choice(mode, common.MODES, "--mode")
        common.check_device(device)
        common.check_out(out)
        clf, ae = common.models_or_exit(None, None, device)
        try:
            image = common.demo_image()
        except (ImportError, OSError, RuntimeError, ValueError) as e:
            raise common.fail(f"cannot build the demo image: {e}") from None
        options = ExplainOptions(
            n_frames=frames, mode=mode, device=device, force=force, progress=True
        )
        # a classifier without that output: its most confident one
        default = [DEMO_TARGET] if DEMO_TARGET in (getattr(clf, "targets", None) or []) else None
        try:
            result = explain_many(
                [image],
                clf,
                ae,
                target or default,
                out,
                options,
                names=["demo"],
                arguments={"command": "demo", "out": str(out)},
            )
        except (OSError, RuntimeError, ValueError) as e:
            raise common.fail(str(e)) from None
        if result.failures:
            raise common.fail(result.failures[0]["reason"])
        entry = result.entries[0]
        folder = out / entry["dir"]
        verb = "Explained" if entry["status"] == "done" else "Already explained (skipped)"
        typer.echo(
            f"{verb}: the demo image for '{entry['target']}' "
            f"(p = {entry['prediction']:.2f}, {mode} frames)."
        )
        typer.echo(f"  GIF:    {folder / 'latentshift.gif'}")
        typer.echo(f"  report: {folder / 'report.html'}  (open it in a browser)")
        typer.echo(f"  all outputs: {folder}")
        if entry["status"] == "skipped":
            typer.echo("  (pass --force to compute it again)")
