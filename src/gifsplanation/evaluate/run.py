"""The bookkeeping every experiment shares: output folder, manifest, cache, progress, files.

A :class:`Run` owns one output folder. It writes ``manifest.json`` (experiment, exact
arguments, command line, package versions, model names and weight hashes, start/end time),
keeps a resumable cache of computed maps and per-item records under ``cache/<fingerprint>/``
(the fingerprint hashes everything a map depends on, so a run with other models or options
never reads stale maps), shows a rich progress bar, and writes CSV, markdown and PNG files
atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import platform
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger("gifsplanation")
T = TypeVar("T")
_UMASK = os.umask(0)
os.umask(_UMASK)

_PACKAGES = (
    "gifsplanation",
    "torch",
    "numpy",
    "scipy",
    "captum",
    "torchxrayvision",
    "scikit-learn",
    "matplotlib",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages results depend on (plus Python)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def model_record(model: Any) -> dict[str, Any]:
    """Name, class and weights hash of a model, for the manifest and the cache key."""
    inner = getattr(model, "model", model)
    return {
        "name": getattr(model, "name", None) or getattr(inner, "name", None),
        "class": type(inner).__name__,
        "weights_sha256": getattr(model, "weights_sha256", None)
        or getattr(inner, "weights_sha256", None)
        or _param_digest(inner),
    }


def _param_digest(model: Any) -> str | None:
    """A hash of the parameters when the model carries no weights hash."""
    params = getattr(model, "state_dict", None)
    if not callable(params):
        return None
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return "params:" + h.hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class Run:
    """One experiment run in ``out``.

    Args:
        out: output folder (created).
        experiment: the experiment's name.
        args: the exact arguments (JSON-ready) — recorded in the manifest.
        fingerprint: everything computed values depend on (models, options, image size);
            hashed to name the cache folder.
        progress: show a progress bar (default ``True``).
    """

    def __init__(
        self,
        out: Path,
        experiment: str,
        args: dict[str, Any],
        fingerprint: dict[str, Any],
        progress: bool = True,
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self.args = args
        self.show_progress = progress
        blob = json.dumps(fingerprint, sort_keys=True, default=str).encode()
        self.fingerprint = hashlib.sha256(blob).hexdigest()[:16]
        self.cache_dir = self.out / "cache" / self.fingerprint
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_hits = 0
        self.cache_misses = 0
        self.started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.manifest: dict[str, Any] = {
            "experiment": experiment,
            "args": args,
            "command": sys.argv,
            "versions": package_versions(),
            "fingerprint": self.fingerprint,
            "fingerprint_of": fingerprint,
            "started": self.started,
        }
        self.write_manifest(status="running")

    # -- manifest -------------------------------------------------------------------------
    def write_manifest(self, status: str, **extra: Any) -> None:
        self.manifest.update(extra)
        self.manifest["status"] = status
        self.manifest["cache"] = {"hits": self.cache_hits, "misses": self.cache_misses}
        if status != "running":
            self.manifest["finished"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        atomic_write_text(
            self.out / "manifest.json", json.dumps(self.manifest, indent=2, default=str) + "\n"
        )

    # -- cache ----------------------------------------------------------------------------
    def _path(self, key: str, suffix: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)
        return self.cache_dir / f"{safe}{suffix}"

    def get_array(self, key: str) -> np.ndarray | None:
        path = self._path(key, ".npy")
        if path.is_file():
            try:
                arr = np.load(path)
                self.cache_hits += 1
                return arr
            except (OSError, ValueError):
                log.warning("ignoring unreadable cache file %s", path)
        self.cache_misses += 1
        return None

    def put_array(self, key: str, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(arr, dtype=np.float32))
        atomic_write_bytes(self._path(key, ".npy"), buf.getvalue())

    def get_record(self, key: str) -> dict[str, Any] | None:
        path = self._path(key, ".json")
        if path.is_file():
            try:
                rec = json.loads(path.read_text())
                self.cache_hits += 1
                return rec
            except (OSError, ValueError):
                log.warning("ignoring unreadable cache file %s", path)
        self.cache_misses += 1
        return None

    def put_record(self, key: str, record: dict[str, Any]) -> None:
        atomic_write_text(self._path(key, ".json"), json.dumps(record, default=float))

    # -- progress -------------------------------------------------------------------------
    def progress(
        self, items: Sequence[T] | Iterable[T], description: str, total: int | None = None
    ) -> Iterator[T]:
        """Iterate ``items`` with a rich progress bar (on stderr; disabled with
        ``progress=False``)."""
        if not self.show_progress:
            yield from items
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        ) as bar:
            task = bar.add_task(description, total=total)
            for it in items:
                yield it
                bar.advance(task)

    # -- outputs --------------------------------------------------------------------------
    def write_csv(self, name: str, rows: list[dict[str, Any]]) -> Path:
        """Write ``rows`` (dicts; the union of their keys are the columns) to ``name``."""
        cols: list[str] = []
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_cell(v) for k, v in r.items()})
        path = self.out / name
        atomic_write_text(path, buf.getvalue())
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.out / name
        atomic_write_text(path, text)
        return path

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as PNG (atomically) and close it."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        path = self.out / name
        atomic_write_bytes(path, buf.getvalue())
        return path


def _fmt_cell(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return v


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = [
        "| " + " | ".join(str(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation and count of the finite values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan"), 0
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd, int(arr.size)


def fmt_mean_sd(values: Iterable[float], digits: int = 3) -> str:
    m, s, n = mean_sd(values)
    return "–" if n == 0 else f"{m:.{digits}f} ± {s:.{digits}f}"


def plt_agg() -> Any:
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
