"""Start-up: the package and ``gifsplanation --help`` load without PyTorch; the lazy
command listing says exactly what the commands say."""

from __future__ import annotations

import subprocess
import sys

import click
import typer

from gifsplanation import cli

NO_TORCH = """
import sys
{body}
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH" if loaded else "NO-TORCH")
"""


def run(body: str) -> str:
    code = NO_TORCH.format(body=body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_package_and_the_cli_does_not_import_torch():
    assert run("import gifsplanation, gifsplanation.cli").strip().endswith("NO-TORCH")


def test_help_does_not_import_torch():
    body = """
from gifsplanation.cli import main
sys.argv = ["gifsplanation", "--help"]
try:
    main()
except SystemExit as e:
    assert e.code == 0, e.code
"""
    out = run(body)
    assert "explain" in out and "batch" in out and "models" in out
    assert out.strip().endswith("NO-TORCH")


def test_public_names_load_on_first_use():
    import gifsplanation

    assert set(gifsplanation.__all__) <= set(dir(gifsplanation))
    for name in gifsplanation.__all__:
        assert getattr(gifsplanation, name) is not None
    from gifsplanation import LatentShift
    from gifsplanation._core.latent_shift import LatentShift as Defined

    assert LatentShift is Defined


def test_the_lazy_listing_matches_every_command():
    real: dict[str, click.Command] = {}
    for module in dict.fromkeys(m for m, _ in cli.COMMANDS.values()):
        real.update(cli.load_commands(module))
    assert set(real) == set(cli.COMMANDS)
    for name, (_, listed) in cli.COMMANDS.items():
        command = real[name]
        assert (command.short_help or command.help or "").split("\n\n")[0].strip() == listed


def test_commands_still_run_and_unknown_ones_are_refused():
    from typer.testing import CliRunner

    runner = CliRunner()
    assert runner.invoke(cli.app, ["models", "--help"]).exit_code == 0
    result = runner.invoke(cli.app, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output
    assert isinstance(typer.main.get_command(cli.app), cli.LazyGroup)
