"""``holter run`` passes signals through as if the program ran directly: each signal the
program would have had reaches it exactly once.

A signal a process sends to holter run's pid (``kill``) is passed on once; a signal the
terminal sends to the whole foreground process group (Ctrl-C, a resize; tmux is the
terminal here) already reached the program and is not passed on again; a hangup, which
the kernel sends to the session leader alone, is passed on when holter run leads the
session (a real pty here). ``tests/integration/scripts/run_signals.py`` counts what it
gets and exits with ``10 + count`` when SIGTERM (always sent through holter run, after
the signal under test was seen) ends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from holter_it_support import child_env, script

from holter.cli.run import should_forward
from holter.store import query
from holter.store.sqlite import Store

SETTLE_S = 0.5
"""How long to keep listening for a second copy of a signal that has no later marker."""


# -- helpers ---------------------------------------------------------------------------------


def holter_argv(db: Path, *command: str, options: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "holter", "run", "--db", str(db), *options, "--", *command]


def log_records(log: Path) -> list[dict[str, Any]]:
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line still being written
            records.append(json.loads(line))
    return records


def wait_for_record(log: Path, check: Callable[[dict[str, Any]], bool],
                    proc: subprocess.Popen[bytes] | None = None,
                    timeout: float = 30.0) -> dict[str, Any]:
    """The first record of ``log`` that passes ``check`` (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        for record in log_records(log):
            if check(record):
                return record
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"ended with {proc.returncode} first; log: {log_records(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not logged within {timeout} s; log: {log_records(log)}")
        time.sleep(0.02)


def got(log: Path, name: str) -> list[int]:
    return [r["count"] for r in log_records(log) if r.get("got") == name]


