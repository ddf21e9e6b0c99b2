"""The report model: plain records built once from the store, rendered by every format.

A :class:`Report` is data only (habit 13 of STYLE.md: recording is data, output is a
renderer). :meth:`Report.as_dict` is its JSON form, described by the JSON Schema
``holter/reports/schema/report-1.json`` (:data:`SCHEMA_ID`). Times are nanoseconds
since the epoch; durations of spans are nanoseconds (``*_ns``) or seconds (``*_s``);
metric values are in the unit of their series (``unit``).

Optional sections (``anomalies``, ``patterns``, ``alerts``) are ``None`` when the
store or this holter has no such data at all, and an empty list when it has the
data but nothing happened in the period: a renderer leaves out a ``None`` section
and says "none" for an empty one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
"""Major version of the report's JSON form; bumped when a field changes meaning or goes."""
SCHEMA_ID = "https://holter.invalid/schema/report-1.json"
"""``$id`` of the JSON Schema of :data:`SCHEMA_VERSION` (``report.schema_url`` in the JSON)."""


@dataclass(slots=True)
class Scope:
    """What the report covers: the time range and the run/app filter."""

    start_ns: int
    end_ns: int
    period: str | None = None
    run: int | None = None
    app: str | None = None
    store: str = ""


@dataclass(slots=True)
class MetricRow:
    """One series over the period (``tags`` identify it within its metric)."""

    name: str
    kind: str
    unit: str
    tags: dict[str, str]
    points: int
    count: float
    rate: float | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    stddev: float | None = None
    last: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    p99_9: float | None = None
    sparkline: list[float | None] | None = None


@dataclass(slots=True)
class Operation:
    """Per span name: counts from ``span.duration`` (exact), self time from stored spans."""

    name: str
    count: float
    rate: float | None
    errors: int
    error_rate: float
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    max_s: float | None
    stored_spans: int
    self_mean_s: float | None
    self_total_s: float | None


@dataclass(slots=True)
class PathStep:
    """One span on a trace's critical path."""

    span_id: str
    name: str
    contribution_ns: int
    share: float
    self_ns: int


@dataclass(slots=True)
class SlowTrace:
    """One of the slowest traces of the period, with its critical path."""

    trace_id: str
    root_name: str
    start_ns: int
    duration_ns: int
    spans: int
    errors: int
    critical_path: list[PathStep] = field(default_factory=list)


@dataclass(slots=True)
class Resource:
    """One system figure over the period: mean, peak and when it peaked."""

    key: str
    label: str
    metric: str
    unit: str
    mean: float | None
    peak: float | None
    peak_ns: int | None = None
    first: float | None = None
    last: float | None = None


@dataclass(slots=True)
class Evidence:
    """The figure behind a recommendation: which value of which series, against what."""

    metric: str
    figure: str
    value: float
    threshold: float
    unit: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Recommendation:
    """A specific, evidence-based finding: what, the figure that triggered it, where to look."""

    rule: str
    severity: str
    subject: str
    title: str
    evidence: Evidence
    look_at: str


@dataclass(slots=True)
class ChartLine:
    """One line of a chart: a label and one value per step (``None`` where empty)."""

    label: str
    values: list[float | None]


@dataclass(slots=True)
class ChartMark:
    """A period to highlight on a chart: an anomaly or an alert."""

    kind: str
    label: str
    start_ns: int
    end_ns: int
    severity: str = ""


@dataclass(slots=True)
class Chart:
    """A time-series chart: step end times, lines, and marked periods."""

    key: str
    title: str
    unit: str
    times_ns: list[int]
    lines: list[ChartLine]
    marks: list[ChartMark] = field(default_factory=list)


@dataclass(slots=True)
class Summary:
    """The headline figures."""

    runs: int = 0
    series: int = 0
    observations: float = 0
    traces: int = 0
    traces_with_errors: int = 0
    mean_trace_duration_ns: float | None = None
    operations: int = 0
    span_errors: int = 0
    anomalies: int | None = None
    alerts: int | None = None
    recommendations: int = 0
    recorded_s: float = 0.0


@dataclass(slots=True)
class Report:
    """Everything a report says, from one read of the store."""

    title: str
    generated_ns: int
    holter_version: str
    scope: Scope
    empty: bool
    notes: list[str]
    summary: Summary
    runs: list[dict[str, Any]]
    metrics: list[MetricRow]
    operations: list[Operation]
    slowest_traces: list[SlowTrace]
    resources: list[Resource]
    recommendations: list[Recommendation]
    charts: list[Chart]
    anomalies: list[dict[str, Any]] | None = None
    patterns: list[dict[str, Any]] | None = None
    alerts: list[dict[str, Any]] | None = None
    operations_sampled_traces: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (schema :data:`SCHEMA_ID`): non-finite numbers become null."""
        data = {"schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION}
        data.update(asdict(self))
        return clean(data)


def clean(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, tuples as lists (JSON-safe)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


__all__ = [
    "SCHEMA_ID", "SCHEMA_VERSION", "Chart", "ChartLine", "ChartMark", "Evidence", "MetricRow",
    "Operation", "PathStep", "Recommendation", "Report", "Resource", "Scope", "SlowTrace",
    "Summary", "clean",
]
