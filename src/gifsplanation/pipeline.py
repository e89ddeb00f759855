"""Explain files end to end: load → :class:`~gifsplanation.LatentShift` → render → files.

This is what ``gifsplanation explain`` runs. For every image and target it writes
``OUT/<image-stem>/<target>/`` with ``latentshift.gif``, ``latentshift.mp4``,
``map-<method>.png`` and ``.npy``, ``curve.png``, ``flow.png``, ``explanation.json`` and a
self-contained ``report.html``; a run also writes ``OUT/manifest.json`` (every success and
failure, with the reason) and ``OUT/index.html``. Images that share a target go through the
engine together (``images_per_call`` per call); a file that cannot be read or explained is
recorded as a failure and the run goes on. ``explanation.json`` is written last, so its
presence (with the same settings) marks an output folder as finished: a rerun skips it
unless ``force`` is set.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from ._core.explanation import Explanation
from ._core.heatmaps import HEATMAPS
from ._core.latent_shift import LatentShift
from ._core.search import SearchConfig, StopReason
from .io import ImageLoadError, load_image
from .render import (
    atomic_path,
    save_curve,
    save_flow,
    save_gif,
    save_mp4,
    save_overlay,
    write_index,
    write_report,
    write_text,
)

log = logging.getLogger("gifsplanation")

ImageInput = str | os.PathLike[str] | torch.Tensor
TargetSpec = str | int

_VERSION_PACKAGES = (
    "torch",
    "torchvision",
    "torchxrayvision",
    "numpy",
    "pillow",
    "pydicom",
    "scikit-image",
    "imageio",
    "imageio-ffmpeg",
    "matplotlib",
)


@dataclass
class ExplainOptions:
    """Settings of an explain run (all of them are recorded in ``explanation.json``).

    Args:
        n_frames: frames in the λ sweep, including λ = 0 (default 10).
        maps: attribution maps to write (keys of :data:`~gifsplanation.HEATMAPS`;
            default ``("max",)``).
        strategy: λ search, ``"fast"`` (default) or ``"paper"``.
        batch_size: images per decoder+classifier call inside the engine (default 16).
        images_per_call: images explained together per engine call (default 8).
        device: ``"cpu"`` (default) or ``"cuda"``; models and images are moved there.
        seed: seeds torch before the run (the engine is deterministic; recorded).
        force: recompute outputs that are already finished.
        size: input size; ``None`` = the classifier's ``input_size`` (else 224).
        voi_lut: apply DICOM VOI LUTs when loading.
        side_by_side: GIF/MP4 show input | frame | prediction bar (default True).
        duration_ms: GIF/MP4 frame duration (default 100).
        mp4: also write ``latentshift.mp4`` (default True).
        flow: also write ``flow.png`` (default True).
        progress: show a rich progress bar (default False; the CLI turns it on).
        search: overrides of :class:`~gifsplanation.SearchConfig` fields, e.g.
            ``{"lower_change": 0.5, "threshold_mode": "absolute", "max_lambda": 1000}``.
    """

    n_frames: int = 10
    maps: tuple[str, ...] = ("max",)
    strategy: str = "fast"
    batch_size: int = 16
    images_per_call: int = 8
    device: str = "cpu"
    seed: int = 0
    force: bool = False
    size: int | None = None
    voi_lut: bool = False
    side_by_side: bool = True
    duration_ms: int = 100
    mp4: bool = True
    flow: bool = True
    progress: bool = False
    search: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.maps = tuple(self.maps)
        unknown_search = sorted(set(self.search) - set(SearchConfig.__dataclass_fields__))
        if unknown_search:
            raise ValueError(f"unknown search option(s): {', '.join(unknown_search)}")
        SearchConfig(**self.search)  # validates the values
        unknown = [m for m in self.maps if m not in HEATMAPS]
        if unknown or not self.maps:
            raise ValueError(
                f"unknown map method(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(HEATMAPS)}"
            )
        if self.n_frames < 3:
            raise ValueError(f"n_frames must be >= 3, got {self.n_frames}")
        if self.images_per_call < 1 or self.batch_size < 1:
            raise ValueError("batch_size and images_per_call must be >= 1")


@dataclass
class RunResult:
    """What a run produced: one entry per (image, target) or failed image.

    Attributes:
        entries: dicts with ``image``, ``name``, ``target``, ``status`` (``"done"``,
            ``"skipped"`` or ``"failed"``), ``reason``, ``prediction``, ``dir``, ``report``.
        manifest: path of ``manifest.json`` (None for :func:`explain_one`).
        index: path of ``index.html`` (None for :func:`explain_one`).
        records: the ``explanation.json`` content of each finished entry, in order.
    """

    entries: list[dict[str, Any]]
    manifest: Path | None = None
    index: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["status"] == "failed"]

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e["status"] == status)


@dataclass
class _Item:
    source: str
    name: str
    tensor: torch.Tensor | None = None
    path: Path | None = None
    load_seconds: float = 0.0


def slug(text: str) -> str:
    """A folder-safe version of ``text`` (letters, digits, ``.``, ``-``, ``_``).

    Example:
        >>> slug("Non-COVID pneumonia")
        'Non-COVID_pneumonia'
    """
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return s or "image"


def model_info(model: Any) -> dict[str, Any]:
    """Name, class and weight hash of a model, for provenance."""
    cls = type(model)
    return {
        "name": getattr(model, "name", None) or cls.__name__,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "weights_sha256": getattr(model, "weights_sha256", None),
    }


def package_versions() -> dict[str, str | None]:
    """Versions of Python, gifsplanation and the libraries the outputs depend on."""
    out: dict[str, str | None] = {"python": platform.python_version(), "gifsplanation": __version__}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _move(model: Any, device: str) -> Any:
    if isinstance(model, nn.Module) or hasattr(model, "to"):
        try:
            return model.to(device)
        except (RuntimeError, AssertionError) as e:
            raise RuntimeError(f"cannot move {type(model).__name__} to {device}: {e}") from e
    return model


def _input_size(classifier: Any, autoencoder: Any, options: ExplainOptions) -> int:
    if options.size:
        return int(options.size)
    for m in (classifier, autoencoder):
        size = getattr(m, "input_size", None)
        if size:
            return int(size if isinstance(size, int) else size[-1])
    return 224


def _resolve_targets(
    ls: LatentShift, targets: Sequence[TargetSpec] | None
) -> list[tuple[int, str]] | None:
    """(index, name) per requested target; None means "the most confident per image"."""
    if not targets:
        return None
    names = ls.targets
    out = []
    for t in targets:
        text = str(t).strip()
        if names and text in names:
            idx = names.index(text)
        elif text.lstrip("-").isdigit():
            idx = int(text)
            if idx < 0 or (names and idx >= len(names)):
                raise ValueError(f"target index {idx} out of range (0..{len(names or []) - 1})")
        else:
            lowered = {n.lower(): i for i, n in enumerate(names or [])}
            if text.lower() not in lowered:
                choices = ", ".join(repr(n) for n in names or []) or "output indices"
                raise ValueError(f"unknown target {text!r}; the classifier has {choices}")
            idx = lowered[text.lower()]
        out.append((idx, names[idx] if names and idx < len(names) else f"output-{idx}"))
    return list(dict.fromkeys(out))


def _target_name(ls: LatentShift, idx: int) -> str:
    names = ls.targets
    return names[idx] if names and idx < len(names) else f"output-{idx}"


def _run_key(options: ExplainOptions, classifier: Any, autoencoder: Any, size: int) -> str:
    relevant = {
        k: v
        for k, v in asdict(options).items()
        if k not in ("force", "progress", "device", "batch_size", "images_per_call")
    }
    relevant |= {
        "size": size,
        "classifier": model_info(classifier),
        "autoencoder": model_info(autoencoder),
    }
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _finished(folder: Path, key: str) -> dict[str, Any] | None:
    path = folder / "explanation.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("run_key") != key:
        return None
    outputs = record.get("outputs", {})
    if not all((folder / name).is_file() for name in outputs.values()):
        return None
    return record


def _save_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return path


def _render(
    exp: Explanation,
    i: int,
    folder: Path,
    heatmaps: dict[str, torch.Tensor],
    options: ExplainOptions,
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    assets: dict[str, Path] = {}
    assets["gif"] = save_gif(
        exp,
        i,
        folder / "latentshift.gif",
        side_by_side=options.side_by_side,
        duration_ms=options.duration_ms,
    )
    if options.mp4:
        assets["mp4"] = save_mp4(
            exp,
            i,
            folder / "latentshift.mp4",
            side_by_side=options.side_by_side,
            duration_ms=options.duration_ms,
        )
    for method, maps in heatmaps.items():
        heat = maps[i].detach().float().cpu()
        assets[f"map-{method}"] = save_overlay(
            exp.images[i].mean(0).cpu(), heat, folder / f"map-{method}.png"
        )
        assets[f"npy-{method}"] = _save_npy(folder / f"map-{method}.npy", heat.numpy())
    assets["curve"] = save_curve(exp, i, folder / "curve.png")
    if options.flow:
        assets["flow"] = save_flow(exp, i, folder / "flow.png")
    return assets


class _Runner:
    def __init__(
        self,
        classifier: Any,
        autoencoder: Any,
        targets: Sequence[TargetSpec] | None,
        out_dir: str | os.PathLike[str],
        options: ExplainOptions,
        arguments: dict[str, Any] | None,
    ) -> None:
        self.options = options
        self.out = Path(out_dir)
        self.classifier = _move(classifier, options.device)
        self.autoencoder = _move(autoencoder, options.device)
        self.ls = LatentShift(
            self.classifier,
            self.autoencoder,
            strategy=options.strategy,  # type: ignore[arg-type]
            n_frames=options.n_frames,
            batch_size=options.batch_size,
            **options.search,
        )
        self.targets = _resolve_targets(self.ls, targets)
        self.size = _input_size(classifier, autoencoder, options)
        self.key = _run_key(options, classifier, autoencoder, self.size)
        self.models = {
            "classifier": model_info(classifier),
            "autoencoder": model_info(autoencoder),
        }
        self.versions = package_versions()
        self.arguments = {
            **asdict(options),
            "maps": list(options.maps),
            "targets": [str(t) for t in targets] if targets else None,
            "size": self.size,
            **(arguments or {}),
        }
        self.entries: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    # -- one chunk of images ----------------------------------------------------------
    def run_chunk(self, items: list[_Item], advance: Callable[[int, int], None]) -> None:
        loaded: list[_Item] = []
        for item in items:
            start = time.perf_counter()
            try:
                if item.tensor is None:
                    assert item.path is not None
                    item.tensor = load_image(item.path, self.size, voi_lut=self.options.voi_lut)
                item.tensor = _as_batch(item.tensor, item.source)
                loaded.append(item)
            except (ImageLoadError, ValueError) as e:
                self._fail(item, None, str(e))
                advance(1, 0)
            except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
                self._fail(item, None, f"cannot read image ({type(e).__name__}: {e})")
                advance(1, 0)
            item.load_seconds = time.perf_counter() - start
        if not loaded:
            return
        device = self.options.device
        x = torch.cat([it.tensor for it in loaded]).to(device)  # type: ignore[misc]
        if self.targets is None:
            with torch.no_grad():
                top = self.ls.classifier(x).argmax(1).tolist()
            wanted = [[(t, _target_name(self.ls, t))] for t in top]
        else:
            wanted = [list(self.targets) for _ in loaded]

        groups: dict[tuple[int, str], list[int]] = {}
        for k, (item, pairs) in enumerate(zip(loaded, wanted, strict=True)):
            for target in pairs:
                folder = self.out / item.name / slug(target[1])
                done = None if self.options.force else _finished(folder, self.key)
                if done is not None:
                    self._entry(item, target[1], "skipped", done, folder)
                    self.records.append(done)
                else:
                    groups.setdefault(target, []).append(k)
        for target, rows in groups.items():
            self._explain_group(target, [loaded[k] for k in rows], x[rows], advance)
        advance(len(loaded), 0)

    def _explain_group(
        self,
        target: tuple[int, str],
        items: list[_Item],
        x: torch.Tensor,
        advance: Callable[[int, int], None],
    ) -> None:
        try:
            with _engine_warnings_muted():
                exp = self.ls.explain(x, target=target[0])
            heatmaps = {m: exp.heatmap(m) for m in self.options.maps}
        except Exception as e:  # noqa: BLE001 - reported per image; the batch goes on
            for item in items:
                self._fail(item, target[1], f"explain failed ({type(e).__name__}: {e})")
            return
        for i, item in enumerate(items):
            for side, reason in exp.stop_reasons[i].items():
                if reason not in (StopReason.TARGET_REACHED, StopReason.DISABLED):
                    log.warning(
                        "%s [%s], %s side: %s", item.source, target[1], side, reason.description
                    )
            folder = self.out / item.name / slug(target[1])
            start = time.perf_counter()
            try:
                assets = _render(exp, i, folder, heatmaps, self.options)
                record = self._record(exp, i, item, assets, folder)
                record["timings"]["render_seconds"] = round(time.perf_counter() - start, 4)
                report = write_report(
                    record,
                    {k: v for k, v in assets.items() if not k.startswith("npy-")},
                    folder / "report.html",
                )
                record["outputs"]["report"] = report.name
                # explanation.json last: it marks the folder as finished.
                write_text(folder / "explanation.json", json.dumps(record, indent=2) + "\n")
            except Exception as e:  # noqa: BLE001 - reported per image; the batch goes on
                self._fail(item, target[1], f"rendering failed ({type(e).__name__}: {e})")
                advance(0, exp.frames.shape[1])
                continue
            self.records.append(record)
            self._entry(item, target[1], "done", record, folder)
            advance(0, exp.frames.shape[1])

    def _record(
        self, exp: Explanation, i: int, item: _Item, assets: dict[str, Path], folder: Path
    ) -> dict[str, Any]:
        summary = exp.summary(i)
        cost = exp.cost
        return {
            "schema": 1,
            "image": item.source,
            "image_name": item.name,
            "output_dir": str(folder),
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
            "timings": {
                "load_seconds": round(item.load_seconds, 4),
                "explain_seconds": round(cost.seconds / max(len(exp), 1), 4),
            },
            "models": self.models,
            "versions": self.versions,
            "seed": self.options.seed,
            "arguments": self.arguments,
            "run_key": self.key,
            "outputs": {k: p.name for k, p in assets.items()},
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }

    def _entry(
        self, item: _Item, target: str, status: str, record: dict[str, Any], folder: Path
    ) -> None:
        self.entries.append(
            {
                "image": item.source,
                "name": item.name,
                "target": target,
                "status": status,
                "reason": None,
                "prediction": record.get("input_pred"),
                "reached": {
                    side: r == "target_reached"
                    for side, r in record.get("stop_reasons", {}).items()
                },
                "dir": str(folder),
                "report": str(folder / "report.html"),
            }
        )

    def _fail(self, item: _Item, target: str | None, reason: str) -> None:
        reason = " ".join(reason.split())
        log.error("%s", reason if item.source in reason else f"{item.source}: {reason}")
        self.entries.append(
            {
                "image": item.source,
                "name": item.name,
                "target": target,
                "status": "failed",
                "reason": reason,
                "prediction": None,
                "dir": None,
                "report": None,
            }
        )


class _DropEngineNotes(logging.Filter):
    # The engine reports unreached goals by batch position; the pipeline re-reports them
    # with the file name and target, which is what a user can act on.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != "_log_unreached"


@contextlib.contextmanager
def _engine_warnings_muted() -> Iterator[None]:
    drop = _DropEngineNotes()
    logging.getLogger("gifsplanation").addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger("gifsplanation").removeFilter(drop)


def _as_batch(x: torch.Tensor, source: str) -> torch.Tensor:
    x = x.detach().float()
    while x.ndim < 4:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"{source}: expected one image (1,1,H,W), got shape {tuple(x.shape)}")
    return x


def _items(images: Sequence[ImageInput], names: Sequence[str] | None) -> list[_Item]:
    items, used = [], set()
    for k, image in enumerate(images):
        if isinstance(image, torch.Tensor):
            base = slug(names[k]) if names else "image"
            item = _Item(source=f"<tensor {k}>", name=base, tensor=image)
        else:
            p = Path(image)
            base = slug(names[k]) if names else slug(p.stem if p.suffix else p.name)
            item = _Item(source=str(p), name=base, path=p)
        n = 2
        while item.name in used:
            item.name = f"{base}-{n}"
            n += 1
        used.add(item.name)
        items.append(item)
    return items


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
    write_summary: bool = True,
) -> RunResult:
    """Explain every image for every target, writing each output folder, the manifest and index.

    Args:
        images: image files (any format :func:`~gifsplanation.io.load_image` reads) or
            tensors ``(1, 1, H, W)`` already in the models' convention.
        classifier: the classifier (``nn.Module``; ``targets``/``output_kind`` attributes).
        autoencoder: the autoencoder (``encode``/``decode``).
        targets: target names or indices to explain for every image; ``None`` or empty
            explains each image's most confident target.
        out_dir: the output folder ``OUT``.
        options: an :class:`ExplainOptions` (defaults when ``None``).
        names: folder names for the images (default: file stems, made unique).
        arguments: extra entries for the ``arguments`` record (e.g. the command line).
        write_summary: write ``manifest.json`` and ``index.html`` (default True).

    Returns:
        A :class:`RunResult`. Bad files become ``"failed"`` entries; nothing is raised for
        them. Bad settings (unknown target, map method) raise ``ValueError`` up front.

    Example:
        >>> import tempfile
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> out = tempfile.mkdtemp()
        >>> res = explain_many([data.positive(1)], clf, ae, ["blob"], out,
        ...                    ExplainOptions(n_frames=4, mp4=False, flow=False))
        >>> [e["status"] for e in res.entries]
        ['done']
    """
    options = options or ExplainOptions()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return _explain_many(
            images,
            classifier,
            autoencoder,
            targets,
            out_dir,
            options,
            names,
            arguments,
            write_summary,
        )


def _explain_many(
    images: Sequence[ImageInput],
    classifier: Any,
    autoencoder: Any,
    targets: Sequence[TargetSpec] | None,
    out_dir: str | os.PathLike[str],
    options: ExplainOptions,
    names: Sequence[str] | None,
    arguments: dict[str, Any] | None,
    write_summary: bool,
) -> RunResult:
    runner = _Runner(classifier, autoencoder, targets, out_dir, options, arguments)
    items = _items(images, names)
    n_pairs = len(items) * (len(runner.targets) if runner.targets else 1)
    with _progress(options.progress) as progress:
        t_images = progress.add_task("images", total=len(items))
        t_frames = progress.add_task("frames", total=n_pairs * options.n_frames)

        def advance(n_images: int, n_frames: int) -> None:
            progress.advance(t_images, n_images)
            progress.advance(t_frames, n_frames)

        step = options.images_per_call
        for start in range(0, len(items), step):
            runner.run_chunk(items[start : start + step], advance)
    result = RunResult(entries=runner.entries, records=runner.records)
    if write_summary:
        out = Path(out_dir)
        manifest = {
            "gifsplanation": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "out_dir": str(out),
            "arguments": runner.arguments,
            "models": runner.models,
            "versions": runner.versions,
            "counts": {s: result.count(s) for s in ("done", "skipped", "failed")},
            "entries": runner.entries,
        }
        result.manifest = write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        result.index = write_index(runner.entries, out / "index.html")
    return result


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
    """Explain one image (a file or a ``(1, 1, H, W)`` tensor) into ``OUT/<name>/<target>/``.

    Args:
        image: the image file or tensor.
        classifier, autoencoder: the models.
        targets: target names or indices; ``None`` = the most confident one.
        out_dir: the output folder ``OUT``.
        options: an :class:`ExplainOptions`.
        name: folder name (default: the file's stem, or ``"image"`` for a tensor).

    Returns:
        The ``explanation.json`` records, one per target.

    Raises:
        ImageLoadError: the file cannot be read.
        RuntimeError: the explanation or its rendering failed.
    """
    options = options or ExplainOptions()
    result = explain_many(
        [image],
        classifier,
        autoencoder,
        targets,
        out_dir,
        replace(options, progress=False),
        names=[name] if name else None,
        write_summary=False,
    )
    for e in result.failures:
        reason = e["reason"] or "unknown error"
        if e["target"] is None:
            raise ImageLoadError(reason)
        raise RuntimeError(reason)
    return result.records


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None


def _progress(enabled: bool, remaining: bool = False) -> Any:
    """A rich progress bar on stderr (with an ETA column if ``remaining``), or a no-op."""
    if not enabled:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description:>6}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True))
