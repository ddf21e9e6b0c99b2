"""Shared helpers of the dashboard tests: stores with known contents, screen text.

Not a test module; the dashboard tests import it by name (pytest puts this folder on
``sys.path``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import holter.testing
from holter.monitor import Monitor


@contextlib.contextmanager
def recorder(db: str, **settings: Any) -> Iterator[Monitor]:
    """A monitor flushed by hand (no thread, no runtime sampling) on ``db``."""
    settings.setdefault("anomalies", False)
    with holter.testing.monitor(db=db, **settings) as mon:
        yield mon


def record_workload(mon: Monitor, *, jobs: int = 50, slow_ms: float = 30.0) -> None:
    """Counters, a histogram, a gauge, traces (one slow, one failing) — then flush."""
    done = mon.counter("jobs.done")
    latency = mon.histogram("http.latency", unit="ms")
    for i in range(jobs):
        done.inc()
        latency.observe(float(1 + i % 10), route="/users")
        latency.observe(float(50 + i % 5), route="/orders")
    mon.counter("cache.miss").inc(3)
    mon.gauge("queue.depth").set(7)
    # a trace with a parallel child and a sequential chain: the critical path is known
    with mon.span("handle_request", route="/users"):
        with mon.span("auth"):
            pass
        with mon.span("db.query", table="users"):
            pass
    with contextlib.suppress(ValueError), mon.span("failing_job"):
        raise ValueError("boom")
    mon.flush()


def write_trace(mon: Monitor, name: str = "slow_request") -> str:
    """A trace of ~80 ms: two children started together, ``fetch_fast`` (10 ms, off the
    critical path) and ``fetch_slow`` (80 ms, on it). Flushes; returns the trace id."""
    root = mon.span(name)
    root.__enter__()
    slow = mon.span("fetch_slow", context=root)
    slow.__enter__()
    fast = mon.span("fetch_fast", context=root)
    fast.__enter__()
    time.sleep(0.01)
    fast.__exit__(None, None, None)
    time.sleep(0.07)
    slow.__exit__(None, None, None)
    root.__exit__(None, None, None)
    mon.flush()
    return root.trace_id_hex


def bump_schema(db: str, version: int) -> None:
    """Make the store look as if a newer holter wrote it."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE holter_meta SET value = ? WHERE key = 'schema_version'",
                     (str(version),))
    conn.close()


def screen_text(app: Any) -> str:
    """What the terminal shows right now, as plain text (one line per row)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())
