"""The README documents every CLI command, every command has help, and the two setup commands
match what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from holter.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # loads the lazily imported subcommands too
        command = group.get_command(ctx, name)
        assert command is not None, f"`holter {prefix}{name}` is listed but cannot be loaded"
        full = f"{prefix}{name}"
        out.append((full, command))
        if isinstance(command, click.Group):
            out.extend(all_commands(command, full + " "))
    return out


COMMANDS = all_commands(cli)


def test_there_are_commands() -> None:
    assert {"demo", "query", "series", "runs", "run", "trace", "report", "export otlp",
            "rules check"} <= {name for name, _ in COMMANDS}


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_is_documented_in_readme(name: str, command: click.Command) -> None:
    assert f"### `holter {name}`" in README, f"README has no section for `holter {name}`"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_has_help(name: str, command: click.Command) -> None:
    assert command.help and command.help.strip(), f"`holter {name}` has no help text"
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"option {param.opts} of `holter {name}` has no help"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_documented_options_exist(name: str, command: click.Command) -> None:
    section = README.split(f"### `holter {name}`", 1)[1].split("\n### ", 1)[0]
    usage = re.search(r"```\n(holter .*?)\n```", section, re.S)
    assert usage, f"the README section of `holter {name}` has no usage block"
    documented = set(re.findall(r"(--[a-z][a-z-]*)", usage.group(1)))
    real = {opt for p in command.params for opt in getattr(p, "opts", [])}
    assert documented <= real, f"README documents {documented - real} that `holter {name}` lacks"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert len(commands) >= 2
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command.strip() in ci
    assert any("holter demo" in c for c in commands)
