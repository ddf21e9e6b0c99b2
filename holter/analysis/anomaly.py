"""Anomaly detection inside a monitor: one streaming detector per series and statistic.

:class:`AnomalyDetection` is an after-flush hook (it runs in the collector thread, never
on the program's threads). For every point a flush wrote it updates the detector of
that series' statistics:

* counters: ``rate`` — the increase per second over the interval (an interval in which
  a counter seen earlier in this process did not move counts as rate 0);
* gauges: ``value`` — the mean of the values set in the interval (the last value when
  it was only sampled);
* histograms: ``p50``, ``p95``, ``p99`` (from the interval's sketch) and ``rate``
  (observations per second; 0 for an interval without any).

An anomalous point opens an *event* (score ≥ :data:`holter.analysis.detector.ANOMALY_SCORE`);
the event goes on while its points stay anomalous (undamped score ≥
:data:`holter.analysis.detector.CONTINUE_SCORE`) and is stored once, with its most
deviant point, its severity (from its highest score, :func:`severity_of`) and its
kind. A spike that persists becomes a level shift.

Detector states are saved in the store every :data:`CHECKPOINT_S` seconds and when the
monitor stops, and loaded when a series is first seen, so a restarted program keeps its
baselines. Store errors are retried at the next flush; nothing here raises into the
program.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from holter import _clock
from holter.analysis.detector import ANOMALY_SCORE, CONTINUE_SCORE, Detector, Observation
from holter.core.sketch import Sketch
from holter.errors import HolterError
from holter.model import Batch, Point, SeriesKey
from holter.store import anomalies as astore
from holter.store.anomalies import SEVERITIES, Anomaly

if TYPE_CHECKING:
    from holter.store.sqlite import Store

logger = logging.getLogger("holter")

CHECKPOINT_S = 300.0
"""Seconds between saves of changed detector states (also saved when the monitor stops)."""
MAX_DETECTORS = 10_000
"""Detectors one monitor keeps; later series are not judged (counted in
``holter.dropped{reason="detector_limit"}``)."""
MAX_PENDING = 10_000
"""Anomaly rows kept in memory while the store cannot be written."""
RETENTION_EVERY_S = 3600.0
SEVERITY_SCORES: tuple[tuple[str, float], ...] = (
    ("critical", 0.8),
    ("high", 0.65),
    ("medium", 0.5),
    ("low", ANOMALY_SCORE),
)
"""Severity of an event from its highest score: critical ≥ 0.8 (about one point in 10^8
of the series' history), high ≥ 0.65, medium ≥ 0.5, low ≥ 0.4 (one in 10^4)."""

STATS = {
    "counter": ("rate",),
    "gauge": ("value",),
    "histogram": ("p50", "p95", "p99", "rate"),
}
"""The statistics judged for each kind of series."""
_QS = (0.5, 0.95, 0.99)


def severity_of(score: float) -> str | None:
    """The severity of an anomaly score, or None below ``low``."""
    for name, floor in SEVERITY_SCORES:
        if score >= floor:
            return name
    return None


def point_inputs(point: Point) -> list[tuple[str, float]]:
    """The (statistic, value) pairs one stored point gives its detectors."""
    kind = point.key.kind
    seconds = (point.t_end_ns - point.t_start_ns) / 1e9
    if kind == "counter":
        if seconds <= 0 or point.total is None:
            return []
        return [("rate", point.total / seconds)]
    if kind == "gauge":
        if point.count and point.total is not None:
            return [("value", point.total / point.count)]
        return [("value", point.last)] if point.last is not None else []
    if kind == "histogram":
        out: list[tuple[str, float]] = []
        count = point.count or 0
        if count and point.sketch:
            try:
                qs = Sketch.from_bytes(point.sketch).quantiles(_QS, point.min, point.max)
            except ValueError:
                qs = [None, None, None]
            out.extend((stat, q) for stat, q in zip(("p50", "p95", "p99"), qs, strict=True)
                       if q is not None)
        if seconds > 0:
            out.append(("rate", count / seconds))
        return out
    return []


@dataclass(slots=True)
class Event:
    """One anomalous event of one detector while it is being tracked (see :class:`Events`).

    ``score`` is the event's highest score; ``peak_*``, ``value``, ``expected`` and the
    band are those of its most deviant point (largest ``|z|``).
    """

    id: int | None
    start_ns: int
    end_ns: int
    peak_ns: int
    value: float
    expected: float | None
    low: float | None
    high: float | None
    score: float
    kind: str
    maturity: str
    points: int
    run_id: int | None
    peak_z: float = 0.0
    pos: int = 0
    pos_big: int = 0
    neg_big: int = 0
    run: int = 0
    max_run: int = 0
    queued: bool = False

    def add(self, z: float) -> None:
        """Count one point's residual into the event's shape."""
        if z > 0:
            self.pos += 1
        if z > 3.0:
            self.pos_big += 1
            self.run = self.run + 1 if self.run > 0 else 1
        elif z < -3.0:
            self.neg_big += 1
            self.run = self.run - 1 if self.run < 0 else -1
        else:
            self.run = 0
        self.max_run = max(self.max_run, abs(self.run))

    @property
    def severity(self) -> str:
        """The severity of the event's highest score (:func:`severity_of`)."""
        return severity_of(self.score) or "low"

    def row_new(self, series_id: int, stat: str) -> tuple[Any, ...]:
        """The row :func:`holter.store.anomalies.save` inserts."""
        return (series_id, stat, self.run_id, self.start_ns, self.end_ns, self.peak_ns,
                self.value, self.expected, self.low, self.high, self.score,
                self.severity, self.kind, self.maturity, self.points)

    def row_update(self) -> tuple[Any, ...]:
        """The row :func:`holter.store.anomalies.save` updates."""
        return (self.end_ns, self.peak_ns, self.value, self.expected, self.low, self.high,
                self.score, self.severity, self.kind, self.points, self.id)


def event_kind(event: Event) -> str:
    """The kind of an event from the shape of its residuals (``z``, in robust scales).

    Large residuals (beyond 3 scales) on both sides (at least a third of them on the
    rarer side): a variance change. Two or more on one side: a level shift. Five points
    or more, 80 % of them on one side, without large ones: a trend change. Otherwise a
    spike or a dip, by the sign of the most deviant point.
    """
    few, many = sorted((event.pos_big, event.neg_big))
    if few and few * 3 >= many and few + many >= 3:
        return "variance_change"
    if many >= 2:
        return "level_shift"
    same = max(event.pos, event.points - event.pos) / event.points
    if event.points >= 5 and same >= 0.8:
        return "trend_change"
    return "spike" if event.peak_z >= 0 else "dip"


class Events:
    """Turns one detector's observations into events.

    An event opens at a point scoring at least ``ANOMALY_SCORE`` (undamped) and goes on
    while its points' undamped scores stay at ``CONTINUE_SCORE`` or more (hysteresis: a
    series hovering at the limit gives one event, not many).
    """

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: Event | None = None

    def step(self, obs: Observation, t_ns: int, run_id: int | None = None) -> Event | None:
        """Feed one observation; return the event it opened or extended, else None."""
        if obs.expected is None or not math.isfinite(obs.value):
            return None
        event = self.current
        raw = obs.raw_score
        if event is not None:
            if raw >= CONTINUE_SCORE:
                event.end_ns = t_ns
                event.points += 1
                event.add(obs.z)
                event.score = max(event.score, raw)
                if abs(obs.z) > abs(event.peak_z):
                    event.peak_ns = t_ns
                    event.peak_z = obs.z
                    event.value = obs.value
                    event.expected, event.low, event.high = obs.expected, obs.low, obs.high
                event.kind = event_kind(event)
                return event
            self.current = None
        if raw >= ANOMALY_SCORE:
            event = Event(
                id=None, start_ns=t_ns, end_ns=t_ns, peak_ns=t_ns, value=obs.value,
                expected=obs.expected, low=obs.low, high=obs.high, score=raw, kind="spike",
                maturity=obs.maturity, points=1, run_id=run_id, peak_z=obs.z,
            )
            event.add(obs.z)
            event.kind = event_kind(event)
            self.current = event
            return event
        return None


class _Tracked:
    __slots__ = ("active", "detector", "dirty", "events", "key", "last", "rate_like",
                 "saved_once", "series_id", "stat", "t_ns")

    def __init__(self, key: SeriesKey, stat: str, detector: Detector) -> None:
        self.key = key
        self.stat = stat
        self.detector = detector
        self.series_id: int | None = None
        self.events = Events()
        self.dirty = True
        self.last: Observation | None = None
        self.t_ns = 0
        self.rate_like = stat == "rate"
        self.active = False  # judged a point in this process (absent counters then mean 0)
        self.saved_once = False


class AnomalyDetection:
    """The after-flush hook that runs a monitor's detectors (see the module documentation)."""

    def __init__(self, monitor: Any, *, checkpoint_s: float = CHECKPOINT_S,
                 max_detectors: int = MAX_DETECTORS) -> None:
        self._monitor = weakref.ref(monitor)
        self.checkpoint_s = checkpoint_s
        self.max_detectors = max_detectors
        self.enabled = True
        """Set to False to stop judging points (detectors keep their state)."""
        self.tracked: dict[tuple[SeriesKey, str], _Tracked] = {}
        self._by_key: dict[SeriesKey, list[_Tracked]] = {}
        self._pending_events: list[tuple[_Tracked, Event]] = []
        self._last_checkpoint_ns = _clock.monotonic_ns()
        self._last_retention_ns = 0
        self._ready = False
        self.anomalies_found = 0
        """Events opened since the monitor started."""

    # -- the hook ----------------------------------------------------------------------

    def __call__(self, batches: list[Batch]) -> None:
        """Judge every point of the written batches; save what changed."""
        monitor = self._monitor()
        if monitor is None or not self.enabled:
            return
        new_keys = {p.key for b in batches for p in b.points if p.key not in self._by_key}
        if new_keys:
            self._track(monitor, sorted(new_keys, key=_key_order))
        for batch in batches:
            if batch.t_end_ns > batch.t_start_ns:
                self._feed(batch, monitor.run_id)
        try:
            self._save(monitor, force=bool(getattr(monitor, "_stopped", False)))
        except HolterError as exc:  # store busy or gone: try again at the next flush
            logger.debug("holter anomaly detection could not save: %s", exc)

    def _track(self, monitor: Any, keys: list[SeriesKey]) -> None:
        """Detectors for series seen for the first time, restored from the store if saved."""
        room = self.max_detectors - len(self.tracked)
        wanted = [k for k in keys if k.kind in STATS]
        accepted = []
        for key in wanted:
            need = len(STATS[key.kind])
            if need > room:
                monitor.registry.count_drop("detector_limit", 1, key.name)
                self._by_key[key] = []
                continue
            room -= need
            accepted.append(key)
        ids: dict[SeriesKey, int] = {}
        saved: dict[tuple[int, str], bytes] = {}
        try:
            store = monitor._ensure_store()
            self._ensure_tables(store)
            ids = astore.series_ids(store, accepted)
            saved = astore.load_states(
                store, [(ids[k], stat) for k in accepted if k in ids for stat in STATS[k.kind]]
            )
        except HolterError as exc:
            logger.debug("holter anomaly detection could not read saved states: %s", exc)
        for key in accepted:
            group = []
            sid = ids.get(key)
            for stat in STATS[key.kind]:
                detector = None
                blob = saved.get((sid, stat)) if sid is not None else None
                if blob is not None:
                    try:
                        detector = Detector.from_bytes(blob)
                    except ValueError as exc:
                        logger.debug("holter: ignoring a saved detector state: %s", exc)
                tracked = _Tracked(key, stat, detector or Detector())
                tracked.series_id = sid
                if tracked.detector.t_last is not None:
                    tracked.t_ns = int(tracked.detector.t_last * 1e9)
                self.tracked[(key, stat)] = tracked
                group.append(tracked)
            self._by_key[key] = group

    def _ensure_tables(self, store: Store) -> None:
        if not self._ready:
            astore.ensure_tables(store)
            self._ready = True

    def _feed(self, batch: Batch, run_id: int | None) -> None:
        seen: set[SeriesKey] = set()
        t_ns = batch.t_end_ns
        tracked_map = self.tracked
        for point in batch.points:
            key = point.key
            seen.add(key)
            for stat, value in point_inputs(point):
                tracked = tracked_map.get((key, stat))
                if tracked is not None:
                    self._judge(tracked, point.t_end_ns, value, run_id)
        # a counter (or histogram) seen before that did not move in the interval: rate 0
        for key, group in self._by_key.items():
            if key in seen:
                continue
            for tracked in group:
                if tracked.rate_like and tracked.active and tracked.t_ns < t_ns:
                    self._judge(tracked, t_ns, 0.0, run_id)

    def _judge(self, tracked: _Tracked, t_ns: int, value: float, run_id: int | None) -> None:
        if t_ns <= tracked.t_ns:
            return  # at or before the last point judged (a re-sent batch, a saved state)
        tracked.t_ns = t_ns
        tracked.active = True
        obs = tracked.detector.observe(t_ns / 1e9, value)
        tracked.last = obs
        tracked.dirty = True
        event = tracked.events.step(obs, t_ns, run_id)
        if event is not None:
            if event.points == 1:
                self.anomalies_found += 1
            self._queue(tracked, event)

    def _queue(self, tracked: _Tracked, event: Event) -> None:
        if event.queued:
            return
        if len(self._pending_events) < MAX_PENDING:
            event.queued = True
            self._pending_events.append((tracked, event))

    # -- saving ------------------------------------------------------------------------

    def _save(self, monitor: Any, *, force: bool = False) -> None:
        now = _clock.monotonic_ns()
        due = force or now - self._last_checkpoint_ns >= self.checkpoint_s * 1e9
        fresh = [t for t in self.tracked.values() if t.dirty and not t.saved_once]
        if not (due or self._pending_events or fresh):
            return
        store: Store = monitor._ensure_store()
        self._ensure_tables(store)
        missing = [t for t in self.tracked.values() if t.series_id is None]
        if missing:
            ids = astore.series_ids(store, list({t.key for t in missing}))
            for tracked in missing:
                tracked.series_id = ids.get(tracked.key)
        chosen = [t for t in (self.tracked.values() if due else fresh)
                  if t.dirty and t.series_id is not None]
        states = [_state_row(t) for t in chosen]
        new_rows: list[tuple[Any, ...]] = []
        new_events: list[Event] = []
        updates: list[tuple[Any, ...]] = []
        waiting: list[tuple[_Tracked, Event]] = []
        for tracked, event in self._pending_events:
            if tracked.series_id is None:
                waiting.append((tracked, event))
                continue
            if event.id is None:
                new_rows.append(event.row_new(tracked.series_id, tracked.stat))
                new_events.append(event)
            else:
                updates.append(event.row_update())
        ids_new = astore.save(store, states, new_rows, updates)
        for event, new_id in zip(new_events, ids_new, strict=True):
            event.id = new_id
        for _tracked, event in self._pending_events:
            event.queued = False
        for _tracked, event in waiting:
            event.queued = True
        self._pending_events = waiting
        for tracked in chosen:
            tracked.dirty = False
            tracked.saved_once = True
        if due:
            self._last_checkpoint_ns = now
            self._expire(store, monitor)

    def _expire(self, store: Store, monitor: Any) -> None:
        now = _clock.time_ns()
        if now - self._last_retention_ns < RETENTION_EVERY_S * 1e9:
            return
        self._last_retention_ns = now
        keep_s = getattr(monitor.config, "hour_retention_s", 90 * 86400.0)
        astore.expire(store, now - int(keep_s * 1e9))

    def checkpoint(self) -> None:
        """Save every changed detector state and pending anomaly now."""
        monitor = self._monitor()
        if monitor is not None:
            self._save(monitor, force=True)


def _key_order(key: SeriesKey) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    return (key.name, key.kind, key.unit, key.tags)


def _state_row(tracked: _Tracked) -> tuple[Any, ...]:
    det = tracked.detector
    obs = tracked.last
    expected = obs.expected if obs is not None else None
    return (
        tracked.series_id, tracked.stat, int((det.t_last or 0) * 1e9), det.n, det.maturity,
        det.seasonality, expected, obs.low if obs is not None else None,
        obs.high if obs is not None else None, obs.value if obs is not None else None,
        obs.raw_score if obs is not None else None, det.to_bytes(),
    )


def find_anomalies(
    store: Store,
    window: str | float | None = "24h",
    *,
    start: Any = None,
    end: Any = None,
    metric: str | None = None,
    tags: Mapping[str, object] | None = None,
    min_severity: str = "low",
    limit: int | None = None,
) -> list[Anomaly]:
    """Stored anomalies whose event overlaps the window, newest first."""
    from holter.core.registry import tag_value
    from holter.store import query as q

    start_ns, end_ns = q.time_range(window, start, end)
    wanted = {str(k): tag_value(v) for k, v in (tags or {}).items()} or None
    return q.anomalies(store, start_ns, end_ns, metric=metric, tags=wanted,
                       min_severity=min_severity, limit=limit)


__all__ = ["CHECKPOINT_S", "MAX_DETECTORS", "SEVERITIES", "SEVERITY_SCORES", "STATS",
           "AnomalyDetection", "Event", "Events", "event_kind", "find_anomalies",
           "point_inputs", "severity_of"]
