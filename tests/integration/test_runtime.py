"""Runtime metrics (psutil, GC), event-loop lag and blocked-loop blame."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import holter.testing
from holter.errors import QueryError
from holter.sources import loop, runtime
from holter.store.spans import decode_chunk

SCRIPTS = Path(__file__).resolve().parent / "scripts"


@pytest.fixture(autouse=True)
def no_leaked_sources() -> Iterator[None]:
    yield
    assert runtime._gc_callback not in gc.callbacks
    assert not runtime._GC_STATE["sinks"]
    assert len(loop._monitors) == 0


def stored_spans(db: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        return [s for (blob,) in conn.execute("SELECT data FROM span_chunks ORDER BY id")
                for s in decode_chunk(blob)]
    finally:
        conn.close()


def stat(mon, name: str, **tags: object):
    try:
        return mon.query(name, "1h", tags={k: str(v) for k, v in tags.items()}, flush=False)
    except QueryError:
        return None


def point_count(db: str, name: str) -> int:
    conn = sqlite3.connect(db, timeout=10)
    try:
        row = conn.execute(
            "SELECT count(*) FROM points p JOIN series s ON s.id = p.series_id WHERE s.name = ?",
            (name,)).fetchone()
        return row[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


PROCESS_METRICS = (
    "process.memory.rss", "process.memory.uss", "process.open_fds", "process.threads",
    "process.uptime", "system.cpu.utilization", "system.memory.used",
    "system.memory.available",
)


def test_runtime_metrics_are_sampled_in_the_collector_thread(tmp_path) -> None:
    db = str(tmp_path / "h.db")
    with holter.testing.monitor(db=db, runtime=True, flush_interval=0.1) as mon:
        threads: set[str] = set()
        samplers = list(mon.collector.samplers)
        assert mon.runtime.sample in samplers

        def watched() -> None:  # note which thread samples, then sample as usual
            threads.add(threading.current_thread().name)
            mon.runtime.sample()

        mon.collector.samplers[samplers.index(mon.runtime.sample)] = watched
        mon.collector.start()
        busy = sum(i * i for i in range(200_000))  # some CPU time to measure
        assert busy > 0
        deadline = time.monotonic() + 30
        while point_count(db, "process.cpu.utilization") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the test thread never flushes: only the collector samples
        assert threads == {"holter-collector"}
        for name in PROCESS_METRICS:
            assert point_count(db, name) >= 1, name
        rss = stat(mon, "process.memory.rss")
        assert rss.unit == "By"
        real = psutil.Process().memory_info().rss
        assert real / 4 < rss.last < real * 4
        assert stat(mon, "process.threads").last >= 2  # this thread and the collector
        assert stat(mon, "process.open_fds").last >= 3
        assert stat(mon, "process.uptime").last > 0
        assert 0 < stat(mon, "system.memory.used").last <= 100
        assert stat(mon, "system.memory.available").last > 0
        for mode in ("user", "system"):
            cpu = stat(mon, "process.cpu.utilization", mode=mode)
            assert cpu is not None and cpu.unit == "%" and cpu.min >= 0
        switches = stat(mon, "process.context_switches", kind="voluntary")
        assert switches is not None and switches.count >= 0
        assert stat(mon, "process.io.bytes") is not None
        assert stat(mon, "python.heap.bytes") is None or stat(mon, "python.heap.bytes").count == 0


def test_garbage_collections_and_pauses(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "h.db"), runtime=True) as mon:
        for _ in range(3):
            gc.collect()
        gc.collect(0)
        mon.flush()
        assert stat(mon, "python.gc.collections", generation=2).count >= 3
        assert stat(mon, "python.gc.collections", generation=0).count >= 1
        pauses = stat(mon, "python.gc.pause", generation=2)
        assert pauses.count >= 3 and pauses.unit == "s" and pauses.max > 0


def test_heap_only_with_tracemalloc(tmp_path) -> None:
    was_tracing = tracemalloc.is_tracing()
    try:
        with holter.testing.monitor(db=str(tmp_path / "h.db"), runtime=True,
                                    tracemalloc=True) as mon:
            assert tracemalloc.is_tracing()
            blob = [bytes(1000) for _ in range(1000)]
            mon.flush()
            heap = stat(mon, "python.heap.bytes")
            assert heap is not None and heap.last > 1_000_000
            del blob
    finally:
        if not was_tracing:
            tracemalloc.stop()


def test_tracemalloc_stops_with_the_monitor(tmp_path) -> None:
    assert not tracemalloc.is_tracing()
    try:
        with holter.testing.monitor(db=str(tmp_path / "h.db"), runtime=True, tracemalloc=True):
            pass
        assert not tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "holter-loop-watcher"]


def _no_watchers() -> bool:
    deadline = time.monotonic() + 5
    while _watchers() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _watchers()


def test_event_loop_lag(tmp_path) -> None:
    async def healthy() -> None:
        for _ in range(8):
            await asyncio.sleep(0.05)

    with holter.testing.monitor(db=str(tmp_path / "h.db"), runtime=True) as mon:
        assert not _watchers()  # a program without a loop runs nothing extra
        asyncio.run(healthy())
        mon.flush()
        lag = stat(mon, "asyncio.loop.lag")
        assert lag.unit == "s" and lag.count >= 3 and lag.min >= 0
        blocked = stat(mon, "asyncio.loop.blocked")
        assert blocked is None or blocked.count == 0
        assert not [s for s in stored_spans(mon.config.db) if s["name"] ==
                    "asyncio.loop.blocked"]
    assert _no_watchers()


def test_a_loop_already_running_when_the_monitor_starts(tmp_path) -> None:
    async def main() -> float:
        with holter.testing.monitor(db=str(tmp_path / "h.db"), runtime=True) as mon:
            for _ in range(8):
                await asyncio.sleep(0.05)
            mon.flush()
            return stat(mon, "asyncio.loop.lag").count

    assert asyncio.run(main()) >= 3
    assert _no_watchers()


def _heartbeats(loop_: asyncio.AbstractEventLoop) -> list[Any]:
    return [h for h in loop_._scheduled  # holter's heartbeat timers on this loop
            if isinstance(getattr(h._callback, "__self__", None), loop.LoopMonitor)]


def test_no_heartbeats_after_the_monitor_stops(tmp_path) -> None:
    async def beats() -> int:
        await asyncio.sleep(0.12)
        return len(_heartbeats(asyncio.get_running_loop()))

    with holter.testing.monitor(db=str(tmp_path / "h.db"), runtime=True):
        assert asyncio.run(beats()) == 1
    assert asyncio.run(beats()) == 0
    assert _no_watchers()


def test_a_blocked_loop_names_the_blocking_line(tmp_path) -> None:
    script = SCRIPTS / "instr_blocked_loop.py"
    line = next(i for i, text in enumerate(script.read_text().splitlines(), 1)
                if text.rstrip().endswith("# BLOCKS"))
    db = str(tmp_path / "h.db")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HOLTER_DB", None)
    done = subprocess.run([sys.executable, str(script), db], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    blocked = [s for s in stored_spans(db) if s["name"] == "asyncio.loop.blocked"]
    assert len(blocked) == 1, blocked
    [span] = blocked
    assert span["tags"]["blocking.line"] == f"instr_blocked_loop.py:{line} in handler"
    assert span["tags"]["lag_s"] >= 0.3  # the handler slept 0.4 s after the last beat
    assert span["duration_ns"] >= 0.3e9
    [event] = span["events"]
    assert event["message"] == "stack"
    frames = event["fields"]["stack"].split(" | ")
    assert frames[0] == f"instr_blocked_loop.py:{line} in handler"
    conn = sqlite3.connect(db)
    try:
        [(blocked_count,)] = conn.execute(
            "SELECT sum(total) FROM points p JOIN series s ON s.id = p.series_id "
            "WHERE s.name = 'asyncio.loop.blocked'").fetchall()
        lag_points = conn.execute(
            "SELECT sum(count) FROM points p JOIN series s ON s.id = p.series_id "
            "WHERE s.name = 'asyncio.loop.lag'").fetchone()[0]
    finally:
        conn.close()
    assert blocked_count == 1
    assert lag_points >= 3
    assert json.dumps(span)  # plain data all the way
