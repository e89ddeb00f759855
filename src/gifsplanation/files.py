"""Atomic file writes: a file appears under its final name whole, or not at all.

Every file the package writes (renderings, checkpoints, manifests, CSV and JSON records)
goes through :func:`atomic_path`: a temporary file in the target's folder, then
``os.replace``, so an interrupted run never leaves a half-written file under its final
name. Files get the usual mode (``0o666`` minus the umask), like ``open(path, "w")``;
what must stay private (the reader study's database, which holds its tokens) is created
owner-only by its own code, not here.

Example:
    >>> import json, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_json(folder / "a.json", {"a": 1}).name
    'a.json'
    >>> json.loads((folder / "a.json").read_text())
    {'a': 1}
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# os.umask can only be read by setting it; read it once, at import, not while other
# threads may be creating files.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
"""The mode of the files written here: what ``open(path, "w")`` would give."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it to ``path`` atomically.

    The folder is created if needed. The temporary file keeps ``path``'s suffix (writers
    such as ffmpeg pick the format from it). On an exception the temporary file is
    removed and ``path`` is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("hi")
        >>> out.read_text()
        'hi'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path`` as a :class:`Path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (non-JSON values as ``str``) atomically; return ``path``."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically and return ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
