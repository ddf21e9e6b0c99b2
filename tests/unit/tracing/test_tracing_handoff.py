"""Spans handed off from the collector thread to the writer thread.

When the span buffer passes half full, the collector drains it and leaves the spans to
``holter-writer``, so draining goes on while the previous spans are written. Every span
is then stored once, in the order drained, or dropped and counted; the hand-off never
holds more than a span buffer's worth of unwritten spans; the writer ends with the
monitor, and a forked child starts with none of it.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time

import pytest

import holter.testing
from holter.errors import QueryError
from holter.monitor import Monitor


def _produce(mon: Monitor, traces: int, pause_every: int = 0, pause_s: float = 0.0) -> int:
    for i in range(traces):
        with mon.span("request", i=i):
            with mon.span("db.query"):
                pass
            with mon.span("render"), mon.span("template"):
                pass
        if pause_every and i % pause_every == pause_every - 1:
            time.sleep(pause_s)
    return traces * 4


def _stored(mon: Monitor) -> int:
    return mon.store.conn.execute("SELECT COALESCE(SUM(spans), 0) FROM span_chunks").fetchone()[0]


def _dropped(mon: Monitor) -> int:
    """Spans dropped for a full buffer, as the store has them (flushes first)."""
    try:
        return mon.query("holter.dropped", "1h", tags={"reason": "span_buffer_full"}).count
    except QueryError:  # nothing dropped: no such series
        return 0


def _holter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("holter-") and t.is_alive()]


def _writer_started() -> bool:
    deadline = time.monotonic() + 10
    while "holter-writer" not in _holter_threads():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_handed_off_spans_are_all_stored_once_in_the_order_drained() -> None:
    with holter.testing.monitor(strict=False, span_buffer=400, flush_interval=60) as mon:
        mon.collector.start()
        produced = _produce(mon, 3000, pause_every=50, pause_s=0.002)
        assert _writer_started()
        dropped = _dropped(mon)
        stored = _stored(mon)
        assert stored + dropped == produced
        assert stored > produced // 2
        # batches reach the store in the order they were drained: roots by rowid start later
        starts = [r[0] for r in mon.store.conn.execute(
            "SELECT start_ns FROM trace_parts WHERE root_kind = 2 ORDER BY rowid")]
        assert starts == sorted(starts)
        ids = [r[0] for r in mon.store.conn.execute(
            "SELECT trace_id FROM trace_parts WHERE root_kind = 2")]
        assert len(ids) == len(set(ids))  # no trace written twice
    deadline = time.monotonic() + 5
    while _holter_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _holter_threads() == []


def test_a_slow_store_bounds_the_hand_off_and_counts_drops() -> None:
    with holter.testing.monitor(strict=False, span_buffer=200, flush_interval=60) as mon:
        sink = mon.collector.sink
        original = sink.write
        largest = [0]

        def slow_write(batch):  # a store that takes its time over every batch
            largest[0] = max(largest[0], mon.collector._handoff_spans)
            time.sleep(0.05)
            original(batch)

        sink.write = slow_write  # type: ignore[method-assign]
        mon.collector.start()
        produced = _produce(mon, 2500)
        seen = mon.collector._handoff_spans
        sink.write = original  # type: ignore[method-assign]
        dropped = _dropped(mon)
        stored = _stored(mon)
        # what was not stored was dropped and counted on the recording thread, never lost
        assert stored + dropped == produced
        assert dropped > 0
        # one drained batch at most waits for the writer (a batch is at most a buffer)
        assert max(largest[0], seen) <= 200


def test_stop_ends_the_writer_within_the_exit_budget() -> None:
    with holter.testing.monitor(strict=False, span_buffer=100, exit_timeout=2.0) as mon:
        mon.collector.start()
        produced = _produce(mon, 500)
        assert _writer_started()
        _produce(mon, 20)  # left in the span buffer for the final flush
        started = time.monotonic()
        assert mon.stop()
        assert time.monotonic() - started < 2.0
        conn = sqlite3.connect(mon.config.db)
        try:
            stored = conn.execute("SELECT SUM(spans) FROM span_chunks").fetchone()[0]
            dropped = conn.execute(
                "SELECT COALESCE(SUM(p.total), 0) FROM points p JOIN series s "
                "ON s.id = p.series_id WHERE s.name = 'holter.dropped'").fetchone()[0]
        finally:
            conn.close()
        assert stored + dropped == produced + 80
    deadline = time.monotonic() + 5
    while _holter_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _holter_threads() == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_starts_without_the_parents_hand_off() -> None:
    with holter.testing.monitor(strict=False, span_buffer=100) as mon:
        # the run exists before the fork: _before_fork would otherwise create it holding
        # the store's lock, against the thread creating it at its first write
        mon.flush()
        mon.collector.start()
        _produce(mon, 300)
        assert _writer_started()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            collector = mon.collector
            state = (collector._writer is None and not collector._handoff
                     and collector._handoff_spans == 0 and mon.tracer.pending() == 0)
            os.write(write, b"1" if state else b"0")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert answer == b"1"


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="POSIX threads and fork")
