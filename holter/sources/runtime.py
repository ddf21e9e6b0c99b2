"""Runtime metrics, sampled by the collector (never on the program's threads).

========================================== ====== ==========================================
metric                                     unit   source
========================================== ====== ==========================================
``process.cpu.utilization{mode}``          %      user / system CPU time over the interval,
                                                  in percent of one core
``process.memory.rss``                     By     resident set size
``process.memory.uss``                     By     unique set size (where available)
``process.open_fds``                       1      open file descriptors
``process.threads``                        1      threads of the process
``process.context_switches{kind}``         1      voluntary / involuntary
``process.io.bytes{direction}``            By     read / write bytes (where allowed)
``process.uptime``                         s      since the monitor started
``system.cpu.utilization``                 %      all CPUs
``system.memory.used``                     %      as ``free`` counts it
``system.memory.available``                By
``python.gc.collections{generation}``      1      collections, counted by ``gc.callbacks``
``python.gc.pause{generation}``            s      each collection's pause
``python.heap.bytes``                      By     traced Python heap (only with
                                                  ``tracemalloc=True``: tracing costs)
========================================== ====== ==========================================

On Linux every figure is read from ``/proc`` directly, as psutil computes it (importing
psutil would cost the program ~15 ms of CPU). Elsewhere psutil is used when installed
(``pip install 'holter[runtime]'``); without it the process metrics come from
``os.times`` and ``threading``. psutil is imported at the first sample, in the
collector thread, never at start-up. Metrics the platform denies (``AccessDenied``,
missing fields) are skipped and listed once in a log line, not retried.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("holter")

_GC_STATE: dict[str, Any] = {"start": 0.0, "sinks": []}


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    """gc.callbacks hook: time each collection (runs where the collection runs; tiny)."""
    if phase == "start":
        _GC_STATE["start"] = time.perf_counter()
        return
    pause = time.perf_counter() - _GC_STATE["start"]
    generation = info.get("generation", -1)
    for sink in _GC_STATE["sinks"]:
        with contextlib.suppress(Exception):  # never fail a garbage collection
            sink(generation, pause)


class RuntimeMetrics:
    """Samples process, system and interpreter figures into a monitor's instruments."""

    def __init__(self, monitor: Any, *, use_tracemalloc: bool = False) -> None:
        self.monitor = monitor
        self._started = time.monotonic()
        self._skipped: set[str] = set()
        self._why: dict[str, str] = {}
        self._reported: set[str] = set()
        self._last_cpu: tuple[float, float, float] | None = None
        self._last_counts: dict[str, float] = {}
        self._tracemalloc = use_tracemalloc
        self._proc: Any = None
        self._psutil: Any = None
        self._psutil_pid: int | None = None  # psutil is loaded at the first sample, off start-up
        cpu = monitor.gauge("process.cpu.utilization", unit="%",
                            description="CPU time of the process in percent of one core.")
        self._cpu_user = cpu.bind(mode="user")
        self._cpu_system = cpu.bind(mode="system")
        self._rss = monitor.gauge("process.memory.rss", unit="By").bind()
        self._uss = monitor.gauge("process.memory.uss", unit="By").bind()
        self._fds = monitor.gauge("process.open_fds", unit="1").bind()
        self._threads = monitor.gauge("process.threads", unit="1").bind()
        self._uptime = monitor.gauge("process.uptime", unit="s").bind()
        self._switches = monitor.counter("process.context_switches", unit="1")
        self._io = monitor.counter("process.io.bytes", unit="By")
        self._sys_cpu = monitor.gauge("system.cpu.utilization", unit="%").bind()
        self._sys_mem = monitor.gauge("system.memory.used", unit="%").bind()
        self._sys_avail = monitor.gauge("system.memory.available", unit="By").bind()
        self._heap = monitor.gauge("python.heap.bytes", unit="By").bind()
        collections = monitor.counter("python.gc.collections", unit="1")
        pauses = monitor.histogram("python.gc.pause", unit="s")
        gens = {g: (collections.bind(generation=g), pauses.bind(generation=g)) for g in range(3)}

        def on_gc(generation: int, pause: float) -> None:
            pair = gens.get(generation)
            if pair is not None:
                pair[0].inc()
                pair[1].observe(pause)

        self._gc_sink = on_gc
        self._started_tracemalloc = False
        if use_tracemalloc:
            import tracemalloc

            if not tracemalloc.is_tracing():
                tracemalloc.start()
                self._started_tracemalloc = True

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin counting garbage collections (the collector then calls :meth:`sample`)."""
        _GC_STATE["sinks"].append(self._gc_sink)
        if _gc_callback not in gc.callbacks:
            gc.callbacks.append(_gc_callback)

    def stop(self) -> None:
        """Stop counting garbage collections."""
        sinks = _GC_STATE["sinks"]
        if self._gc_sink in sinks:
            sinks.remove(self._gc_sink)
        if not sinks and _gc_callback in gc.callbacks:
            gc.callbacks.remove(_gc_callback)
        if self._started_tracemalloc:  # its cost must not outlive the monitor
            import tracemalloc

            tracemalloc.stop()
            self._started_tracemalloc = False

    # -- sampling ----------------------------------------------------------------------------

    def _load_psutil(self) -> bool:
        """Import psutil (if installed) for this process; True when it was just set up.

        Done at the first sample, in the collector thread: importing it costs the
        program's start-up ~10 ms. psutil's system-wide CPU counter is per thread, so
        it is primed here, in the thread that samples it.
        """
        pid = os.getpid()
        if self._psutil_pid == pid:
            return False
        self._psutil_pid = pid  # once per process (a forked child needs its own Process)
        if sys.platform.startswith("linux"):
            try:
                proc = ProcFS()
            except OSError:
                pass  # no readable /proc: psutil, if installed
            else:
                self._proc = self._psutil = proc
                return True
        try:
            import psutil
        except ImportError:
            return False
        try:
            self._proc = psutil.Process()
            psutil.cpu_percent(None)  # prime the system-wide counter
        except Exception as exc:  # an odd platform: the /proc and os fallbacks remain
            self._proc = None
            self._why["psutil"] = type(exc).__name__
            return False
        self._psutil = psutil
        return True

    def sample(self) -> None:
        """Read every figure once (the collector calls this before each flush)."""
        primed = self._load_psutil()
        self._uptime.set(time.monotonic() - self._started)
        self._read("cpu", self._cpu)
        self._read("rss", self._memory)
        self._read("threads", lambda: self._threads.set(self._thread_count()))
        self._read("open_fds", lambda: self._fds.set(self._fd_count()))
        if self._proc is not None:
            self._read("uss", lambda: self._uss.set(self._proc.memory_full_info().uss))
            self._read("context_switches", self._context_switches)
            self._read("io_counters", self._io_bytes)
            if not primed:  # just primed: no interval to measure yet
                self._read("system_cpu",
                           lambda: self._sys_cpu.set(self._psutil.cpu_percent(None)))
            self._read("system_memory", self._system_memory)
        if self._tracemalloc:
            import tracemalloc

            self._read("heap", lambda: self._heap.set(tracemalloc.get_traced_memory()[0]))
        self._report_skipped()

    def _read(self, what: str, read: Callable[[], None]) -> None:
        if what in self._skipped:
            return
        try:
            read()
        except Exception as exc:  # AccessDenied, a missing field, an odd platform
            self._skipped.add(what)
            self._why[what] = type(exc).__name__

    def _report_skipped(self) -> None:
        new = self._skipped - self._reported
        if new:
            self._reported |= new
            logger.info(
                "holter runtime metrics skipped on this platform (not retried): %s",
                ", ".join(f"{w} ({self._why.get(w, '?')})" for w in sorted(new)),
            )

    def _cpu(self) -> None:
        times = os.times()
        now = time.monotonic()
        last = self._last_cpu
        self._last_cpu = (times.user, times.system, now)
        if last is None:
            return
        wall = now - last[2]
        if wall <= 0:
            return
        self._cpu_user.set(max(times.user - last[0], 0.0) / wall * 100.0)
        self._cpu_system.set(max(times.system - last[1], 0.0) / wall * 100.0)

    def _memory(self) -> None:
        if self._proc is not None:
            self._rss.set(self._proc.memory_info().rss)
            return
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        self._rss.set(pages * os.sysconf("SC_PAGE_SIZE"))

    def _thread_count(self) -> int:
        if self._proc is not None:
            return int(self._proc.num_threads())
        return threading.active_count()

    def _fd_count(self) -> int:
        if self._proc is not None and hasattr(self._proc, "num_fds"):
            return int(self._proc.num_fds())
        return len(os.listdir("/proc/self/fd"))

    def _delta(self, key: str, value: float) -> float:
        last = self._last_counts.get(key)
        self._last_counts[key] = value
        return 0.0 if last is None else max(value - last, 0.0)

    def _context_switches(self) -> None:
        switches = self._proc.num_ctx_switches()
        self._switches.inc(self._delta("vol", switches.voluntary), kind="voluntary")
        self._switches.inc(self._delta("invol", switches.involuntary), kind="involuntary")

    def _io_bytes(self) -> None:
        io = self._proc.io_counters()
        self._io.inc(self._delta("read", io.read_bytes), direction="read")
        self._io.inc(self._delta("write", io.write_bytes), direction="write")

    def _system_memory(self) -> None:
        memory = self._psutil.virtual_memory()
        self._sys_mem.set(memory.percent)
        self._sys_avail.set(memory.available)


class _Figures:
    """Named figures, as psutil's named tuples give them."""

    def __init__(self, **values: float) -> None:
        self.__dict__.update(values)


