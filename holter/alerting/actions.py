"""Corrective actions: functions bound to a rule, run once each time one of its alerts fires.

``mon.on_alert("high-memory", fn)`` calls ``fn(alert)`` (an
:class:`holter.store.alerts.AlertRecord`) on holter's action thread, never on the
program's threads; its return value (when JSON-friendly) or its exception is recorded in
the alert's history (``holter alerts --events``). An object with an ``on_resolved``
method also hears when the alert resolves.

Built-ins for the common cases:

* :func:`collect_garbage` — ``gc.collect()``, recording the resident memory before and
  after and the objects collected (``actions = ["gc"]`` in a rules file).
* :class:`Throttle` — a flag the program consults: engaged while an alert of its rule
  fires, released when it resolves (``actions = ["throttle"]``; the program reads
  ``mon.throttle("rule").engaged`` or calls ``.pause()`` between work items).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any


def rss_bytes() -> int | None:
    """The process's resident memory now, in bytes (None when the platform does not say)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None


def collect_garbage(alert: Any = None) -> dict[str, Any]:
    """Run a full garbage collection; return RSS before and after and objects collected."""
    before = rss_bytes()
    started = time.perf_counter()
    collected = gc.collect()
    took = time.perf_counter() - started
    after = rss_bytes()
    return {
        "action": "gc",
        "collected": collected,
        "rss_before": before,
        "rss_after": after,
        "freed_bytes": (before - after) if before is not None and after is not None else None,
        "seconds": round(took, 6),
    }


class Throttle:
    """A flag a program consults to slow down while an alert fires.

    Bound to a rule as an action (``mon.on_alert(rule, throttle)``, or
    ``mon.throttle(rule)``), it is engaged when one of the rule's alerts fires and
    released when the last of them resolves. ``engaged`` is a cheap attribute read;
    ``pause()`` sleeps ``delay_s`` only while engaged.
    """

    def __init__(self, delay_s: float = 0.1) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be 0 or more, got {delay_s!r}")
        self.delay_s = float(delay_s)
        self.engaged = False
        self._alerts: set[int] = set()
        self._lock = threading.Lock()
        self.engagements = 0

    def __call__(self, alert: Any) -> dict[str, Any]:
        """Engage (an alert fired)."""
        with self._lock:
            self._alerts.add(int(getattr(alert, "id", 0)))
            if not self.engaged:
                self.engagements += 1
            self.engaged = True
            active = len(self._alerts)
        return {"action": "throttle", "engaged": True, "alerts": active}

    def on_resolved(self, alert: Any) -> dict[str, Any]:
        """Release when the last firing alert resolved."""
        with self._lock:
            self._alerts.discard(int(getattr(alert, "id", 0)))
            self.engaged = bool(self._alerts)
            active = len(self._alerts)
        return {"action": "throttle", "engaged": self.engaged, "alerts": active}

    def pause(self) -> float:
        """Sleep ``delay_s`` while engaged; return the seconds slept."""
        if not self.engaged or not self.delay_s:
            return 0.0
        time.sleep(self.delay_s)
        return self.delay_s

    def __repr__(self) -> str:
        return f"Throttle(engaged={self.engaged}, delay_s={self.delay_s})"


__all__ = ["Throttle", "collect_garbage", "rss_bytes"]
