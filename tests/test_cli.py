from click.testing import CliRunner

from hydrapick import __version__
from hydrapick.cli import cli

COMMANDS = ["pick", "train", "finetune", "evaluate", "simulate"]


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_every_command_has_help_text():
    for name, command in cli.commands.items():
        assert command.help and len(command.help.strip()) > 20, name
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert __version__ in result.output
