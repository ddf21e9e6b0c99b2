"""``holter run -- python app.py args``: record any Python program without changing it.

The program runs as a child process with holter's bootstrap directory first on its
``PYTHONPATH``; Python imports the ``sitecustomize`` there at start-up, which starts
holter from environment variables (store, app name, flush interval, instrumentation,
runtime metrics) and then runs any ``sitecustomize`` it shadows. Programs that the
program starts inherit the same environment, so each Python child is recorded as a
run of its own, linked to its parent.

``holter run`` passes stdin, stdout, stderr and argv through untouched, passes the
signals it receives on to the program (see :class:`SignalRelay`: each reaches the
program once, whether a process sent it to holter run or the terminal sent it to the
whole process group), waits, records the true exit status in the program's run, and
exits the same way: the same status, or the same signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
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


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH)
"""The signals ``holter run`` passes on to the program."""
TERMINAL_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT, signal.SIGWINCH})
r"""Signals a terminal sends to its whole foreground process group (Ctrl-C, Ctrl-\, a
resize): the program, in holter run's process group, already has them."""
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
        if info is None:
            info = run.exit_info
        elif run.exit_info and run.exit_info not in info:  # the program's own account too
            info = f"{info} ({run.exit_info})"[:500]
        store.end_run(run.id, run.ended_ns or _clock.time_ns(), status, info)
    except HolterError:
        pass
    finally:
        store.close()


def start_program(command: Sequence[str], **popen_options: object) -> subprocess.Popen[bytes]:
    """Start ``command``; RunError (exit 127 if it is not found, else 126) if it cannot be."""
    name = command[0]
    try:
        return subprocess.Popen(list(command), **popen_options)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise RunError(f"command not found: {name!r}; check its spelling and $PATH, or give "
                       "its path", 127) from None
    except PermissionError:
        if os.path.isdir(name):
            raise RunError(f"cannot run {name!r}: it is a directory; give the program "
                           "inside it", 126) from None
        raise RunError(f"permission denied: {name!r} is not executable; make it executable "
                       "(chmod +x) or run it with its interpreter", 126) from None
    except OSError as exc:  # ENOEXEC (no #! line), ENOTDIR, E2BIG, ...
        raise RunError(f"cannot run {name!r}: {exc.strerror or exc}; check that it is a "
                       "program this system can run, or run it with its interpreter",
                       126) from None


def should_forward(info: signal.struct_siginfo, *, child_pid: int, own_pid: int,
                   session_leader: bool) -> bool:
    r"""Whether a signal holter run received must be passed on for the program to get it once.

    A signal a process sent (``kill``, ``sigqueue``) is passed on, unless the program itself
    sent it (it signalled its process group, or holter run). A signal the kernel generated
    is passed on unless the program already has it: the terminal sends Ctrl-C, Ctrl-\ and
    resizes to the whole foreground process group, the program's group too; a hangup goes
    to the session leader alone, so it is passed on when holter run leads the session.
    """
    if info.si_code <= 0:  # SI_USER, SI_QUEUE, SI_TKILL...; the kernel's are > 0 (SI_KERNEL)
        return info.si_pid not in (child_pid, own_pid)
    if info.si_signo in TERMINAL_SIGNALS:
        return False
    if info.si_signo == signal.SIGHUP:
        return session_leader
    return True


