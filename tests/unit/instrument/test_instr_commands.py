"""Subprocess command names: the program's base name only, never its arguments."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from holter.instrument.subprocess_ import command_name


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        (["/usr/bin/git", "push", "--token", "hunter2"], {}, "git"),
        (["git"], {}, "git"),
        (("ls", "-la"), {}, "ls"),
        ("/bin/true", {}, "true"),  # a string without shell is the program itself
        (b"/bin/true", {}, "true"),
        ([b"/usr/bin/env", b"hunter2"], {}, "env"),
        ([Path("/usr/bin/python3"), "-c", "pass"], {}, "python3"),
        (["x", "hunter2"], {"executable": "/usr/bin/tool"}, "tool"),
        ("echo hunter2 | tr a-z A-Z", {"shell": True}, "echo"),
        ("  /usr/bin/grep -r hunter2 .", {"shell": True}, "grep"),
        ([], {}, "?"),
        ("", {}, "?"),
        ("", {"shell": True}, "?"),
    ],
)
def test_command_names(args, kwargs, name: str) -> None:
    assert command_name(args, kwargs.get("executable"), kwargs.get("shell", False)) == name


def test_names_are_short() -> None:
    assert len(command_name(["/x/" + "a" * 500])) == 64


def test_odd_arguments_never_raise() -> None:
    assert command_name(object()) == "?"
    assert command_name([object()]) == "?"
    assert command_name(None) == "?"


@pytest.mark.parametrize(
    ("args", "name"),
    [
        pytest.param("PGPASSWORD=hunter2 psql -h db", "psql", id="env-assignment-prefix"),
        pytest.param("TOKEN=hunter2 API_KEY=x curl https://h", "curl", id="two-assignments"),
        pytest.param(["echo hunter2"], "echo", id="shell-with-a-list"),
    ],
)
def test_shell_commands_never_leak_secrets(args, name: str) -> None:
    got = command_name(args, shell=True)
    assert "hunter2" not in got
    assert got == name


def test_basename_of_the_interpreter() -> None:
    assert command_name([sys.executable, "-c", "pass"]) == os.path.basename(sys.executable)
