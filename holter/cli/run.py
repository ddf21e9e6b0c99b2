"""``holter run -- python app.py args``: record any Python program without changing it.

The program runs as a child process with holter's bootstrap directory first on its
``PYTHONPATH``; Python imports the ``sitecustomize`` there at start-up, which starts
holter from environment variables (store, app name, flush interval, instrumentation,
runtime metrics) and then runs any ``sitecustomize`` it shadows. Programs that the
program starts inherit the same environment, so each Python child is recorded as a
run of its own, linked to its parent.

``holter run`` passes stdin, stdout, stderr and argv through untouched, forwards
SIGTERM, SIGHUP and SIGQUIT to the program (Ctrl-C reaches it directly, as the
terminal sends it to the whole process group), waits, records the true exit status
in the program's run, and exits the same way: the same status, or the same signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click

import holter._bootstrap
from holter.cli._options import CliError, default_db
from holter.config import (
    HOLTER_APP,
    HOLTER_DB,
    HOLTER_FLUSH_INTERVAL,
    HOLTER_INSTRUMENT,
    HOLTER_RULES,
    HOLTER_RUNTIME,
    INSTRUMENTATIONS,
    parse_seconds,
)
from holter.errors import ConfigError, HolterError
from holter.store.sqlite import Store

BOOTSTRAP_DIR = str(Path(holter._bootstrap.__file__).resolve().parent)


class RunError(CliError):
    """A program that could not be started: exit 127 (not found) or 126, as shells do."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
PYTHON_NAMES = ("python", "python3", f"python3.{sys.version_info.minor}")
"""A bare interpreter name runs holter's own interpreter (``sys.executable``)."""


def program_env(*, db: str, app: str | None, interval: str, instrument: str,
                runtime: bool, report: str) -> dict[str, str]:
    """The child's environment: holter's bootstrap first on PYTHONPATH, settings in HOLTER_*."""
    env = dict(os.environ)
    paths = [BOOTSTRAP_DIR]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["HOLTER_BOOTSTRAP"] = "1"
    env[HOLTER_DB] = os.path.abspath(db)
    env[HOLTER_FLUSH_INTERVAL] = interval
    env[HOLTER_INSTRUMENT] = instrument
    env[HOLTER_RUNTIME] = "1" if runtime else "0"
    env["HOLTER_RUN_REPORT"] = report
    env["HOLTER_RUN_PID"] = str(os.getpid())
    if app:
        env[HOLTER_APP] = app
    return env


def _record_exit(db: str, report: str, status: int, info: str | None) -> None:
    """Write the program's true exit status into its run (the OS knows it best)."""
    try:
        text = Path(report).read_text().strip()
    except OSError:
        return  # the program never started holter (not Python, or -I/-E)
    if not text.isdigit():
        return
    try:
        store = Store.open(db, create=False)
    except HolterError:
        return
    try:
        from holter import _clock
        from holter.store import query as q

        run = q.get_run(store, int(text))
        store.end_run(run.id, run.ended_ns or _clock.time_ns(), status,
                      info if info is not None else run.exit_info)
    except HolterError:
        pass
    finally:
        store.close()


def run_program(command: Sequence[str], *, db: str, app: str | None, interval: str,
                instrument: str, runtime: bool) -> int:
    """Run ``command`` monitored; return the exit status to exit with (or re-raise a signal)."""
    fd, report = tempfile.mkstemp(prefix="holter-run-", suffix=".id")
    os.close(fd)
    env = program_env(db=db, app=app, interval=interval, instrument=instrument,
                      runtime=runtime, report=report)
    try:
        try:
            child = subprocess.Popen(list(command), env=env)
        except FileNotFoundError:
            raise RunError(f"command not found: {command[0]!r}", 127) from None
        except PermissionError:
            raise RunError(f"permission denied: {command[0]!r} is not executable", 126) from None

        def forward(signum: int, _frame: object) -> None:
            child.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child gets Ctrl-C
        try:
            code = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGINT, previous_int)
        if code < 0:
            sig = -code
            name = signal.Signals(sig).name
            _record_exit(db, report, 128 + sig, f"killed by {name}")
            sys.stdout.flush()
            sys.stderr.flush()
            with contextlib.suppress(OSError, ValueError):  # SIGKILL/SIGSTOP have no handler
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)  # end the way the program ended
            return 128 + sig  # pragma: no cover - only if the signal did not end us
        _record_exit(db, report, code, None)
        return code
    finally:
        with contextlib.suppress(OSError):
            os.unlink(report)


