"""The run layer: explain many files into output folders, as ``explain`` and ``batch`` do.

* :class:`ExplainOptions` — a run's settings; :func:`check_out_dir` — the output folder
  is usable (checked before any model is loaded).
* :func:`write_explanation` — one explanation into one folder (GIF, MP4, maps, curve,
  flow, report, ``explanation.json``): what the CLI writes, from Python.
* :func:`explain_many` / :func:`explain_one` — files or tensors end to end, with
  ``manifest.json`` and ``index.html``.
* :class:`Runner`, :class:`Item`, :func:`make_items` — the pieces, for other drivers
  (:mod:`gifsplanation.distributed` shards a dataset over processes with them).
* Provenance (:func:`run_key`, :func:`content_sha256`, :func:`inspect_folder`, ...) and
  :func:`progress_bar`.

Layout: ``OUT/<file stem>-<10 hex of its content hash>/<target>/``. An output folder
belongs to one input and one run key; it is finished when its ``explanation.json``
matches both; reruns skip finished folders, redo interrupted ones and refuse (per image,
with the fix) folders of another input, of other settings (unless ``force``) or with
files gifsplanation did not write.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from .options import RUNTIME_FIELDS, ExplainOptions
from .outputs import OutputConflict, RecordContext, write_explanation
from .progress import NoProgress, progress_bar
from .provenance import (
    PARTIAL,
    RECORD,
    FolderState,
    content_sha256,
    folder_name,
    inspect_folder,
    model_identity,
    package_versions,
    run_key,
    slug,
)
from .runner import ImageInput, Item, RenderPool, Runner, TargetSpec, make_items
from .summary import STATUSES, OutDirError, RunResult, check_out_dir, count_statuses, write_summary

__all__ = [
    "PARTIAL",
    "RECORD",
    "RUNTIME_FIELDS",
    "STATUSES",
    "ExplainOptions",
    "FolderState",
    "ImageInput",
    "Item",
    "NoProgress",
    "OutDirError",
    "OutputConflict",
    "RecordContext",
    "RenderPool",
    "RunInterrupted",
    "RunResult",
    "Runner",
    "TargetSpec",
    "check_out_dir",
    "content_sha256",
    "count_statuses",
    "explain_many",
    "explain_one",
    "folder_name",
    "inspect_folder",
    "make_items",
    "model_identity",
    "package_versions",
    "progress_bar",
    "run_key",
    "slug",
    "summary_header",
    "write_explanation",
    "write_summary",
]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; ``result`` holds what finished (its manifest is written)."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("interrupted")
        self.result = result


def summary_header(runner: Runner, **extra: Any) -> dict[str, Any]:
    """The ``manifest.json`` header of a run: folder, settings, models, versions."""
    return {
        "out_dir": str(runner.out),
        "run_key": runner.key,
        "arguments": runner.arguments,
        "models": runner.models,
        "versions": runner.context.versions,
        **extra,
    }


def explain_many(
    images: Sequence[ImageInput],
    classifier: Any,
    autoencoder: Any,
    targets: Sequence[TargetSpec] | None,
    out_dir: str | os.PathLike[str],
    options: ExplainOptions | None = None,
    *,
    names: Sequence[str] | None = None,
    arguments: dict[str, Any] | None = None,
    write_index: bool = True,
) -> RunResult:
    """Explain every image for every target, writing each output folder, the manifest and
    the index.

    Args:
        images: image files (any format :func:`~gifsplanation.io.load_image` reads) or
            tensors ``(1, 1, H, W)`` already in the models' convention.
        classifier: the classifier (``nn.Module``; ``targets``/``output_kind`` attributes).
        autoencoder: the autoencoder (``encode``/``decode``).
        targets: output names or indices to explain for every image; ``None`` or empty
            explains each image's most confident output.
        out_dir: the output folder ``OUT``.
        options: an :class:`ExplainOptions` (defaults when ``None``).
        names: names for the images (default: file stems; ``image-K`` for tensors); each
            folder is the name plus a short hash of the image's content.
        arguments: extra entries for the ``arguments`` record (e.g. the command line).
        write_index: write ``manifest.json`` and ``index.html`` (default True).

    Returns:
        A :class:`RunResult`. Bad files, refused images and folder conflicts become
        entries naming the file; nothing is raised for them.

    Raises:
        ValueError: bad settings (unknown target, map method) or an unusable ``out_dir``
            (:class:`OutDirError`), before any image is explained.
        RunInterrupted: Ctrl-C; its ``result`` says what finished (manifest written).

    Example:
        >>> import tempfile
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> out = tempfile.mkdtemp()
        >>> res = explain_many([data.positive(1)], clf, ae, ["blob"], out,
        ...                    ExplainOptions(n_frames=4, mp4=False, flow=False))
        >>> [(e["status"], e["dir"].split("/")[1]) for e in res.entries]
        [('done', 'blob')]
    """
    options = options or ExplainOptions()
    out = check_out_dir(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        items = make_items(images, names)
        per_image = max(len(set(targets)), 1) if targets else 1
        with progress_bar(options.progress, remaining=True) as bar:
            task = bar.add_task("explanations", total=len(items) * per_image)

            def advance(entry: dict[str, Any]) -> None:
                whole_image = entry["target"] is None and runner.targets is not None
                bar.advance(task, len(runner.targets) if whole_image else 1)  # type: ignore[arg-type]

            runner = Runner(classifier, autoencoder, targets, out, options, arguments, advance)
            interrupted = False
            try:
                run_items(runner, items)
            except KeyboardInterrupt:
                interrupted = True
                runner.stop()
    result = RunResult(entries=runner.entries, records=runner.records, interrupted=interrupted)
    if write_index:
        result.manifest, result.index = write_summary(
            out, summary_header(runner, interrupted=interrupted), runner.entries, result.counts
        )
    if interrupted:
        raise RunInterrupted(result)
    return result


def run_items(runner: Runner, items: Sequence[Item]) -> None:
    """Explain ``items`` in chunks of ``images_per_call``, skipping finished ones first;
    returns once every output folder is written (the rendering of a chunk overlaps the
    engine's work on the next one, see :class:`Runner`)."""
    step = runner.options.images_per_call
    for start in range(0, len(items), step):
        pending = []
        for item in items[start : start + step]:
            found = runner.finished(item)
            if found is None:
                pending.append(item)
            else:
                runner.add_skipped(item, found)
        runner.run_chunk(pending)
    runner.flush()


def explain_one(
    image: ImageInput,
    classifier: Any,
    autoencoder: Any,
    targets: Sequence[TargetSpec] | None,
    out_dir: str | os.PathLike[str],
    options: ExplainOptions | None = None,
    *,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Explain one image (a file or a ``(1, 1, H, W)`` tensor) into ``OUT/<name>-<hash>/``.

    Args:
        image: the image file or tensor.
        classifier, autoencoder: the models.
        targets: target names or indices; ``None`` = the most confident one.
        out_dir: the output folder ``OUT``.
        options: an :class:`ExplainOptions`.
        name: the image's name (default: the file's stem, or ``"image-0"``).

    Returns:
        The ``explanation.json`` records, one per target.

    Raises:
        ImageLoadError: the file cannot be read.
        RuntimeError: the image was refused, or its explanation or rendering failed.
    """
    from ..io import ImageLoadError

    options = options or ExplainOptions()
    result = explain_many(
        [image],
        classifier,
        autoencoder,
        targets,
        out_dir,
        replace(options, progress=False),
        names=[name] if name else None,
        write_index=False,
    )
    for e in result.failures:
        reason = e["reason"] or "unknown error"
        if e["target"] is None and e["status"] == "failed":
            raise ImageLoadError(reason)
        raise RuntimeError(reason)
    return result.records
