"""Several processes and one store file: concurrent writers, exit flushes, fork.

Every program here is a real ``python`` subprocess (scripts/); the store is a real
SQLite file. Each test kills and reaps its subprocesses whatever happens.
"""

from __future__ import annotations

import platform
import sqlite3
import threading
from pathlib import Path

import pytest
from holter_it_support import (
    assert_clean_stderr,
    children,
    connect,
    integrity,
    run_python,
    script,
    spawn,
    totals,
    totals_on,
)

from holter.store import query as q
from holter.store.sqlite import Store

# -- several writers at once ---------------------------------------------------------------

WRITERS = 4
COUNTS = [3000 + 1000 * i for i in range(WRITERS)]
CHUNK = 100


def test_four_processes_write_one_store_at_once(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")  # created by the writers themselves, concurrently
    go = tmp_path / "go"
    stop = tmp_path / "stop"
    reader_errors: list[BaseException] = []
    reader_done = threading.Event()
    seen: list[float] = []

    def read_loop() -> None:
        # a plain connection of the test process, reading while the writers write
        try:
            conn = connect(db)
            try:
                while not reader_done.is_set():
                    total, _ = totals_on(conn, "work.items")
                    if seen and total < seen[-1]:
                        raise AssertionError(f"total went down: {seen[-1]} -> {total}")
                    seen.append(total)
                    conn.execute("SELECT COUNT(*) FROM runs").fetchone()
                    reader_done.wait(0.002)
            finally:
                conn.close()
        except BaseException as exc:
            reader_errors.append(exc)

    with children(tmp_path) as kids:
        writers = [
            spawn(kids, tmp_path, [script("writer.py"), db, f"w{i}", str(COUNTS[i]), str(CHUNK),
                                   str(go)], name=f"writer{i}")
            for i in range(WRITERS)
        ]
        pids = {}
        for i, w in enumerate(writers):
            line = w.next_line(timeout=60)
            assert line == f"ready {w.pid}", line
            pids[f"w{i}"] = w.pid
        # every writer has opened (and one of them created) the store: readers may start
        reader = spawn(kids, tmp_path, [script("reader.py"), db, str(stop)], name="reader")
        thread = threading.Thread(target=read_loop)
        thread.start()
        try:
            assert reader.next_line(timeout=60) == "reading"
            go.touch()
            statuses = [w.wait(timeout=60) for w in writers]
        finally:
            reader_done.set()
            stop.touch()
            thread.join(30)
        for i, w in enumerate(writers):
            assert w.rest() == [f"done {COUNTS[i]}"]
            assert_clean_stderr(w.stderr(), f"writer {i}")
        assert statuses == [0] * WRITERS
        assert reader.wait(timeout=60) == 0, reader.stderr()
        reader_out = reader.rest()
        assert_clean_stderr(reader.stderr(), "reader process")

    assert not reader_errors, reader_errors
    assert len(seen) >= 1
    assert len(reader_out) == 1 and reader_out[0].startswith("reads "), reader_out
    assert int(reader_out[0].split()[1]) > 0

    # the store has exactly what was recorded, per writer and in total
    assert integrity(db) == "ok"
    assert totals(db, "work.items")[0] == sum(COUNTS)
    store = Store.open(db, create=False)
    try:
        runs = q.runs(store)
        assert len(runs) == WRITERS
        by_app = {r.app: r for r in runs}
        assert set(by_app) == {f"writer-w{i}" for i in range(WRITERS)}
        for i in range(WRITERS):
            label = f"w{i}"
            run = by_app[f"writer-{label}"]
            assert run.pid == pids[label]
            assert run.argv[0].endswith("writer.py")
            assert run.argv[1:3] == [db, label]
            assert run.python == platform.python_version()
            assert run.ended_ns is not None and run.ended_ns >= run.started_ns
            assert run.exit_status == 0
            assert run.parent_id is None
            assert totals(db, "work.items", {"writer": label}, run=run.id)[0] == COUNTS[i]
            assert totals(db, "work.items", run=run.id)[0] == COUNTS[i]
            hist_sum, hist_count = totals(db, "work.chunk", {"writer": label})
            assert hist_count == COUNTS[i] // CHUNK
            assert hist_sum == COUNTS[i]
        stats = q.grouped_stats(store, "work.items", "1h", by="writer")
        assert {s.group["writer"]: s.count for s in stats} == {
            f"w{i}": COUNTS[i] for i in range(WRITERS)
        }
    finally:
        store.close()
    # the CLI reads the same store
    cli = run_python(["-m", "holter", "runs", "--db", db, "--json"])
    assert cli.returncode == 0, cli.stderr
    assert_clean_stderr(cli.stderr, "holter runs")


# -- a short-lived program's data is written at exit ------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "info"),
    [
        ("normal", 0, None),
        ("exit3", 3, None),
        ("exit_text", 1, "bad input"),
        ("raise", 1, "ValueError"),
    ],
)
def test_short_lived_program_is_flushed_at_exit(
    tmp_path: Path, mode: str, status: int, info: str | None
) -> None:
    db = str(tmp_path / "short.db")
    proc = run_python([script("short_lived.py"), mode, db])
    assert proc.returncode == status, proc.stderr
    if mode == "raise":
        assert "ValueError: boom" in proc.stderr  # the program's own traceback, unchanged
    else:
        assert_clean_stderr(proc.stderr, mode)
    # and holter itself had nothing to complain about
    assert not [line for line in proc.stderr.splitlines() if line.startswith("holter")], \
        proc.stderr

    assert totals(db, "x")[0] == 5
    assert totals(db, "h") == (12.5, 1)
    store = Store.open(db, create=False)
    try:
        (run,) = q.runs(store)
        assert run.app == f"short-{mode}"
        assert run.pid > 0
        assert run.ended_ns is not None and run.ended_ns >= run.started_ns
        assert run.exit_status == status
        if info is None:
            assert run.exit_info is None
        else:
            assert run.exit_info is not None and info in run.exit_info, run.exit_info
        assert q.stats(store, "x", "1h").count == 5
    finally:
        store.close()