TOP_INTERVAL = "1s"
"""The program's flush interval under ``holter run --top`` unless ``--interval`` is given."""


def _remember_top(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    ctx.meta["holter_top"] = value


@click.command("run", context_settings={"ignore_unknown_options": True,
                                         "allow_interspersed_args": False})
@click.option("--db", "db", default=None, metavar="PATH",
              help="Store file to record into (default $HOLTER_DB or ./holter.db).")
@click.option("--app", "app", default=None, help="App name of the runs (default: the script).")
@click.option("--interval", default="10s", show_default=True,
              help="Flush interval of the program: 1s, 500ms, 10s ...")
@click.option("--instrument", default="http,db,subprocess", show_default=True,
              help="Automatic instrumentation: any of http, db, subprocess; or none.")
@click.option("--no-runtime", is_flag=True, help="Do not record CPU, memory, GC and loop lag.")
@click.option("--rules", "rules", default=None, metavar="FILE",
              help="Alert rules file (TOML) for the program (default ./holter.toml if any).")
@click.option("-m", "module", default=None, metavar="MODULE",
              help="Run a module, as `python -m MODULE`.")
@click.option("--top", is_flag=True, expose_value=False, callback=_remember_top,
              help="Watch the program in the live dashboard while it runs (its output goes "
                   "to a log file; the flush interval defaults to 1s).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_cmd(db: str | None, app: str | None, interval: str, instrument: str, no_runtime: bool,
            rules: str | None, module: str | None, command: tuple[str, ...]) -> None:
    """Run a Python program, recording its metrics, calls and traces without changing it.

    Use `holter run -- python app.py ARGS` or `holter run -m package ARGS`. The program's
    exit status, signals, stdin/stdout and argv pass through unchanged. A bare `python`
    runs the interpreter holter is installed in.
    """
    try:
        parse_seconds(interval, "--interval")
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if module is not None:
        argv = [sys.executable, "-m", module, *command]
    elif command:
        argv = list(command)
        if argv[0] in PYTHON_NAMES:  # holter's own interpreter: the one that can import holter
            argv[0] = sys.executable
    else:
        raise CliError("nothing to run: use `holter run -- python app.py ARGS` or "
                       "`holter run -m MODULE ARGS`")
    if rules is not None:  # checked here: a bad file is an error before the program runs
        from holter.alerting.config import check_rules_file

        problems = check_rules_file(rules).errors
        if problems:
            raise CliError("; ".join(p.format(rules).split("\n")[0] for p in problems))
        os.environ[HOLTER_RULES] = os.path.abspath(rules)  # the program's env is a copy
    kinds = "" if instrument.strip().lower() == "none" else instrument
    names = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = sorted(set(names) - set(INSTRUMENTATIONS) - {"all"})
    if unknown:
        raise CliError(f"bad --instrument {instrument!r}: unknown {unknown}; choose from "
                       f"{', '.join(INSTRUMENTATIONS)}, all, or none")
    store_path = db or default_db()
    try:
        Store.open(store_path).close()  # a wrong --db is a clear error before the program runs
    except HolterError as exc:
        raise CliError(str(exc)) from None
    ctx = click.get_current_context()
    if ctx.meta.get("holter_top"):
        if ctx.get_parameter_source("interval") == click.core.ParameterSource.DEFAULT:
            interval = TOP_INTERVAL  # a dashboard is attached: flush often, so the view is live
        from holter.cli.run_top import run_program_top

        sys.exit(run_program_top(argv, db=store_path, app=app, interval=interval,
                                 instrument=kinds, runtime=not no_runtime))
    code = run_program(argv, db=store_path, app=app, interval=interval, instrument=kinds,
                       runtime=not no_runtime)
    sys.exit(code)
