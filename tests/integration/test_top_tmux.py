"""``holter top`` in a real terminal: tmux runs it against a store that another process
is writing; the screen is read with ``capture-pane``, keys are sent with ``send-keys``.

Also ``holter run --top`` and a program's own ``mon.dashboard()``. tmux is installed
with apt-get when it is missing (the test is skipped when that is impossible).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from holter_it_support import child_env, script

pytest.importorskip("textual")

WIDTH, HEIGHT = 100, 30


def ensure_tmux() -> str:
    found = shutil.which("tmux")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True,
                       timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "tmux"], check=False,
                       capture_output=True, timeout=300)
    found = shutil.which("tmux")
    if not found:
        pytest.skip("tmux is not installed and could not be installed with apt-get")
    return found


class Tmux:
    """One tmux server (its own socket) with one session of a fixed size."""

    def __init__(self, tmux: str) -> None:
        self.tmux = tmux
        self.socket = f"holter-test-{uuid.uuid4().hex[:8]}"
        self.screens: list[str] = []

    def run(self, *args: str) -> str:
        out = subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True,
                             text=True, timeout=30, check=False)
        return out.stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        subprocess.run(
            [self.tmux, "-L", self.socket, "new-session", "-d", "-s", "S", "-x", str(WIDTH),
             "-y", str(HEIGHT), f"{command}; echo EXITED rc=$?; sleep 60"],
            env=env, check=True, timeout=30,
        )

    def screen(self) -> str:
        text = self.run("capture-pane", "-p", "-t", "S")
        self.screens.append(text)
        return text

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "S", *keys)

    def wait_for(self, check: Callable[[str], bool], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed what was expected:\n{text}")
            time.sleep(0.2)

    def kill(self) -> None:
        self.run("kill-server")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    term = Tmux(ensure_tmux())
    try:
        yield term
    finally:
        term.kill()
        for text in term.screens:
            assert "database is locked" not in text


def env_for_terminal() -> dict[str, str]:
    env = child_env()
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    return env


def holter_command(*args: str) -> str:
    return " ".join([sys.executable, "-m", "holter", *args])


def value_of(screen: str, label: str) -> int | None:
    """The ``value`` column (the count over the window) of a series row, if shown."""
    for line in screen.splitlines():
        m = re.search(re.escape(label) + r"\s+(\d+)\s", line)
        if m:
            return int(m.group(1))
    return None


def wait_for_store(db: Path, metric: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            conn = sqlite3.connect(db, timeout=5)
            try:
                if conn.execute("SELECT 1 FROM series WHERE name = ?", (metric,)).fetchone():
                    return
            except sqlite3.OperationalError:
                pass
            finally:
                conn.close()
        time.sleep(0.1)
    raise AssertionError(f"{metric} never reached {db}")


def test_holter_top_shows_a_counter_advancing_while_another_process_writes(
    tmux: Tmux, tmp_path: Path
) -> None:
    db = tmp_path / "live.db"
    writer = subprocess.Popen([sys.executable, script("top_writer.py"), str(db)],
                              env=child_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for_store(db, "e2e.ticks")
        tmux.start(holter_command("top", "--db", str(db), "--refresh", "300ms"),
                   env_for_terminal())
        first_screen = tmux.wait_for(
            lambda s: value_of(s, "e2e.ticks") is not None and "q Quit" in s)  # + the footer
        first = value_of(first_screen, "e2e.ticks")
        assert "holter top" in first_screen and "window 5m" in first_screen
        later_screen = tmux.wait_for(
            lambda s: (value_of(s, "e2e.ticks") or 0) >= (first or 0) + 10)
        assert "tick" in later_screen or "e2e.ticks" in later_screen
        assert tmux.run("display", "-p", "-t", "S", "#{alternate_on}").strip() == "1"
        tmux.keys("q")
        final = tmux.wait_for(lambda s: "EXITED rc=" in s, timeout=15)
        assert "EXITED rc=0" in final
        assert "Traceback" not in final
        # the terminal is restored: off the alternate screen, the cursor shown again
        assert tmux.run("display", "-p", "-t", "S", "#{alternate_on}").strip() == "0"
        assert tmux.run("display", "-p", "-t", "S", "#{cursor_flag}").strip() == "1"
    finally:
        writer.send_signal(signal.SIGTERM)
        writer.wait(10)


def test_holter_run_top_watches_the_program_and_q_interrupts_it(
    tmux: Tmux, tmp_path: Path
) -> None:
    db = tmp_path / "run.db"
    tmux.start(holter_command("run", "--db", str(db), "--top", "--", "python",
                              script("top_program.py"), "run"), env_for_terminal())
    first_screen = tmux.wait_for(lambda s: value_of(s, "program.ticks") is not None
                                 and "top_program.py (pid" in s)
    assert "running" in first_screen
    assert re.search(r"run \d+", first_screen)  # it follows the program's own run
    first = value_of(first_screen, "program.ticks") or 0
    tmux.wait_for(lambda s: (value_of(s, "program.ticks") or 0) > first)
    tmux.keys("q")
    final = tmux.wait_for(lambda s: "EXITED rc=" in s, timeout=20)
    assert "EXITED rc=130" in final  # interrupted like Ctrl-C would, and its status kept
    assert "exited with signal SIGINT" in final
    conn = sqlite3.connect(db)
    try:
        statuses = [r[0] for r in conn.execute("SELECT exit_status FROM runs")]
    finally:
        conn.close()
    assert statuses == [130]


def test_mon_dashboard_shows_the_program_live_and_ctrl_c_closes_it(
    tmux: Tmux, tmp_path: Path
) -> None:
    db = tmp_path / "self.db"
    tmux.start(" ".join([sys.executable, script("top_program.py"), "dashboard", str(db)]),
               env_for_terminal())
    first_screen = tmux.wait_for(lambda s: value_of(s, "program.ticks") is not None)
    first = value_of(first_screen, "program.ticks") or 0
    # it flushes every 60 s by its config: only the 1 s flushes of a dashboard show this
    tmux.wait_for(lambda s: (value_of(s, "program.ticks") or 0) > first, timeout=15)
    tmux.keys("C-c")  # Ctrl-C closes the dashboard; the program goes on
    final = tmux.wait_for(lambda s: "EXITED rc=" in s, timeout=15)
    assert "dashboard closed; flush interval 60.0; own SIGTERM handler kept: True" in final
    assert "EXITED rc=0" in final
