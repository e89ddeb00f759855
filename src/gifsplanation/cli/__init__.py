"""The ``gifsplanation`` command line: one Typer app, each command group in its own module.

Each module below defines ``register(app)``, which adds its commands to the app; adding a
command group costs a module and one line here.
"""

from __future__ import annotations

import typer

from . import align, batch, evaluate, explain, models, study, train

app = typer.Typer(
    name="gifsplanation",
    help="Latent Shift counterfactual explanations for chest X-ray classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (explain, batch, models, train, evaluate, study, align):
    _module.register(app)


def main() -> None:
    """Entry point of the ``gifsplanation`` console script."""
    app()
