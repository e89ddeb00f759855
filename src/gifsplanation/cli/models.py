"""`gifsplanation models`: a compact table of every registered model (name, kind, number of
targets, source, whether its weights are on this machine) that fits the terminal;
`gifsplanation models NAME` for one model's details (targets with their output indices,
input, output semantics, where its files must go and their URLs); `--json` for all of it."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer

from . import common


def _row(entry: Any, cache_dir: Path | None) -> dict[str, Any]:
    files = entry.files(cache_dir)
    return {
        "name": entry.name,
        "kind": entry.kind,
        "source": entry.source,
        "description": entry.description,
        "targets": entry.targets,
        "xrv_outputs": list(entry.xrv_outputs) if entry.xrv_outputs is not None else None,
        "input": entry.input,
        "output": entry.output,
        "available": all(p.is_file() for p, _ in files),
        "weights": str(files[0][0]),
        "files": [{"path": str(p), "url": url, "present": p.is_file()} for p, url in files],
    }


def _table(rows: list[dict[str, Any]], width: int) -> list[str]:
    """Fixed-width columns; names are never broken. The source column goes first when the
    terminal is too narrow."""
    cols: list[tuple[str, Any, str]] = [
        ("NAME", lambda r: r["name"], "<"),
        ("KIND", lambda r: r["kind"], "<"),
        ("TARGETS", lambda r: str(len(r["targets"])) if r["targets"] else "-", ">"),
        ("SOURCE", lambda r: "bundled" if r["source"] == "bundled" else "xrv", "<"),
        ("WEIGHTS HERE", lambda r: "yes" if r["available"] else "no", "<"),
    ]

    def render(columns: list[tuple[str, Any, str]]) -> list[str]:
        sizes = [max(len(h), *(len(get(r)) for r in rows)) for h, get, _ in columns]
        lines = []
        for cells in [[h for h, _, _ in columns]] + [
            [get(r) for _, get, _ in columns] for r in rows
        ]:
            parts = [
                f"{c:{align}{n}}" for c, n, (_, _, align) in zip(cells, sizes, columns, strict=True)
            ]
            lines.append("  ".join(parts).rstrip())
        return lines

    lines = render(cols)
    if max(len(line) for line in lines) > width:
        lines = render([c for c in cols if c[0] != "SOURCE"])
    return lines


def _wrap(text: str, width: int, indent: str = "  ") -> list[str]:
    """Wrap at spaces only: paths and URLs stay whole (on their own line when too long)."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _details(row: dict[str, Any], width: int) -> list[str]:
    out = [f"{row['name']} ({row['kind']}, {row['source']})"]
    out += _wrap(row["description"], width)
    out += ["input:"] + _wrap(row["input"], width)
    out += ["output:"] + _wrap(row["output"], width)
    if row["targets"]:
        xrv = row["xrv_outputs"]
        head = "targets (output index, name" + (", index among XRV's 18 outputs):" if xrv else "):")
        out.append(head)
        pad = max(len(t) for t in row["targets"])
        for i, t in enumerate(row["targets"]):
            line = f"  {i:>2}  {t:<{pad}}" + (f"  (XRV {xrv[i]})" if xrv else "")
            out.append(line.rstrip())
    role = "classifier" if row["kind"] == "classifier" else "autoencoder"
    for what, f in zip(("weights file", "config file"), row["files"], strict=False):
        if f["present"]:
            out.append(f"{what} (present):")
        elif f["url"]:
            out.append(f"{what} (missing; downloaded on first use when online), goes at:")
        else:
            out.append(f"{what} (missing), goes at:")
        out += _wrap(f["path"], width)
        if f["url"]:
            out += ["download from:"] + _wrap(f["url"], width)
    if row["source"] != "bundled":
        keep = Path(row["files"][0]["path"]).name
        out.append("or pass a local copy:")
        out += _wrap(
            f"--{role} PATH (keep the file name {keep}"
            + (", with the config next to it)" if len(row["files"]) > 1 else ")")
            + f", or get_{role}({row['name']!r}, weights=PATH) in Python",
            width,
        )
    return out


def models(
    name: Annotated[
        str | None,
        typer.Argument(help="A model name: print its details.", show_default=False),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="TorchXRayVision weights folder (default ~/.torchxrayvision/models_data)."
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only 'classifier' or 'autoencoder' entries.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print everything as JSON instead.")
    ] = False,
) -> None:
    """List the models (bundled ones, offline, and the TorchXRayVision zoo); with NAME,
    show one model's targets, input, output and where its weights file must go."""
    from ..models import UnknownModelError, get_entry, list_models

    if kind is not None:
        common.check_choice(kind, ("classifier", "autoencoder"), "--kind")
    width = max(40, shutil.get_terminal_size((80, 24)).columns)
    if name is not None:
        try:
            entries = [get_entry(name)]
        except UnknownModelError as e:
            raise common.fail(str(e), code=2) from None
    else:
        entries = list_models(kind)  # type: ignore[arg-type]
    rows = [_row(e, cache_dir) for e in entries]
    if as_json:
        typer.echo(json.dumps(rows[0] if name is not None else rows, indent=2))
        return
    if name is not None:
        typer.echo("\n".join(_details(rows[0], width)))
        return
    lines = _table(rows, width)
    lines += [
        "",
        *_wrap("Details (targets, input, output, where the weights go, URLs):", width, ""),
        "  gifsplanation models NAME",
        *_wrap("Everything as JSON: gifsplanation models --json", width, ""),
    ]
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    """Add the ``models`` command to ``app``."""
    app.command("models")(models)
