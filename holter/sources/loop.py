"""Event-loop lag for asyncio programs, and the stack of the code that blocked the loop.

A heartbeat callback on the running loop (every :data:`HEARTBEAT_S`) measures how late
it runs: that delay is the loop's lag, recorded in the histogram ``asyncio.loop.lag``
(seconds). The heartbeat is one tiny callback; it is the only thing holter runs on the
loop's thread.

A watcher thread (holter's own) looks at the last heartbeat every few milliseconds.
When the loop has not come round for longer than the threshold (default 100 ms), it
takes the loop thread's stack with ``sys._current_frames()`` — the code that is
blocking the loop, while it blocks — and, when the loop comes back, records a span
``asyncio.loop.blocked`` covering the stall, tagged ``lag_s`` and ``blocking.line``
(the innermost frame of the program's code), with the stack as an event. So ``holter
traces --name asyncio.loop.blocked`` shows which line blocked and for how long.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
import traceback
import weakref
from typing import TYPE_CHECKING, Any

from holter.instrument._hooks import when_imported

if TYPE_CHECKING:
    import asyncio

HEARTBEAT_S = 0.05
"""Seconds between heartbeats on a watched loop."""
DEFAULT_THRESHOLD_S = 0.1
"""A loop that does not come round for this long counts as blocked."""
STACK_FRAMES = 12
"""Frames of the blocking stack kept in the event."""

_HOLTER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Watched:
    """One loop's heartbeat state, read by the watcher thread."""

    __slots__ = ("beat", "blocked_since", "handle", "loop", "stack", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self.loop = loop
        self.thread_id = thread_id
        self.beat = time.perf_counter()
        self.blocked_since: float | None = None
        self.stack: list[traceback.FrameSummary] | None = None
        self.handle: asyncio.TimerHandle | None = None


class LoopMonitor:
    """Heartbeats on asyncio loops, lag histogram, and blocked-loop spans with stacks."""

    def __init__(self, monitor: Any, threshold_s: float = DEFAULT_THRESHOLD_S) -> None:
        self.monitor = monitor
        self.threshold_s = threshold_s
        self.lag = monitor.histogram("asyncio.loop.lag", unit="s",
                                     description="How late the loop ran a heartbeat.").bind()
        self.blocked = monitor.counter("asyncio.loop.blocked", unit="1",
                                       description="Stalls longer than the threshold.").bind()
        self._watched: dict[int, _Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop side -----------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start heartbeats on ``loop`` (call from the loop's thread)."""
        key = id(loop)
        with self._lock:
            if key in self._watched:
                return
            state = _Watched(loop, threading.get_ident())
            self._watched[key] = state
        state.handle = loop.call_later(HEARTBEAT_S, self._beat, state, time.perf_counter())
        self._ensure_thread()

    def unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop heartbeats on ``loop``."""
        with self._lock:
            state = self._watched.pop(id(loop), None)
        if state is not None and state.handle is not None:
            state.handle.cancel()

    def _beat(self, state: _Watched, scheduled: float) -> None:
        now = time.perf_counter()
        lag = max(now - scheduled - HEARTBEAT_S, 0.0)
        self.lag.observe(lag)
        state.beat = now
        if state.blocked_since is not None:
            self._record_block(state, now)
        if id(state.loop) in self._watched:
            state.handle = state.loop.call_later(HEARTBEAT_S, self._beat, state, now)

    # -- the watcher thread ---------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch_loops, name="holter-loop-watcher",
                                        daemon=True)
        self._thread.start()

    def _watch_loops(self) -> None:
        step = max(min(self.threshold_s / 4, 0.05), 0.005)
        while not self._stop.wait(step):
            now = time.perf_counter()
            with self._lock:
                states = list(self._watched.values())
            for state in states:
                if state.blocked_since is not None:
                    continue
                if now - state.beat > HEARTBEAT_S + self.threshold_s:
                    frame = sys._current_frames().get(state.thread_id)
                    if frame is None:
                        continue
                    state.stack = traceback.extract_stack(frame)[-STACK_FRAMES:]
                    state.blocked_since = state.beat + HEARTBEAT_S

    def _record_block(self, state: _Watched, now: float) -> None:
        since = state.blocked_since or now
        stack = state.stack or []
        state.blocked_since = None
        state.stack = None
        lag = now - since
        try:
            self.blocked.inc()
            line = _blocking_line(stack)
            span = self.monitor.span("asyncio.loop.blocked", lag_s=round(lag, 6),
                                     **{"blocking.line": line})
            span._t0 = int(since * 1e9)  # the stall began at the missed heartbeat
            span.log("stack", stack=" | ".join(
                f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in reversed(stack)
            ))
            span.end()
        except Exception:  # pragma: no cover - never disturb the loop
            pass

    def stop(self) -> None:
        """Stop watching every loop."""
        self._stop.set()
        with self._lock:
            states = list(self._watched.values())
            self._watched.clear()
        for state in states:
            if state.handle is not None:
                state.loop.call_soon_threadsafe(state.handle.cancel)


def _blocking_line(stack: list[traceback.FrameSummary]) -> str:
    """The innermost frame that is the program's own code (not asyncio's, not holter's)."""
    asyncio_dir = os.path.dirname(os.path.abspath(sys.modules["asyncio"].__file__ or ""))
    for frame in reversed(stack):
        path = os.path.abspath(frame.filename)
        if not path.startswith((asyncio_dir, _HOLTER_DIR)) and "threading.py" not in path:
            return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"
    if stack:
        frame = stack[-1]
        return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"
    return "?"


_monitors: weakref.WeakSet[LoopMonitor] = weakref.WeakSet()
_patched = {"done": False}


def install(loop_monitor: LoopMonitor) -> None:
    """Watch every loop that runs from now on (and the running one, if any).

    Nothing is imported or patched until the program imports asyncio itself.
    """
    _monitors.add(loop_monitor)
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            loop_monitor.watch(running)
    when_imported("asyncio", _patch_loops)


def _patch_loops(_asyncio: Any) -> None:
    """Make every loop start its heartbeat when it runs (once per process)."""
    if _patched["done"]:
        return
    _patched["done"] = True
    import asyncio.base_events

    cls = asyncio.base_events.BaseEventLoop
    original = cls.run_forever

    @functools.wraps(original)
    def run_forever(self: Any) -> Any:
        for mon in list(_monitors):
            with contextlib.suppress(Exception):  # never stop a loop from starting
                self.call_soon(mon.watch, self)
        try:
            return original(self)
        finally:
            for mon in list(_monitors):
                with contextlib.suppress(Exception):
                    mon.unwatch(self)

    run_forever.__holter_original__ = original  # type: ignore[attr-defined]
    cls.run_forever = run_forever  # type: ignore[method-assign]


def uninstall(loop_monitor: LoopMonitor) -> None:
    """Stop watching loops for ``loop_monitor``."""
    _monitors.discard(loop_monitor)
    loop_monitor.stop()
