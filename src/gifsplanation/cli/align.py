"""`gifsplanation align`: counterfactual alignment (issue #15; Cohen et al., arXiv 2312.02186).

Generates the base classifier's counterfactuals for ``--target`` on every image and reads
each frame with the ``--observe`` models/outputs; writes per-image and dataset statistics
(``alignment.json``, ``alignment.csv``), figures and ``report.html`` to ``--out`` (see
:mod:`gifsplanation.alignment`). Errors follow :mod:`.common`'s rule: a wrong command line
exits 2 with one line, models that cannot be loaded or images that cannot be read exit 1
(one line per problem; the other images are still aligned).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import common
from .common import (
    AllowOodOpt,
    AutoencoderOpt,
    BatchSizeOpt,
    ClassifierOpt,
    DeviceOpt,
    FramesOpt,
    ImagesArg,
    ImagesPerCallOpt,
    LambdaRangeOpt,
    LowerChange,
    MaxImageChange,
    MaxLambda,
    ModeOpt,
    SeedOpt,
    StrategyOpt,
    ThresholdModeOpt,
    UpperChange,
    VoiLutOpt,
)

SIDES = ("lower", "upper")
ENGINE_KEYS = ("n_frames", "strategy", "mode", "ood", "seed", "voi_lut", "search")
"""The explain options that decide an alignment's frames (recorded in alignment.json)."""


def load_observer(name_or_path: str, device: str) -> Any:
    """An observer model by registry name or checkpoint path (tests replace this)."""
    from ..models import get_classifier

    return get_classifier(name_or_path, device=device)


def parse_observe(spec: str) -> tuple[str, str | None]:
    """``MODEL[:OUTPUT]`` → (model, output or None); the model may be a path (the last
    ``:`` separates the output, unless the whole spec is an existing file)."""
    text = spec.strip()
    if not text:
        raise common.fail("--observe needs MODEL[:OUTPUT], got an empty value", code=2)
    if Path(text).is_file() or ":" not in text:
        return text, None
    model, _, output = text.rpartition(":")
    if not model.strip():
        raise common.fail(f"--observe {spec!r}: no model before ':'", code=2)
    return model.strip(), output.strip() or None


def _label(ref: str) -> str:
    """How a model given as ``ref`` is named in tables: registry names as typed, paths by
    their file stem (or folder, for a run's ``model.pt``)."""
    p = Path(ref)
    if len(p.parts) == 1 and not p.suffix:
        return ref
    return p.parent.name if p.stem in ("model", "best", "last") and p.parent.name else p.stem


