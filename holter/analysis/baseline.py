"""Baselines: what each series is compared against, and how mature that comparison is.

A baseline is the stored state of one detector (one series and statistic, see
:mod:`holter.analysis.anomaly`): the value it expected at its last point and the band
of normal values around it, how many points it has seen, whether it is still
``warming`` (too few points to judge), ``learning`` (judged against a local baseline,
less than a day of history) or ``mature``, and which seasonality its expected value
uses (``none``, ``daily``, ``weekly``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from holter.analysis.detector import DAY_S, WARM_POINTS, Detector
from holter.store import query as q
from holter.store.sqlite import Store


@dataclass(frozen=True, slots=True)
class Baseline:
    """The stored baseline of one statistic of one series (see the module documentation).

    ``warming_points``: points still needed before the series is judged;
    ``mature_in_s``: seconds of history still needed to be ``mature`` (0 when it is);
    ``step_s``: the series' usual interval between points.
    """

    metric: str
    series_kind: str
    unit: str
    tags: dict[str, str]
    stat: str
    points: int
    maturity: str
    seasonality: str
    expected: float | None
    low: float | None
    high: float | None
    last_value: float | None
    last_score: float | None
    updated_ns: int
    step_s: float | None
    warming_points: int
    mature_in_s: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


def progress(detector: Detector) -> tuple[int, float]:
    """``(points still needed to be judged, seconds still needed to be mature)``."""
    warming = max(WARM_POINTS - detector.n, 0) if detector.maturity == "warming" else 0
    if detector.maturity == "mature":
        return warming, 0.0
    span = 0.0
    if detector.t_first is not None and detector.t_last is not None:
        span = detector.t_last - detector.t_first
    return warming, max(DAY_S - span, 0.0)


def baselines(store: Store, metric: str | None = None) -> list[Baseline]:
    """Every stored baseline (of one metric), by metric, tags and statistic."""
    out = []
    for row in q.detector_states(store, metric=metric, with_state=True):
        step: float | None = None
        warming = 0
        mature_in = 0.0
        if row.state is not None:
            try:
                det = Detector.from_bytes(row.state)
            except ValueError:
                det = None
            if det is not None:
                step = det.step_s or None
                warming, mature_in = progress(det)
        out.append(Baseline(
            metric=row.metric, series_kind=row.series_kind, unit=row.unit, tags=row.tags,
            stat=row.stat, points=row.points, maturity=row.maturity,
            seasonality=row.seasonality, expected=row.expected, low=row.low, high=row.high,
            last_value=row.last_value, last_score=row.last_score, updated_ns=row.updated_ns,
            step_s=step, warming_points=warming, mature_in_s=mature_in,
        ))
    return out


__all__ = ["Baseline", "baselines", "progress"]
