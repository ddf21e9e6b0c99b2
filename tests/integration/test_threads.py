"""Many threads recording into one series while the collector flushes concurrently.

Every increment and every observation must reach the store exactly once: 8 threads
x 200,000 recordings, thread switches forced very often (``sys.setswitchinterval``),
the collector thread flushing every 0.05 s, another thread calling ``mon.flush()``
in a loop, and one flush guaranteed to land while every thread is half way.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from holter_it_support import integrity, point_rows, totals

from holter.config import Config
from holter.monitor import Monitor
from holter.store import query as q

THREADS = 8
PER_THREAD = 200_000
WAIT_S = 60.0


@pytest.fixture
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Monitor]:
    """A started monitor (collector thread flushing every 0.05 s) on a fresh store."""
    config = Config.resolve(app="threads", db=str(tmp_path / "threads.db"), flush_interval=0.05,
                            strict=True)
    mon = Monitor(config)
    try:
        yield mon
    finally:
        mon.stop()


def hammer(mon: Monitor, record: Callable[[int], None]) -> int:
    """Run ``record(i)`` for i in range(PER_THREAD) in THREADS threads, flushing meanwhile.

    Returns how many flushes the extra flusher thread completed. Re-raises the first
    error of any thread.
    """
    errors: list[BaseException] = []
    halfway = threading.Barrier(THREADS + 1, timeout=WAIT_S)
    resume = threading.Event()
    done = threading.Event()
    flushes = [0]

    def work() -> None:
        try:
            half = PER_THREAD // 2
            for i in range(half):
                record(i)
            halfway.wait()
            if not resume.wait(WAIT_S):
                raise AssertionError("the mid-run flush never finished")
            for i in range(half, PER_THREAD):
                record(i)
        except BaseException as exc:
            errors.append(exc)
            halfway.abort()

    def flusher() -> None:
        try:
            while not done.is_set():
                assert mon.flush(), mon.collector.last_error
                flushes[0] += 1
                done.wait(0.001)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, name=f"worker-{n}") for n in range(THREADS)]
    extra = threading.Thread(target=flusher, name="flusher")
    extra.start()
    try:
        for t in workers:
            t.start()
        try:
            halfway.wait()
            # every thread is half way and waiting: this flush takes exactly the first halves
            assert mon.flush(), mon.collector.last_error
        except threading.BrokenBarrierError:
            pass
        finally:
            resume.set()
        for t in workers:
            t.join(WAIT_S)
            assert not t.is_alive(), f"{t.name} still running after {WAIT_S} s"
    finally:
        resume.set()
        done.set()
        extra.join(WAIT_S)
    if errors:
        raise errors[0]
    assert mon.flush(), mon.collector.last_error
    return flushes[0]


COUNTER_CASES = {
    # name: (how a thread records one increment, expected total)
    "bound_inc": (lambda c: c.bind(k="v").inc, lambda inc: inc(), 1),
    "counter_inc_tags": (lambda c: c.inc, lambda inc: inc(k="v"), 1),
    "bound_inc_2": (lambda c: c.bind(k="v").inc, lambda inc: inc(2), 2),
    "counter_inc_half": (lambda c: c.inc, lambda inc: inc(0.5, k="v"), 0.5),
}


@pytest.mark.parametrize("case", list(COUNTER_CASES))
def test_counter_increments_from_threads_are_counted_exactly(
    case: str, running: Monitor, fast_switching: None
) -> None:
    mon = running
    counter = mon.counter("x")
    get_inc, call, amount = COUNTER_CASES[case]
    local = threading.local()

    def record(i: int) -> None:
        inc = getattr(local, "inc", None)
        if inc is None:
            inc = local.inc = get_inc(counter)
        call(inc)

    hammer(mon, record)
    expected = THREADS * PER_THREAD * amount

    db = mon.config.db
    total, _ = totals(db, "x", {"k": "v"})
    assert total == expected
    # the query API agrees, and flushes really interleaved with recording
    assert q.stats(mon.store, "x", "1h").count == expected
    rows = point_rows(db, "x")
    assert len(rows) >= 2, rows
    assert all(r[0] > 0 for r in rows)
    # nothing was dropped on the way
    assert totals(db, "holter.dropped")[0] == 0
    assert integrity(db) == "ok"


def test_counter_mixed_amounts_on_one_series_from_threads(
    running: Monitor, fast_switching: None
) -> None:
    """Ones (the counting path) and other amounts (the buffer path) on one bound series."""
    mon = running
    cell = mon.counter("mixed").bind(k="v")
    amounts = (1, 2, 0.5, 0.25)

    def record(i: int) -> None:
        cell.inc(amounts[i % 4])

    hammer(mon, record)
    per_thread = sum(amounts[i % 4] for i in range(PER_THREAD))
    total, _ = totals(mon.config.db, "mixed")
    assert total == THREADS * per_thread


def test_histogram_observations_from_threads_are_exact(
    running: Monitor, fast_switching: None
) -> None:
    mon = running
    hist = mon.histogram("h", unit="ms")
    bound = {}

    def record(i: int) -> None:
        # values are multiples of 0.25 so every partial sum is exact in binary floating point
        hist.observe(0.25 * (i % 13), k="v")

    def record_bound(i: int) -> None:
        key = threading.get_ident()
        cell = bound.get(key)
        if cell is None:
            cell = bound[key] = hist.bind(k="b")
        cell.observe(1.5 + (i % 5))

    def both(i: int) -> None:
        record(i)
        record_bound(i)

    hammer(mon, both)
    db = mon.config.db
    per_thread = sum(0.25 * (i % 13) for i in range(PER_THREAD))
    total, count = totals(db, "h", {"k": "v"})
    assert count == THREADS * PER_THREAD
    assert total == THREADS * per_thread
    per_thread_b = sum(1.5 + (i % 5) for i in range(PER_THREAD))
    total_b, count_b = totals(db, "h", {"k": "b"})
    assert count_b == THREADS * PER_THREAD
    assert total_b == THREADS * per_thread_b

    stats = q.stats(mon.store, "h", "1h", tags={"k": "v"})
    assert stats.count == THREADS * PER_THREAD
    assert stats.sum == THREADS * per_thread
    assert stats.min == 0.0
    assert stats.max == 3.0
    assert len(point_rows(db, "h")) >= 2
