"""The live model behind ``holter top``: incremental reads of the store, window aggregates.

Everything comes through :mod:`holter.store.query` (principle 2 of DESIGN.md), so the
dashboard can watch a program running in another process through the store file.

Each refresh reads only what was written since the last one: interval points after a
row-id cursor, trace parts after another, runs created since, and the alert and anomaly
tables only when their change marks moved. A window switch (or a cursor gone stale
because retention emptied a table) loads the window once, then follows the cursors.

The window is cut into :data:`STEPS` steps aligned on the clock. Each series keeps one
aggregate per step (sum, count, min, max, last value per run; for histograms the
step's merged sketch) and, for histograms, the window's merged sketch as plain bucket
counts: a new point adds its buckets, a step leaving the window subtracts its own, so a
refresh costs what arrived, not the window's size. Percentiles are read from that
sketch; rates are per second of recorded time (the runs' recorded time inside the
window), as :func:`holter.store.query.grouped_stats` computes them.

Rows keep their place between refreshes: a panel's order is set once (on the first
load, or when the user sorts) and later rows are appended at its end.

The model is not thread-safe by itself; :class:`LiveModel` guards every public method
with one lock, so the UI thread may ask for details while a worker refreshes.
"""

from __future__ import annotations

import heapq
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from holter import _clock
from holter.core.registry import tag_value
from holter.core.sketch import Sketch, value_of
from holter.dashboard import format as fmt
from holter.errors import HolterError, NotAStore, QueryError, SchemaError, StoreError
from holter.model import QUANTILES, RunInfo
from holter.store import query as q
from holter.store.schema import POINT_TABLES
from holter.store.sqlite import Store, StoreBusy

WINDOWS = ("1m", "5m", "15m", "1h")
"""Windows the dashboard switches between, shortest first."""

STEPS = 30
"""Steps per window: the resolution of sparklines and of the window's edge."""

TOP_TRACES = 20
"""Slowest traces listed."""

MAX_ROWS_PER_REFRESH = 50_000
"""Rows read per table and refresh; a larger backlog is read over several refreshes."""

SPAN_DURATION = "span.duration"
"""The histogram every span feeds (tag ``name``): the operations panel reads it."""

PANELS = ("series", "ops", "traces", "alerts", "anomalies", "runs")
"""Panels in their Tab order."""

COLUMNS: dict[str, tuple[str, ...]] = {
    "series": ("series", "value", "rate/s", "p50", "p95", "p99", "trend"),
    "ops": ("operation", "count", "rate/s", "err%", "p50", "p95", "p99", "trend"),
    "traces": ("duration", "root span", "spans", "err", "started", "trace id"),
    "alerts": ("state", "rule", "labels", "value", "since"),
    "anomalies": ("time", "series", "stat", "kind", "severity", "value", "expected"),
    "runs": ("run", "app", "pid", "host", "state", "started", "last flush"),
}
"""Each panel's columns, in order (the UI leaves some out in narrow terminals).

A series' ``value`` is its count over the window (counters: the increments;
histograms: the observations), or a gauge's last value.
"""

SORTS: dict[str, tuple[str, ...]] = {
    "series": ("rate", "value", "p95", "p99", "p50", "name"),
    "ops": ("count", "errors", "p95", "p99", "name"),
    "traces": ("duration", "started", "name"),
}
"""What ``s`` cycles through per panel; the first is the initial order."""

SYSTEM_METRICS = (
    # key, label, metric names, how (sum of per-run values / rate / p95), unit, warn, crit, full
    ("cpu", "CPU", ("process.cpu.utilization",), "sum", "%", 50.0, 80.0, 100.0),
    ("sys", "SYS CPU", ("system.cpu.utilization",), "latest", "%", 50.0, 80.0, 100.0),
    ("mem", "MEM", ("system.memory.used",), "latest", "%", 70.0, 90.0, 100.0),
    ("rss", "RSS", ("process.memory.rss",), "sum", "By", None, None, None),
    ("gc", "GC", ("python.gc.collections",), "rate", "/s", 10.0, 50.0, None),
    ("gcp", "GC PAUSE", ("python.gc.pause",), "p95", "s", 0.01, 0.05, 0.1),
    ("lag", "LOOP LAG", ("asyncio.loop.lag",), "p95", "s", 0.01, 0.1, 0.25),
    ("thr", "THREADS", ("process.threads",), "sum", "1", None, None, None),
)
"""The system panel: each line shown when its metric has data in the window."""

_QS = (0.5, 0.95, 0.99)
_DETAIL_QS = [q_ for _, q_ in QUANTILES]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which runs the dashboard watches: one run (with the runs it started), an app, or all."""

    run: int | None = None
    app: str | None = None

    def describe(self) -> str:
        """A few words for the header."""
        if self.run is not None:
            return f"run {self.run}"
        if self.app is not None:
            return f"app {self.app}"
        return "all runs"


@dataclass(frozen=True, slots=True)
class SystemLine:
    """One line of the system panel."""

    key: str
    label: str
    value: str
    fraction: float | None
    level: str
    trend: tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class PanelData:
    """What one panel shows: rows by key (tuples of cell text, in :data:`COLUMNS` order).

    ``order`` lists the visible keys (filtered) in display order; ``generation`` changes
    when the order was rebuilt (a sort, a filter, a window switch) rather than only
    appended to, so the UI knows to redraw the table instead of patching it.
    """

    order: tuple[str, ...]
    rows: dict[str, tuple[str, ...]]
    generation: int
    total: int
    sort: str | None
    empty: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the screen shows after one refresh (immutable, handed to the UI)."""

    status: str
    """``waiting`` (no store yet), ``ready``, ``busy`` (kept the last data) or ``error``."""
    message: str
    now_ns: int
    window: str
    scope: str
    system: tuple[SystemLine, ...]
    panels: dict[str, PanelData | None]
    """None for a panel with nothing to show (alerts and anomalies appear with their data)."""
    points_read: int = 0


class _Step:
    __slots__ = ("by_run", "count", "hi", "last", "last_t", "lo", "q95", "sketch", "total")

    def __init__(self) -> None:
        self.count = 0.0
        self.total = 0.0
        self.lo: float | None = None
        self.hi: float | None = None
        self.last: float | None = None
        self.last_t = -1
        self.by_run: dict[int, tuple[int, float]] | None = None
        self.sketch: Sketch | bytes | None = None
        self.q95: float | None = None


