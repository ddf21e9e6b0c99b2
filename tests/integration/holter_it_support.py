"""Shared helpers of the integration tests: subprocesses that are always reaped, and
exact totals read straight from a store file.

Not a test module (no ``test_`` prefix); the integration tests import it by name
(pytest puts this folder on ``sys.path``, as it has no ``__init__.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from holter.store.schema import POINT_TABLES

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def script(name: str) -> str:
    """Path of a helper script in ``scripts/``."""
    return str(SCRIPTS / name)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: ours (HOLTER_STRICT=1), no HOLTER_DB."""
    env = dict(os.environ)
    env.pop("HOLTER_DB", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Child:
    """A running ``python`` subprocess: stdout read line by line, stderr to a file."""

    def __init__(self, args: list[str], stderr_path: Path, env: Mapping[str, str] | None = None,
                 **kwargs: object) -> None:
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dict(env) if env is not None else child_env(),
            **kwargs,  # type: ignore[arg-type]
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))
        except ValueError:  # closed under us
            pass
        finally:
            self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def next_line(self, timeout: float = 30.0) -> str:
        """The next stdout line; AssertionError on EOF or after ``timeout`` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output from pid {self.pid} within {timeout} s; stderr:\n{self.stderr()}"
            ) from None
        if line is None:
            self.lines.put(None)  # keep reporting EOF
            raise AssertionError(
                f"pid {self.pid} ended (status {self.proc.poll()}) before printing; "
                f"stderr:\n{self.stderr()}"
            )
        self.seen.append(line)
        return line

    def rest(self, timeout: float = 30.0) -> list[str]:
        """Every remaining stdout line, up to EOF (the process must end or be killed)."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stdout of pid {self.pid} still open after {timeout} s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.lines.put(None)
                self.seen.extend(out)
                return out
            out.append(line)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the exit status (AssertionError, process killed, after ``timeout``)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(
                f"pid {self.pid} did not exit within {timeout} s; stderr:\n{self.stderr()}"
            ) from None

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        """Kill if still running, reap, close the pipes."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@contextlib.contextmanager
def children(tmp_path: Path) -> Iterator[list[Child]]:
    """Collect :class:`Child` objects; every one is killed (if needed) and reaped at the end.

    Use ``spawn(kids, tmp_path, args)`` to add one.
    """
    kids: list[Child] = []
    try:
        yield kids
    finally:
        for kid in kids:
            kid.close()


def spawn(kids: list[Child], tmp_path: Path, args: list[str], name: str | None = None,
          env: Mapping[str, str] | None = None) -> Child:
    """Start ``python *args`` and register it in ``kids`` (see :func:`children`)."""
    label = name or f"child{len(kids)}"
    kid = Child(args, tmp_path / f"{label}.stderr", env=env)
    kids.append(kid)
    return kid


def run_python(args: list[str], timeout: float = 60.0,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` to completion (killed after ``timeout``)."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else child_env(),
    )


# -- reading a store straight from SQLite ------------------------------------------------


def connect(db: str | Path) -> sqlite3.Connection:
    """A plain read connection to a store file (not holter's)."""
    conn = sqlite3.connect(str(db), timeout=30)
    conn.execute("PRAGMA query_only=ON")
    return conn


def totals(
    db: str | Path,
    name: str,
    tags: Mapping[str, str] | None = None,
    run: int | None = None,
) -> tuple[float, float]:
    """``(SUM(total), SUM(count))`` of metric ``name`` over every point table.

    For a counter the first number is its total; for a histogram, (sum, count).
    """
    conn = connect(db)
    try:
        return totals_on(conn, name, tags, run)
    finally:
        conn.close()


def totals_on(
    conn: sqlite3.Connection,
    name: str,
    tags: Mapping[str, str] | None = None,
    run: int | None = None,
) -> tuple[float, float]:
    """:func:`totals` on an open connection (one read transaction)."""
    sids = []
    for sid, stags in conn.execute("SELECT id, tags FROM series WHERE name = ?", (name,)):
        parsed = json.loads(stags)
        if all(parsed.get(k) == v for k, v in (tags or {}).items()):
            sids.append(sid)
    if not sids:
        return 0.0, 0.0
    marks = ",".join("?" * len(sids))
    run_sql = " AND run_id = ?" if run is not None else ""
    args = [*sids, *([run] if run is not None else [])]
    union = " UNION ALL ".join(
        f"SELECT total, count FROM {t} WHERE series_id IN ({marks}){run_sql}"
        for t in POINT_TABLES
    )
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            f"SELECT COALESCE(SUM(total), 0), COALESCE(SUM(count), 0) FROM ({union})",
            args * len(POINT_TABLES),
        ).fetchone()
    finally:
        conn.execute("COMMIT")
    return float(row[0]), float(row[1])


def point_rows(db: str | Path, name: str, run: int | None = None) -> list[tuple[float, float]]:
    """``(total, count)`` of every stored point of ``name`` (all tables), oldest first."""
    conn = connect(db)
    try:
        run_sql = " AND p.run_id = ?" if run is not None else ""
        out: list[tuple[float, float]] = []
        for table in POINT_TABLES:
            out.extend(conn.execute(
                f"SELECT p.total, p.count FROM {table} p JOIN series s ON s.id = p.series_id "
                f"WHERE s.name = ?{run_sql} ORDER BY p.t_end_ns",
                (name, *([run] if run is not None else [])),
            ).fetchall())
        return out
    finally:
        conn.close()


def integrity(db: str | Path) -> str:
    """``PRAGMA integrity_check`` of the file, on a fresh connection."""
    conn = sqlite3.connect(str(db), timeout=30)
    try:
        return "\n".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def assert_clean_stderr(text: str, who: str = "process") -> None:
    """No traceback and no lock error in a process's stderr."""
    assert "Traceback" not in text, f"{who} printed a traceback:\n{text}"
    assert "database is locked" not in text, f"{who} hit 'database is locked':\n{text}"
    assert "is busy" not in text, f"{who} could not get the store's lock:\n{text}"
