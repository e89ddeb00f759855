"""Explain files end to end: load → :class:`~gifsplanation.LatentShift` → outputs.

A :class:`Runner` holds a run's models, engine, targets and provenance. Its
:meth:`~Runner.run_chunk` takes a few :class:`Item` s, skips the (image, target) pairs
whose output folder is already finished, reports the ones whose folder belongs to another
input or run (without computing anything), explains the rest in one engine call per
target, writes each output folder (:func:`~.outputs.write_explanation`) and appends one
entry per pair. A file that cannot be read, an image refused as not a chest X-ray, or a
rendering failure becomes an entry naming the file; the run goes on.

Rendering overlaps the engine (``overlap=True``, the default): the output folders of a
chunk are written by background threads (:class:`RenderPool`, two by default: one draws
while the other waits for ffmpeg or NumPy) while the engine explains the next chunk.
Folders are written concurrently, but every entry and record is committed in the order a
serial run would make it, so entries, records and files are the same as without overlap;
at most one chunk waits to be written (memory stays bounded); :attr:`Runner.entries` and
:attr:`Runner.records` wait for the pool before they answer, and :meth:`Runner.flush`
waits explicitly (and re-raises what stopped the pool, e.g. a ``KeyboardInterrupt``). The
rendering threads run PyTorch with one intra-op thread each: the renderers' small tensor
operations are slower with two OpenMP threads on a busy machine than with one.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import queue
import threading
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


class RenderPool:
    """Background threads that run tasks concurrently and commit their results in order.

    Args:
        workers: threads (default 2: one can wait for ffmpeg or NumPy while the other
            draws).
        prepare: called once on each thread before its first task (warm-ups, settings).

    A task is ``work()`` (run on any thread, concurrently with others) and
    ``commit(result)`` (run in submission order, one at a time). A task that raises —
    ``KeyboardInterrupt`` included — stops the pool's work: the exception is re-raised by
    the next :meth:`submit`, :meth:`wait` or :meth:`close` on the caller's side, and work
    not started yet is dropped (its commit too); work that finished is still committed,
    and so are tasks without work (bookkeeping of what already happened).
    """

    def __init__(self, workers: int = 2, prepare: Callable[[], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._prepare = prepare
        self._tasks: queue.SimpleQueue[tuple[int, Any, Any] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._submitted = 0
        self._committed = 0
        self._results: dict[int, tuple[bool, Any, Any, BaseException | None]] = {}
        self._error: BaseException | None = None
        self._cancel = False

    @property
    def submitted(self) -> int:
        """How many tasks were submitted so far."""
        return self._submitted

    def submit(
        self, work: Callable[[], Any] | None, commit: Callable[[Any], None] | None = None
    ) -> None:
        """Queue a task; the threads start with the first one."""
        self._raise()
        if not self._threads:
            for k in range(self.workers):
                thread = threading.Thread(target=self._run, name=f"gifsplanation-render-{k}")
                thread.daemon = True
                thread.start()
                self._threads.append(thread)
        with self._cond:
            seq = self._submitted
            self._submitted += 1
        self._tasks.put((seq, work, commit))

    def wait(self, until: int | None = None) -> None:
        """Wait until the first ``until`` tasks (default: all submitted) are committed."""
        target = self._submitted if until is None else until
        with self._cond:
            self._cond.wait_for(lambda: self._committed >= target or self._error is not None)
        self._raise()

    def close(self, cancel: bool = False) -> None:
        """Wait for the queued tasks (with ``cancel``: only the running ones) and stop."""
        if self._threads:
            self._cancel = cancel
            for _ in self._threads:
                self._tasks.put(None)
            for thread in self._threads:
                thread.join()
            self._threads, self._cancel = [], False
            with self._cond:
                self._committed = self._submitted
                self._results.clear()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        if self._prepare is not None:
            try:
                self._prepare()
            except Exception:  # noqa: BLE001 - a warm-up must never stop a run
                log.debug("render thread warm-up failed", exc_info=True)
        while (task := self._tasks.get()) is not None:
            seq, work, commit = task
            ran, result, error = False, None, None
            # bookkeeping (no work) always lands; work not started after a stop is dropped
            if work is None or (self._error is None and not self._cancel):
                ran = True
                try:
                    result = work() if work is not None else None
                except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                    error = e
            with self._cond:
                self._results[seq] = (ran, result, commit, error)
                while self._committed in self._results:
                    ran, result, commit, error = self._results.pop(self._committed)
                    if error is not None:
                        self._error = self._error or error
                    elif ran and commit is not None:  # finished work is recorded, even late
                        try:
                            commit(result)
                        except BaseException as e:  # noqa: BLE001 - as above
                            self._error = self._error or e
                    self._committed += 1
                self._cond.notify_all()


def _prepare_render_thread() -> None:
    torch.set_num_threads(1)  # this thread only (OpenMP settings are per thread)
    from ..render.curve import warm_up

    warm_up()


class Runner:
    """The models, engine, targets and provenance of one explain run.

    Args:
        classifier, autoencoder: the models (moved to ``options.device``).
        targets: names or indices to explain for every image; ``None`` or empty = each
            image's most confident output.
        out_dir: the output folder.
        options: an :class:`ExplainOptions`.
        arguments: extra entries for the recorded ``arguments`` (e.g. the command line).
        on_entry: called with each entry as it is added (progress bars; from the rendering
            thread when ``overlap`` is on).
        overlap: write output folders on background threads while the engine explains
            the next chunk (default ``True``); ``False`` writes them before returning.
        render_workers: threads writing output folders with ``overlap`` (default 2).
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
        overlap: bool = True,
        render_workers: int = 2,
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
        self._entries: list[dict[str, Any]] = []
        self._records: list[dict[str, Any]] = []
        self.on_entry = on_entry
        self.render = RenderPool(render_workers, _prepare_render_thread) if overlap else None
        self._writing: collections.Counter[Path] = collections.Counter()  # queued/being written

    @property
    def entries(self) -> list[dict[str, Any]]:
        """One entry per (image, target) so far (waits for pending writes)."""
        self.flush()
        return self._entries

    @property
    def records(self) -> list[dict[str, Any]]:
        """The ``explanation.json`` records written or found so far (waits for writes)."""
        self.flush()
        return self._records

    def flush(self, cancel: bool = False) -> None:
        """Wait until every queued output folder is written (``cancel``: drop the ones not
        started yet); re-raises what stopped the rendering thread."""
        if self.render is not None:
            self.render.close(cancel=cancel)

    def stop(self) -> None:
        """After Ctrl-C: finish the folder being written, drop the queued ones (the next
        run redoes them), and swallow what the rendering threads raise while stopping (a
        second thread may stop on the same interrupt)."""
        with contextlib.suppress(Exception, KeyboardInterrupt):
            self.flush(cancel=True)

    def _later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after everything queued before it (now, without overlap)."""
        if self.render is None:
            fn(*args)
        else:
            self.render.submit(None, lambda _: fn(*args))

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
            self._later(self._records.append, record)
            self._entry(item, self.target_name(t), "skipped", folder=folder, record=record)

    # -- one chunk of images ------------------------------------------------------------
    def run_chunk(self, items: Sequence[Item]) -> None:
        """Load, explain and write ``items`` (one engine call per target).

        With ``overlap``, the writes are queued and this returns once the *previous*
        chunk's folders are written, so the next chunk's engine work overlaps this one's
        rendering (and at most one chunk waits in memory).
        """
        before = self.render.submitted if self.render is not None else 0
        if any(self._writing[self.out / it.folder] for it in items):
            self.flush()  # the same input twice: let its first folder finish first
        self._run_chunk(items)
        if self.render is not None:
            self.render.wait(until=before)

    def _run_chunk(self, items: Sequence[Item]) -> None:
        loaded = [it for it in items if self._load(it)]
        if not loaded:
            return
        x = torch.cat([it.tensor for it in loaded]).to(self.options.device)  # type: ignore[misc]
        if self.targets is None:
            with torch.inference_mode():
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
            self._later(self._records.append, record)
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
            folder = self.target_folder(item, target)
            if self.render is None:
                self._commit_write(exp, i, item, name, folder, self._render(exp, i, item, folder))
                continue
            self._writing[folder.parent] += 1
            self.render.submit(
                functools.partial(self._render, exp, i, item, folder),
                functools.partial(self._commit_write, exp, i, item, name, folder),
            )

    def _render(self, exp: Explanation, i: int, item: Item, folder: Path) -> tuple[str, Any]:
        """Write ``folder`` (on any thread): ``("done", record)``, ``("failed", reason)``
        or ``("refused", None)``."""
        try:
            if exp.refused[i]:
                return "refused", None
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
            return "failed", str(e)
        except Exception as e:  # noqa: BLE001 - reported per image; the batch goes on
            return "failed", f"rendering failed ({type(e).__name__}: {e})"
        finally:
            if self.render is not None:
                self._writing[folder.parent] -= 1
        return "done", record

    def _commit_write(
        self, exp: Explanation, i: int, item: Item, name: str, folder: Path, result: tuple[str, Any]
    ) -> None:
        """Log and record what :meth:`_render` did (in input order)."""
        status, value = result
        notes = exp.notes(i)
        if status == "refused":
            reason = f"{item.source}: {notes[0]}"
            self._entry_now(item, name, "refused", reason=reason, exp=exp, i=i)
            log.warning("%s: %s", item.source, notes[0])
            return
        for note in notes:
            log.warning("%s [%s]: %s", item.source, name, note)
        if status == "failed":
            self._fail_now(item, name, value)
            return
        self._records.append(value)
        self._entry_now(item, name, "done", folder=folder, record=value)

    # -- entries ------------------------------------------------------------------------
    def _entry(self, *args: Any, **kwargs: Any) -> None:
        """Add an entry after everything queued before it (see :meth:`_entry_now`)."""
        self._later(lambda: self._entry_now(*args, **kwargs))

    def _entry_now(
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
        self._entries.append(entry)
        if self.on_entry is not None:
            self.on_entry(entry)

    def _fail(self, item: Item, target: str | None, reason: str) -> None:
        self._later(self._fail_now, item, target, reason)

    def _fail_now(self, item: Item, target: str | None, reason: str) -> None:
        reason = " ".join(reason.split())
        if item.source not in reason:
            reason = f"{item.source}: {reason}"
        log.error("%s", reason)
        self._entry_now(item, target, "failed", reason=reason)

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
