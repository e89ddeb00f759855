"""`gifsplanation models`: list every registered model with its targets, input convention,
output semantics and whether its weights are available on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def models(
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="TorchXRayVision weights folder (default ~/.torchxrayvision/models_data)."
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only 'classifier' or 'autoencoder' entries.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the models: bundled ones (offline) and the TorchXRayVision zoo."""
    from rich.console import Console
    from rich.table import Table

    from ..models import list_models

    if kind not in (None, "classifier", "autoencoder"):
        raise typer.BadParameter(f"--kind {kind!r}: choose classifier or autoencoder")
    entries = list_models(kind)  # type: ignore[arg-type]
    rows = []
    for e in entries:
        where = e.weights_location(cache_dir)
        rows.append(
            {
                "name": e.name,
                "kind": e.kind,
                "source": e.source,
                "targets": e.targets,
                "input": e.input,
                "output": e.output,
                "available": where.is_file(),
                "weights": str(where),
                "description": e.description,
            }
        )
    console = Console()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="gifsplanation models", show_lines=True)
    for col in ("name", "kind", "targets", "input", "output", "weights here"):
        table.add_column(col, overflow="fold")
    for r in rows:
        targets = r["targets"] or []
        shown = ", ".join(targets[:6]) + (f" … (+{len(targets) - 6})" if len(targets) > 6 else "")
        avail = (
            f"[green]yes[/green] ({r['source']})"
            if r["available"]
            else f"[yellow]no[/yellow]: put the file at {r['weights']}"
        )
        table.add_row(r["name"], r["kind"], shown or "—", r["input"], r["output"], avail)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``models`` command to ``app``."""
    app.command("models")(models)
