"""The bookkeeping every experiment shares: output folder, manifest, cache, progress, files.

A :class:`Run` owns one output folder. It writes ``manifest.json`` (experiment, exact
arguments, command line, package versions, model names and weight hashes, start/end time),
keeps a resumable cache of computed maps and per-item records under ``cache/<fingerprint>/``
(the fingerprint hashes everything a map depends on, so a run with other models or options
never reads stale maps), shows a rich progress bar, and writes CSV, markdown and PNG files
atomically (:mod:`gifsplanation.files`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..files import write_bytes, write_json, write_text
from ..runs.provenance import VERSION_PACKAGES, package_versions

log = logging.getLogger(__name__)
T = TypeVar("T")
EXTRA_PACKAGES = ("scipy", "captum", "scikit-learn")
"""Recorded in the manifest beyond :data:`~gifsplanation.runs.provenance.VERSION_PACKAGES`:
the experiments' statistics and the Method A baselines depend on them."""


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
            "versions": package_versions((*VERSION_PACKAGES, *EXTRA_PACKAGES)),
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
        write_json(self.out / "manifest.json", self.manifest)

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
        write_bytes(self._path(key, ".npy"), buf.getvalue())

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
        write_text(self._path(key, ".json"), json.dumps(record, default=float))

    # -- progress -------------------------------------------------------------------------
    def progress(
        self, items: Sequence[T] | Iterable[T], description: str, total: int | None = None
    ) -> Iterator[T]:
        """Iterate ``items`` with a rich progress bar (on stderr; disabled with
        ``progress=False``)."""
        from ..runs.progress import progress_bar

        total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        with progress_bar(self.show_progress, remaining=True) as bar:
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
        write_text(path, buf.getvalue())
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.out / name
        write_text(path, text)
        return path

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as PNG (atomically) and close it."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        path = self.out / name
        write_bytes(path, buf.getvalue())
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
