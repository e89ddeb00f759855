"""Write one explanation's output folder: what ``gifsplanation explain`` writes per target.

:func:`write_explanation` renders ``latentshift.gif`` (and ``.mp4``), ``map-<method>.png``
and ``.npy``, ``curve.png``, ``flow.png``, ``report.html`` and ``explanation.json`` into a
folder. It never writes into a folder that holds files gifsplanation did not write, nor
replaces another input's or another run's explanation unless ``force`` is set; and it
marks the folder as unfinished (:data:`~.provenance.PARTIAL`, and the old
``explanation.json`` removed) *before* touching any file, so an interrupted redo is redone,
never mistaken for finished. ``explanation.json`` is written last.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._core.explanation import Explanation
from ..files import atomic_path, write_text
from ..render import save_curve, save_flow, save_gif, save_mp4, save_overlay, write_report
from .options import ExplainOptions
from .provenance import (
    PARTIAL,
    RECORD,
    FolderState,
    conflict_message,
    content_sha256,
    inspect_folder,
    package_versions,
    run_key,
)

SCHEMA = 2


class OutputConflict(RuntimeError):
    """An output folder holds another input's explanation, another run's, or files we did
    not write; the message names the folder and the fix."""


@dataclass
class RecordContext:
    """Provenance shared by every record of a run.

    Attributes:
        run_key: :func:`~.provenance.run_key` of the run.
        models: identities of the classifier and autoencoder.
        versions: :func:`~.provenance.package_versions`.
        arguments: the options and command line, as recorded.
        seed: the run's seed.
    """

    run_key: str
    models: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=package_versions)
    arguments: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


def write_explanation(
    exp: Explanation,
    index: int,
    folder: str | os.PathLike[str],
    options: ExplainOptions | None = None,
    *,
    source: str | None = None,
    input_sha256: str | None = None,
    context: RecordContext | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write image ``index`` of ``exp`` into ``folder`` as the CLI does; return the record.

    Args:
        exp: an :class:`~gifsplanation.Explanation`.
        index: which image of the batch.
        folder: the output folder (created if needed).
        options: which outputs to write (maps, MP4, flow, GIF layout); default
            :class:`ExplainOptions()`; ``options.force`` allows replacing another input's
            or run's explanation in ``folder``.
        source: the input's name or path, as recorded and shown (default ``"image"``).
        input_sha256: the input's content hash (default: hashed from ``exp.images``).
        context: run provenance (default: the options and this machine's versions).
        timings: extra timings to record (e.g. ``{"load_seconds": 0.1}``).

    Returns:
        The ``explanation.json`` record.

    Raises:
        OutputConflict: ``folder`` holds files we did not write, or (without
            ``options.force``) another input's or another run's explanation.

    Example:
        >>> import tempfile
        >>> from gifsplanation import LatentShift
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> exp = LatentShift(clf, ae, n_frames=4).explain(data.positive(1), target="blob")
        >>> options = ExplainOptions(n_frames=4, mp4=False, flow=False)
        >>> record = write_explanation(exp, 0, tempfile.mkdtemp(), options, source="blob.png")
        >>> record["image"], record["mode"], sorted(record["outputs"])[:2]
        ('blob.png', 'residual', ['curve', 'gif'])
    """
    options = options or ExplainOptions(n_frames=exp.frames.shape[1])
    folder = Path(folder)
    sha = input_sha256 or content_sha256(exp.images[index])
    context = context or RecordContext(
        run_key=run_key(options.output_settings(), None, None),
        arguments=asdict(options),
        seed=options.seed,
    )
    state, _ = inspect_folder(folder, context.run_key, sha)
    if state is FolderState.FOREIGN or (
        state in (FolderState.OTHER_INPUT, FolderState.OTHER_SETTINGS) and not options.force
    ):
        raise OutputConflict(conflict_message(folder, state))
    start = time.perf_counter()
    claim(folder, context.run_key, sha)
    assets = render_assets(exp, index, folder, options)
    record = build_record(exp, index, folder, assets, context, source=source, input_sha256=sha)
    record["timings"].update(timings or {})
    record["timings"]["render_seconds"] = round(time.perf_counter() - start, 4)
    shown = {k: v for k, v in assets.items() if not k.startswith("npy-")}
    record["outputs"]["report"] = write_report(record, shown, folder / "report.html").name
    write_text(folder / RECORD, json.dumps(record, indent=2) + "\n")  # last: marks it finished
    (folder / PARTIAL).unlink(missing_ok=True)
    return record


def claim(folder: Path, key: str, input_sha256: str) -> None:
    """Mark ``folder`` as being written (for this input and run) and remove its old record,
    so that nothing in it counts as finished until the new record is written."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = {"run_key": key, "input_sha256": input_sha256, "started": _now()}
    write_text(folder / PARTIAL, json.dumps(marker) + "\n")
    (folder / RECORD).unlink(missing_ok=True)


def render_assets(
    exp: Explanation, index: int, folder: Path, options: ExplainOptions
) -> dict[str, Path]:
    """Render the GIF, MP4, maps (PNG and raw ``.npy``), curve and flow of image ``index``."""
    assets: dict[str, Path] = {}
    common = {"side_by_side": options.side_by_side, "duration_ms": options.duration_ms}
    assets["gif"] = save_gif(exp, index, folder / "latentshift.gif", **common)
    if options.mp4:
        assets["mp4"] = save_mp4(exp, index, folder / "latentshift.mp4", **common)
    for method in options.maps:
        heat = exp.heatmap(method)[index].detach().float().cpu()
        assets[f"map-{method}"] = save_overlay(
            exp.images[index].mean(0).cpu(), heat, folder / f"map-{method}.png"
        )
        assets[f"npy-{method}"] = save_npy(folder / f"map-{method}.npy", heat.numpy())
    assets["curve"] = save_curve(exp, index, folder / "curve.png")
    if options.flow:
        assets["flow"] = save_flow(exp, index, folder / "flow.png")
    return assets


def save_npy(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as ``.npy`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return path


def build_record(
    exp: Explanation,
    index: int,
    folder: Path,
    assets: dict[str, Path],
    context: RecordContext,
    *,
    source: str | None,
    input_sha256: str,
) -> dict[str, Any]:
    """The ``explanation.json`` record of image ``index`` (without the report's name)."""
    summary = exp.summary(index)
    cost = exp.cost
    return {
        "schema": SCHEMA,
        "image": source or "image",
        "input_sha256": input_sha256,
        "output_dir": folder.name,
        **summary,
        "n_evaluations": summary["evaluations"]["search"] + summary["evaluations"]["sweep"],
        "engine_call": {
            "images": len(exp),
            "evaluations": cost.evaluations,
            "batches": cost.batches,
            "gradient_passes": cost.gradient_passes,
            "input_evaluations": cost.input_evaluations,
            "seconds": round(cost.seconds, 4),
        },
        "timings": {"explain_seconds": round(cost.seconds / max(len(exp), 1), 4)},
        "models": context.models,
        "versions": context.versions,
        "seed": context.seed,
        "arguments": context.arguments,
        "run_key": context.run_key,
        "outputs": {k: p.name for k, p in assets.items()},
        "created": _now(),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
