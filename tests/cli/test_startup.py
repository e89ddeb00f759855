"""Start-up: the package, ``gifsplanation --help`` and ``gifsplanation models`` load without
PyTorch (nor torchxrayvision), and ``models`` prints what it prints in a process that has
them; the lazy command listing says exactly what the commands say."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
import typer

from gifsplanation import cli
from gifsplanation.models import xrv_zoo

NO_TORCH = """
import sys
{body}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchxrayvision"))
print("TORCH" if loaded else "NO-TORCH")
"""

RUN_CLI = """
from gifsplanation.cli import main
sys.argv = ["gifsplanation", *{args!r}]
try:
    main()
except SystemExit as e:
    assert e.code in (0, None), e.code
"""


def run(body: str, env: dict[str, str] | None = None) -> str:
    code = NO_TORCH.format(body=body)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_package_and_the_cli_does_not_import_torch():
    assert run("import gifsplanation, gifsplanation.cli").strip().endswith("NO-TORCH")


def test_help_does_not_import_torch():
    out = run(RUN_CLI.format(args=["--help"]))
    assert "explain" in out and "batch" in out and "models" in out
    assert out.strip().endswith("NO-TORCH")


@pytest.mark.parametrize(
    "args",
    [
        ["models"],
        ["models", "cxr-classifier"],
        ["models", "--json"],
        ["models", "xrv-vqgan-768-sd"],
    ],
)
def test_models_does_not_import_torch_and_prints_the_same(args: list[str], tmp_path) -> None:
    from typer.testing import CliRunner

    args = [*args, "--cache-dir", str(tmp_path)]  # the same XRV files (one present) in both
    (tmp_path / xrv_zoo.weights_filename("densenet", "densenet121-res224-rsna")).touch()
    env = {"COLUMNS": "80"}
    expected = CliRunner().invoke(cli.app, args, env=env)  # the same command in this process
    assert expected.exit_code == 0, expected.output
    assert run(RUN_CLI.format(args=args), env=env) == expected.output + "NO-TORCH\n"


def test_public_names_load_on_first_use():
    import gifsplanation

    assert set(gifsplanation.__all__) <= set(dir(gifsplanation))
    for name in gifsplanation.__all__:
        assert getattr(gifsplanation, name) is not None
    from gifsplanation import LatentShift
    from gifsplanation._core.latent_shift import LatentShift as Defined

    assert LatentShift is Defined


def test_model_names_load_on_first_use_and_the_registry_re_exports_the_catalogue():
    from gifsplanation import models
    from gifsplanation.models import catalog, registry

    assert set(models.__all__) <= set(dir(models))
    for name in models.__all__:
        assert getattr(models, name) is not None
    for name in ("ModelEntry", "UnknownModelError", "get_entry", "list_models", "WEIGHTS_DIR"):
        assert getattr(registry, name) is getattr(catalog, name)
    assert models.get_classifier is registry.get_classifier
    with pytest.raises(AttributeError):
        models.no_such_name  # noqa: B018


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
