"""The collector: a daemon thread that turns cells into points and hands them to a sink.

Every ``interval_s`` it snapshots every series (counter deltas, gauge last/min/max,
histogram statistics and sketch) into one :class:`holter.model.Batch` and calls
``sink.write(batch)``. It knows nothing of SQLite: the sink is any object with a
``write`` method (the monitor wires in the store).

A sink that fails (store busy, disk full, read-only) costs the program nothing:
the batch waits in a bounded backlog and is written, oldest first, at the next
flush. Past ``max_pending_points`` the oldest batches are dropped and counted in
``holter.dropped{reason="store_error"}``.

When the span buffer passes half full, the collector thread drains it and hands the
spans to a writer thread (``holter-writer``, started on the first such hand-off), so
draining goes on while SQLite and zlib (which release the GIL) write the previous
hand-off. The hand-off holds one batch: while the writer has not taken it, the collector
waits, the span buffer fills, and spans are dropped and counted as
``span_buffer_full`` on the recording threads, never queued without bound.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from holter import _clock
from holter.core._cells import CounterCell, GaugeCell, HistogramCell, _numpy_state, want_numpy
from holter.core.instruments import Gauge, Histogram, Instrument
from holter.core.registry import Registry
from holter.core.tracing import Tracer
from holter.errors import StoreError
from holter.model import Batch, Point, SeriesKey

logger = logging.getLogger("holter")


class Sink(Protocol):
    """Where batches go. ``write`` raises on failure; the batch is then kept and retried."""

    def write(self, batch: Batch) -> None:
        """Persist one batch."""


class Collector:
    """Periodic, bounded, fork-aware flusher of a registry into a sink."""

    def __init__(
        self,
        registry: Registry,
        sink: Sink,
        interval_s: float,
        *,
        max_pending_points: int = 200_000,
        after_flush: Callable[[list[Batch]], None] | None = None,
    ) -> None:
        self.registry = registry
        self.sink = sink
        self.interval_s = interval_s
        self.max_pending_points = max_pending_points
        self.after_flush = after_flush
        self.samplers: list[Callable[[], None]] = []
        """Called at the start of every collect, in the collector thread (e.g. runtime
        metrics); an exception is counted in ``holter.dropped{reason="sampler_error"}``."""
        self._pending: collections.deque[Batch] = collections.deque()
        self._pending_points = 0
        self._keys: dict[Any, SeriesKey] = {}
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # spans drained on the collector thread, waiting for the writer thread; every
        # drain and every move of these into _pending happens under _drain_lock, so
        # batches reach _pending (and the store) in the order they were drained
        self._drain_lock = threading.RLock()
        self._handoff: collections.deque[Batch] = collections.deque()
        self._handoff_spans = 0
        self._handoff_cond = threading.Condition(threading.Lock())
        self._writer: threading.Thread | None = None
        self._hooks_lock = threading.RLock()  # after_flush: one thread at a time
        self.tracer: Tracer | None = None
        self.extra_spans: list[tuple[Any, ...]] = []
        registry.wake = self.wake
        self._last_ns = _clock.time_ns()
        self._warned_slow = False
        self._flush_seconds = registry.define(
            Histogram, "holter.flush_seconds", "s", "Time the collector took per flush."
        )
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the flush thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holter-collector", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask the thread to write finished spans now (the span buffer is filling)."""
        self._wake.set()

    def set_interval(self, interval_s: float) -> None:
        """Flush every ``interval_s`` from now on (e.g. 1 s while a dashboard watches)."""
        self.interval_s = interval_s
        self._wake.set()

    def _run(self) -> None:
        stop = self._stop
        wake = self._wake
        interval_ns = int(self.interval_s * 1e9)
        next_flush = _clock.monotonic_ns() + interval_ns
        while not stop.is_set():
            timeout = (next_flush - _clock.monotonic_ns()) / 1e9
            if timeout > 0:
                wake.wait(timeout)
            if stop.is_set():
                break
            try:
                if wake.is_set():
                    wake.clear()
                    self.fold_requested()
                    self.hand_off_spans()
                if int(self.interval_s * 1e9) != interval_ns:  # set_interval() was called
                    next_flush += int(self.interval_s * 1e9) - interval_ns
                    interval_ns = int(self.interval_s * 1e9)
                now = _clock.monotonic_ns()
                if now >= next_flush:
                    self.flush()
                    next_flush = max(next_flush + interval_ns, now + interval_ns // 10)
            except Exception:  # pragma: no cover - flush never raises; belt and braces
                logger.exception("holter collector: unexpected error")

    def shutdown(self, timeout_s: float = 0.5) -> bool:
        """Stop the thread and do a final flush within ``timeout_s``; True if all was written."""
        deadline = _clock.monotonic_ns() + int(timeout_s * 1e9)
        _numpy_state["stopping"] = True  # never import numpy on the way out
        self._stop.set()
        self._wake.set()
        with self._handoff_cond:  # the writer ends once idle; the final flush writes the rest
            self._handoff_cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(timeout_s / 2, 0))
        remaining = max((deadline - _clock.monotonic_ns()) / 1e9, 0.0)
        return self.flush(timeout_s=remaining)

    def after_fork_child(self) -> None:
        """In a forked child: fresh locks and threads, no inherited backlog."""
        self._flush_lock = threading.Lock()
        self._pending.clear()
        self._pending_points = 0
        self._thread = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drain_lock = threading.RLock()
        self._handoff = collections.deque()
        self._handoff_spans = 0
        self._handoff_cond = threading.Condition(threading.Lock())
        self._writer = None
        self._hooks_lock = threading.RLock()
        self._last_ns = _clock.time_ns()

    # -- flushing ----------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> bool:
        """Collect now and write everything pending; True if nothing is left pending."""
        if timeout_s is None:
            self._flush_lock.acquire()
        elif not self._flush_lock.acquire(timeout=max(timeout_s, 0.001)):
            return False
        try:
            started = _clock.monotonic_ns()
            with self._drain_lock:  # handed-off spans first: they were drained earlier
                self._take_handoff()
                batch = self.collect()
            if batch.size or not self._pending:
                self._pending.append(batch)
                self._pending_points += batch.size
            else:  # nothing new: the waiting batch now also covers this interval
                self._pending[-1].t_end_ns = batch.t_end_ns
            written: list[Batch] = []
            ok = self._write_pending(timeout_s, written)
            self._trim()
            elapsed = (_clock.monotonic_ns() - started) / 1e9
        finally:
            self._flush_lock.release()
        self._flush_seconds.observe(elapsed)
        if elapsed > self.interval_s and not self._warned_slow:
            self._warned_slow = True
            logger.warning(
                "holter flush took %.2f s, longer than the %.2f s flush interval; raise "
                "flush_interval (HOLTER_FLUSH_INTERVAL) or record fewer series",
                elapsed,
                self.interval_s,
            )
        self._run_after_flush(written)
        return ok

    def _run_after_flush(self, written: list[Batch]) -> None:
        if written and self.after_flush is not None:
            with self._hooks_lock:
                try:
                    self.after_flush(written)
                except Exception as exc:
                    logger.debug("holter after-flush hook failed: %r", exc)

    def _write_pending(self, timeout_s: float | None, written: list[Batch] | None = None) -> bool:
        set_timeout = getattr(self.sink, "set_timeout", None)
        if timeout_s is not None and set_timeout is not None:
            set_timeout(timeout_s)
        try:
            while self._pending:
                batch = self._pending[0]
                try:
                    self.sink.write(batch)
                except StoreError as exc:
                    text = str(exc)
                    if text != self.last_error:
                        logger.warning(
                            "holter could not write to its store (%s); keeping %d points in "
                            "memory and retrying at the next flush",
                            text,
                            self._pending_points,
                        )
                    self.last_error = text
                    return False
                except Exception as exc:  # a bug or bad data: retrying would block forever
                    self._pending.popleft()
                    self._pending_points -= batch.size
                    self.registry.count_drop("write_error", max(batch.size, 1), repr(exc))
                    logger.warning("holter dropped a batch it could not write: %r", exc)
                    continue
                self._pending.popleft()
                self._pending_points -= batch.size
                if written is not None:
                    written.append(batch)
            if self.last_error is not None:
                logger.warning("holter store writable again; backlog written")
                self.last_error = None
            return True
        finally:
            if timeout_s is not None and set_timeout is not None:
                set_timeout(None)

    def _trim(self) -> None:
        """Drop the oldest waiting batches past the bound, losing as little as possible.

        Counter increases in a dropped batch go back into their live series, so counters
        stay exact through an outage (only their time shifts) and earlier drop counts are
        not lost with it; gauges, histograms and spans are lost and counted.
        """
        while self._pending_points > self.max_pending_points and len(self._pending) > 1:
            dropped = self._pending.popleft()
            self._pending_points -= dropped.size
            lost = len(dropped.spans)
            instruments = self.registry.instruments
            for point in dropped.points:
                key = point.key
                if key.kind == "counter" and point.total:
                    cell = getattr(instruments.get(key.name), "_series", {}).get(key.tags)
                    if cell is not None:
                        cell.inc(point.total)
                        continue
                lost += 1
            if lost:
                self.registry.count_drop("store_error", lost, "a batch of points and spans")

    def fold_requested(self) -> None:
        """Fold the histogram buffers that recording threads handed over."""
        requests = self.registry.take_fold_requests()
        if requests:
            want_numpy()  # a busy histogram: the vectorised fold pays for the import
            for cell in requests:
                cell.fold()

    def flush_spans(self) -> bool:
        """Write finished spans now, without closing the metrics interval."""
        tracer = self.tracer
        if tracer is None or not (tracer.pending() or self._handoff):
            return True
        written: list[Batch] = []
        with self._flush_lock:
            with self._drain_lock:
                self._take_handoff()
                if tracer.pending():
                    batch = Batch(self._last_ns, self._last_ns, [], tracer.drain())
                    self._pending.append(batch)
                    self._pending_points += batch.size
            ok = self._write_pending(None, written)
            self._trim()
        self._run_after_flush(written)  # exporters must see these spans too
        return ok

    def hand_off_spans(self) -> None:
        """Drain finished spans and leave them to the writer thread (the collector's path).

        At most one drained batch waits for the writer: while the previous one has not
        been taken (the writer is still writing the one before), this waits, so memory
        stays bounded and the span buffer, filling meanwhile, drops and counts what does
        not fit.
        """
        tracer = self.tracer
        if tracer is None or not tracer.pending():
            return
        cond = self._handoff_cond
        stop = self._stop
        with cond:
            while self._handoff and not stop.is_set():
                writer = self._writer
                if writer is None or not writer.is_alive():
                    break  # (re)started below
                cond.wait(0.1)
        if stop.is_set():
            return  # stopping: the final flush drains and writes the rest
        with self._drain_lock:
            batch = Batch(self._last_ns, self._last_ns, [], tracer.drain())
            with cond:
                self._handoff.append(batch)
                self._handoff_spans += len(batch.spans)
                cond.notify_all()
        writer = self._writer
        if writer is None or not writer.is_alive():
            self._writer = threading.Thread(
                target=self._write_handed_off, name="holter-writer", daemon=True
            )
            self._writer.start()

    def _take_handoff(self) -> None:
        """Move handed-off batches into the write backlog (holding ``_flush_lock``)."""
        cond = self._handoff_cond
        with cond:
            if not self._handoff:
                return
            for batch in self._handoff:
                self._pending.append(batch)
                self._pending_points += batch.size
            self._handoff.clear()
            self._handoff_spans = 0
            cond.notify_all()

    def _write_handed_off(self) -> None:
        """The writer thread: write handed-off spans until the collector stops."""
        while True:
            cond = self._handoff_cond
            with cond:
                while not self._handoff and not self._stop.is_set():
                    cond.wait(1.0)
                if self._stop.is_set():
                    return  # shutdown's final flush writes what is left, within its budget
            written: list[Batch] = []
            try:
                with self._flush_lock:
                    self._take_handoff()
                    self._write_pending(None, written)
                    self._trim()
                self._run_after_flush(written)  # exporters must see these spans too
            except Exception:  # pragma: no cover - writing never raises; belt and braces
                logger.exception("holter writer: unexpected error")

    @property
    def pending_points(self) -> int:
        """Points (and spans) waiting for the sink."""
        return self._pending_points + self._handoff_spans

    def collect(self) -> Batch:
        """Snapshot every series into a batch covering the time since the last collect."""
        t_end = _clock.time_ns()
        t_start = self._last_ns
        self._last_ns = t_end
        batch = Batch(t_start, t_end)
        for sampler in self.samplers:
            try:
                sampler()
            except Exception as exc:
                self.registry.count_drop("sampler_error", 1, repr(exc))
        if self.tracer is not None:  # first: draining feeds span.duration, collected below
            with self._drain_lock:
                batch.spans = self.tracer.drain()
        if self.extra_spans:
            batch.spans.extend(self.extra_spans)
            self.extra_spans = []
        points = batch.points
        keys = self._keys
        numpy_checked = False
        for instrument in self.registry.snapshot():
            if isinstance(instrument, Gauge) and instrument.callbacks:
                instrument.sample_callbacks()
            for cell in instrument.series():
                if not numpy_checked and isinstance(cell, HistogramCell) and cell.pending() >= 512:
                    want_numpy()
                    numpy_checked = True
                point = _point(cell, t_start, t_end)
                if point is None:
                    continue
                key = keys.get(cell)
                if key is None:
                    key = keys[cell] = _series_key(instrument, cell)
                point.key = key
                points.append(point)
        return batch


_NO_KEY = SeriesKey("", "", "", ())


def _point(cell: Any, t_start: int, t_end: int) -> Point | None:
    if isinstance(cell, CounterCell):
        delta = cell.collect()
        if delta is None:
            return None
        return Point(_NO_KEY, t_start, t_end, total=delta)
    if isinstance(cell, GaugeCell):
        g = cell.collect()
        if g is None:
            return None
        last, lo, hi, total, sets = g
        return Point(_NO_KEY, t_start, t_end, count=sets, total=total, min=lo, max=hi, last=last)
    if isinstance(cell, HistogramCell):
        h = cell.collect()
        if h is None:
            return None
        return Point(
            _NO_KEY, t_start, t_end, count=h.count, total=h.total, min=h.min, max=h.max,
            m2=h.m2, sketch=h.sketch.to_bytes(),
        )
    return None  # pragma: no cover - every cell kind is handled above


def _series_key(instrument: Instrument, cell: Any) -> SeriesKey:
    return SeriesKey(instrument.name, instrument.kind, instrument.unit or "", cell.tags)