def _add_buckets(into: dict[int, int], other: dict[int, int]) -> None:
    get = into.get
    for k, c in other.items():
        into[k] = get(k, 0) + c


def _sub_buckets(into: dict[int, int], other: dict[int, int]) -> None:
    get = into.get
    for k, c in other.items():
        left = get(k, 0) - c
        if left > 0:
            into[k] = left
        else:
            into.pop(k, None)


def _as_sketch(value: Sketch | bytes | None) -> Sketch | None:
    if value is None or isinstance(value, Sketch):
        return value
    return Sketch.from_bytes(value)


class _Series:
    __slots__ = ("dirty", "id", "kind", "label", "name", "neg", "pos", "row", "row_stale", "runs",
                 "steps", "tags", "unit", "values", "zero")

    def __init__(self, sid: int, name: str, kind: str, unit: str, tags: dict[str, str]) -> None:
        self.id = sid
        self.name = name
        self.kind = kind
        self.unit = unit
        self.tags = tags
        self.label = name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(tags.items())) + "}"
                             if tags else "")
        self.steps: dict[int, _Step] = {}
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0
        self.runs: dict[int, int] = {}
        self.dirty = True  # values to compute again
        self.row_stale = True  # row text to format again
        self.values: dict[str, Any] = {}
        self.row: tuple[str, ...] | None = None

    def add(self, row: Sequence[Any], idx: int) -> None:
        """Fold one point row (:data:`holter.store.query.POINT_ROW_COLUMNS`) into step ``idx``."""
        step = self.steps.get(idx)
        if step is None:
            step = self.steps[idx] = _Step()
        run_id = row[2]
        t_end = row[4]
        self.runs[run_id] = max(self.runs.get(run_id, idx), idx)
        self.dirty = self.row_stale = True
        kind = self.kind
        if kind == "counter":
            step.total += row[6] or 0.0
            step.count += 1
            return
        if kind == "gauge":
            step.count += row[5] or 0
            step.total += row[6] or 0.0
            if row[7] is not None:
                step.lo = row[7] if step.lo is None else min(step.lo, row[7])
            if row[8] is not None:
                step.hi = row[8] if step.hi is None else max(step.hi, row[8])
            if row[9] is not None:
                if t_end >= step.last_t:
                    step.last_t = t_end
                    step.last = row[9]
                by_run = step.by_run
                if by_run is None:
                    by_run = step.by_run = {}
                seen = by_run.get(run_id)
                if seen is None or t_end >= seen[0]:
                    by_run[run_id] = (t_end, row[9])
            return
        n = row[5] or 0
        if not n:
            return
        step.count += n
        step.total += row[6] or 0.0
        step.lo = row[7] if step.lo is None else min(step.lo, row[7])
        step.hi = row[8] if step.hi is None else max(step.hi, row[8])
        blob = row[11]
        if blob:
            try:
                part = Sketch.from_bytes(blob)
            except ValueError:
                return
            sketch = _as_sketch(step.sketch)
            if sketch is None:
                sketch = Sketch()
            _add_buckets(sketch.pos, part.pos)
            _add_buckets(sketch.neg, part.neg)
            sketch.zero += part.zero
            step.sketch = sketch
            step.q95 = None
            _add_buckets(self.pos, part.pos)
            _add_buckets(self.neg, part.neg)
            self.zero += part.zero

    def expire(self, first: int) -> None:
        """Drop the steps before ``first`` (subtracting their buckets from the window's)."""
        for idx in [i for i in self.steps if i < first]:
            step = self.steps.pop(idx)
            sketch = _as_sketch(step.sketch)
            if sketch is not None:
                _sub_buckets(self.pos, sketch.pos)
                _sub_buckets(self.neg, sketch.neg)
                self.zero = max(self.zero - sketch.zero, 0)
            self.dirty = self.row_stale = True
        for run_id, idx in list(self.runs.items()):
            if idx < first:
                del self.runs[run_id]

    def window_sketch(self) -> Sketch:
        """The window's merged sketch (a view on the live bucket counts: do not modify)."""
        sketch = Sketch()
        sketch.pos = self.pos
        sketch.neg = self.neg
        sketch.zero = self.zero
        return sketch


def quantiles(pos: dict[int, int], neg: dict[int, int], zero: int, qs: Sequence[float], *,
              lo: float | None, hi: float | None) -> list[float | None]:
    """:meth:`Sketch.quantiles` of bucket counts (same answers), for ascending ``qs``.

    Only the buckets that answer are turned into values, which makes it several times
    cheaper than walking every bucket.
    """
    total = sum(pos.values()) + sum(neg.values()) + zero
    if total == 0:
        return [None for _ in qs]
    ranks = [min(max(q_, 0.0), 1.0) * (total - 1) for q_ in qs]
    answers: list[float | None] = [None] * len(qs)
    i = 0
    cum = 0
    n = len(ranks)
    for k in sorted(neg, reverse=True):
        cum += neg[k]
        while i < n and ranks[i] < cum:
            answers[i] = -value_of(k)
            i += 1
    if zero and i < n:
        cum += zero
        while i < n and ranks[i] < cum:
            answers[i] = 0.0
            i += 1
    if i < n:
        for k in sorted(pos):
            cum += pos[k]
            if ranks[i] < cum:
                v = value_of(k)
                while i < n and ranks[i] < cum:
                    answers[i] = v
                    i += 1
                if i == n:
                    break
    last = answers[i - 1] if i else None
    for j in range(i, n):  # past the end (rounding): the last value, as the sketch does
        answers[j] = last
    for j, q_ in enumerate(qs):
        v = answers[j]
        if v is None:
            continue
        if lo is not None and (v < lo or q_ <= 0.0):
            v = lo
        if hi is not None and (v > hi or q_ >= 1.0):
            v = hi
        answers[j] = v
    return answers


def _union_s(spans: Iterable[tuple[int, int]], start_ns: int, end_ns: int) -> float:
    clipped = sorted((max(s, start_ns), min(e, end_ns)) for s, e in spans
                     if e > start_ns and s < end_ns)
    total = 0
    cur_s = cur_e = None
    for s, e in clipped:
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total / 1e9


