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
from typing import Annotated, Any

import typer

from .._core.heatmaps import HEATMAPS
from .._core.search import STRATEGIES
from . import explain as _explain


def _report(result: Any, out: Path) -> None:
    from rich.console import Console

    console = Console(stderr=False, soft_wrap=True)
    procs = f" on {result.world_size} processes" if result.world_size > 1 else ""
    console.print(
        f"{result.count('done')} explained, {result.count('skipped')} already finished "
        f"(skipped), {result.count('failed')} failed{procs}",
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
    def batch(
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
        device: Annotated[
            str, typer.Option(help="cpu or cuda (under torchrun: cuda:LOCAL_RANK).")
        ] = "cpu",
        batch_size: Annotated[
            int, typer.Option(min=1, help="Images per decoder+classifier call.")
        ] = 16,
        images_per_call: Annotated[
            int, typer.Option(min=1, help="Images explained together per engine call.")
        ] = 8,
        workers: Annotated[
            int,
            typer.Option(min=0, help="DataLoader processes decoding images (0: in-process)."),
        ] = 2,
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
        progress: Annotated[bool, typer.Option(help="Show a progress bar (rank 0).")] = True,
        lower_change: _explain.LowerChange = 0.3,
        upper_change: _explain.UpperChange = 0.05,
        threshold_mode: _explain.ThresholdModeOpt = "relative",
        max_lambda: _explain.MaxLambda = 10000.0,
        max_image_change: _explain.MaxImageChange = 0.5,
    ) -> None:
        """Explain a dataset, alone or on many processes/GPUs/machines with torchrun."""
        from .. import distributed
        from ..io import expand_inputs
        from ..pipeline import ExplainOptions

        _explain._setup_logging()
        maps = tuple(map_ or ["max"])
        for m in maps:
            _explain._check_choice(m, tuple(HEATMAPS), "--map")
        _explain._check_choice(strategy, STRATEGIES, "--strategy")
        search = _explain.search_settings(
            lower_change, upper_change, threshold_mode, max_lambda, max_image_change
        )
        _explain._check_device(device)
        try:
            files = expand_inputs(images)
        except (ValueError, OSError) as e:
            raise _explain._fail(str(e), code=2) from None
        if not files:
            raise _explain._fail("no image files found in the given arguments", code=2)
        command = {
            "command": "batch",
            "images": list(images),
            "classifier": classifier,
            "autoencoder": autoencoder,
            "out": str(out),
        }
        try:
            with distributed.launch(device) as info:
                clf, ae = _explain._models_or_exit(classifier, autoencoder, info.device)
                options = ExplainOptions(
                    n_frames=frames,
                    maps=maps,
                    strategy=strategy,
                    batch_size=batch_size,
                    images_per_call=images_per_call,
                    device=info.device,
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
                with _explain._warnings_as_log():
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
            raise _explain._fail(str(e), code=2) from None
        except (OSError, RuntimeError) as e:
            raise _explain._fail(str(e)) from None
        if result.rank == 0:
            _report(result, out)
            if result.count("failed"):
                raise typer.Exit(1)