class ProcFS:
    """The part of psutil the sampler uses, read from Linux's ``/proc`` for this process.

    Each figure is computed as psutil 7 computes it on Linux. ``cpu_percent`` is primed
    when this is built (as psutil's first ``cpu_percent(None)``).
    """

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._last_system = self._system_times()  # raises OSError without /proc

    @staticmethod
    def _read(path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def _status(self, *keys: bytes) -> list[int]:
        fields = {}
        for line in self._read("/proc/self/status").splitlines():
            key, _, value = line.partition(b":")
            if key in keys:
                fields[key] = int(value.split()[0])
        return [fields[key] for key in keys]  # KeyError: skipped, as psutil's would be

    def memory_info(self) -> _Figures:
        """Resident set size (``/proc/self/statm``)."""
        return _Figures(rss=int(self._read("/proc/self/statm").split()[1]) * self._page)

    def memory_full_info(self) -> _Figures:
        """Unique set size: the private pages (``smaps_rollup``, else ``smaps``)."""
        try:
            data = self._read("/proc/self/smaps_rollup")
        except OSError:
            data = self._read("/proc/self/smaps")
        uss = sum(int(line.split()[1]) for line in data.splitlines()
                  if line.startswith(b"Private_")) * 1024
        return _Figures(uss=uss)

    def num_threads(self) -> int:
        """Threads of the process."""
        return self._status(b"Threads")[0]

    def num_fds(self) -> int:
        """Open file descriptors."""
        return len(os.listdir("/proc/self/fd"))

    def num_ctx_switches(self) -> _Figures:
        """Voluntary and involuntary context switches."""
        voluntary, involuntary = self._status(b"voluntary_ctxt_switches",
                                              b"nonvoluntary_ctxt_switches")
        return _Figures(voluntary=voluntary, involuntary=involuntary)

    def io_counters(self) -> _Figures:
        """Bytes read and written (``/proc/self/io``; denied in some sandboxes)."""
        fields = {}
        for line in self._read("/proc/self/io").splitlines():
            name, _, value = line.partition(b": ")
            if value:
                fields[name] = int(value)
        return _Figures(read_bytes=fields[b"read_bytes"], write_bytes=fields[b"write_bytes"])

    def _system_times(self) -> list[float]:
        with open("/proc/stat", "rb") as fh:
            values = fh.readline().split()[1:11]
        return [int(v) / self._ticks for v in values]

    def cpu_percent(self, interval: None = None) -> float:
        """Busy share of all CPUs since the last call, in percent (psutil's formula)."""
        now = self._system_times()
        last, self._last_system = self._last_system, now
        deltas = [max(b - a, 0.0) for a, b in zip(last, now, strict=False)]
        # user nice system idle iowait irq softirq steal guest guest_nice: guest time is
        # already in user and nice; idle and iowait are not busy
        total = sum(deltas) - sum(deltas[8:10])
        busy = total - deltas[3] - (deltas[4] if len(deltas) > 4 else 0.0)
        if total <= 0:
            return 0.0
        return round(busy / total * 100, 1)

    def virtual_memory(self) -> _Figures:
        """Memory in use (percent, as ``free`` counts it) and available (bytes)."""
        fields = {}
        for line in self._read("/proc/meminfo").splitlines():
            key, _, value = line.partition(b":")
            if key in (b"MemTotal", b"MemAvailable", b"MemFree"):
                fields[key] = int(value.split()[0]) * 1024
        total = fields[b"MemTotal"]
        available = fields[b"MemAvailable"]  # kernels before 3.14: skipped
        if available <= 0:
            raise ValueError("MemAvailable is 0")  # psutil estimates it then; we skip
        if available > total:  # a container's view: psutil takes the free memory then
            available = fields[b"MemFree"]
        return _Figures(percent=round((total - available) / total * 100, 1),
                        available=available)
