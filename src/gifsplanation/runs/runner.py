"""Explain files end to end: load → :class:`~gifsplanation.LatentShift` → outputs.

A :class:`Runner` holds a run's models, engine, targets and provenance. Its
:meth:`~Runner.run_chunk` takes a few :class:`Item` s, skips the (image, target) pairs
whose output folder is already finished, reports the ones whose folder belongs to another
input or run (without computing anything), explains the rest in one engine call per
target, writes each output folder (:func:`~.outputs.write_explanation`) and appends one
entry per pair. A file that cannot be read, an image refused as not a chest X-ray, or a
rendering failure becomes an entry naming the file; the run goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._core.explanation import Explanation
from ..io import ImageLoadError, load_image
from .options import ExplainOptions
from .outputs import OutputConflict, RecordContext, write_explanation
from .provenance import (
    RECORD,
    FolderState,
    conflict_message,
    content_sha256,
    folder_name,
    inspect_folder,
    model_identity,
    package_versions,
    run_key,
    slug,
)

log = logging.getLogger(__name__)

ImageInput = str | os.PathLike[str] | torch.Tensor
TargetSpec = str | int
"""A target: an output name (case-insensitive), or an output index (an ``int``, or a
string of digits on the command line)."""


@dataclass
class Item:
    """One input of a run.

    Attributes:
        source: the file path as given, or the name of an in-memory image.
        name: the name its output folder starts with (the file stem).
        sha256: the SHA-256 of its content (``None`` when the file cannot be read).
        tensor: the loaded image ``(1, C, H, W)`` (``None`` until loaded).
        path: the file (``None`` for in-memory images).
        load_seconds: time spent loading it.
    """

    source: str
    name: str
    sha256: str | None
    tensor: torch.Tensor | None = None
    path: Path | None = None
    load_seconds: float = 0.0

    @property
    def folder(self) -> str:
        """The output folder of this input: its name plus a short content hash."""
        return folder_name(self.name, self.sha256)


def make_items(images: Sequence[ImageInput], names: Sequence[str] | None = None) -> list[Item]:
    """One :class:`Item` per image (file or tensor), hashed; unreadable files keep
    ``sha256=None`` and fail, with their reason, when loaded.

    Args:
        images: files or ``(1, C, H, W)`` tensors.
        names: display/folder names, one per image (default: file stems; ``image-K`` for
            tensors).
    """
    if names is not None and len(names) != len(images):
        raise ValueError(f"got {len(names)} names for {len(images)} images")
    items = []
    for k, image in enumerate(images):
        if isinstance(image, torch.Tensor):
            name = names[k] if names else f"image-{k}"
            items.append(Item(source=name, name=name, sha256=content_sha256(image), tensor=image))
            continue
        p = Path(image)
        try:
            sha = content_sha256(p) if p.is_file() else None
        except OSError:
            sha = None
        name = names[k] if names else (p.stem if p.suffix else p.name)
        items.append(Item(source=str(p), name=name, sha256=sha, path=p))
    return items


class Runner:
    """The models, engine, targets and provenance of one explain run.

    Args:
        classifier, autoencoder: the models (moved to ``options.device``).
        targets: names or indices to explain for every image; ``None`` or empty = each
            image's most confident output.
        out_dir: the output folder.
        options: an :class:`ExplainOptions`.
        arguments: extra entries for the recorded ``arguments`` (e.g. the command line).
        on_entry: called with each entry as it is added (progress bars).
    """

    def __init__(
        self,
        classifier: Any,
        autoencoder: Any,
        targets: Sequence[TargetSpec] | None,
        out_dir: str | os.PathLike[str],
        options: ExplainOptions,
        arguments: dict[str, Any] | None = None,
        on_entry: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.options = options
        self.out = Path(out_dir)
        self.classifier = move(classifier, options.device)
        self.autoencoder = move(autoencoder, options.device)
        self.engine = options.engine(self.classifier, self.autoencoder)
        self.targets = self._resolve(targets)
        self.size = input_size(classifier, autoencoder, options)
        self.models = {
            "classifier": model_identity(classifier),
            "autoencoder": model_identity(autoencoder),
        }
        settings = {**options.output_settings(), "size": self.size}
        self.arguments = {
            **asdict(options),
            "maps": list(options.maps),
            "targets": [str(t) for t in targets] if targets else None,
            "size": self.size,
            **(arguments or {}),
        }
        self.context = RecordContext(
            run_key=run_key(settings, classifier, autoencoder),
            models=self.models,
            versions=package_versions(),
            arguments=self.arguments,
            seed=options.seed,
        )
        self.entries: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.on_entry = on_entry

    @property
    def key(self) -> str:
        """The run key (settings and models) that finished folders must match."""
        return self.context.run_key

    def target_name(self, index: int) -> str:
        """The name of output ``index`` (``output-K`` when the classifier has none)."""
        names = self.engine.targets
        return names[index] if names and index < len(names) else f"output-{index}"

    def target_folder(self, item: Item, target: int) -> Path:
        """The output folder of ``item`` for output ``target``."""
        return self.out / item.folder / slug(self.target_name(target))

    # -- skipping finished work before loading -----------------------------------------
    def finished(self, item: Item) -> list[tuple[int, dict[str, Any], Path]] | None:
        """``(target, record, folder)`` for every target of ``item`` when all are finished
        (so the image need not even be loaded); ``None`` otherwise."""
        if self.options.force or item.sha256 is None:
            return None
        if self.targets is not None:
            found = []
            for t in self.targets:
                folder = self.target_folder(item, t)
                state, record = inspect_folder(folder, self.key, item.sha256)
                if state is not FolderState.FINISHED or record is None:
                    return None
                found.append((t, record, folder))
            return found
        # Most confident target: the one finished folder of a run that chose it.
        base = self.out / item.folder
        found = []
        for path in sorted(base.glob(f"*/{RECORD}")) if base.is_dir() else []:
            state, record = inspect_folder(path.parent, self.key, item.sha256)
            if state is FolderState.FINISHED and record is not None:
                if (record.get("arguments") or {}).get("targets") is None:
                    found.append((int(record["target"]), record, path.parent))
        return found if len(found) == 1 else None

    def add_skipped(self, item: Item, found: list[tuple[int, dict[str, Any], Path]]) -> None:
        """Record ``item``'s finished targets as skipped."""
        for t, record, folder in found:
            self.records.append(record)
            self._entry(item, self.target_name(t), "skipped", folder=folder, record=record)

    # -- one chunk of images ------------------------------------------------------------
    def run_chunk(self, items: Sequence[Item]) -> None:
        """Load, explain and write ``items`` (one engine call per target)."""
        loaded = [it for it in items if self._load(it)]
        if not loaded:
            return
        x = torch.cat([it.tensor for it in loaded]).to(self.options.device)  # type: ignore[misc]
        if self.targets is None:
            with torch.no_grad():
                wanted = [[t] for t in self.engine.classifier(x).argmax(1).tolist()]
        else:
            wanted = [list(self.targets) for _ in loaded]
        groups: dict[int, list[int]] = {}
        for k, (item, targets) in enumerate(zip(loaded, wanted, strict=True)):
            for t in targets:
                if self._ready(item, t):
                    groups.setdefault(t, []).append(k)
        for t, rows in groups.items():
            self._explain_group(t, [loaded[k] for k in rows], x[rows])

    def _load(self, item: Item) -> bool:
        start = time.perf_counter()
        try:
            if item.tensor is None:
                if item.path is None:
                    raise ImageLoadError(f"{item.source}: no file and no image")
                item.tensor = load_image(item.path, self.size, voi_lut=self.options.voi_lut)
            item.tensor = as_batch(item.tensor, item.source)
            if item.sha256 is None:
                item.sha256 = content_sha256(item.path or item.tensor)
        except (ImageLoadError, ValueError, OSError) as e:
            self._fail(item, None, str(e))
            return False
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            self._fail(item, None, f"cannot read image ({type(e).__name__}: {e})")
            return False
        item.load_seconds = time.perf_counter() - start
        return True

    def _ready(self, item: Item, target: int) -> bool:
        """Whether (item, target) needs explaining; records skips and conflicts."""
        folder = self.target_folder(item, target)
        state, record = inspect_folder(folder, self.key, item.sha256)
        if state is FolderState.FINISHED and record is not None and not self.options.force:
            self.records.append(record)
            self._entry(item, self.target_name(target), "skipped", folder=folder, record=record)
            return False
        if state is FolderState.FOREIGN or (
            state in (FolderState.OTHER_INPUT, FolderState.OTHER_SETTINGS)
            and not self.options.force
        ):
            self._fail(item, self.target_name(target), conflict_message(folder, state))
            return False
        return True

    def _explain_group(self, target: int, items: list[Item], x: torch.Tensor) -> None:
        name = self.target_name(target)
        try:
            exp = self.engine.explain(x, target=target)
        except Exception as e:  # noqa: BLE001 - reported per image; the batch goes on
            for item in items:
                self._fail(item, name, f"explain failed ({type(e).__name__}: {e})")
            return
        for i, item in enumerate(items):
            self._write(exp, i, item, name, self.target_folder(item, target))

    def _write(self, exp: Explanation, i: int, item: Item, name: str, folder: Path) -> None:
        notes = exp.notes(i)
        if exp.refused[i]:
            self._entry(item, name, "refused", reason=f"{item.source}: {notes[0]}", exp=exp, i=i)
            log.warning("%s: %s", item.source, notes[0])
            return
        for note in notes:
            log.warning("%s [%s]: %s", item.source, name, note)
        try:
            record = write_explanation(
                exp,
                i,
                folder,
                self.options,
                source=item.source,
                input_sha256=item.sha256,
                context=self.context,
                timings={"load_seconds": round(item.load_seconds, 4)},
            )
        except OutputConflict as e:
            self._fail(item, name, str(e))
            return
        except Exception as e:  # noqa: BLE001 - reported per image; the batch goes on
            self._fail(item, name, f"rendering failed ({type(e).__name__}: {e})")
            return
        self.records.append(record)
        self._entry(item, name, "done", folder=folder, record=record)

    # -- entries ------------------------------------------------------------------------
    def _entry(
        self,
        item: Item,
        target: str | None,
        status: str,
        *,
        folder: Path | None = None,
        record: dict[str, Any] | None = None,
        reason: str | None = None,
        exp: Explanation | None = None,
        i: int = 0,
    ) -> None:
        record = record or (exp.summary(i) if exp is not None else {})
        entry = {
            "image": item.source,
            "name": item.name,
            "target": target,
            "status": status,
            "reason": reason,
            "prediction": record.get("input_pred"),
            "target_present": record.get("target_present"),
            "notes": record.get("notes", []),
            "reached": {
                side: r == "target_reached" for side, r in record.get("stop_reasons", {}).items()
            },
            "dir": relative(folder, self.out) if folder is not None else None,
            "report": relative(folder / "report.html", self.out) if folder is not None else None,
        }
        self.entries.append(entry)
        if self.on_entry is not None:
            self.on_entry(entry)

    def _fail(self, item: Item, target: str | None, reason: str) -> None:
        reason = " ".join(reason.split())
        if item.source not in reason:
            reason = f"{item.source}: {reason}"
        log.error("%s", reason)
        self._entry(item, target, "failed", reason=reason)

    def _resolve(self, targets: Sequence[TargetSpec] | None) -> list[int] | None:
        if not targets:
            return None
        names = self.engine.targets
        n = len(names) if names else None
        out = [self.engine.classifier.target_index(t, n) for t in targets]
        return list(dict.fromkeys(out))


def relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base``, with forward slashes (for manifests and links)."""
    return Path(os.path.relpath(path, base)).as_posix()


def move(model: Any, device: str) -> Any:
    """``model.to(device)`` with a one-line error."""
    if isinstance(model, nn.Module) or hasattr(model, "to"):
        try:
            return model.to(device)
        except (RuntimeError, AssertionError) as e:
            raise RuntimeError(f"cannot move {type(model).__name__} to {device}: {e}") from e
    return model


def input_size(classifier: Any, autoencoder: Any, options: ExplainOptions) -> int:
    """The side images are loaded at: ``options.size``, else the models' ``input_size``."""
    if options.size:
        return int(options.size)
    for m in (classifier, autoencoder):
        size = getattr(m, "input_size", None)
        if size:
            return int(size if isinstance(size, int) else size[-1])
    return 224


def as_batch(x: torch.Tensor, source: str) -> torch.Tensor:
    """``x`` as one image ``(1, C, H, W)``, float."""
    x = x.detach().float()
    while x.ndim < 4:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"{source}: expected one image (1,1,H,W), got shape {tuple(x.shape)}")
    return x
