"""Plain records passed between layers. No behaviour beyond small conveniences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Tags = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """What identifies a series: metric name, kind, unit and sorted tags."""

    name: str
    kind: str
    unit: str
    tags: Tags


@dataclass(slots=True)
class Point:
    """One series over one flush interval (or a rollup bucket).

    Counters: ``total`` is the increase. Gauges: ``last``, ``min``, ``max``, and
    ``count``/``total`` of the values set. Histograms: ``count``, ``total``,
    ``min``, ``max``, ``m2`` (sum of squared deviations from the mean) and
    ``sketch`` (serialised :class:`holter.core.sketch.Sketch`).
    """

    key: SeriesKey
    t_start_ns: int
    t_end_ns: int
    count: float | None = None
    total: float | None = None
    min: float | None = None
    max: float | None = None
    last: float | None = None
    m2: float | None = None
    sketch: bytes | None = None


@dataclass(slots=True)
class Batch:
    """Everything one flush produced: points, and finished spans as the tracer buffers them.

    A span record is ``(trace_id, span_id, parent_id, name, start_ns, duration_ns,
    status, error_type, error_message, tags, events, remote_parent)`` with integer ids.
    """

    t_start_ns: int
    t_end_ns: int
    points: list[Point] = field(default_factory=list)
    spans: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Points plus spans."""
        return len(self.points) + len(self.spans)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One process lifetime."""

    id: int
    app: str
    version: str | None
    argv: list[str]
    pid: int
    host: str
    python: str
    started_ns: int
    last_flush_ns: int
    ended_ns: int | None
    exit_status: int | None
    exit_info: str | None
    parent_id: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times in ns since the epoch)."""
        return {
            "id": self.id,
            "app": self.app,
            "version": self.version,
            "argv": self.argv,
            "pid": self.pid,
            "host": self.host,
            "python": self.python,
            "started_ns": self.started_ns,
            "last_flush_ns": self.last_flush_ns,
            "ended_ns": self.ended_ns,
            "exit_status": self.exit_status,
            "exit_info": self.exit_info,
            "parent_id": self.parent_id,
        }


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """A stored series with how much data it has."""

    id: int
    name: str
    kind: str
    unit: str
    tags: dict[str, str]
    points: int
    first_ns: int | None
    last_ns: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "unit": self.unit,
            "tags": self.tags,
            "points": self.points,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        }


QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.5),
    ("p75", 0.75),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99_9", 0.999),
)
"""The percentiles every window query answers, by field name."""


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Aggregates of one metric (or one group of it) over a time window.

    ``count``: counters, the total increase; histograms, the number of observations;
    gauges, the number of samples (points). ``rate`` is ``count`` per second of
    recorded time in the window (``covered_s``). Percentiles come from merged
    sketches (relative error under 1 %); ``None`` where a field does not apply.
    """

    name: str
    kind: str | None
    unit: str
    group: dict[str, str]
    start_ns: int
    end_ns: int
    covered_s: float
    series: int
    count: float
    sum: float | None = None
    rate: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    stddev: float | None = None
    last: float | None = None
    p50: float | None = None
    p75: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    p99_9: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]

    def percentiles(self) -> dict[str, float | None]:
        """The percentile fields by name."""
        return {name: getattr(self, name) for name, _ in QUANTILES}
