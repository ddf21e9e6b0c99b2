"""Clock indirection: the collector, store and queries read time through here.

:class:`holter.testing.FakeClock` replaces these functions so tests can move time
without sleeping. Hot-path timers use ``time.perf_counter`` directly.
"""

from __future__ import annotations

import time

time_ns = time.time_ns
"""Wall-clock nanoseconds since the epoch (timestamps of points, runs, spans)."""

monotonic_ns = time.monotonic_ns
"""Monotonic nanoseconds (durations, scheduling)."""


def now_s() -> float:
    """Wall-clock seconds since the epoch, through :data:`time_ns`."""
    return time_ns() / 1e9