# -- fork ------------------------------------------------------------------------------------


@pytest.mark.parametrize("child_exit", ["stop", "atexit"])
@pytest.mark.parametrize(
    "flush_first",
    ["1", "0"],
    ids=["flushed", "unflushed"],
)
def test_forked_child_is_its_own_run_and_nothing_is_counted_twice(
    tmp_path: Path, flush_first: str, child_exit: str
) -> None:
    db = str(tmp_path / "fork.db")
    proc = run_python([script("forker.py"), db, flush_first, child_exit])
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc.stderr, "forker")
    word, child_pid, child_status = proc.stdout.split()
    assert word == "child"
    assert child_status == "0"

    assert integrity(db) == "ok"
    store = Store.open(db, create=False)
    try:
        runs = {r.pid: r for r in q.runs(store)}
    finally:
        store.close()
    assert len(runs) == 2, runs
    child = runs.pop(int(child_pid))
    (parent,) = runs.values()
    assert parent.app == child.app == "forker"
    assert parent.parent_id is None
    assert child.parent_id == parent.id
    for run in (parent, child):
        assert run.ended_ns is not None
        assert run.exit_status == 0

    # the parent's pre-fork values are counted once, in the parent's run
    assert totals(db, "fork.items", {"phase": "pre"}) == (1050, 0)
    assert totals(db, "fork.items", {"phase": "pre"}, run=parent.id)[0] == 1050
    assert totals(db, "fork.items", {"phase": "parent"}, run=parent.id)[0] == 200
    assert totals(db, "fork.items", run=parent.id)[0] == 1250
    assert totals(db, "fork.items", {"phase": "child"}, run=child.id)[0] == 300
    assert totals(db, "fork.items", run=child.id)[0] == 300
    assert totals(db, "fork.items")[0] == 1550
    assert totals(db, "fork.size", run=parent.id) == (100.0, 100)
    assert totals(db, "fork.size", run=child.id) == (60.0, 30)


def test_fork_during_a_write_transaction_leaves_the_child_able_to_write(tmp_path: Path) -> None:
    db = str(tmp_path / "fork-mid-write.db")
    proc = run_python([script("fork_mid_write.py"), db])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    word, child_pid, child_status = proc.stdout.split()
    assert word == "child"
    assert integrity(db) == "ok"
    assert totals(db, "before.items")[0] == 4
    assert totals(db, "after.items", {"who": "parent"})[0] == 3
    assert child_status == "0", "the child was still trying to write after 4 s (killed)"
    assert_clean_stderr(proc.stderr, "forked child")
    store = Store.open(db, create=False)
    try:
        runs = {r.pid: r for r in q.runs(store)}
    finally:
        store.close()
    parent = next(r for pid, r in runs.items() if pid != int(child_pid))
    child = runs.get(int(child_pid))
    assert child is not None, "the child's run was never written"
    assert child.parent_id == parent.id
    assert child.exit_status == 0
    assert totals(db, "after.items", {"who": "child"}, run=child.id)[0] == 7


def test_fork_while_another_thread_creates_the_run_does_not_deadlock(tmp_path: Path) -> None:
    """The fork handler takes the monitor's run lock before the store's, as run creation does."""
    db = str(tmp_path / "fork-run-start.db")
    proc = run_python([script("fork_while_run_starts.py"), db], timeout=30)
    assert proc.returncode == 0, proc.stderr
    word, child_pid, child_status = proc.stdout.split()
    assert word == "child"
    assert child_status == "0", "the child could not finish within 10 s (killed)"
    assert integrity(db) == "ok"
    store = Store.open(db, create=False)
    try:
        runs = {r.pid: r for r in q.runs(store)}
    finally:
        store.close()
    assert len(runs) == 2, runs
    child = runs[int(child_pid)]
    parent = next(r for pid, r in runs.items() if pid != int(child_pid))
    assert child.parent_id == parent.id
    assert totals(db, "child.items", run=child.id)[0] == 5
    assert totals(db, "parent.items", run=parent.id)[0] == 2


def test_store_file_stays_readable_by_plain_sqlite(tmp_path: Path) -> None:
    """A run written by a subprocess can be read back with nothing but sqlite3."""
    db = str(tmp_path / "plain.db")
    proc = run_python([script("short_lived.py"), "normal", db])
    assert proc.returncode == 0, proc.stderr
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    finally:
        conn.close()
