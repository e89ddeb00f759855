"""The ``gifsplanation`` command line: one Typer app, each command group in its own module.

Each module below defines ``register(app)``, which adds its commands to the app; adding a
command group costs a module and one entry in :data:`COMMANDS`.

Commands load lazily: ``gifsplanation --help`` lists them from :data:`COMMANDS` without
importing any command module (nor PyTorch, which most of them need), and running a
command imports only its own module. The listed help is each command's first docstring
paragraph, copied here; a test checks that the copy matches.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import typer
from typer.core import TyperGroup

COMMANDS: dict[str, tuple[str, str]] = {
    "explain": (
        "explain",
        "Explain images with Latent Shift: GIF, MP4, maps, curve, flow and report per target.",
    ),
    "demo": (
        "explain",
        "Explain the built-in example image with the bundled models (fully offline).",
    ),
    "batch": (
        "batch",
        "Explain a dataset, alone or on many processes/GPUs/machines with torchrun.",
    ),
    "models": (
        "models",
        "List the models (bundled ones, offline, and the TorchXRayVision zoo); with NAME,\n"
        "show one model's targets, input, output and where its weights file must go.",
    ),
    "align": (
        "align",
        "Counterfactual alignment: how other models' outputs move along the base\n"
        "classifier's counterfactuals (statistics with bootstrap CIs, plots, report).",
    ),
    "train": (
        "train",
        "Train an autoencoder or a classifier on a folder or CSV of chest X-rays.",
    ),
    "evaluate": (
        "evaluate",
        "Run the paper's experiments (IoU, randomisation, robustness, AE impact, "
        "counterfactual quality) on a dataset with masks.",
    ),
    "study": (
        "study",
        "Reader study: create a study, add readers, serve it, export and analyse answers.",
    ),
}
"""Command name -> (module in this package that registers it, its listed help)."""


def load_commands(module: str) -> dict[str, click.Command]:
    """The click commands that ``gifsplanation.cli.<module>`` registers, by name."""
    sub = typer.Typer()
    importlib.import_module(f".{module}", __name__).register(sub)
    return dict(typer.main.get_group(sub).commands)


class LazyGroup(TyperGroup):
    """A Typer group whose commands are imported when one of them runs (or shows its help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        loaded: dict[str, click.Command] = self.__dict__.setdefault("_loaded", {})
        if cmd_name in loaded:
            return loaded[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        # For the listing only: a stand-in with the command's help.
        return click.Command(cmd_name, help=COMMANDS[cmd_name][1])

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else None
        if name in COMMANDS:
            loaded: dict[str, click.Command] = self.__dict__.setdefault("_loaded", {})
            loaded.update(load_commands(COMMANDS[name][0]))
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="gifsplanation",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Latent Shift counterfactual explanations for chest X-ray classifiers."""


def main(*args: Any, **kwargs: Any) -> None:
    """Entry point of the ``gifsplanation`` console script."""
    app(*args, **kwargs)
