"""``holter run --top -- python app.py``: run a program and watch it in the dashboard.

The dashboard owns the terminal, so the program runs in a session of its own with its
stdin from ``/dev/null`` and its stdout and stderr in a log file (named on screen and
at exit, whose last lines are printed when the dashboard closes). The dashboard follows
the program's run (and the runs it starts) as soon as the program has started
recording; it stays open after the program ended, until ``q``. Quitting while the
program still runs interrupts it (SIGINT, as Ctrl-C would; SIGTERM after 5 s, SIGKILL
after 2 more), and its true exit status is recorded in its run and returned. When the
terminal goes away (SIGHUP), the program gets the hangup too, as it would without the
dashboard.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from holter.cli._options import CliError
from holter.cli.run import RunError, _record_exit, program_env, start_program

STOP_GRACE_S = (5.0, 2.0)
"""Seconds given after SIGINT, then after SIGTERM, before the next signal."""
TAIL_LINES = 20


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def _stop(child: subprocess.Popen[bytes]) -> int:
    """Interrupt a still running program, then terminate, then kill it; its exit code."""
    for sig, grace in ((signal.SIGINT, STOP_GRACE_S[0]), (signal.SIGTERM, STOP_GRACE_S[1]),
                       (signal.SIGKILL, None)):
        if child.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            continue
    return child.wait()


def _program_name(command: Sequence[str]) -> str:
    """``app.py`` for ``python app.py ...``, the module for ``python -m mod``, else argv[0]."""
    if len(command) > 1 and Path(command[0]).name.startswith("python"):
        if command[1] == "-m" and len(command) > 2:
            return command[2]
        return Path(command[1]).name
    return Path(command[0]).name


def _tail(path: str, lines: int = TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as fh:
            return [ln.decode("utf-8", "replace").rstrip("\n") for ln in deque(fh, lines)]
    except OSError:
        return []


def run_program_top(command: Sequence[str], *, db: str, app: str | None, interval: str,
                    instrument: str, runtime: bool) -> int:
    """Run ``command`` monitored under the dashboard; return the exit status to exit with."""
    from holter.dashboard import require_textual
    from holter.dashboard import run as run_dashboard
    from holter.errors import HolterError

    try:
        require_textual()
    except HolterError as exc:
        raise CliError(str(exc)) from None
    fd, report = tempfile.mkstemp(prefix="holter-run-", suffix=".id")
    os.close(fd)
    log_fd, log_path = tempfile.mkstemp(prefix="holter-run-", suffix=".log")
    env = program_env(db=db, app=app, interval=interval, instrument=instrument,
                      runtime=runtime, report=report)
    try:
        with open(log_fd, "wb") as log:
            try:  # the same error and exit status (127, 126) as without --top
                child = start_program(command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
            except RunError:
                with contextlib.suppress(OSError):
                    os.unlink(log_path)  # nothing ran: no log to keep
                raise
        name = _program_name(command)

        def resolve_run() -> int | None:
            with contextlib.suppress(OSError, ValueError):
                text = Path(report).read_text().strip()
                if text.isdigit():
                    return int(text)
            return None

        def status() -> str:
            code = child.poll()
            if code is None:
                return f"{name} (pid {child.pid}) running · its output: {log_path}"
            return f"{name} exited with {_describe(code)} · its output: {log_path} · q to leave"

        def hangup(_signum: int, _frame: object) -> None:
            # the terminal is gone: the program gets the hangup it would have had without
            # the dashboard, its status is recorded, and holter leaves at once (nothing
            # can be drawn any more)
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGHUP)
            try:
                code = child.wait(STOP_GRACE_S[1])
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
            _record_exit(db, report, 128 - code if code < 0 else code,
                         f"killed by {signal.Signals(-code).name}" if code < 0 else None)
            with contextlib.suppress(OSError):
                os.unlink(report)
            os._exit(128 + signal.SIGHUP)

        previous = signal.signal(signal.SIGHUP, hangup)
        try:
            run_dashboard(db, refresh_s=1.0, resolve_run=resolve_run, program_status=status)
        finally:
            signal.signal(signal.SIGHUP, previous)
            code = _stop(child)
        exit_code = 128 - code if code < 0 else code
        _record_exit(db, report, exit_code,
                     f"killed by {signal.Signals(-code).name}" if code < 0 else None)
        tail = _tail(log_path)
        if tail:
            sys.stderr.write("\n".join(tail) + "\n")
        sys.stderr.write(f"holter: {name} exited with {_describe(code)}; "
                         f"its output is in {log_path}\n")
        return exit_code
    finally:
        with contextlib.suppress(OSError):
            os.unlink(report)
