"""Writes a store steadily while ``holter top`` watches it (test_top_tmux).

    top_writer.py DB

Starts holter (flush every 0.2 s, with runtime metrics), then counts ``e2e.ticks`` 20
times a second and records a span per tick, until it is killed (at most 120 s).
"""

import sys
import time

import holter

mon = holter.start(app="e2e-writer", db=sys.argv[1], flush_interval=0.2, runtime=True)
ticks = mon.counter("e2e.ticks")
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    with mon.span("tick"):
        ticks.inc()
    time.sleep(0.05)
