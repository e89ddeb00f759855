"""`gifsplanation batch`: explain a whole dataset on one process or many (torchrun).

The same options as ``explain``, plus ``--workers`` (DataLoader processes decoding
images). Alone it runs in one process; under ``torchrun --nproc-per-node N [--nnodes M
...] -m gifsplanation batch ...`` every process takes its shard of the sorted inputs (on
``cuda:LOCAL_RANK`` with ``--device cuda``) and rank 0 writes ``OUT/manifest.json`` and
``OUT/index.html`` and prints the summary (see :mod:`gifsplanation.distributed`).
Restarting the same command finishes only what is missing. Exit codes as ``explain``:
2 for a wrong command line, 1 when anything failed (on rank 0; the other processes exit
0 unless they crash).
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
    def batch(
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
        device: Annotated[
            str, typer.Option(help="cpu or cuda (under torchrun: cuda:LOCAL_RANK).")
        ] = "cpu",
        batch_size: BatchSizeOpt = 16,
        images_per_call: ImagesPerCallOpt = 8,
        workers: Annotated[
            int,
            typer.Option(min=0, help="DataLoader processes decoding images (0: in-process)."),
        ] = 2,
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
        compile_: Annotated[
            bool,
            typer.Option(
                "--compile",
                help="torch.compile the decoder+classifier frames: tens of seconds once per "
                "process, then faster; for long runs (docs/performance.md).",
            ),
        ] = False,
    ) -> None:
        """Explain a dataset, alone or on many processes/GPUs/machines with torchrun."""
        from .. import distributed
        from ..io import expand_inputs

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
            seed=seed,
            force=force,
            voi_lut=voi_lut,
            side_by_side=side_by_side,
            duration_ms=duration_ms,
            mp4=mp4,
            flow=flow,
            progress=progress,
            compile=compile_,
        )
        common.check_device(device)
        try:
            files = expand_inputs(images)
        except (ValueError, OSError) as e:
            raise common.fail(str(e), code=2) from None
        if not files:
            raise common.fail("no image files found in the given arguments", code=2)
        common.check_out(out)
        command = {
            "command": "batch",
            "images": list(images),
            "classifier": classifier,
            "autoencoder": autoencoder,
            "out": str(out),
        }
        try:
            with distributed.launch(device) as info:
                clf, ae = common.models_or_exit(classifier, autoencoder, info.device)
                with common.warnings_as_log():
                    result = distributed.explain_dataset(
                        files,
                        clf,
                        ae,
                        target,
                        out,
                        options,
                        workers=workers,
                        arguments=command,
                        info=info,
                    )
        except ValueError as e:
            raise common.fail(str(e), code=2) from None
        except (OSError, RuntimeError) as e:
            raise common.fail(str(e)) from None
        if result.rank == 0:
            common.print_summary(result, out, result.world_size)
            if result.interrupted:
                raise typer.Exit(130)
            if result.failures:
                raise typer.Exit(1)