def settle(log: Path, name: str) -> None:
    """Give a duplicate of ``name`` the chance to arrive (bounded; nothing is timed)."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline and len(got(log, name)) < 2:
        time.sleep(0.02)


def the_run(db: Path) -> Any:
    store = Store.open(str(db), create=False)
    try:
        [run] = query.runs(store)
        return run
    finally:
        store.close()


@contextlib.contextmanager
def started(argv: list[str], **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a session of its own; it and its process group are killed at the end."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env(), start_new_session=True,
                            **options)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def finish(proc: subprocess.Popen[bytes], holter_pid: int) -> tuple[int, bytes]:
    """End the program with SIGTERM through holter run; its exit status and stderr."""
    os.kill(holter_pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    return proc.returncode, err


# -- signals sent by a process -----------------------------------------------------------------


def test_sigint_sent_to_holter_run_reaches_the_program_once(tmp_path: Path) -> None:
    db, log = tmp_path / "h.db", tmp_path / "signals.log"
    with started(holter_argv(db, "python", script("run_signals.py"), str(log), "SIGINT")) as proc:
        ready = wait_for_record(log, lambda r: "ready" in r, proc)
        assert ready["ppid"] == proc.pid  # holter run started it
        os.kill(proc.pid, signal.SIGINT)  # to holter run alone, as a supervisor would
        wait_for_record(log, lambda r: r.get("got") == "SIGINT", proc)
        code, err = finish(proc, proc.pid)
    assert code == 11, err.decode()  # the program's status: exactly one KeyboardInterrupt
    assert log_records(log)[-1] == {"end": {"SIGINT": 1}}
    run = the_run(db)
    assert run.exit_status == 11 and run.exit_info is None


@pytest.mark.parametrize("name", ["SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT", "SIGWINCH"])
def test_other_signals_sent_to_holter_run_reach_the_program_once(name: str,
                                                                 tmp_path: Path) -> None:
    db, log = tmp_path / "h.db", tmp_path / "signals.log"
    with started(holter_argv(db, "python", script("run_signals.py"), str(log), name)) as proc:
        wait_for_record(log, lambda r: "ready" in r, proc)
        os.kill(proc.pid, signal.Signals[name])
        wait_for_record(log, lambda r: r.get("got") == name, proc)
        if signal.Signals[name] > signal.SIGTERM:  # SIGTERM would outrun a second copy
            settle(log, name)
        code, err = finish(proc, proc.pid)
    assert code == 11, err.decode()
    assert log_records(log)[-1] == {"end": {name: 1}}
    assert the_run(db).exit_status == 11


def test_a_signal_the_program_sends_its_own_process_group_is_not_sent_back(
        tmp_path: Path) -> None:
    db, log = tmp_path / "h.db", tmp_path / "signals.log"
    # -I: no monitor, so no threads of its own to take the signal sigwaitinfo waits for
    argv = holter_argv(db, "python", "-I", script("run_signals.py"), str(log),
                       "--to-my-group", "SIGUSR1")
    with started(argv) as proc:  # its group: holter run and the program
        ready = wait_for_record(log, lambda r: "ready" in r, proc)
        wait_for_record(log, lambda r: r.get("got") == "SIGUSR1", proc)
        code, err = finish(proc, proc.pid)  # after any copy passed back by holter run
    senders = [r.get("sender") for r in log_records(log) if "got" in r]
    assert senders == [ready["ready"]], senders  # its own copy; holter run's pid: sent back
    assert code == 11, err.decode()
    assert log_records(log)[-1] == {"end": {"SIGUSR1": 1}}


SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"


def interrupted(argv: list[str]) -> tuple[int, bytes]:
    """Start ``argv`` (which prints ``ready``), SIGINT it; its exit status and stderr."""
    with started(argv) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        os.kill(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_a_program_that_does_not_handle_sigint_ends_by_it_and_so_does_holter_run(
        tmp_path: Path) -> None:
    # -I: holter run alone, without a monitor in the program (tested in the next test)
    # (the test below); what is checked here is holter run's own pass-through
    code, err = interrupted(holter_argv(tmp_path / "h.db", "python", "-I", "-c", SLEEPER))
    direct, direct_err = interrupted([sys.executable, "-I", "-c", SLEEPER])
    assert code == direct == -signal.SIGINT
    assert err.count(b"KeyboardInterrupt") == direct_err.count(b"KeyboardInterrupt") == 1
    assert err.splitlines()[-1] == direct_err.splitlines()[-1] == b"KeyboardInterrupt"


def test_a_monitored_program_ended_by_keyboard_interrupt_is_recorded_as_sigint(
        tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    code, err = interrupted(holter_argv(db, "python", "-c", SLEEPER))
    assert err.count(b"KeyboardInterrupt") == 1
    run = the_run(db)
    assert run.exit_info is not None and "KeyboardInterrupt" in run.exit_info
    assert code == -signal.SIGINT
    assert run.exit_status == 128 + signal.SIGINT


def program_mask(argv: list[str], log: Path) -> dict[str, str]:
    with started(argv) as proc:
        ready = wait_for_record(log, lambda r: "ready" in r, proc)
        os.kill(ready["ppid"], signal.SIGTERM)  # holter run (or the wrapper's python)
        proc.communicate(timeout=60)
    return {k: v for k, v in ready["mask"].items() if k in ("SigBlk", "SigIgn")}


IGNORE_HUP_THEN_EXEC = ("import os, signal, sys\n"
                        "signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup does\n"
                        "os.execv(sys.argv[1], sys.argv[1:])\n")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("ignore_hup", [False, True])
def test_the_program_gets_the_signal_mask_and_ignores_it_would_get_directly(
        ignore_hup: bool, tmp_path: Path) -> None:
    wrap = [sys.executable, "-c", IGNORE_HUP_THEN_EXEC] if ignore_hup else []
    log = tmp_path / "signals.log"
    under_holter = program_mask(
        [*wrap, *holter_argv(tmp_path / "h.db", sys.executable, script("run_signals.py"),
                             str(log), "SIGUSR1")], log)
    log.unlink()
    direct_log = tmp_path / "direct.log"
    with started([*wrap, sys.executable, script("run_signals.py"), str(direct_log),
                  "SIGUSR1"]) as proc:
        ready = wait_for_record(direct_log, lambda r: "ready" in r, proc)
        code, _err = finish(proc, proc.pid)
    direct = {k: v for k, v in ready["mask"].items() if k in ("SigBlk", "SigIgn")}
    assert code == 10
    assert under_holter == direct  # nothing blocked, the same signals ignored
    assert int(direct["SigBlk"], 16) == 0
    assert bool(int(direct["SigIgn"], 16) & (1 << (signal.SIGHUP - 1))) is ignore_hup


def siginfo(signo: int, code: int, pid: int) -> signal.struct_siginfo:
    return signal.struct_siginfo((signo, code, 0, pid, 0, 0, 0))


def test_should_forward_decides_by_who_sent_the_signal() -> None:
    kernel, user, queued = 0x80, 0, -1
    where = {"child_pid": 200, "own_pid": 100, "session_leader": False}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH):
        assert should_forward(siginfo(sig, user, 300), **where)  # kill from another process
        assert should_forward(siginfo(sig, queued, 300), **where)  # sigqueue
        assert not should_forward(siginfo(sig, user, 200), **where)  # the program sent it
        assert not should_forward(siginfo(sig, user, 100), **where)  # holter run's own
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGWINCH):  # the terminal's, to the group
        assert not should_forward(siginfo(sig, kernel, 0), **where)
        assert not should_forward(siginfo(sig, kernel, 0), **{**where, "session_leader": True})
    assert not should_forward(siginfo(signal.SIGHUP, kernel, 0), **where)
    assert should_forward(siginfo(signal.SIGHUP, kernel, 0), **{**where, "session_leader": True})


# -- holter run --top: a program that cannot start ------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "not executable", "directory"])
def test_run_top_fails_to_start_a_program_like_plain_run(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("textual")
    if kind == "missing":
        command, status = "holter-no-such-command", 127
    elif kind == "not executable":
        path = tmp_path / "tool.py"
        path.write_text("print('ran')\n")
        path.chmod(0o644)
        command, status = str(path), 126
    else:
        command, status = str(tmp_path), 126
    plain, top = (subprocess.run(holter_argv(tmp_path / "h.db", command, "--arg", options=opts),
                                 capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
                                 env=child_env(), check=False)
                  for opts in ((), ("--top",)))
    assert plain.returncode == top.returncode == status, (plain.stderr, top.stderr)
    assert top.stderr == plain.stderr
    err = top.stderr.decode()
    assert err.startswith("holter: error: ") and err.count("\n") == 1, err
    assert command in err and "Traceback" not in err
    assert plain.stdout == top.stdout == b""


# -- a real terminal: tmux -------------------------------------------------------------------


class Tmux:
    """One tmux server with its own socket, running one command in a fixed-size session."""

    def __init__(self, tmux: str) -> None:
        self.tmux = tmux
        self.socket = f"holter-sig-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=30, check=False).stdout

    def start(self, argv: list[str], *, keep_dead_pane: bool = False) -> None:
        command = shlex.join(argv)
        first = ["start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";"]
        subprocess.run([self.tmux, "-L", self.socket, *(first if keep_dead_pane else []),
                        "new-session", "-d", "-s", "S", "-x", "100", "-y", "30",
                        f"{command}; echo EXITED rc=$?; sleep 60"],
                       env={**child_env(), "TERM": "xterm-256color"}, check=True, timeout=30)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.run("capture-pane", "-p", "-t", "S")
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never showed:\n{screen}")
            time.sleep(0.1)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    found = shutil.which("tmux")
    if not found:
        pytest.skip("tmux is not installed")
    term = Tmux(found)
    try:
        yield term
    finally:
        term.run("kill-server")


def test_ctrl_c_in_a_terminal_reaches_the_program_once(tmux: Tmux, tmp_path: Path) -> None:
    db, log = tmp_path / "h.db", tmp_path / "signals.log"
    tmux.start(holter_argv(db, "python", script("run_signals.py"), str(log), "SIGINT"))
    ready = wait_for_record(log, lambda r: "ready" in r)
    tmux.run("send-keys", "-t", "S", "C-c")  # the terminal interrupts its foreground group
    wait_for_record(log, lambda r: r.get("got") == "SIGINT")
    os.kill(ready["ppid"], signal.SIGTERM)  # through holter run: after any second SIGINT
    screen = tmux.wait_for("EXITED rc=")
    assert "EXITED rc=11" in screen, screen
    assert "Traceback" not in screen
    assert log_records(log)[-1] == {"end": {"SIGINT": 1}}
    run = the_run(db)
    assert run.exit_status == 11 and run.pid == ready["ready"]


def test_ctrl_c_in_a_terminal_ends_a_program_that_does_not_handle_it(
        tmux: Tmux, tmp_path: Path) -> None:
    program = tmp_path / "sleeper.py"
    program.write_text(SLEEPER)
    # -I: holter run alone, without a monitor in the program (that case is tested above)
    tmux.start(holter_argv(tmp_path / "h.db", "python", "-I", str(program)),
               keep_dead_pane=True)
    tmux.wait_for("ready")
    tmux.run("send-keys", "-t", "S", "C-c")
    # holter run ended by SIGINT like the program, so the shell ended by it too, as it
    # does when a program it runs dies of Ctrl-C: the pane is dead, nothing echoed
    deadline = time.monotonic() + 30
    while tmux.run("display", "-p", "-t", "S", "#{pane_dead}").strip() != "1":
        assert time.monotonic() < deadline, tmux.run("capture-pane", "-p", "-t", "S")
        time.sleep(0.1)
    screen = tmux.run("capture-pane", "-p", "-t", "S")
    assert screen.count("KeyboardInterrupt") == 1, screen
    assert "EXITED" not in screen, screen
    dead_signal = tmux.run("display", "-p", "-t", "S", "#{pane_dead_signal}").strip()
    assert dead_signal in ("", str(int(signal.SIGINT)))  # tmux does not always know it


def test_a_terminal_resize_reaches_the_program_once(tmux: Tmux, tmp_path: Path) -> None:
    db, log = tmp_path / "h.db", tmp_path / "signals.log"
    tmux.start(holter_argv(db, "python", script("run_signals.py"), str(log), "SIGWINCH"))
    ready = wait_for_record(log, lambda r: "ready" in r)
    tmux.run("resize-window", "-t", "S", "-x", "90", "-y", "25")  # SIGWINCH to the group
    wait_for_record(log, lambda r: r.get("got") == "SIGWINCH")
    settle(log, "SIGWINCH")  # SIGTERM outranks SIGWINCH: no ordering to rely on here
    os.kill(ready["ppid"], signal.SIGTERM)
    screen = tmux.wait_for("EXITED rc=")
    assert "EXITED rc=11" in screen, screen
    assert log_records(log)[-1] == {"end": {"SIGWINCH": 1}}
    assert the_run(db).exit_status == 11


# -- a hangup: holter run leading a session on a real pty ---------------------------------------


TAKE_TTY_THEN_EXEC = ("import fcntl, os, sys, termios\n"
                      "fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty is our terminal now\n"
                      "os.execv(sys.argv[1], sys.argv[1:])\n")


def test_a_hangup_reaches_the_program_once_when_holter_run_leads_the_session(
        tmp_path: Path) -> None:
    db, log = tmp_path / "h.db", tmp_path / "signals.log"
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", TAKE_TTY_THEN_EXEC,
             *holter_argv(db, sys.executable, script("run_signals.py"), str(log), "SIGHUP")],
            stdin=slave, stdout=slave, stderr=slave, env=child_env(), start_new_session=True)
    finally:
        os.close(slave)
    try:
        ready = wait_for_record(log, lambda r: "ready" in r, proc)
        assert ready["ppid"] == proc.pid and os.getsid(proc.pid) == proc.pid  # exec'd
        os.close(master)  # the terminal goes away: the kernel hangs up its session leader
        master = -1
        wait_for_record(log, lambda r: r.get("got") == "SIGHUP", proc)
        os.kill(proc.pid, signal.SIGTERM)  # through holter run: after any second SIGHUP
        assert proc.wait(60) == 11
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert log_records(log)[-1] == {"end": {"SIGHUP": 1}}
    assert the_run(db).exit_status == 11
