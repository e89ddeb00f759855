"""Explain a whole dataset on one process, several processes, GPUs or machines (torchrun).

:func:`explain_dataset` is what ``gifsplanation batch`` runs. The input files are sorted,
so every process sees the same list; process ``rank`` of ``world_size`` takes every
``world_size``-th batch of ``images_per_call`` files (:func:`shard`). Inside a process a
torch ``DataLoader`` with worker processes decodes and preprocesses images
(:func:`gifsplanation.io.load_image`) while the model explains the previous batch; each
batch goes through the engine together (:class:`gifsplanation.runs.Runner` groups it by
target and writes every output folder). A folder whose ``explanation.json`` matches the
image's content and the run's settings is finished: a restarted run does not even load
its image again, so killing any process and starting the same command again finishes only
what is missing, and every file is written atomically. Processes are started by PyTorch's
own launcher, ``torchrun`` (gloo on CPU, NCCL on GPU, one device per process:
``cuda:LOCAL_RANK``); :func:`launch` joins its process group, and without torchrun
everything runs in the current process.
Each process writes its own manifest under ``OUT/ranks/``; rank 0 gathers them into one
``OUT/manifest.json`` and ``OUT/index.html`` and shows the global progress (counts
summed with ``all_reduce``).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from .files import write_text
from .io import load_image
from .runs import (
    STATUSES,
    ExplainOptions,
    NoProgress,
    Runner,
    RunResult,
    TargetSpec,
    check_out_dir,
    count_statuses,
    make_items,
    progress_bar,
    summary_header,
    write_summary,
)

log = logging.getLogger(__name__)

#: How many progress reductions a process may have in flight: a process can run this many
#: batches ahead of the slowest one before it waits for it.
PROGRESS_WINDOW = 4


def shard(n_items: int, rank: int, world_size: int, block: int = 1) -> list[int]:
    """The positions process ``rank`` of ``world_size`` explains: blocks dealt round-robin.

    The sorted list is cut into blocks of ``block`` consecutive positions and block ``b``
    goes to process ``b % world_size``. With ``block`` = the images per engine call, each
    process's batches are exactly the batches a single process would form, so results do
    not depend on the number of processes (not even in the last bits of floating point:
    batched kernels may round differently for a different batch). Dealing blocks
    round-robin rather than cutting the list in contiguous parts spreads similar
    neighbouring files over all processes. Together the shards cover ``range(n_items)``
    exactly once; their sizes differ by at most ``block``.

    Args:
        n_items: length of the (sorted) input list.
        rank: this process, ``0 <= rank < world_size``.
        world_size: number of processes.
        block: consecutive positions dealt together (default 1: ``rank, rank + W, ...``).

    Returns:
        The positions, ascending.

    Raises:
        ValueError: ``world_size < 1``, ``rank`` out of range, ``block < 1`` or
            ``n_items < 0``.

    Example:
        >>> shard(7, 1, 3)
        [1, 4]
        >>> shard(10, 0, 2, block=3)
        [0, 1, 2, 6, 7, 8]
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    return [k for k in range(n_items) if (k // block) % world_size == rank]


def batch_block(n_items: int, world_size: int, images_per_call: int) -> int:
    """Images per engine call: ``images_per_call``, shrunk when there are too few images
    for every process to get a batch (so 8 images on 2 processes do not leave one idle).

    Example:
        >>> batch_block(100, 2, 8), batch_block(8, 2, 8), batch_block(3, 4, 8)
        (8, 4, 1)
    """
    if world_size <= 1 or n_items >= world_size * images_per_call:
        return images_per_call
    return max(1, -(-n_items // world_size))


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a run.

    Attributes:
        rank: global rank (0 without torchrun).
        world_size: number of processes (1 without torchrun).
        local_rank: rank on this machine (picks the GPU).
        device: torch device of this process (``"cpu"``, ``"cuda:LOCAL_RANK"``, ...).
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes the manifest and shows progress)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when several processes share the run."""
        return self.world_size > 1 and self.backend is not None


def _device_for(device: str, local_rank: int) -> str:
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is available; use --device cpu")
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} has no GPU (this machine has {n}); start torchrun "
                f"with --nproc-per-node {n} or fewer"
            )
        return f"cuda:{local_rank}"
    return device


def current(device: str = "cpu") -> DistInfo:
    """Describe this process: the joined process group if any, else a single process.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (becomes ``cuda:LOCAL_RANK``) or an explicit device.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=local_rank,
            device=_device_for(device, local_rank),
            backend=str(dist.get_backend()),
        )
    return DistInfo(device=_device_for(device, 0 if device == "cuda" else local_rank))


@contextlib.contextmanager
def launch(device: str = "cpu", timeout_minutes: float = 60.0) -> Iterator[DistInfo]:
    """Join torchrun's process group (if launched by torchrun) for the duration of a run.

    Reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``). With ``WORLD_SIZE`` > 1 it initialises the default
    process group — NCCL when ``device`` is ``"cuda"`` (each process on
    ``cuda:LOCAL_RANK``), gloo otherwise — and destroys it on exit. Without torchrun (or
    with one process) it yields a single-process :class:`DistInfo` and does nothing else.
    A group that is already initialised is used as is and left open.

    Args:
        device: ``"cpu"`` (default) or ``"cuda"``.
        timeout_minutes: how long a collective waits for a slow process (default 60).

    Yields:
        The :class:`DistInfo` of this process.

    Raises:
        RuntimeError: ``device="cuda"`` without a GPU for this process.

    Example:
        >>> with launch("cpu") as info:  # without torchrun: a single process
        ...     (info.rank, info.world_size)
        (0, 1)
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield current(device)
        return
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run without torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device_for(device, local_rank)
    kwargs: dict[str, Any] = {"timeout": _dt.timedelta(minutes=timeout_minutes)}
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
        backend = "nccl"
        kwargs["device_id"] = torch.device(dev)
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, **kwargs)
    try:
        yield current(device)
    finally:
        dist.destroy_process_group()


class ImageFiles(Dataset):
    """Decode image files into the models' convention, one sample per file.

    A sample is ``(position, tensor or None, warnings)``: a file that cannot be read yields
    ``None`` (the explain step reads it again and records why), so one bad file never
    stops a DataLoader worker. Warnings raised while reading (e.g. colour converted to
    gray) come back as strings for the main process to log.

    Args:
        paths: the files.
        positions: the position of each file in the run's sorted list.
        size: the models' input size.
        voi_lut: apply DICOM VOI LUTs.
    """

    def __init__(
        self, paths: Sequence[Path], positions: Sequence[int], size: int, voi_lut: bool = False
    ) -> None:
        self.paths = list(paths)
        self.positions = list(positions)
        self.size = size
        self.voi_lut = voi_lut

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | None, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                x = load_image(self.paths[k], self.size, voi_lut=self.voi_lut)
            except Exception:  # noqa: BLE001 - the explain step re-reads it and records why
                x = None
        return self.positions[k], x, [str(w.message) for w in caught]


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


def _worker_init(_: int) -> None:
    # Decoding is single-threaded work; threads per worker would only fight the model.
    torch.set_num_threads(1)


def _digest(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


class _GlobalProgress:
    """Sum each process's finished-image count over the group; rank 0 shows the total."""

    def __init__(self, info: DistInfo, progress: Any, task: Any) -> None:
        self.info = info
        self.progress = progress
        self.task = task
        self.device = info.device if info.backend == "nccl" else "cpu"
        self.pending: collections.deque[tuple[Any, torch.Tensor]] = collections.deque()

    def reduce(self, values: Sequence[int], op: Any = None) -> list[int]:
        """A blocking all_reduce (SUM by default) of a few integers."""
        t = torch.tensor(list(values), dtype=torch.int64, device=self.device)
        if self.info.distributed:
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return [int(v) for v in t.tolist()]

    def push(self, n_images: int) -> None:
        """Report ``n_images`` finished here; every process must call this equally often."""
        if not self.info.distributed:
            self.progress.advance(self.task, n_images)
            return
        t = torch.tensor([n_images], dtype=torch.int64, device=self.device)
        self.pending.append((dist.all_reduce(t, async_op=True), t))
        while len(self.pending) > PROGRESS_WINDOW:
            self._settle()

    def flush(self) -> None:
        while self.pending:
            self._settle()

    def _settle(self) -> None:
        work, t = self.pending.popleft()
        work.wait()
        self.progress.advance(self.task, int(t.item()))


def explain_dataset(
    images: Sequence[str | os.PathLike[str]],
    classifier: Any,
    autoencoder: Any,
    targets: Sequence[TargetSpec] | None,
    out_dir: str | os.PathLike[str],
    options: ExplainOptions | None = None,
    *,
    workers: int = 2,
    arguments: dict[str, Any] | None = None,
    info: DistInfo | None = None,
) -> RunResult:
    """Explain every image file for every target; this process takes its shard.

    Run it in every process of a torchrun job (inside :func:`launch`), or alone. The
    output folders, ``explanation.json`` records and the merged ``manifest.json`` do not
    depend on the number of processes or workers: each process forms the batches a
    single process would (:func:`shard`), so with the same ``images_per_call`` (and the
    same number of threads per process) the numbers agree to the last bit; only timings,
    the device and the ``engine_call`` statistics differ.

    Args:
        images: image files (any format :func:`~gifsplanation.io.load_image` reads). They
            are sorted, so the order given does not matter; every process must be given
            the same set (a shared filesystem, or the same data on each machine).
        classifier: the classifier, already on this process's device (``info.device``).
        autoencoder: the autoencoder, on the same device.
        targets: target names or indices for every image; ``None`` = the most confident.
        out_dir: the output folder ``OUT`` (shared by all processes).
        options: :class:`~gifsplanation.runs.ExplainOptions`; ``images_per_call`` is
            the DataLoader batch (images per engine call) and ``device`` is replaced by
            ``info.device``.
        workers: DataLoader worker processes decoding images (0 = decode in this process).
        arguments: extra entries for the ``arguments`` record (e.g. the command line).
        info: this process's :class:`DistInfo` (default: :func:`current`).

    Returns:
        A :class:`~gifsplanation.runs.RunResult`: on rank 0 every entry of the whole run
        in input order and the global ``counts``; on other ranks their own entries. Bad
        files become ``"failed"`` entries; nothing is raised for them.

    Raises:
        ValueError: bad settings (unknown target, map method), ``workers < 0``.
        RuntimeError: processes were given different input lists.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from gifsplanation.testing import tiny_models
        >>> clf, ae, data = tiny_models()
        >>> d = tempfile.mkdtemp()
        >>> Image.new("L", (32, 32), 80).save(f"{d}/a.png")
        >>> res = explain_dataset([f"{d}/a.png"], clf, ae, ["blob"], f"{d}/out",
        ...     ExplainOptions(n_frames=4, mp4=False, flow=False, size=32), workers=0)
        >>> res.counts
        {'done': 1, 'skipped': 0, 'refused': 0, 'failed': 0}
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    options = options or ExplainOptions()
    info = info or current(options.device)
    options = replace(options, device=info.device)
    files = sorted(str(Path(p)) for p in images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return _run(
            files,
            classifier,
            autoencoder,
            targets,
            Path(out_dir),
            options,
            workers,
            arguments,
            info,
        )


def _run(
    files: list[str],
    classifier: Any,
    autoencoder: Any,
    targets: Sequence[TargetSpec] | None,
    out: Path,
    options: ExplainOptions,
    workers: int,
    arguments: dict[str, Any] | None,
    info: DistInfo,
) -> RunResult:
    check_out_dir(out)
    runner = Runner(classifier, autoencoder, targets, out, options, arguments)
    position = {f: k for k, f in enumerate(files)}
    counter = _GlobalProgress(info, NoProgress(), 0)
    _check_same_inputs(files, info)

    step = batch_block(len(files), info.world_size, options.images_per_call)
    if info.is_main and step < options.images_per_call:
        log.info(
            "%d images on %d processes: %d images per engine call (instead of %d) so that "
            "every process gets work",
            len(files),
            info.world_size,
            step,
            options.images_per_call,
        )
    mine = shard(len(files), info.rank, info.world_size, block=step)
    items = dict(zip(mine, make_items([files[k] for k in mine]), strict=True))
    pending: list[int] = []
    finished = []
    for k in mine:
        found = runner.finished(items[k])
        if found is None:
            pending.append(k)
        else:
            finished.append((items[k], found))

    # Every process makes the same number of progress reductions.
    n_batches = -(-len(pending) // step)
    total, skipped, max_batches = (
        *counter.reduce([len(mine), len(mine) - len(pending)]),
        counter.reduce([n_batches], op=dist.ReduceOp.MAX)[0],
    )
    loader = DataLoader(
        ImageFiles([Path(files[k]) for k in pending], pending, runner.size, options.voi_lut),
        batch_size=step,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_list,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=info.device.startswith("cuda"),
        persistent_workers=False,
    )
    # Fork the loader's workers before any other thread runs Python (the rendering
    # threads start with the first recorded entry, and warm up by importing): a fork while
    # another thread holds an import lock leaves the worker deadlocked on its first import.
    batches = iter(loader)
    for item, found in finished:
        runner.add_skipped(item, found)
    interrupted = False
    with progress_bar(options.progress and info.is_main, remaining=True) as progress:
        label = f"images ({info.world_size} processes)" if info.distributed else "images"
        task = progress.add_task(label, total=total, completed=skipped)
        counter = _GlobalProgress(info, progress, task)
        try:
            for _ in range(max_batches):
                batch = next(batches, None)
                if batch is None:
                    counter.push(0)
                    continue
                chunk = []
                for k, x, messages in batch:
                    for message in messages:
                        log.warning("%s", message)
                    items[k].tensor = x
                    chunk.append(items[k])
                runner.run_chunk(chunk)
                counter.push(len(chunk))
            counter.flush()
        except KeyboardInterrupt:
            if info.distributed:
                raise
            interrupted = True
            runner.stop()

    local = count_statuses(runner.entries)
    counts = dict(zip(STATUSES, counter.reduce([local[s] for s in STATUSES]), strict=True))
    result = RunResult(
        entries=runner.entries,
        records=runner.records,
        counts=counts,
        rank=info.rank,
        world_size=info.world_size,
        interrupted=interrupted,
    )
    header = summary_header(
        runner, world_size=info.world_size, images_per_call_used=step, interrupted=interrupted
    )
    if info.distributed:
        rank_doc = {**header, "rank": info.rank, "counts": local, "entries": runner.entries}
        name = f"manifest-rank{info.rank}-of-{info.world_size}.json"
        result.rank_manifest = write_text(
            out / "ranks" / name, json.dumps(_stamped(rank_doc), indent=2) + "\n"
        )
        gathered: list[Any] | None = [None] * info.world_size if info.is_main else None
        dist.gather_object(runner.entries, gathered, dst=0)
        entries = [e for part in gathered or [] for e in part]
    else:
        entries = list(runner.entries)
    if info.is_main:
        order = _target_order(runner)
        entries.sort(key=lambda e: (position.get(e["image"], -1), order.get(e["target"], -1)))
        result.entries = entries
        result.manifest, result.index = write_summary(out, header, entries, counts)
    return result


def _stamped(doc: dict[str, Any]) -> dict[str, Any]:
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return {"created": created, **doc}


def _target_order(runner: Runner) -> dict[str | None, int]:
    if runner.targets is None:
        return {}
    return {runner.target_name(t): k for k, t in enumerate(runner.targets)}


def _check_same_inputs(files: list[str], info: DistInfo) -> None:
    if not info.distributed:
        return
    mine = (len(files), _digest(files))
    every: list[Any] = [None] * info.world_size
    dist.all_gather_object(every, mine)
    if any(other != mine for other in every):
        sizes = ", ".join(f"rank {r}: {n} files" for r, (n, _) in enumerate(every))
        raise RuntimeError(
            f"the processes were given different input lists ({sizes}); give every "
            "process the same files (a shared filesystem or identical copies)"
        )
