"""Per-series value cells: the only code on the program's hot path.

Each cell records without a global lock and without I/O:

* a counter's ``inc()`` by 1 advances an ``itertools.count`` (one C call, atomic
  under the GIL); other amounts are appended to a list;
* a histogram's ``observe(v)`` appends to an ``array('d')`` (one C call, atomic);
* a gauge takes its own small lock (a gauge must apply ``inc``/``dec`` in order).

Appended values wait for the collector, which folds them into interval statistics
and a sketch (:meth:`collect`). Buffers are bounded: when one reaches
:data:`BUFFER_CAP` values, the recording thread folds it itself under the cell's
lock, so memory stays bounded at any recording rate and nothing is lost.

Recording never raises for a bad value outside strict mode: the cell calls its
``on_bad(value, reason)`` hook, which counts the drop (and raises in strict mode).
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from holter.core.sketch import BUCKETS_PER_DOUBLING, MAX_BINS, Sketch, collapse

BUFFER_CAP = 8192
"""Values a histogram or counter buffer holds before the recording thread folds it."""

NUMPY_MIN_BATCH = 512
"""Batches at least this large are folded with numpy, when it is installed and loaded."""

_INF = math.inf
_np: Any = None
_numpy_state = {"tried": False, "enabled": True, "stopping": False}

OnBad = Callable[..., None]
"""``on_bad(value, reason, count=1)``: count a dropped value (raises in strict mode)."""


NUMPY_AFTER_S = 20.0
"""numpy is imported only by a process that has been recording this long (seconds):
importing it costs 0.1 to 1 s of CPU, which a short program must never pay."""
_STARTED = time.monotonic()


def want_numpy() -> bool:
    """Load numpy for a busy histogram if this process is long-lived and not stopping."""
    if _np is not None:
        return True
    if _numpy_state["stopping"] or time.monotonic() - _STARTED < NUMPY_AFTER_S:
        return False
    return load_numpy()


def load_numpy() -> bool:
    """Import numpy once, off the hot path (the collector calls this); True if usable."""
    global _np
    if _np is not None:
        return True
    if _numpy_state["tried"] or not _numpy_state["enabled"]:
        return False
    _numpy_state["tried"] = True
    try:
        import numpy
    except Exception:
        return False
    _np = numpy
    return True


def use_numpy(enabled: bool) -> None:
    """Turn the numpy fold on or off (tests compare both paths)."""
    global _np
    _numpy_state["enabled"] = enabled
    if not enabled:
        _np = None
    else:
        _numpy_state["tried"] = False


def _total(amounts: list[Any]) -> float:
    """Sum counter amounts of any numeric type as a float (what the store keeps)."""
    try:
        return math.fsum(amounts)
    except OverflowError:
        return _INF


def _count_ones(ones: itertools.count) -> int:
    # repr(itertools.count(5)) == "count(5)"; reading it never disturbs the counter.
    return int(repr(ones)[6:-1])


class CounterCell:
    """A monotonic counter: ``inc(amount=1)``."""

    __slots__ = ("_buf", "_lock", "_ones", "_pending", "_seen", "inc", "tags", "tick")

    def __init__(self, tags: tuple[tuple[str, str], ...], on_bad: OnBad) -> None:
        self.tags = tags
        ones = itertools.count()
        buf: list[float] = []
        self._ones = ones
        self._seen = 0
        self._buf = buf
        self._pending: float = 0
        self._lock = threading.Lock()
        tick = self.tick = ones.__next__  # +1, one atomic C call (the counter's fast path)
        append = buf.append
        fold = self._fold

        def inc(amount: float = 1) -> None:
            """Add ``amount`` (default 1; must be finite and not negative)."""
            try:
                if amount == 1:
                    tick()
                    return
                if 0 <= amount < _INF:
                    append(amount)
                    if len(buf) >= BUFFER_CAP:
                        fold()
                    return
                reason = "negative" if amount < 0 else "not_finite"
            except Exception:
                reason = "not_a_number"
            on_bad(amount, reason)

        self.inc = inc

    def _fold(self) -> None:
        with self._lock:
            buf = self._buf
            n = len(buf)
            chunk = buf[:n]
            del buf[:n]
            self._pending += _total(chunk)

    def collect(self) -> float | None:
        """Return the increase since the last collect, or None if nothing was recorded."""
        total = _count_ones(self._ones)
        ones = total - self._seen
        self._seen = total
        with self._lock:
            buf = self._buf
            n = len(buf)
            if n:
                chunk = buf[:n]
                del buf[:n]
                self._pending += _total(chunk)
            extra = self._pending
            self._pending = 0
            active = ones > 0 or n > 0 or extra != 0
        if not active:
            return None
        return ones + extra

    def reset_after_fork(self) -> None:
        """Forget values recorded before a fork: the parent flushes those."""
        self._lock = threading.Lock()
        self._seen = _count_ones(self._ones)
        del self._buf[:]
        self._pending = 0


class GaugeCell:
    """A value that goes up and down: ``set``, ``inc``, ``dec``."""

    __slots__ = ("_lock", "_max", "_min", "_n", "_sum", "_value", "dec", "inc", "set", "tags")

    def __init__(self, tags: tuple[tuple[str, str], ...], on_bad: OnBad) -> None:
        self.tags = tags
        self._lock = threading.Lock()
        self._value: float | None = None
        self._min = _INF
        self._max = -_INF
        self._sum = 0.0
        self._n = 0
        cell = self

        def _apply(value: float) -> None:
            # caller holds the lock
            cell._value = value
            cell._min = min(cell._min, value)
            cell._max = max(cell._max, value)
            cell._sum += value
            cell._n += 1

        def as_float(value: object) -> float | None:
            if isinstance(value, str | bytes | bytearray):  # float("1") would accept text
                on_bad(value, "not_a_number")
                return None
            try:
                number = float(value)  # type: ignore[arg-type]
            except OverflowError:
                on_bad(value, "not_finite")
                return None
            except Exception:
                on_bad(value, "not_a_number")
                return None
            if number - number != 0.0:  # NaN or an infinity
                on_bad(value, "not_finite")
                return None
            return number

        def set_(value: float) -> None:
            """Set the gauge to ``value`` (a finite number)."""
            number = as_float(value)
            if number is not None:
                with cell._lock:
                    _apply(number)

        def inc(amount: float = 1) -> None:
            """Add ``amount`` (may be negative) to the gauge."""
            number = as_float(amount)
            if number is not None:
                with cell._lock:
                    _apply((cell._value or 0.0) + number)

        def dec(amount: float = 1) -> None:
            """Subtract ``amount`` from the gauge."""
            try:
                negated = -amount
            except Exception:
                on_bad(amount, "not_a_number")
                return
            inc(negated)

        self.set = set_
        self.inc = inc
        self.dec = dec

    @property
    def value(self) -> float | None:
        """The current value, or None if never set."""
        return self._value

    def collect(self) -> tuple[float, float, float, float, int] | None:
        """Return ``(last, min, max, sum, sets)`` for the interval, None if never set."""
        with self._lock:
            last = self._value
            if last is None:
                return None
            out = (
                last,
                min(self._min, last),
                max(self._max, last),
                self._sum,
                self._n,
            )
            self._min = last
            self._max = last
            self._sum = 0.0
            self._n = 0
        return out

    def reset_after_fork(self) -> None:
        """Keep the value (it is state), start a fresh interval with a fresh lock."""
        self._lock = threading.Lock()
        self._sum = 0.0
        self._n = 0
        if self._value is not None:
            self._min = self._max = self._value


class HistogramStats:
    """Mergeable statistics of one interval: count, sum, min, max, M2 and a sketch."""

    __slots__ = ("count", "m2", "max", "min", "sketch", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = _INF
        self.max = -_INF
        self.m2 = 0.0
        self.sketch = Sketch()

    def add_batch(self, n: int, total: float, lo: float, hi: float, m2: float) -> None:
        """Merge a batch's moments (Chan et al.'s parallel variance update)."""
        if n == 0:
            return
        if self.count == 0:
            self.count, self.total, self.min, self.max, self.m2 = n, total, lo, hi, m2
            return
        na = self.count
        nb = n
        delta = total / nb - self.total / na
        self.m2 += m2 + delta * delta * na * nb / (na + nb)
        self.count = na + nb
        self.total += total
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)


class HistogramCell:
    """A distribution: ``observe(value)``."""

    __slots__ = ("_bad", "_buf", "_full", "_lock", "_on_full", "_stats", "observe", "tags")

    def __init__(
        self,
        tags: tuple[tuple[str, str], ...],
        on_bad: OnBad,
        strict: bool = False,
        on_full: Callable[[HistogramCell], None] | None = None,
    ) -> None:
        self.tags = tags
        buf = array("d")
        self._buf = buf
        self._lock = threading.Lock()
        self._stats = HistogramStats()
        self._bad = on_bad
        self._full: array | None = None
        self._on_full = on_full
        append = buf.append
        fold = self._buffer_full

        if strict:

            def observe(value: float) -> None:
                """Record ``value`` (strict: a bad value raises)."""
                try:
                    ok = -_INF < value < _INF
                except Exception:
                    on_bad(value, "not_a_number")
                    return
                if not ok:
                    on_bad(value, "not_finite")
                    return
                append(value)
                if len(buf) >= BUFFER_CAP:
                    fold()

        else:

            def observe(value: float) -> None:
                """Record ``value``; NaN and infinities are dropped (and counted) later."""
                try:
                    append(value)
                except Exception:
                    on_bad(value, "not_a_number")
                    return
                if len(buf) >= BUFFER_CAP:
                    fold()

        self.observe = observe

    def observe_many(self, values: list[float]) -> None:
        """Record many values at once (the collector's path, e.g. span durations).

        The values must be finite numbers: this path does no checks.
        """
        self._buf.extend(values)
        if len(self._buf) >= BUFFER_CAP:
            self.fold()

    def _buffer_full(self) -> None:
        """The recording thread filled the buffer: hand it to the collector.

        The full buffer is swapped out (a copy of at most BUFFER_CAP doubles) and the
        collector is woken to fold it. If the previous hand-off has not been folded
        yet, the recording thread folds this one itself, so memory stays bounded.
        """
        hand_off = False
        bad = 0
        with self._lock:
            buf = self._buf
            n = len(buf)
            if n < BUFFER_CAP:  # another thread got here first
                return
            chunk = buf[:n]
            del buf[:n]
            if self._full is None and self._on_full is not None:
                self._full = chunk
                hand_off = True
            else:
                bad = fold_into(self._stats, chunk)
        if hand_off:
            self._on_full(self)  # type: ignore[misc]
        elif bad:
            self._bad(math.nan, "not_finite", bad)

    def fold(self) -> None:
        """Move buffered values (and a handed-off buffer) into the interval statistics."""
        bad = 0
        with self._lock:
            full = self._full
            if full is not None:
                self._full = None
                bad += fold_into(self._stats, full)
            buf = self._buf
            n = len(buf)
            if n:
                chunk = buf[:n]
                del buf[:n]
                bad += fold_into(self._stats, chunk)
        if bad:
            self._bad(math.nan, "not_finite", bad)

    def pending(self) -> int:
        """Number of values waiting to be folded."""
        full = self._full
        return len(self._buf) + (len(full) if full is not None else 0)

    def collect(self) -> HistogramStats | None:
        """Fold what is buffered and return the interval's statistics (None if empty)."""
        self.fold()
        with self._lock:
            stats = self._stats
            if stats.count == 0:
                return None
            self._stats = HistogramStats()
        return stats

    def reset_after_fork(self) -> None:
        """Forget values recorded before a fork: the parent flushes those."""
        self._lock = threading.Lock()
        del self._buf[:]
        self._full = None
        self._stats = HistogramStats()


def fold_into(stats: HistogramStats, chunk: array) -> int:
    """Fold raw values into ``stats``; return how many were not finite (dropped)."""
    np = _np
    if np is not None and len(chunk) >= NUMPY_MIN_BATCH:
        return _fold_numpy(np, stats, chunk)
    return _fold_python(stats, chunk)


def _fold_python(stats: HistogramStats, chunk: array) -> int:
    """Fold without numpy: sort once (C), then one step per sketch bucket, not per value."""
    values = chunk.tolist()
    total = sum(values)
    if total - total == 0.0:  # no NaN or infinity (they would make the sum one)
        finite = values
        bad = 0
    else:
        finite = list(filter(math.isfinite, values))
        bad = len(values) - len(finite)
        total = sum(finite)
    n = len(finite)
    if not n:
        return bad
    finite.sort()
    mean = total / n
    # m2 from the sum of squares, one pass without a list of deviations (about 40 ns a
    # value less). It loses digits to cancellation when the spread is tiny against the
    # mean (timestamps, say): then, or on overflow, the exact two-pass sum decides.
    sq = sum(map(operator.mul, finite, finite))
    m2 = sq - total * mean
    if not m2 >= sq * _ONE_PASS_MIN_RATIO or sq == _INF:
        deviations = list(map(mean.__rsub__, finite))  # v - mean
        m2 = sum(map(operator.mul, deviations, deviations))
    stats.add_batch(n, total, finite[0], finite[-1], m2)
    sketch = stats.sketch
    first_pos = bisect.bisect_right(finite, 0.0)
    first_zero = bisect.bisect_left(finite, 0.0, 0, first_pos)
    sketch.zero += first_pos - first_zero
    if first_pos < n:
        _count_sorted_positive(sketch.pos, finite, first_pos, n)
    if first_zero:
        magnitudes = [-v for v in reversed(finite[:first_zero])]  # ascending magnitudes
        _count_sorted_positive(sketch.neg, magnitudes, 0, len(magnitudes))
    for store in (sketch.pos, sketch.neg):
        if len(store) > MAX_BINS:
            collapse(store)
    return bad


_ONE_PASS_MIN_RATIO = 1e-3
"""The sum-of-squares m2 is used when m2 >= this share of the sum of squares: summation
error is at most n * 2**-53 of the sum of squares, so m2 keeps better than 1e-8 relative
accuracy for batches up to the buffer's 8192 values."""

_BELOW = 1.0 - 1e-9
_ABOVE = 1.0 + 1e-9


def _count_sorted_positive(store: dict[int, int], values: list[float], i: int, n: int) -> None:
    """Add sorted positive ``values[i:n]`` to ``store``, finding each bucket's end by bisection."""
    scale = BUCKETS_PER_DOUBLING
    log2 = math.log2
    ceil = math.ceil
    right = bisect.bisect_right
    get = store.get
    while i < n:
        k = ceil(log2(values[i]) * scale)
        bound = 2.0 ** (k / scale)
        j = right(values, bound, i, n)
        # The computed bound can be off by an ulp: near it, settle the edge on the keys
        # themselves (the same formula as the numpy path), elsewhere trust the bisection.
        if values[j - 1] > bound * _BELOW:
            while j > i + 1 and ceil(log2(values[j - 1]) * scale) > k:
                j -= 1
        if j < n and values[j] < bound * _ABOVE:
            while j < n and ceil(log2(values[j]) * scale) <= k:
                j += 1
        store[k] = get(k, 0) + (j - i)
        i = j


def _fold_numpy(np: Any, stats: HistogramStats, chunk: array) -> int:
    a = np.frombuffer(chunk, dtype=np.float64)
    finite_mask = np.isfinite(a)
    n = int(np.count_nonzero(finite_mask))
    bad = len(a) - n
    if bad:
        a = a[finite_mask]
    if not n:
        return bad
    total = float(a.sum())
    mean = total / n
    dev = a - mean
    m2 = float(np.dot(dev, dev))
    lo = float(a.min())
    hi = float(a.max())
    stats.add_batch(n, total, lo, hi, m2)
    sketch = stats.sketch
    if lo > 0:
        pos = a
        nneg = 0
        nzero = 0
    else:
        pos = a[a > 0]
        neg = -a[a < 0]
        nneg = len(neg)
        nzero = n - len(pos) - nneg
        if nneg:
            keys, counts = np.unique(
                np.ceil(np.log2(neg) * BUCKETS_PER_DOUBLING).astype(np.int64), return_counts=True
            )
            sketch.add_keys(sketch.neg, keys.tolist(), counts.tolist())
        sketch.zero += nzero
    if len(pos):
        keys, counts = np.unique(
            np.ceil(np.log2(pos) * BUCKETS_PER_DOUBLING).astype(np.int64), return_counts=True
        )
        sketch.add_keys(sketch.pos, keys.tolist(), counts.tolist())
    return bad
