"""Faults: a writer killed mid-run, a store that rejects writes, a store locked at exit,
and files that are not holter stores.

Real SQLite errors only (``PRAGMA query_only``, ``PRAGMA max_page_count``, a write
lock held by another connection, SIGKILL), real subprocesses, real files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from holter_it_support import (
    assert_clean_stderr,
    children,
    integrity,
    point_rows,
    run_python,
    script,
    spawn,
    totals,
)

import holter.testing
from holter.errors import StoreError
from holter.monitor import Monitor
from holter.store import query as q
from holter.store import schema
from holter.store.sqlite import Store

# -- SIGKILL -------------------------------------------------------------------------------


def test_writer_killed_mid_run_leaves_every_flushed_point(tmp_path: Path) -> None:
    db = str(tmp_path / "killed.db")
    rng = random.Random(1234)
    last_printed = []
    with children(tmp_path) as kids:
        for n in range(3):  # three writers in turn, each killed at a different moment
            kid = spawn(kids, tmp_path, [script("killed_writer.py"), db], name=f"killed{n}")
            wanted = 4 + n
            for _ in range(wanted):
                int(kid.next_line(timeout=60))
            time.sleep(rng.uniform(0.0, 0.06))  # somewhere inside the next flush, or not
            os.kill(kid.pid, signal.SIGKILL)
            assert kid.wait(timeout=30) == -signal.SIGKILL
            printed = [int(x) for x in kid.seen + kid.rest()]
            assert printed == sorted(printed) and len(printed) >= wanted
            last_printed.append(printed[-1])
            assert_clean_stderr(kid.stderr(), f"killed writer {n}")

    assert integrity(db) == "ok"
    store = Store.open(db, create=False)
    try:
        runs = sorted(q.runs(store), key=lambda r: r.id)
        assert len(runs) == 3
        for run, printed in zip(runs, last_printed, strict=True):
            assert run.app == "killed"
            assert run.ended_ns is None  # SIGKILL: no end recorded, and that is visible
            assert run.exit_status is None
            stored, _ = totals(db, "kill.items", run=run.id)
            # every increment up to the last completed flush is there (maybe more)
            assert stored >= printed, (run, stored, printed)
            # each of the 50 shards has at least its share of the printed total
            per_shard = [totals(db, "kill.items", {"shard": str(i)}, run=run.id)[0]
                         for i in range(50)]
            assert sum(per_shard) == stored
            assert min(per_shard) >= printed / 50
            hist_sum, hist_count = totals(db, "kill.batch", run=run.id)
            assert hist_sum == 1000 * hist_count
    finally:
        store.close()

    # the store is still fully usable: a new process records into it
    proc = run_python([script("short_lived.py"), "normal", db])
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc.stderr, "writer after the kills")
    assert totals(db, "x")[0] == 5
    assert integrity(db) == "ok"


# -- a store that rejects writes -------------------------------------------------------------

MAX_PENDING = 200
SHARDS = 50  # series besides x and h written at every flush, so batches are ~54 points
FAILING_FLUSHES = 30
FAULTS = ["read_only", "disk_full"]


def break_store(mon: Monitor, fault: str) -> None:
    store = mon.store
    with store.lock:
        if fault == "read_only":
            store.conn.execute("PRAGMA query_only=ON")
        else:  # the file may not grow by a single page: SQLITE_FULL, "database or disk is full"
            pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
            store.conn.execute(f"PRAGMA max_page_count={pages}")


def repair_store(mon: Monitor, fault: str) -> None:
    store = mon.store
    with store.lock:
        if fault == "read_only":
            store.conn.execute("PRAGMA query_only=OFF")
        else:
            store.conn.execute("PRAGMA max_page_count=1073741823")


class Outage:
    """Record and flush through a store outage; remember what was recorded when."""

    def __init__(self, mon: Monitor, fault: str) -> None:
        self.mon = mon
        self.x = mon.counter("x")
        self.h = mon.histogram("h")
        self.pads = [mon.counter("pad").bind(shard=i) for i in range(SHARDS)]
        self.values: list[int] = []  # x's increment of each flush interval: 1, 2, 3...
        self.first_failed = None  # index in values of the first interval whose flush failed
        self.pending: list[int] = []
        self.results: list[bool] = []

        assert self.step()  # the store has been written once
        break_store(mon, fault)
        for _ in range(500):  # a full disk may still take a few flushes into free pages
            if not self.step():
                break
        else:
            raise AssertionError("the broken store kept accepting writes")
        self.first_failed = len(self.values) - 1
        for _ in range(FAILING_FLUSHES):
            assert not self.step(), "a flush succeeded while the store rejects writes"
        repair_store(mon, fault)

    def step(self) -> bool:
        v = len(self.values) + 1
        self.values.append(v)
        # recording never raises, whatever the store does
        self.x.inc(v)
        self.h.observe(v)
        for pad in self.pads:
            pad.inc()
        ok = self.mon.flush()
        self.results.append(ok)
        self.pending.append(self.mon.collector.pending_points)
        return ok


def lost_intervals(outage: Outage, db: str) -> list[int]:
    """Intervals whose histogram point was dropped (h observes the interval's number)."""
    stored = [int(total) for total, _ in point_rows(db, "h")]
    assert len(stored) == len(set(stored)), f"a flush interval was written twice: {stored}"
    assert set(stored) <= set(outage.values)
    return sorted(set(outage.values) - set(stored))


@pytest.mark.parametrize("fault", FAULTS)
def test_store_rejecting_writes_costs_the_program_nothing(
    tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = str(tmp_path / "fault.db")
    caplog.set_level(logging.WARNING, logger="holter")
    with holter.testing.monitor(db=db, max_pending_points=MAX_PENDING) as mon:
        outage = Outage(mon, fault)
        assert mon.collector.last_error is not None
        assert ("readonly" if fault == "read_only" else "full") in mon.collector.last_error
        # memory stayed bounded the whole time
        assert max(outage.pending) <= MAX_PENDING, outage.pending
        assert outage.pending[-1] > 0
        # writable again: the backlog is written at the next flush
        assert mon.flush()
        assert mon.collector.pending_points == 0
        assert mon.collector.last_error is None

    failures = [r for r in caplog.records if "could not write to its store" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]  # logged once, not per flush
    assert any("writable again" in r.getMessage() for r in caplog.records)

    lost = lost_intervals(outage, db)
    assert lost, "nothing was dropped: the bound was never reached"
    failed = outage.values[outage.first_failed:]
    # the oldest waiting intervals were dropped, everything after them kept
    assert lost == failed[: len(lost)]
    assert len(lost) < len(failed)

    recorded = sum(outage.values)
    # counters stay exact: a dropped batch's increases go back into their live series
    assert totals(db, "x")[0] == recorded
    assert totals(db, "pad")[0] == SHARDS * len(outage.values)
    # histogram points of the dropped batches are lost
    assert totals(db, "h") == (recorded - sum(lost), len(outage.values) - len(lost))
    assert totals(db, "holter.dropped", {"reason": "store_error"})[0] > 0
    assert integrity(db) == "ok"
    store = Store.open(db, create=False)
    try:
        (run,) = q.runs(store)
        assert run.ended_ns is not None
    finally:
        store.close()


@pytest.mark.parametrize("fault", FAULTS)
def test_every_point_dropped_in_an_outage_is_counted(tmp_path: Path, fault: str) -> None:
    db = str(tmp_path / "fault.db")
    with holter.testing.monitor(db=db, max_pending_points=MAX_PENDING) as mon:
        outage = Outage(mon, fault)
        assert mon.flush()
    lost = lost_intervals(outage, db)
    assert lost
    counted = totals(db, "holter.dropped", {"reason": "store_error"})[0]
    # each lost interval's batch held two histogram points (h and holter.flush_seconds);
    # its counters (x, the pads, holter.dropped) were carried over, not lost
    assert counted == 2 * len(lost), (counted, len(lost))


# -- exit while another connection holds the write lock -------------------------------------

EXIT_BOUND_S = 4.0  # 8 x exit_timeout (0.5 s): generous, yet far below a 5 s lock wait
EXIT_CASES = [
    pytest.param("fresh", "10", id="no-run-yet"),
    pytest.param(
        "fresh", "0.05", id="no-run-yet-collector-waiting",
    ),
    pytest.param(
        "flushed", "10", id="run-exists",
    ),
    pytest.param(
        "flushed", "0.05", id="run-exists-collector-waiting",
    ),
]


@pytest.mark.parametrize(("mode", "interval"), EXIT_CASES)
def test_exit_is_bounded_while_another_connection_holds_the_lock(
    tmp_path: Path, mode: str, interval: str
) -> None:
    db = str(tmp_path / "locked.db")
    go = tmp_path / "go"
    Store.open(db).close()  # the store exists; its lock will be held by `locker`
    locker = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        with children(tmp_path) as kids:
            if mode == "fresh":
                locker.execute("BEGIN IMMEDIATE")
            kid = spawn(kids, tmp_path, [script("exit_under_lock.py"), db, mode, interval,
                                         str(go)], name="locked")
            if mode == "flushed":
                assert kid.next_line(timeout=60) == "flushed"
                locker.execute("BEGIN IMMEDIATE")
                go.touch()
            assert kid.next_line(timeout=60) == "exiting"
            exiting = time.monotonic()
            # the lock stays held until the program has exited or the bound has passed
            deadline = exiting + EXIT_BOUND_S
            while kid.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            status = kid.proc.poll()
            assert status is not None, (
                f"still running {EXIT_BOUND_S} s after its last line, with exit_timeout 0.5 s"
            )
            locker.execute("ROLLBACK")
            assert status == 0, kid.stderr()
            # warnings about the busy store are expected; a traceback is not
            assert "Traceback" not in kid.stderr(), kid.stderr()
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()
    assert integrity(db) == "ok"
    if mode == "flushed":
        assert totals(db, "x")[0] >= 2  # what was flushed before the lock is still there


# -- files that are not holter stores --------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_text(path: Path) -> None:
    path.write_text("name,value\nalpha,1\n")


def make_empty(path: Path) -> None:
    path.write_bytes(b"")


def make_foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes(body) VALUES (?)", [("one",), ("two",)])
    conn.commit()
    conn.close()


def make_foreign_wal(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO settings VALUES ('theme', 'dark')")
    conn.commit()
    conn.close()


NOT_STORES = {
    "text": (make_text, "not an SQLite database"),
    "empty": (make_empty, "empty"),
    "foreign-sqlite": (make_foreign, "another program"),
    "foreign-sqlite-wal": (make_foreign_wal, "another program"),
}


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip()
    assert err and "\n" not in err, proc.stderr
    for needle in needles:
        assert needle in err, err
    assert proc.stdout == ""


@pytest.mark.parametrize("kind", list(NOT_STORES))
def test_cli_refuses_a_file_that_is_not_a_holter_store(tmp_path: Path, kind: str) -> None:
    make, words = NOT_STORES[kind]
    path = tmp_path / f"{kind}.db"
    make(path)
    before = digest(path)
    listing = sorted(os.listdir(tmp_path))
    for command in (["runs"], ["series"], ["query", "x"]):
        proc = run_python(["-m", "holter", *command, "--db", str(path)])
        assert_one_line_error(proc, words, str(path))
        assert digest(path) == before, f"holter {command[0]} changed the file"
        assert sorted(os.listdir(tmp_path)) == listing  # no -wal, -shm or journal left
    if kind != "empty":  # (an empty file may become a store when recording starts)
        # the library refuses it too, and leaves it alone
        with pytest.raises(StoreError), holter.testing.monitor(db=str(path)):
            pass
        assert digest(path) == before
    if kind.startswith("foreign"):
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert "holter_meta" not in {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master")
            }
        finally:
            conn.close()


def test_store_of_a_newer_schema_names_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with holter.testing.monitor(db=str(path)) as mon:
        mon.counter("x").inc()
        assert mon.flush()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE holter_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = digest(path)
    proc = run_python(["-m", "holter", "runs", "--db", str(path)])
    assert_one_line_error(proc, "99", str(schema.SCHEMA_VERSION), "version")
    assert digest(path) == before
    # holter.start() on it fails loudly instead of writing into a store it cannot read
    proc = run_python(["-c", f"import holter; holter.start(db={str(path)!r})"])
    assert proc.returncode != 0
    assert "99" in proc.stderr
    assert digest(path) == before