def register(app: typer.Typer) -> None:
    """Add this module's command to ``app``."""

    @app.command()
    def align(
        images: ImagesArg,
        target: Annotated[
            str,
            typer.Option(
                "--target",
                "-t",
                help="The base classifier's output whose counterfactuals are generated "
                "(name or index).",
                show_default=False,
            ),
        ],
        observe: Annotated[
            list[str],
            typer.Option(
                "--observe",
                help="MODEL[:OUTPUT] read on every frame (repeatable): a registry name or "
                "checkpoint path, or the --classifier value for the base model's other "
                "outputs; without :OUTPUT, every output of MODEL.",
                show_default=False,
            ),
        ],
        classifier: ClassifierOpt = None,
        autoencoder: AutoencoderOpt = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
            "gifsplanation-align"
        ),
        mode: ModeOpt = "residual",
        frames: FramesOpt = 10,
        side: Annotated[
            str,
            typer.Option(
                help="Which end of the sequence is the counterfactual: lower (the target "
                "removed) or upper (added)."
            ),
        ] = "lower",
        min_base_change: Annotated[
            float,
            typer.Option(
                min=0.0,
                help="Exclude images whose base prediction changes less than this "
                "(absolute) between λ=0 and the counterfactual.",
            ),
        ] = 0.1,
        bootstrap: Annotated[
            int, typer.Option(min=0, help="Bootstrap resamples of images for the intervals.")
        ] = 2000,
        confidence: Annotated[
            float, typer.Option(min=0.5, max=0.999, help="Confidence level of the intervals.")
        ] = 0.95,
        image_plots: Annotated[
            bool, typer.Option(help="Write one plot per image (images/*.png, in the report).")
        ] = True,
        device: DeviceOpt = "cpu",
        batch_size: BatchSizeOpt = 16,
        images_per_call: ImagesPerCallOpt = 8,
        strategy: StrategyOpt = "fast",
        allow_ood: AllowOodOpt = False,
        seed: SeedOpt = 0,
        voi_lut: VoiLutOpt = False,
        lower_change: LowerChange = 0.3,
        upper_change: UpperChange = 0.05,
        threshold_mode: ThresholdModeOpt = "relative",
        max_lambda: MaxLambda = 10000.0,
        max_image_change: MaxImageChange = common.DEFAULT_MAX_IMAGE_CHANGE,
        lambda_range: LambdaRangeOpt = None,
    ) -> None:
        """Counterfactual alignment: how other models' outputs move along the base
        classifier's counterfactuals (statistics with bootstrap CIs, plots, report)."""
        import torch

        from ..alignment import Observer, observers_for, write_outputs
        from ..alignment import align as run_alignment
        from ..io import ImageLoadError, expand_inputs, load_image

        common.setup_logging()
        options = common.explain_options(
            frames=frames,
            map_=None,
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
            voi_lut=voi_lut,
        )
        common.check_choice(side, SIDES, "--side")
        specs = [parse_observe(s) for s in observe]
        if not specs:
            raise common.fail("give at least one --observe MODEL[:OUTPUT]", code=2)
        common.check_device(device)
        try:
            files = expand_inputs(images)
        except (ValueError, OSError) as e:
            raise common.fail(str(e), code=2) from None
        if not files:
            raise common.fail("no image files found in the given arguments", code=2)
        common.check_out(out)

        clf, ae = common.models_or_exit(classifier, autoencoder, device)
        base_refs = {r for r in (classifier, getattr(clf, "name", None)) if r}
        if classifier is None:
            from ..models import DEFAULT_CLASSIFIER

            base_refs.add(DEFAULT_CLASSIFIER)
        loaded: dict[str, Any] = {}
        observers: list[Observer] = []
        for ref, output in specs:
            if ref not in loaded:
                if ref in base_refs:
                    loaded[ref] = clf
                else:
                    try:
                        loaded[ref] = load_observer(ref, device)
                    except (OSError, ValueError, KeyError, RuntimeError) as e:
                        message = e.args[0] if isinstance(e, KeyError) and e.args else e
                        raise common.fail(f"cannot load observer {ref!r}: {message}") from None
            try:
                observers.extend(
                    observers_for(loaded[ref], [output] if output else None, prefix=_label(ref))
                )
            except (ValueError, TypeError) as e:
                raise common.fail(f"--observe {ref}:{output}: {e}", code=2) from None
        names = [str(o.name) for o in observers]
        if len(set(names)) != len(names):
            raise common.fail(f"--observe lists an output twice: {', '.join(names)}", code=2)

        torch.manual_seed(seed)
        explainer = options.engine(clf, ae)
        try:
            target_index = explainer.classifier.target_index(target)
        except ValueError as e:
            raise common.fail(f"--target: {e}", code=2) from None

        size = int(getattr(clf, "input_size", 224) or 224)
        tensors, read, failures = [], [], []
        for f in files:
            try:
                tensors.append(load_image(f, size, voi_lut=voi_lut))
            except ImageLoadError as e:
                failures.append(str(e))
                continue
            read.append(f)
        labels = [f.name for f in read]
        if len(set(labels)) != len(labels):  # same file names in different folders
            labels = [str(f) for f in read]
        if not tensors:
            for message in failures[:-1]:
                typer.echo(f"  failed: {message}", err=True)
            raise common.fail(f"none of the images could be read ({failures[-1]})")

        targets = explainer.targets
        base_name = _label(classifier) if classifier else getattr(clf, "name", "classifier")
        base_label = f"{base_name}:" + (targets[target_index] if targets else str(target_index))
        settings = {
            "command": "align",
            "images": [str(i) for i in images],
            "classifier": _model_record(clf, classifier),
            "autoencoder": _model_record(ae, autoencoder),
            "observers": {
                ref: _model_record(model, ref) for ref, model in loaded.items() if model is not clf
            },
            "target": target,
            "engine": {k: v for k, v in options.output_settings().items() if k in ENGINE_KEYS},
            "failed_to_load": failures,
        }

        def progress(done: int, total: int) -> None:
            common.log.info("aligned %d/%d images", done, total)

        try:
            result = run_alignment(
                explainer,
                torch.cat(tensors).to(device),
                target_index,
                observers,
                names=labels,
                images_per_call=images_per_call,
                progress=progress,
                base=base_label,
                side=side,
                min_base_change=min_base_change,
                batch_size=batch_size,
                bootstrap=bootstrap,
                confidence=confidence,
                seed=seed,
                settings=settings,
            )
            files_out = write_outputs(result, out, image_plots=image_plots)
        except (OSError, RuntimeError, ValueError) as e:
            raise common.fail(str(e)) from None
        _print_summary(result, out, files_out, failures)
        if failures:
            raise typer.Exit(1)


def _model_record(model: Any, ref: str | None) -> dict[str, Any]:
    return {
        "given": ref,
        "name": getattr(model, "name", type(model).__name__),
        "weights_path": getattr(model, "weights_path", None),
        "weights_sha256": getattr(model, "weights_sha256", None),
    }


def _print_summary(result: Any, out: Path, files: dict[str, Path], failures: list[str]) -> None:
    """The run's last lines: what was aligned, the table, each problem, where to look."""
    stats = result.statistics()
    used = int(result.included.sum())
    first = next(iter(stats.values()))
    excluded = ", ".join(f"{v} {k}" for k, v in first["excluded"].items()) or "none"
    typer.echo(
        f"aligned {len(result)} images with {result.base} ({result.mode} frames, {result.side} "
        f"side): {used} used, {len(result) - used} excluded ({excluded})"
    )

    def cell(s: dict[str, Any], key: str = "mean") -> str:
        v, ci = s.get(key), s.get("ci") or [None, None]
        if v is None:
            return "n/a"
        return f"{v:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci[0] is not None else "")

    width = max(len("observer"), *(len(k) for k in stats))
    cols = ("relative change", "Pearson", "Spearman", "r across images")
    typer.echo(f"  {'observer':<{width}}  " + "  ".join(f"{c:<26}" for c in cols).rstrip())
    for label, s in stats.items():
        values = (
            cell(s["relative_change"]),
            cell(s["pearson"]),
            cell(s["spearman"]),
            cell(s["pooled_pearson"], "r"),
        )
        typer.echo(f"  {label:<{width}}  " + "  ".join(f"{v:<26}" for v in values).rstrip())
    if failures:
        typer.echo(f"{len(failures)} image(s) could not be read:")
    for message in failures:
        typer.echo(f"  failed: {message}")
    typer.echo(f"outputs: {out}")
    typer.echo(f"report:  {files['report']}")