class SignalRelay:
    """Passes the signals holter run receives (:data:`FORWARDED`) on to the program, each once.

    Use as a context manager around starting the program and waiting for it: enter before
    the program starts, :meth:`attach` it once started, leave after it ended (signals that
    arrive after it ended are dropped; they would have found no program either).

    Where the platform reports who sent a signal (``signal.sigtimedwait``; Linux), the
    forwarded signals are blocked in holter run once the program has started (the program
    never inherits the blocked mask) and a daemon thread waits for them, deciding with
    :func:`should_forward`. Elsewhere plain handlers forward SIGTERM, SIGHUP, SIGQUIT,
    SIGUSR1 and SIGUSR2, and leave SIGINT and SIGWINCH to the terminal, which sends them to
    the whole process group. Signals that arrive before the program exists are passed on
    once it does.
    """

    WAIT_S = 1.0
    """How long the thread waits for a signal before checking whether it should stop."""

    def __init__(self, signals: Sequence[signal.Signals] = FORWARDED) -> None:
        self.signals = tuple(signals)
        self.child: subprocess.Popen[bytes] | None = None
        self.early: list[int] = []
        self._previous: dict[signal.Signals, object] = {}
        self._mask: set[signal.Signals] | None = None
        self._pidfd: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def __enter__(self) -> SignalRelay:
        # an ignored signal stays ignored until the program has started: it inherits the
        # ignore (nohup, a background job of a shell), as it would run directly
        self._previous = {sig: signal.getsignal(sig) for sig in self.signals}
        for sig, handler in self._previous.items():
            if handler != signal.SIG_IGN:
                signal.signal(sig, self._handle)
        return self

    def attach(self, child: subprocess.Popen[bytes]) -> None:
        """The program has started: pass on what arrived before, and everything from now."""
        for sig in self.signals:
            signal.signal(sig, self._handle)
        waits = hasattr(signal, "sigtimedwait") and hasattr(signal, "pthread_sigmask")
        if waits:  # only now: the program must not inherit the blocked mask
            # pthread_sigmask runs the handlers of what arrived so far, here, before
            # self.child is set: _handle keeps those in self.early
            self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        self.child = child
        if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
            with contextlib.suppress(OSError):  # signals never reach a recycled pid through it
                self._pidfd = os.pidfd_open(child.pid)
        if waits:
            self._thread = threading.Thread(target=self._wait_loop, name="holter-run-signals",
                                            daemon=True)
            self._thread.start()  # it inherits the blocked mask, as it must
        early, self.early = self.early, []
        for sig in early:  # they came before holter run could tell who sent them
            self._send(sig)

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread.ident is not None:
            wake = signal.SIGWINCH if signal.SIGWINCH in self.signals else self.signals[0]
            with contextlib.suppress(OSError):  # wake it now rather than after WAIT_S
                signal.pthread_kill(thread.ident, wake)
            thread.join(self.WAIT_S * 2)
        for sig in self.signals:  # SIG_IGN drops what is still pending, blocked or not
            signal.signal(sig, signal.SIG_IGN)
        if self._mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
        for sig, handler in self._previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)  # type: ignore[arg-type]
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _send(self, sig: int) -> None:
        if self.child is None or self._stopping.is_set():
            return
        with contextlib.suppress(OSError):  # ended already
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                self.child.send_signal(sig)

    def _handle(self, signum: int, _frame: object) -> None:
        """Handler where the sender is unknown: before the thread runs, or no sigtimedwait."""
        if self.child is None:
            self.early.append(signum)
        elif signum not in (signal.SIGINT, signal.SIGWINCH):  # those reached it from the tty
            self._send(signum)

    def _wait_loop(self) -> None:
        child_pid = self.child.pid if self.child is not None else -1
        own_pid = os.getpid()
        session_leader = os.getsid(0) == own_pid
        while not self._stopping.is_set():
            try:
                info = signal.sigtimedwait(self.signals, self.WAIT_S)
            except OSError:  # pragma: no cover - EINVAL and friends: stop relaying
                return
            if info is None or self._stopping.is_set():
                continue
            if should_forward(info, child_pid=child_pid, own_pid=own_pid,
                              session_leader=session_leader):
                self._send(info.si_signo)


def run_program(command: Sequence[str], *, db: str, app: str | None, interval: str,
                instrument: str, runtime: bool) -> int:
    """Run ``command`` monitored; return the exit status to exit with (or re-raise a signal)."""
    fd, report = tempfile.mkstemp(prefix="holter-run-", suffix=".id")
    os.close(fd)
    env = program_env(db=db, app=app, interval=interval, instrument=instrument,
                      runtime=runtime, report=report)
    try:
        with SignalRelay() as relay:
            child = start_program(command, env=env)
            relay.attach(child)
            code = child.wait()
            if code >= 0:
                _record_exit(db, report, code, None)
                return code
            sig = -code
            _record_exit(db, report, 128 + sig, f"killed by {signal.Signals(sig).name}")
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError, ValueError):  # SIGKILL/SIGSTOP have no handler
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)  # end the way the program ended
        return 128 + sig  # pragma: no cover - only if the signal did not end us
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
