"""A run's result, its ``manifest.json`` and ``index.html``, and the output folder checks.

:func:`check_out_dir` runs before any model is loaded: the output folder must be writable
and must not hold a ``manifest.json`` or ``index.html`` that gifsplanation did not write
(they would be replaced). :func:`write_summary` writes both files from a run's entries;
every link in the index is a relative file link inside the output folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..files import write_text
from ..render import INDEX_GENERATOR, write_index

STATUSES = ("done", "skipped", "refused", "failed")
"""Entry statuses: explained now, finished earlier, refused as not a chest X-ray, failed."""


class OutDirError(ValueError):
    """The output folder cannot be used; the message names it and the fix."""


@dataclass
class RunResult:
    """What a run produced: one entry per (image, target), or per image that failed or
    was refused before a target was chosen.

    Attributes:
        entries: dicts with ``image``, ``name``, ``target``, ``status`` (one of
            :data:`STATUSES`), ``reason``, ``prediction``, ``target_present``, ``notes``,
            ``reached``, ``dir`` and ``report`` (paths relative to the output folder).
        records: the ``explanation.json`` content of each finished entry, in order.
        counts: entries per status (over every process of a distributed run).
        manifest: ``manifest.json`` (None when not written, or not on rank 0).
        index: ``index.html`` (likewise).
        rank, world_size: this process and the number of processes.
        rank_manifest: this process's own manifest in a distributed run.
        interrupted: the run was stopped (Ctrl-C) before it finished.
    """

    entries: list[dict[str, Any]]
    records: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    manifest: Path | None = None
    index: Path | None = None
    rank: int = 0
    world_size: int = 1
    rank_manifest: Path | None = None
    interrupted: bool = False

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = count_statuses(self.entries)

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Entries that failed or were refused."""
        return [e for e in self.entries if e["status"] in ("failed", "refused")]

    def count(self, status: str) -> int:
        """Number of entries with ``status``."""
        return self.counts.get(status, 0)


def count_statuses(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Entries per status, every status present."""
    return {s: sum(1 for e in entries if e["status"] == s) for s in STATUSES}


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """Create ``out`` if needed and make sure a run can write there, before any work.

    Raises:
        OutDirError: ``out`` is a file, cannot be created or written, or holds a
            ``manifest.json`` / ``index.html`` that gifsplanation did not write.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutDirError(f"--out {path} is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".gifsplanation-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutDirError(
            f"--out {path} is not writable ({e.strerror or e}); choose another folder"
        ) from None
    for name, ours in (("manifest.json", _our_manifest), ("index.html", _our_index)):
        f = path / name
        if f.exists() and not ours(f):
            raise OutDirError(
                f"{f} exists and was not written by gifsplanation; move it away or choose "
                "another --out (it would be replaced)"
            )
    return path


def write_summary(
    out: Path, header: dict[str, Any], entries: list[dict[str, Any]], counts: dict[str, int]
) -> tuple[Path, Path]:
    """Write ``manifest.json`` (``header`` + counts + entries) and ``index.html``."""
    doc = {
        "gifsplanation": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **header,
        "counts": counts,
        "entries": entries,
    }
    manifest = write_text(out / "manifest.json", json.dumps(doc, indent=2) + "\n")
    return manifest, write_index(entries, out / "index.html")


def _our_manifest(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "gifsplanation" in doc and "entries" in doc


def _our_index(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return INDEX_GENERATOR in head
