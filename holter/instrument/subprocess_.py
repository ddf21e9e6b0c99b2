"""Subprocesses: ``subprocess.Popen`` (so ``run``, ``check_output``) and asyncio's.

``asyncio.create_subprocess_exec`` and ``create_subprocess_shell`` are recorded too.
Each child process is a span ``subprocess`` from start to exit with
``process.command`` (the program's name only: never its arguments, which may hold
secrets) and ``process.exit_status``. Metrics: ``subprocess.duration{command}``
(seconds) and ``subprocess.runs{command,exit_status}``; a program that could not be
started is ``subprocess.errors{command,error}``.
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
import shlex
import subprocess
from typing import Any

from holter.instrument._common import failed

_inside_asyncio: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "holter_inside_asyncio_subprocess", default=False
)


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def command_name(args: Any, executable: Any = None, shell: bool = False) -> str:
    """The program's base name: ``["/usr/bin/git", "push", "token"]`` → ``git``.

    Never anything else of the command line: with ``shell=True``, leading ``NAME=value``
    assignments (``PGPASSWORD=… psql``) are skipped and only the program word is kept.
    """
    try:
        if executable and not shell:
            words = [os.fsdecode(executable)]
        elif isinstance(args, str | bytes | os.PathLike):
            text = os.fsdecode(args)
            words = _split(text) if shell else [text]
        else:
            first = os.fsdecode(next(iter(args), ""))
            words = _split(first) if (shell or " " in first) else [first]
        words = [w for w in words if not _ASSIGNMENT.match(w)] or ["?"]
        name = os.path.basename(words[0]) or "?"
    except Exception:
        return "?"
    return name[:64]


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # unbalanced quotes: plain words are enough to find the program
        return text.split()


class _Recorder:
    """The instruments of child processes in one monitor."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.duration = monitor.histogram("subprocess.duration", unit="s",
                                          description="Child processes, start to exit.")
        self.runs = monitor.counter("subprocess.runs", description="Child processes, by exit.")
        self.errors = monitor.counter("subprocess.errors",
                                      description="Child processes that could not start.")

    def start(self, command: str) -> tuple[Any, str] | None:
        try:
            return self.monitor.span("subprocess", **{"process.command": command}), command
        except Exception as exc:
            failed("subprocess.start", exc)
            return None

    def exited(self, state: tuple[Any, str] | None, status: int | None) -> None:
        if state is None:
            return
        span, command = state
        try:
            span.set_tag("process.exit_status", status)
            if status is not None and status != 0:
                span.set_error("ExitStatus", f"exit status {status}")
            span.end()
            self.duration.observe(span.duration_ns / 1e9, command=command)
            self.runs.inc(command=command, exit_status=status)
        except Exception as exc:
            failed("subprocess.exit", exc)

    def not_started(self, state: tuple[Any, str] | None, error: BaseException) -> None:
        if state is None:
            return
        span, command = state
        try:
            span.set_error(error)
            span.end()
            self.errors.inc(command=command, error=type(error).__name__)
        except Exception as exc:
            failed("subprocess.error", exc)


def install(monitor: Any, patches: Any) -> None:
    """Patch ``subprocess.Popen`` and asyncio's subprocess functions."""
    recorder = _Recorder(monitor)

    def make_init(original: Any) -> Any:
        @functools.wraps(original)
        def __init__(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:  # noqa: N807
            if _inside_asyncio.get():  # asyncio records it itself
                original(self, args, *rest, **kwargs)
                return
            state = recorder.start(command_name(args, kwargs.get("executable"),
                                                bool(kwargs.get("shell"))))
            try:
                original(self, args, *rest, **kwargs)
            except BaseException as exc:
                recorder.not_started(state, exc)
                raise
            self._holter_subprocess = state

        return __init__

    def make_handle_exitstatus(original: Any) -> Any:
        @functools.wraps(original)
        def _handle_exitstatus(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            state = self.__dict__.pop("_holter_subprocess", None)
            if state is not None:
                recorder.exited(state, self.returncode)
            return result

        return _handle_exitstatus

    patches.replace(subprocess.Popen, "__init__", make_init)
    if hasattr(subprocess.Popen, "_handle_exitstatus"):
        patches.replace(subprocess.Popen, "_handle_exitstatus", make_handle_exitstatus)

    def make_create(original: Any, shell: bool) -> Any:
        @functools.wraps(original)
        async def create(program: Any, *args: Any, **kwargs: Any) -> Any:
            state = recorder.start(command_name(program if shell else [program], shell=shell))
            token = _inside_asyncio.set(True)
            try:
                process = await original(program, *args, **kwargs)
            except BaseException as exc:
                recorder.not_started(state, exc)
                raise
            finally:
                _inside_asyncio.reset(token)
            process._holter_subprocess = state
            return process

        return create

    def make_wait(original: Any) -> Any:
        @functools.wraps(original)
        async def wait(self: Any) -> Any:
            status = await original(self)
            state = self.__dict__.pop("_holter_subprocess", None)
            if state is not None:
                recorder.exited(state, status)
            return status

        return wait

    def patch_asyncio(_module: Any) -> None:
        import asyncio
        import asyncio.subprocess

        for module in (asyncio, asyncio.subprocess):
            patches.replace(module, "create_subprocess_exec",
                            lambda original: make_create(original, shell=False))
            patches.replace(module, "create_subprocess_shell",
                            lambda original: make_create(original, shell=True))
        patches.replace(asyncio.subprocess.Process, "wait", make_wait)

    patches.when_imported("asyncio", patch_asyncio)