class _Order:
    """A panel's display order: set once, then appended to (see the module docstring)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.known: set[str] = set()
        self.generation = 0
        self.sort_index = 0

    def sync(self, present: Iterable[str], sort_key: Callable[[str], Any]) -> None:
        """Drop keys no longer present; append new ones (sorted among themselves)."""
        alive = set(present)
        if alive == self.known:
            return
        kept = [k for k in self.keys if k in alive]
        fresh = sorted(alive - self.known, key=sort_key)
        if not self.keys:
            self.generation += 1
        self.keys = kept + fresh
        self.known = alive

    def resort(self, sort_key: Callable[[str], Any]) -> None:
        """Sort every key now (the user asked)."""
        self.keys.sort(key=sort_key)
        self.generation += 1

    def reset(self) -> None:
        """Forget the order (a window switch): the next sync sorts afresh."""
        self.keys = []
        self.known = set()
        self.generation += 1


def _desc(value: float | None) -> tuple[int, float]:
    """Sort key: larger first, missing values last."""
    return (1, 0.0) if value is None else (0, -value)


class LiveModel:
    """Reads a store incrementally and turns it into :class:`Snapshot` objects.

    ``db`` is the store's path (it need not exist yet: the model waits for it);
    ``scope`` limits the runs watched; ``resolve_run``, when given, is asked at each
    refresh for the run to watch until it answers (``holter run --top`` learns its
    program's run id only once the program has started recording).
    """

    def __init__(
        self,
        db: str,
        *,
        window: str = "5m",
        scope: Scope | None = None,
        resolve_run: Callable[[], int | None] | None = None,
        clock: Callable[[], int] = _clock.time_ns,
        busy_timeout_s: float = 2.0,
    ) -> None:
        if window not in WINDOWS:
            q.parse_window(window)  # raises QueryError for nonsense; other lengths are allowed
        self.db = db
        self.window = window
        self._window_ns = q.parse_window(window)
        self.scope = scope or Scope()
        self.resolve_run = resolve_run
        self.clock = clock
        self.busy_timeout_s = busy_timeout_s
        self.spark_width = 12
        self.filter_text = ""
        self.visible: dict[str, frozenset[str] | None] = dict.fromkeys(PANELS)
        """Per panel, the row keys on screen (None: all of them). Rows off screen keep
        their last text until they scroll into view: only visible rows are computed."""
        self._lock = threading.RLock()
        self._pending: dict[str, Any] = {}
        self._store: Store | None = None
        self._fatal: str | None = None
        self._fatal_exc: HolterError | None = None
        self._last: Snapshot | None = None
        self._orders = {name: _Order() for name in PANELS}
        self._reset_state()

    # -- public ------------------------------------------------------------------------

    def refresh(self) -> Snapshot:
        """Read what changed since the last refresh and return what to show."""
        with self._lock:
            self._apply_pending()
            now = self.clock()
            if self._fatal is not None:
                return self._status("error", self._fatal, now)
            store = self._open(now)
            if store is None:
                return self._last_or_status
            try:
                self._read(store, now)
            except (StoreBusy, sqlite3.OperationalError) as exc:
                if not _is_busy(exc):
                    raise
                return self._keep("busy", "store busy (another process is writing); "
                                  "showing the last data, retrying", now)
            except (StoreError, sqlite3.DatabaseError) as exc:
                return self._keep("error", _clean_message(str(exc)), now)
            snap = self._snapshot(now, "ready", "")
            self._last = snap
            return snap

    def check(self) -> None:
        """Raise now what the screen could only report: a newer schema, a file that is no store.

        A store that does not exist yet is not an error (the dashboard waits for it).
        """
        with self._lock:
            self._open(self.clock())
            if self._fatal_exc is not None:
                raise self._fatal_exc

    def current(self) -> Snapshot | None:
        """What to show from what was already read (after a sort or a filter change)."""
        with self._lock:
            self._apply_pending()
            last = self._last
            if last is None or last.status not in ("ready", "busy"):
                return last
            snap = self._snapshot(last.now_ns, last.status, last.message)
            self._last = snap
            return snap

    def set_window(self, window: str) -> None:
        """Switch the window (the next refresh loads it from the store).

        Like :meth:`set_filter` and :meth:`set_spark_width` it never waits for a refresh
        in progress (the UI thread calls it): the change is applied at the next one.
        """
        q.parse_window(window)
        self._pending["window"] = window

    def next_window(self) -> str:
        """Switch to the next of :data:`WINDOWS` (after the last, the first); return it."""
        current = self._pending.get("window", self.window)
        i = WINDOWS.index(current) if current in WINDOWS else 0
        self.set_window(WINDOWS[(i + 1) % len(WINDOWS)])
        return WINDOWS[(i + 1) % len(WINDOWS)]

    def set_filter(self, text: str) -> None:
        """Show only rows whose name contains ``text`` (case-insensitive; "" shows all)."""
        self._pending["filter"] = text.strip().lower()

    def set_spark_width(self, width: int) -> None:
        """Cells per sparkline (the UI's trend column); every row is formatted again."""
        self._pending["spark"] = max(int(width), 1)

    def _apply_pending(self) -> None:
        """Apply the UI's changes (under the lock, before a refresh or a redraw)."""
        pending = self._pending
        if not pending:
            return
        window = pending.pop("window", None)
        if window is not None and window != self.window:
            self.window = window
            self._window_ns = q.parse_window(window)
            self._reset_state()
            for order in self._orders.values():
                order.reset()
        text = pending.pop("filter", None)
        if text is not None and text != self.filter_text:
            self.filter_text = text
            for order in self._orders.values():
                order.generation += 1
        width = pending.pop("spark", None)
        if width is not None and width != self.spark_width:
            self.spark_width = width
            for s in self._series.values():
                s.row = None
            self._op_rows.clear()

    def cycle_sort(self, panel: str) -> str | None:
        """Sort ``panel`` by its next sort key, once; return the key (None: not sortable)."""
        with self._lock:
            sorts = SORTS.get(panel)
            if not sorts:
                return None
            self._refresh_all_values()
            order = self._orders[panel]
            order.sort_index = (order.sort_index + 1) % len(sorts)
            order.resort(self._sort_key(panel, sorts[order.sort_index]))
            return sorts[order.sort_index]

    def _refresh_all_values(self) -> None:
        """Every series' values up to date (a sort looks at every row, not the visible)."""
        now = self.clock()
        cache: dict[frozenset[int], float] = {}
        for s in self._series.values():
            if s.dirty:
                self._values(s, now, cache)
                s.row_stale = True
        self._op_rows.clear()
        first = self._window(now)[2]
        for s in self._series.values():
            if s.name == SPAN_DURATION and s.kind == "histogram":
                name = s.tags.get("name", "?")
                v = s.values
                errors = sum(n for idx, n in self._errors.get(name, {}).items() if idx >= first)
                count = v.get("count") or 0
                self._op_values[name] = {"count": count, "p95": v.get("p95"),
                                         "p99": v.get("p99"), "rate": v.get("rate"),
                                         "errors": errors / count if count else None}

    def sort_name(self, panel: str) -> str | None:
        """The panel's current sort key."""
        sorts = SORTS.get(panel)
        return sorts[self._orders[panel].sort_index] if sorts else None

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of one trace (for the waterfall); QueryError if it is gone."""
        with self._lock:
            store = self._store
        if store is None:
            raise QueryError("the store is not open")
        return q.trace(store, trace_id)

    def series_key_of(self, panel: str, key: str) -> int | None:
        """The series id behind a row of ``series``, ``ops`` or ``anomalies`` (None if none)."""
        with self._lock:
            if panel == "series":
                return int(key)
            if panel == "ops":
                for s in self._series.values():
                    if s.name == SPAN_DURATION and s.tags.get("name") == key:
                        return s.id
                return None
            if panel == "anomalies":
                found = self._anomaly_series.get(key)
                return found
            return None

    def series_detail(self, sid: int) -> dict[str, Any] | None:
        """All statistics of one series over the window (None if it has no data here)."""
        with self._lock:
            s = self._series.get(sid)
            if s is None:
                return None
            now = self.clock()
            values = self._values(s, now)
            out: dict[str, Any] = {
                "label": s.label, "kind": s.kind, "unit": s.unit, "window": self.window,
                "trend": self._trend(s, now),
            }
            stats: list[tuple[str, str]] = []
            if s.kind == "counter":
                stats += [("count", fmt.number(values["count"])),
                          ("rate/s", fmt.number(values["rate"]))]
            elif s.kind == "gauge":
                stats += [("last", fmt.with_unit(values["last"], s.unit)),
                          ("min", fmt.with_unit(values["min"], s.unit)),
                          ("mean", fmt.with_unit(values["mean"], s.unit)),
                          ("max", fmt.with_unit(values["max"], s.unit)),
                          ("samples", fmt.number(values["count"]))]
            else:
                sketch = s.window_sketch()
                lo, hi = values["min"], values["max"]
                qs = sketch.quantiles(_DETAIL_QS, lo=lo, hi=hi) if values["count"] else []
                stats += [("count", fmt.number(values["count"])),
                          ("rate/s", fmt.number(values["rate"])),
                          ("min", fmt.with_unit(lo, s.unit)),
                          ("mean", fmt.with_unit(values["mean"], s.unit))]
                stats += [(name, fmt.with_unit(v, s.unit))
                          for (name, _), v in zip(QUANTILES, qs, strict=False)]
                stats += [("max", fmt.with_unit(hi, s.unit))]
            out["stats"] = stats
            return out

    def close(self) -> None:
        """Close the store connection."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # -- opening -----------------------------------------------------------------------

    def _open(self, now: int) -> Store | None:
        if self._store is not None:
            return self._store
        if self.db != ":memory:" and not os.path.exists(self.db):
            self._last_or_status = self._status(
                "waiting", f"waiting for {self.db}: no store there yet (it appears when a "
                "program records with holter.start() or `holter run`)", now)
            return None
        try:
            self._store = Store.open(self.db, create=False, timeout_s=self.busy_timeout_s)
        except SchemaError as exc:
            self._fatal_exc = exc
            self._fatal = _clean_message(str(exc))
            self._last_or_status = self._status("error", self._fatal, now)
            return None
        except NotAStore as exc:
            text = str(exc)
            if "is empty" in text:  # a program is creating it right now
                self._last_or_status = self._status(
                    "waiting", f"waiting for {self.db}: the store is being created", now)
            else:
                self._fatal_exc = exc
                self._fatal = _clean_message(text)
                self._last_or_status = self._status("error", self._fatal, now)
            return None
        except (StoreError, sqlite3.Error) as exc:
            if _is_busy(exc):
                self._last_or_status = self._keep(
                    "busy", "store busy (another process is writing); retrying", now)
            else:
                self._last_or_status = self._status("error", _clean_message(str(exc)), now)
            return None
        return self._store

    # -- reading -----------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._series: dict[int, _Series] = {}
        self._runs: dict[int, RunInfo] = {}
        self._allowed: set[int] | None = None
        self._points_cursor = -1  # -1: load the window first
        self._parts_cursor = -1
        self._max_run = 0
        self._geometry: tuple[int, int] | None = None
        self._errors: dict[str, dict[int, int]] = {}
        self._seen_chunks: dict[int, None] = {}
        self._slow: dict[int, list[tuple[int, str, str, int, int]]] = {}
        self._totals: dict[str, tuple[int, int, int, int, int]] = {}
        self._marks: dict[str, tuple[Any, ...]] = {}
        self._alerts: list[Any] | None = None
        self._anomalies: list[Any] | None = None
        self._anomaly_series: dict[str, int] = {}
        self._op_rows: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._op_values: dict[str, dict[str, Any]] = {}
        self._slow_values: dict[str, tuple[int, str, str, int, int]] = {}
        self._points_read = 0
        self._last_or_status: Snapshot | None = None

    def _window(self, now: int) -> tuple[int, int, int, int]:
        """(step length, current step, first step, window start) at ``now``."""
        step_ns = max(self._window_ns // STEPS, 1)
        current = (now - 1) // step_ns
        first = current - STEPS + 1
        return step_ns, current, first, first * step_ns

    def _read(self, store: Store, now: int) -> None:
        if self.resolve_run is not None and self.scope.run is None:
            run = self.resolve_run()
            if run is None:
                return
            self.scope = Scope(run=run, app=self.scope.app)
            self._reset_state()
        step_ns, _current, first, start_ns = self._window(now)
        if self._geometry is not None and self._geometry != (step_ns, first):
            for s in self._series.values():
                s.expire(first)
                s.row_stale = True  # the trend moved one step
            for name in list(self._errors):
                steps = self._errors[name]
                for idx in [i for i in steps if i < first]:
                    del steps[idx]
            for idx in [i for i in self._slow if i < first]:
                del self._slow[idx]
        self._geometry = (step_ns, first)
        marks = q.live_marks(store)
        self._read_points(store, step_ns, first, start_ns=start_ns, now=now, marks=marks)
        self._read_traces(store, step_ns, first, start_ns=start_ns, now=now, marks=marks)
        self._read_runs(store, now)
        self._read_alerts(store, start_ns, now, marks)
        self._marks = marks

    def _read_points(self, store: Store, step_ns: int, first: int, *, start_ns: int, now: int,
                     marks: dict[str, tuple[Any, ...]]) -> None:
        newest = marks.get("points", (0,))[0]
        if self._points_cursor >= 0 and newest == self._points_cursor:
            return
        if self._points_cursor >= 0 and newest >= self._points_cursor:
            rows, _newest = q.point_rows_after(store, self._points_cursor,
                                               limit=MAX_ROWS_PER_REFRESH)
            if rows:
                self._points_cursor = rows[-1][0]
                self._ingest(store, rows, step_ns, first)
            return
        # load the window: rollups (few rows), then interval points page by page from
        # about the first row inside the window (points are appended in time order)
        self._series.clear()
        rows, _newest = q.point_rows_between(store, start_ns, now + 86_400 * 10**9,
                                             tables=POINT_TABLES[1:])
        self._ingest(store, rows, step_ns, first)
        cursor = max(q.first_point_rowid_after(store, start_ns) - 1, 0)
        while True:
            rows, newest = q.point_rows_after(store, cursor, limit=MAX_ROWS_PER_REFRESH)
            if not rows:
                break
            cursor = rows[-1][0]
            self._ingest(store, rows, step_ns, first)
            if cursor >= newest:
                break
        self._points_cursor = cursor

    def _ingest(self, store: Store, rows: list[tuple[Any, ...]], step_ns: int,
                first: int) -> None:
        """Fold point rows into their series' steps (rows of runs out of scope are left)."""
        if not rows:
            return
        # runs are created before their points: read them after the points
        self._load_runs(store)
        unknown = {r[1] for r in rows if r[1] not in self._series}
        if unknown:
            for sid, info in q.series_by_id(store, unknown).items():
                self._series[sid] = _Series(sid, info.name, info.kind, info.unit, info.tags)
        allowed = self._allowed
        series = self._series
        for row in rows:
            if allowed is not None and row[2] not in allowed:
                continue
            s = series.get(row[1])
            if s is None:
                continue
            idx = (row[4] - 1) // step_ns
            if idx < first:
                continue
            s.add(row, idx)
            self._points_read += 1

    def _load_runs(self, store: Store) -> None:
        for run in q.runs_after(store, self._max_run):
            self._runs[run.id] = run
            self._max_run = max(self._max_run, run.id)
        scope = self.scope
        if scope.run is None and scope.app is None:
            self._allowed = None
            return
        allowed = self._allowed if self._allowed is not None else set()
        for run in sorted(self._runs.values(), key=lambda r: r.id):
            if run.id in allowed:
                continue
            if (scope.run is not None and (run.id == scope.run or run.parent_id in allowed)) or (
                scope.run is None and run.app == scope.app
            ):
                allowed.add(run.id)
        self._allowed = allowed

    def _read_runs(self, store: Store, now: int) -> None:
        self._load_runs(store)
        window_ns = self._window_ns
        live = [r.id for r in self._runs.values()
                if r.ended_ns is None and r.last_flush_ns > now - window_ns - 3_600 * 10**9
                and (self._allowed is None or r.id in self._allowed)]
        if live:
            self._runs.update(q.runs_by_id(store, live[-200:]))

    def _read_traces(self, store: Store, step_ns: int, first: int, *, start_ns: int, now: int,
                     marks: dict[str, tuple[Any, ...]]) -> None:
        newest = marks.get("trace_parts", (0,))[0]
        if self._parts_cursor >= 0 and newest == self._parts_cursor:
            return
        if self._parts_cursor < 0 or newest < self._parts_cursor:
            self._slow.clear()
            self._errors.clear()
            rows, cursor = q.trace_parts_between(store, start_ns, now + 86_400 * 10**9)
        else:
            rows, cursor = q.trace_parts_after(store, self._parts_cursor,
                                               limit=MAX_ROWS_PER_REFRESH)
        self._parts_cursor = cursor
        if not rows:
            return
        self._load_runs(store)
        allowed = self._allowed
        error_chunks: set[int] = set()
        for (_rowid, trace_id, chunk_id, run_id, t_start, _t_end, _n, errors, root_name,
             root_kind, root_duration) in rows:
            if allowed is not None and run_id not in allowed:
                continue
            if errors and chunk_id not in self._seen_chunks:
                error_chunks.add(chunk_id)
            if root_kind:
                idx = (t_start - 1) // step_ns
                if idx < first:
                    continue
                heap = self._slow.setdefault(idx, [])
                item = (root_duration or 0, trace_id, root_name or "?", t_start, run_id)
                if len(heap) < TOP_TRACES:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
        if error_chunks:
            for chunk_id, spans in q.chunk_spans(store, error_chunks).items():
                for span in spans:
                    if span["status"] != "error":
                        continue
                    if allowed is not None and span["run_id"] not in allowed:
                        continue
                    idx = (span["start_ns"] - 1) // step_ns
                    if idx < first:
                        continue
                    steps = self._errors.setdefault(tag_value(span["name"]), {})
                    steps[idx] = steps.get(idx, 0) + 1
                self._seen_chunks[chunk_id] = None
            while len(self._seen_chunks) > 10_000:
                del self._seen_chunks[next(iter(self._seen_chunks))]

    def _read_alerts(self, store: Store, start_ns: int, now: int,
                     marks: dict[str, tuple[Any, ...]]) -> None:
        if "anomalies" in marks and marks.get("anomalies") != self._marks.get("anomalies"):
            found = q.anomalies(store, start_ns, now + 60 * 10**9, limit=200)
            allowed = self._allowed
            self._anomalies = [a for a in found
                               if allowed is None or a.run_id is None or a.run_id in allowed]
        elif "anomalies" not in marks:
            self._anomalies = None
        if "alerts" in marks and marks.get("alerts") != self._marks.get("alerts"):
            found = q.alerts(store, since_ns=start_ns, limit=200)
            allowed = self._allowed
            self._alerts = [a for a in found
                            if allowed is None or a.run_id is None or a.run_id in allowed]
        elif "alerts" not in marks:
            self._alerts = None

    # -- values ------------------------------------------------------------------------

    def _covered(self, runs: Iterable[int], start_ns: int, now: int,
                 cache: dict[frozenset[int], float]) -> float:
        key = frozenset(runs)
        got = cache.get(key)
        if got is None:
            spans = []
            for rid in key:
                run = self._runs.get(rid)
                if run is not None:
                    spans.append((run.started_ns, max(run.last_flush_ns, run.ended_ns or 0)))
            got = cache[key] = _union_s(spans, start_ns, now)
        return got

    def _values(self, s: _Series, now: int,
                cache: dict[frozenset[int], float] | None = None) -> dict[str, Any]:
        if not s.dirty and s.values:
            return s.values
        _step_ns, _current, first, start_ns = self._window(now)
        steps = [st for idx, st in s.steps.items() if idx >= first]
        values: dict[str, Any] = {"count": None, "rate": None, "last": None, "min": None,
                                  "max": None, "mean": None, "p50": None, "p95": None,
                                  "p99": None}
        covered = self._covered(s.runs, start_ns, now, cache if cache is not None else {})
        if s.kind == "counter":
            total = sum(st.total for st in steps)
            values["count"] = int(total) if float(total).is_integer() else total
            values["rate"] = total / covered if covered > 0 else None
        elif s.kind == "gauge":
            withlast = [st for st in steps if st.last is not None]
            if withlast:
                latest = max(withlast, key=lambda st: st.last_t)
                values["last"] = latest.last
                values["min"] = min((st.lo for st in steps if st.lo is not None), default=None)
                values["max"] = max((st.hi for st in steps if st.hi is not None), default=None)
                sets = sum(st.count for st in steps)
                values["mean"] = (sum(st.total for st in steps) / sets if sets
                                  else sum(st.last for st in withlast) / len(withlast))
                values["count"] = int(sets) if sets else len(withlast)
        else:
            count = sum(st.count for st in steps)
            if count:
                lo = min(st.lo for st in steps if st.lo is not None)
                hi = max(st.hi for st in steps if st.hi is not None)
                p50, p95, p99 = quantiles(s.pos, s.neg, s.zero, _QS, lo=lo, hi=hi)
                values.update(count=int(count), min=lo, max=hi,
                              mean=sum(st.total for st in steps) / count,
                              rate=count / covered if covered > 0 else None,
                              p50=p50, p95=p95, p99=p99)
            else:
                values["count"] = 0
        s.values = values
        s.dirty = False
        return values

    def _trend(self, s: _Series, now: int) -> tuple[float | None, ...]:
        step_ns, current, first, _start = self._window(now)
        out: list[float | None] = []
        step_s = step_ns / 1e9
        for idx in range(first, current + 1):
            st = s.steps.get(idx)
            if st is None:
                out.append(None)
            elif s.kind == "counter":
                out.append(st.total / step_s)
            elif s.kind == "gauge":
                out.append(st.last)
            elif st.count:
                q95 = self._trend_at(s, idx)
                out.append(q95 if q95 is not None else st.total / st.count)
            else:
                out.append(None)
        return tuple(out)

    def _sort_key(self, panel: str, how: str) -> Callable[[str], Any]:
        if panel == "series":
            series = self._series
            if how == "name":
                return lambda k: series[int(k)].label
            if how == "value":
                return lambda k: (_desc(series[int(k)].values.get("count")
                                        if series[int(k)].kind != "gauge"
                                        else series[int(k)].values.get("last")),
                                  series[int(k)].label)
            return lambda k: (_desc(series[int(k)].values.get(how)), series[int(k)].label)
        if panel == "ops":
            rows = self._op_values
            if how == "name":
                return lambda k: k
            return lambda k: (_desc(rows.get(k, {}).get(how)), k)
        if panel == "traces":
            slow = self._slow_values
            if how == "name":
                return lambda k: (slow[k][2], k) if k in slow else ("", k)
            if how == "started":
                return lambda k: (_desc(slow[k][3] if k in slow else None), k)
            return lambda k: (_desc(slow[k][0] if k in slow else None), k)
        return lambda k: k

    # -- snapshot ----------------------------------------------------------------------

    def _status(self, status: str, message: str, now: int) -> Snapshot:
        return Snapshot(status=status, message=message, now_ns=now, window=self.window,
                        scope=self._scope_text(), system=(),
                        panels=dict.fromkeys(PANELS))

    def _keep(self, status: str, message: str, now: int) -> Snapshot:
        last = self._last
        if last is None:
            return self._status(status, message, now)
        return Snapshot(status=status, message=message, now_ns=now, window=last.window,
                        scope=last.scope, system=last.system, panels=last.panels,
                        points_read=last.points_read)

    def _scope_text(self) -> str:
        if self.resolve_run is not None and self.scope.run is None:
            return "waiting for the program's run"
        return self.scope.describe()

    def _snapshot(self, now: int, status: str, message: str) -> Snapshot:
        _step_ns, _current, first, start_ns = self._window(now)
        cache: dict[frozenset[int], float] = {}
        if not self._series and self.resolve_run is not None and self.scope.run is None:
            message = "waiting for the program to start recording"
        panels: dict[str, PanelData | None] = {
            "series": self._series_panel(now, cache),
            "ops": self._ops_panel(now, first, cache),
            "traces": self._traces_panel(store_now=now, first=first),
            "alerts": self._alerts_panel(now),
            "anomalies": self._anomalies_panel(now),
            "runs": self._runs_panel(now, start_ns),
        }
        return Snapshot(status=status, message=message, now_ns=now, window=self.window,
                        scope=self._scope_text(), system=self._system(now, first, cache),
                        panels=panels, points_read=self._points_read)

    def _panel(self, name: str, rows: dict[str, tuple[str, ...]], names: dict[str, str],
               empty: str, sort_default: Callable[[str], Any] | None = None) -> PanelData:
        order = self._orders[name]
        sorts = SORTS.get(name)
        key = sort_default or (self._sort_key(name, sorts[order.sort_index]) if sorts
                               else (lambda k: k))
        order.sync(rows.keys(), key)
        needle = self.filter_text
        keys = order.keys if not needle else [k for k in order.keys
                                             if needle in names.get(k, k).lower()]
        return PanelData(order=tuple(keys), rows=rows, generation=order.generation,
                         total=len(rows), sort=sorts[order.sort_index] if sorts else None,
                         empty=empty if not rows else "no row matches the filter")

    def _series_panel(self, now: int, cache: dict[frozenset[int], float]) -> PanelData:
        rows: dict[str, tuple[str, ...]] = {}
        names: dict[str, str] = {}
        width = self.spark_width
        visible = self.visible.get("series")
        for s in self._series.values():
            if s.name == SPAN_DURATION or not s.steps:
                continue
            key = str(s.id)
            names[key] = s.label
            if s.row is None or (s.row_stale and (visible is None or key in visible)):
                s.row_stale = False
                v = self._values(s, now, cache)
                unit = s.unit
                if s.kind == "gauge":
                    cells = (s.label, fmt.with_unit(v["last"], unit), "-", "-", "-", "-")
                else:
                    cells = (s.label, fmt.number(v["count"]), fmt.number(v["rate"]),
                             fmt.with_unit(v["p50"], unit), fmt.with_unit(v["p95"], unit),
                             fmt.with_unit(v["p99"], unit))
                s.row = (*cells, fmt.sparkline(self._trend(s, now), width))
            rows[key] = s.row
        return self._panel("series", rows, names,
                           "no series recorded in this window yet")

    def _ops_panel(self, now: int, first: int,
                   cache: dict[frozenset[int], float]) -> PanelData | None:
        rows: dict[str, tuple[str, ...]] = {}
        width = self.spark_width
        visible = self.visible.get("ops")
        for s in self._series.values():
            if s.name != SPAN_DURATION or s.kind != "histogram" or not s.steps:
                continue
            name = s.tags.get("name", "?")
            errors = sum(n for idx, n in self._errors.get(name, {}).items() if idx >= first)
            cached = self._op_rows.get(name)
            if cached is not None and cached[0] == errors and not (
                s.row_stale and (visible is None or name in visible)
            ):
                rows[name] = cached[1]
                continue
            s.row_stale = False
            v = self._values(s, now, cache)
            count = v["count"] or 0
            err_rate = errors / count if count else None
            self._op_values[name] = {"count": count, "errors": err_rate, "p95": v["p95"],
                                     "p99": v["p99"], "rate": v["rate"]}
            rows[name] = (name, fmt.number(count), fmt.number(v["rate"]),
                          f"{err_rate:.1%}" if err_rate else ("0%" if count else "-"),
                          fmt.with_unit(v["p50"], s.unit), fmt.with_unit(v["p95"], s.unit),
                          fmt.with_unit(v["p99"], s.unit),
                          fmt.sparkline(self._trend(s, now), width))
            self._op_rows[name] = (errors, rows[name])
        return self._panel("ops", rows, {k: k for k in rows},
                           "no spans recorded in this window")

    def _traces_panel(self, store_now: int, first: int) -> PanelData | None:
        best: dict[str, tuple[int, str, str, int, int]] = {}
        for idx, heap in self._slow.items():
            if idx < first:
                continue
            for item in heap:
                seen = best.get(item[1])
                if seen is None or item[0] > seen[0]:
                    best[item[1]] = item
        top = heapq.nlargest(TOP_TRACES, best.values())
        self._slow_values = {item[1]: item for item in top}
        missing = [t for t in self._slow_values if t not in self._totals]
        if missing and self._store is not None:
            self._totals.update(q.trace_totals(self._store, missing))
            while len(self._totals) > 2000:
                del self._totals[next(iter(self._totals))]
        rows: dict[str, tuple[str, ...]] = {}
        for trace_id, (dur, _tid, name, t_start, _run) in self._slow_values.items():
            totals = self._totals.get(trace_id)
            rows[trace_id] = (
                fmt.duration(dur / 1e9), name,
                str(totals[2]) if totals else "?",
                str(totals[3]) if totals and totals[3] else "-",
                fmt.ago(t_start, store_now) + " ago", trace_id[:16],
            )
        return self._panel("traces", rows, {k: v[1] for k, v in rows.items()},
                           "no traces recorded in this window")

    def _alerts_panel(self, now: int) -> PanelData | None:
        if not self._alerts:
            return None
        rows: dict[str, tuple[str, ...]] = {}
        rank = {"firing": 0, "pending": 1, "resolved": 2}
        for a in sorted(self._alerts, key=lambda a: (rank.get(a.state, 3), -a.active_ns)):
            since = a.resolved_ns if a.state == "resolved" else (a.fired_ns or a.active_ns)
            labels = ",".join(f"{k}={v}" for k, v in sorted(a.labels.items())
                              if k != "alertname")
            state = a.state.upper() if a.state == "firing" else a.state
            rows[str(a.id)] = (state + (" (muted)" if a.muted else ""), a.rule, labels or "-",
                               fmt.number(a.value), fmt.ago(since, now) + " ago")
        order = self._orders["alerts"]
        order.keys = list(rows)
        order.known = set(rows)
        return PanelData(order=tuple(rows), rows=rows, generation=order.generation,
                         total=len(rows), sort=None, empty="")

    def _anomalies_panel(self, now: int) -> PanelData | None:
        if not self._anomalies:
            return None
        rows: dict[str, tuple[str, ...]] = {}
        self._anomaly_series = {}
        for a in self._anomalies[:100]:
            key = str(a.id)
            tags = ",".join(f"{k}={v}" for k, v in sorted(a.tags.items()))
            label = a.metric + ("{" + tags + "}" if tags else "")
            self._anomaly_series[key] = a.series_id
            rows[key] = (fmt.clock(a.time_ns), label, a.stat, a.kind, a.severity,
                         fmt.with_unit(a.value, a.unit), fmt.with_unit(a.expected, a.unit))
        order = self._orders["anomalies"]
        order.keys = list(rows)
        order.known = set(rows)
        return PanelData(order=tuple(rows), rows=rows, generation=order.generation,
                         total=len(rows), sort=None, empty="")

    def _runs_panel(self, now: int, start_ns: int) -> PanelData:
        allowed = self._allowed
        chosen = [r for r in self._runs.values()
                  if (allowed is None or r.id in allowed)
                  and max(r.last_flush_ns, r.ended_ns or 0) > start_ns]
        chosen.sort(key=lambda r: -r.id)
        rows: dict[str, tuple[str, ...]] = {}
        for r in chosen[:50]:
            if r.ended_ns is None:
                state = f"running {fmt.ago(r.started_ns, now)}"
            else:
                state = f"exit {r.exit_status}" if r.exit_status is not None else "ended"
            rows[str(r.id)] = (str(r.id), r.app, str(r.pid), r.host, state,
                               fmt.clock(r.started_ns), fmt.ago(r.last_flush_ns, now) + " ago")
        order = self._orders["runs"]
        order.keys = list(rows)
        order.known = set(rows)
        return PanelData(order=tuple(rows), rows=rows, generation=order.generation,
                         total=len(rows), sort=None,
                         empty="no run recorded in this window")

    def _system(self, now: int, first: int,
                cache: dict[frozenset[int], float]) -> tuple[SystemLine, ...]:
        by_name: dict[str, list[_Series]] = {}
        for s in self._series.values():
            by_name.setdefault(s.name, []).append(s)
        step_ns, current, _first, start_ns = self._window(now)
        lines = []
        for key, label, names, how, unit, warn, crit, full in SYSTEM_METRICS:
            members = [s for n in names for s in by_name.get(n, ()) if s.steps]
            if not members:
                continue
            for s in members:
                self._values(s, now, cache)
            value, trend = self._system_value(members, how, first, current=current,
                                              step_ns=step_ns, start_ns=start_ns, now=now,
                                              cache=cache)
            if value is None:
                continue
            shown = fmt.with_unit(value, unit) if unit != "/s" else fmt.number(value) + "/s"
            lines.append(SystemLine(
                key=key, label=label, value=shown,
                fraction=(value / full) if full else None,
                level=fmt.level(value, warn, crit) if warn is not None and crit is not None
                else "none",
                trend=trend,
            ))
        return tuple(lines)

    def _system_value(self, members: list[_Series], how: str, first: int, *, current: int,
                      step_ns: int, start_ns: int, now: int,
                      cache: dict[frozenset[int], float]) -> tuple[float | None,
                                                                    tuple[float | None, ...]]:
        trend: list[float | None] = []
        if how in ("sum", "latest"):
            newest_of_run: dict[int, int] = {}
            for idx in range(first, current + 1):
                per_run: dict[int, float] = {}
                newest: tuple[int, float] | None = None
                for s in members:
                    st = s.steps.get(idx)
                    if st is None or not st.by_run:
                        continue
                    for rid, (t, v) in st.by_run.items():
                        # several series of one run (cpu user + system) add up
                        per_run[rid] = per_run.get(rid, 0.0) + v
                        if newest is None or t >= newest[0]:
                            newest = (t, v)
                        newest_of_run[rid] = max(newest_of_run.get(rid, t), t)
                if not per_run:
                    trend.append(None)
                elif how == "sum":
                    trend.append(sum(per_run.values()))
                else:
                    trend.append(newest[1] if newest is not None else None)
            if how == "latest":
                return next((v for v in reversed(trend) if v is not None), None), tuple(trend)
            # now: the newest value of each live run (or of the newest run), added up
            live = {rid for rid in newest_of_run
                    if (run := self._runs.get(rid)) is not None and run.ended_ns is None}
            if not live and newest_of_run:
                live = {max(newest_of_run, key=newest_of_run.__getitem__)}
            total: float | None = None
            for s in members:
                for rid in live:
                    for idx in sorted(s.steps, reverse=True):
                        by_run = s.steps[idx].by_run
                        if by_run and rid in by_run:
                            total = (total or 0.0) + by_run[rid][1]
                            break
            return total, tuple(trend)
        step_s = step_ns / 1e9
        if how == "rate":
            count = 0.0
            runs: set[int] = set()
            for idx in range(first, current + 1):
                step_sum = sum(s.steps[idx].total for s in members if idx in s.steps)
                present = any(idx in s.steps for s in members)
                trend.append(step_sum / step_s if present else None)
                count += step_sum
            for s in members:
                runs.update(s.runs)
            covered = self._covered(runs, start_ns, now, cache)
            return (count / covered if covered > 0 else None), tuple(trend)
        # p95 of histograms (loop lag, GC pause): merged window sketches
        merged = Sketch()
        lo: float | None = None
        hi: float | None = None
        for s in members:
            v = s.values
            if not v.get("count"):
                continue
            _add_buckets(merged.pos, s.pos)
            _add_buckets(merged.neg, s.neg)
            merged.zero += s.zero
            lo = v["min"] if lo is None else min(lo, v["min"])
            hi = v["max"] if hi is None else max(hi, v["max"])
        for idx in range(first, current + 1):
            vals = [t for s in members if idx in s.steps
                    for t in [self._trend_at(s, idx)] if t is not None]
            trend.append(max(vals) if vals else None)
        if merged.count == 0:
            return None, tuple(trend)
        p95 = quantiles(merged.pos, merged.neg, merged.zero, (0.95,), lo=lo, hi=hi)[0]
        return p95, tuple(trend)

    def _trend_at(self, s: _Series, idx: int) -> float | None:
        st = s.steps.get(idx)
        if st is None or not st.count:
            return None
        if st.q95 is None:
            sketch = _as_sketch(st.sketch)
            if sketch is not None:
                st.q95 = quantiles(sketch.pos, sketch.neg, sketch.zero, (0.95,), lo=st.lo,
                                   hi=st.hi)[0]
        return st.q95


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, StoreBusy) or "locked" in text or "busy" in text


def _clean_message(text: str) -> str:
    """One line, and never SQLite's 'database is locked' wording (the store is just busy)."""
    line = " ".join(text.split())
    if "locked" in line.lower():
        return "the store is busy (another process is writing); retrying"
    return line
