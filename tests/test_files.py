"""Atomic writes: whole files or none, no temporaries left, the usual file mode."""

from __future__ import annotations

import json
import os

import pytest
import torch

from gifsplanation.files import atomic_path, write_bytes, write_json, write_text, write_torch


def test_writers_replace_whole_files_and_leave_no_temporaries(tmp_path):
    write_text(tmp_path / "r.md", "# old\n")
    assert write_text(tmp_path / "r.md", "# λ table\n") == tmp_path / "r.md"
    write_json(tmp_path / "r.json", {"a": [1, 2]})
    write_torch(tmp_path / "r.pt", {"x": torch.ones(2)})
    write_bytes(tmp_path / "sub" / "r.bin", b"\x00\x01")  # the folder is created
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == "# λ table\n"
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": [1, 2]}
    assert torch.load(tmp_path / "r.pt", weights_only=True)["x"].sum() == 2
    assert (tmp_path / "sub" / "r.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md", "r.pt", "sub"]


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".txt" and tmp.parent == tmp_path  # writers pick formats by suffix
        tmp.write_text("new")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_files_get_the_usual_mode(tmp_path):
    # mkstemp creates 0600 files; written files must be readable like any other file.
    umask = os.umask(0)
    os.umask(umask)
    for out in (
        write_text(tmp_path / "a.html", "<p>hi</p>"),
        write_torch(tmp_path / "a.pt", {}),
        write_json(tmp_path / "a.json", {}),
    ):
        assert out.stat().st_mode & 0o777 == 0o666 & ~umask
